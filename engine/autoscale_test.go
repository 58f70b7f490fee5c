package engine

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/symphony-go/symphony/tasks"
)

// samples spaces values one second apart, as the Ruby specs froze time.
func samples(values ...int) []tasks.Sample {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	out := make([]tasks.Sample, len(values))
	for i, v := range values {
		out[i] = tasks.Sample{At: t0.Add(time.Duration(i) * time.Second), Ready: v}
	}
	return out
}

// The Ruby daemon's statistics vectors (reference/symphony-ruby.md §2.4).
func TestTrendMatchesTheRubyDaemon(t *testing.T) {
	t.Parallel()
	cases := []struct {
		values []int
		want   float64
	}{
		{[]int{1, 2, 2, 3, 3, 3, 4}, 6.708},
		{[]int{4, 3, 3, 2, 2, 2, 1}, -6.708},
		{[]int{1, 2, 222, 3, 2, 3, 2}, -0.456}, // a spike is not a rising backlog
		{[]int{4, 3, 3, 2, 2, 2, 1, 1, 0, 0}, -12.57},
		{[]int{4, 4, 4, 5}, 1.73},
	}
	for _, c := range cases {
		if got := trend(samples(c.values...)); math.Abs(got-c.want) > 0.005 {
			t.Errorf("trend(%v) = %.3f, want %.3f", c.values, got, c.want)
		}
	}
}

func TestTrendEdges(t *testing.T) {
	t.Parallel()
	if got := trend(samples(5, 5, 5, 5)); got != 0 {
		t.Errorf("flat backlog: %v, want 0 (the Ruby daemon got NaN)", got)
	}
	if got := trend(samples(1, 2, 3, 4)); !math.IsInf(got, 1) {
		t.Errorf("perfect climb: %v, want +Inf", got)
	}
	if got := trend(samples(4, 3, 2, 1)); !math.IsInf(got, -1) {
		t.Errorf("perfect fall: %v, want -Inf", got)
	}
	if got := trend(samples(1, 2)); got != 0 {
		t.Errorf("two samples: %v, want 0 (no degrees of freedom)", got)
	}
	same := samples(1, 2, 3)
	for i := range same {
		same[i].At = same[0].At
	}
	if got := trend(same); got != 0 {
		t.Errorf("samples at one instant: %v", got)
	}
}

// scale feeds values to the longlived decision one sample per tick, as the
// Ruby longlived spec does, with the window the spec sets, and returns the
// pool size after every tick.
func scale(window, min, max int, values ...int) []int {
	l := longlived{window: window}
	workers := min
	var all []tasks.Sample
	var sizes []int
	for _, s := range samples(values...) {
		all = append(all, s)
		want, _ := l.Decide(context.Background(), tasks.Stats{Samples: all, Workers: workers, Min: min, Max: max,
			Busy: workers, Idle: make([]time.Duration, workers)})
		target := clamp(want, min, max)
		switch { // the pool moves one worker per tick
		case target > workers:
			workers++
		case target < workers:
			workers--
		}
		sizes = append(sizes, workers)
	}
	return sizes
}

// The Ruby daemon's longlived spec (reference/symphony-ruby.md §7): max 2,
// one worker to start, time frozen at one-second steps.
func TestLonglivedScalesLikeTheRubyDaemon(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		window int
		values []int
		want   int
	}{
		{"upward samples add a worker", 7, []int{1, 2, 2, 3, 3, 3, 4}, 2},
		{"a steady backlog adds a worker", 4, []int{4, 4, 4, 5, 5, 4, 4}, 2},
		{"it stops at max", 7, []int{1, 2, 2, 3, 3, 3, 4, 4, 4, 5}, 2},
		{"a backlog at zero keeps one", 4, []int{0, 1, 0, 0, 0, 0, 1, 0, 0}, 1},
		{"a falling backlog keeps one", 10, []int{4, 3, 3, 2, 2, 2, 1, 1, 0, 0}, 1},
	}
	for _, c := range cases {
		sizes := scale(c.window, 1, 2, c.values...)
		if got := sizes[len(sizes)-1]; got != c.want {
			t.Errorf("%s: %d workers (sizes %v), want %d", c.name, got, sizes, c.want)
		}
	}
}

