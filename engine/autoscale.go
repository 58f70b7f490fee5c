package engine

import (
	"context"
	"math"
	"time"

	"github.com/symphony-go/symphony/tasks"
)

// sampleSize is how many queue samples a pool keeps: the Ruby daemon's
// window, 10 seconds at the default scaling interval.
const sampleSize = 100

// minDecision is how many samples longlived needs before it decides: the
// Ruby daemon waited for a full window, 10 s at the default interval, so a
// daemon started (or a task reloaded) on a backlog did not grow for 10 s.
// Ten samples give the slope's t-statistic eight degrees of freedom.
const minDecision = 10

// trendThreshold is the t-statistic below which a backlog counts as
// falling (reference/symphony-ruby.md §2.4).
const trendThreshold = -3

// ring holds the last sampleSize samples of a queue's ready count.
type ring struct {
	samples []tasks.Sample
}

func (r *ring) add(s tasks.Sample) {
	r.samples = append(r.samples, s)
	if len(r.samples) > sampleSize {
		r.samples = append(r.samples[:0], r.samples[len(r.samples)-sampleSize:]...)
	}
}

// snapshot is a copy a decision may keep.
func (r *ring) snapshot() []tasks.Sample { return append([]tasks.Sample(nil), r.samples...) }

// trend is the t-statistic of the least-squares slope of ready counts over
// time: positive when the backlog grows. A flat backlog (every sample
// equal) has no slope and no error; it is 0, not NaN, and 0 is not
// falling. A perfect line gives ±Inf with the slope's sign.
func trend(samples []tasks.Sample) float64 {
	n := float64(len(samples))
	if len(samples) < 3 {
		return 0
	}
	t0 := samples[0].At
	var sx, sy float64
	for _, s := range samples {
		sx += s.At.Sub(t0).Seconds()
		sy += float64(s.Ready)
	}
	mx, my := sx/n, sy/n
	var sxy, sxx float64
	for _, s := range samples {
		dx := s.At.Sub(t0).Seconds() - mx
		sxy += dx * (float64(s.Ready) - my)
		sxx += dx * dx
	}
	if sxx == 0 {
		return 0 // every sample at one instant: no slope to speak of
	}
	b := sxy / sxx
	a := my - b*mx
	var r float64
	for _, s := range samples {
		e := float64(s.Ready) - (b*s.At.Sub(t0).Seconds() + a)
		r += e * e
	}
	if b == 0 {
		return 0
	}
	if r == 0 {
		return math.Copysign(math.Inf(1), b)
	}
	return b / math.Sqrt(r/(n-2)/sxx)
}

// mean is the mean ready count of the samples.
func mean(samples []tasks.Sample) float64 {
	if len(samples) == 0 {
		return 0
	}
	var sum float64
	for _, s := range samples {
		sum += float64(s.Ready)
	}
	return sum / float64(len(samples))
}

// longlived is the Ruby daemon's autoscaler with its quirks fixed. It
// decides on the samples it has once there are minDecision of them (or its
// whole window, if smaller), the last window of them; it adds a
// worker when the backlog's mean is above 1, its trend is not falling and
// messages are ready now.
// An extra worker (beyond Min) idle for IdleTimeout goes. It counts the
// pool's own workers, not the broker's consumers, and the pool clamps its
// answer to [Min, Max].
type longlived struct {
	// window is how many samples make a decision; defaults to sampleSize.
	window int
}

func (l longlived) Decide(_ context.Context, s tasks.Stats) (int, error) {
	if s.Workers > s.Min {
		for _, idle := range s.Idle {
			if s.IdleTimeout > 0 && idle >= s.IdleTimeout {
				return s.Workers - 1, nil
			}
		}
	}
	window := l.window
	if window <= 0 {
		window = sampleSize
	}
	if len(s.Samples) < min(window, minDecision) {
		return s.Workers, nil
	}
	recent := s.Samples[max(0, len(s.Samples)-window):]
	// Nothing ready now: a worker more would have nothing to take. The
	// Ruby daemon went on adding workers while a cleared backlog was still
	// in its window's mean, and each of them idled out again.
	if recent[len(recent)-1].Ready == 0 {
		return s.Workers, nil
	}
	if mean(recent) > 1 && !(trend(recent) < trendThreshold) {
		return s.Workers + 1, nil
	}
	return s.Workers, nil
}

// fill is oneshot's decision: every worker it may have.
type fill struct{}

func (fill) Decide(_ context.Context, s tasks.Stats) (int, error) { return s.Max, nil }

// clamp bounds a decision to the pool's limits.
func clamp(n, lo, hi int) int { return max(lo, min(n, hi)) }

// throttle spaces worker starts after failures: the Ruby daemon's
// ln(n) × factor seconds, n rising by one on every failed exit and falling
// by one on every clean one, clamped to [0, limit].
type throttle struct {
	n         int
	limit     int
	factor    float64
	lastStart time.Time
}

// delay is how long after the last start the next one must wait.
func (t *throttle) delay() time.Duration {
	if t.n <= 0 {
		return 0
	}
	return time.Duration(math.Log(float64(t.n)) * t.factor * float64(time.Second))
}

// allows reports whether a worker may start at now.
func (t *throttle) allows(now time.Time) bool { return now.Sub(t.lastStart) >= t.delay() }

func (t *throttle) started(now time.Time) { t.lastStart = now }

func (t *throttle) exited(failed bool) {
	if failed {
		t.n = min(t.n+1, t.limit)
	} else {
		t.n = max(t.n-1, 0)
	}
}