// The cases the Ruby daemon got wrong.
func TestLonglivedQuirksFixed(t *testing.T) {
	t.Parallel()
	// Nothing is decided before a window smaller than ten is full.
	if sizes := scale(5, 1, 4, 9, 9, 9, 9); sizes[3] != 1 {
		t.Errorf("decided before the window was full: %v", sizes)
	}
	// A flat backlog above 1 is work not draining: scale up, one per tick,
	// and never past max (Ruby compared max with the broker's consumers and
	// could overshoot by one per tick).
	if got := scale(3, 1, 3, 7, 7, 7, 7, 7, 7, 7, 7); got[len(got)-1] != 3 || got[2] != 2 || got[3] != 3 {
		t.Errorf("flat backlog: %v, want to reach 3 one worker per tick and stay", got)
	}
	// With the default window of 100 samples, a decision comes after ten,
	// not a hundred (Ruby: 10 s at the default interval).
	if got := scale(0, 1, 4, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9); got[8] != 1 || got[9] != 2 || got[10] != 3 {
		t.Errorf("a backlog from the start, default window: %v, want the first worker added at the tenth sample", got)
	}
	// A backlog that has just cleared adds no worker, though its mean over
	// the window is still high and its trend not steep enough to stop the
	// Ruby daemon (here about -1.7).
	if got := scale(4, 1, 4, 9, 9, 9, 9, 0, 0); got[3] != 2 || got[len(got)-1] != 2 {
		t.Errorf("a cleared backlog: %v, want one worker added for the backlog and none after", got)
	}
	// min_workers is honoured from the start and never undercut.
	if got := scale(3, 2, 4, 0, 0, 0, 0, 0); got[0] != 2 || got[len(got)-1] != 2 {
		t.Errorf("min 2: %v", got)
	}
	// max 1 means one worker whatever the backlog (Ruby started the first
	// worker even at max 0; max 0 is a load error here).
	if got := scale(3, 1, 1, 50, 60, 70, 80); got[len(got)-1] != 1 {
		t.Errorf("max 1: %v", got)
	}
}

func TestLonglivedShrinksIdleExtraWorkers(t *testing.T) {
	t.Parallel()
	l := longlived{window: 3}
	stats := tasks.Stats{Workers: 3, Min: 1, Max: 3, IdleTimeout: 10 * time.Second,
		Idle: []time.Duration{0, 3 * time.Second, 11 * time.Second}, Busy: 1}
	if got, _ := l.Decide(context.Background(), stats); got != 2 {
		t.Errorf("an extra worker idle past idle_timeout: %d, want 2", got)
	}
	stats.Idle = []time.Duration{0, 3 * time.Second, 9 * time.Second}
	if got, _ := l.Decide(context.Background(), stats); got != 3 {
		t.Errorf("no worker idle long enough: %d, want 3", got)
	}
	stats = tasks.Stats{Workers: 1, Min: 1, Max: 3, IdleTimeout: time.Second, Idle: []time.Duration{time.Hour}}
	if got, _ := l.Decide(context.Background(), stats); got != 1 {
		t.Errorf("the min_workers worker stopped when idle: %d", got)
	}
}

// The Ruby daemon's throttle numbers (reference/symphony-ruby.md §2.2).
func TestThrottleMatchesTheRubyDaemon(t *testing.T) {
	t.Parallel()
	want := map[int]float64{0: 0, 1: 0, 2: 0.69, 3: 1.10, 4: 1.39, 5: 1.61, 8: 2.08, 16: 2.77}
	for n, secs := range want {
		th := throttle{n: n, limit: 16, factor: 1}
		if got := th.delay().Seconds(); math.Abs(got-secs) > 0.005 {
			t.Errorf("throttle %d: %.2fs, want %.2fs", n, got, secs)
		}
	}
	th := throttle{limit: 16, factor: 1}
	for range 20 {
		th.exited(true)
	}
	if th.n != 16 || math.Abs(th.delay().Seconds()-2.77) > 0.005 {
		t.Errorf("after 20 failures: n %d, delay %s; want the limit 16, 2.77s", th.n, th.delay())
	}
	th.exited(false)
	if th.n != 15 {
		t.Errorf("a clean exit: n %d, want 15", th.n)
	}
	for range 30 {
		th.exited(false)
	}
	if th.n != 0 || th.delay() != 0 {
		t.Errorf("after clean exits: n %d", th.n)
	}
	th = throttle{n: 5, limit: 16, factor: 2}
	if got := th.delay().Seconds(); math.Abs(got-2*1.609) > 0.005 {
		t.Errorf("factor 2: %.3fs", got)
	}
}

func TestThrottleSpacesStarts(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	th := throttle{limit: 16, factor: 1, lastStart: t0}
	// No failures, no delay: even at the instant of the last start, as
	// when oneshot fills every place in one step.
	if !th.allows(t0) {
		t.Error("no failures: a start at the same instant is throttled")
	}
	th.exited(true)
	th.exited(true) // n = 2: 0.69s
	th.started(t0)
	if th.allows(t0.Add(600 * time.Millisecond)) {
		t.Error("started again 0.6s after, within 0.69s")
	}
	if !th.allows(t0.Add(700 * time.Millisecond)) {
		t.Error("throttled 0.7s after, past 0.69s")
	}
}

func TestFillAsksForMax(t *testing.T) {
	t.Parallel()
	if got, _ := (fill{}).Decide(context.Background(), tasks.Stats{Workers: 1, Min: 1, Max: 5}); got != 5 {
		t.Errorf("oneshot asks for %d, want 5", got)
	}
}
