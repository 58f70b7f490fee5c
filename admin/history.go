package admin

import (
	"sync"
	"time"

	"github.com/symphony-go/symphony/engine"
)

// Point is one sample of a task for the dashboard's charts.
type Point struct {
	// At is when it was taken, in Unix milliseconds.
	At int64 `json:"t"`
	// Rate is messages handled per second since the previous sample, by
	// any outcome; Failed the part of them retried or dead-lettered.
	Rate   float64 `json:"rate"`
	Failed float64 `json:"failed"`
	// Depth is the task's backlog: messages ready in its queue.
	Depth   int64 `json:"depth"`
	Workers int   `json:"workers"`
	Busy    int   `json:"busy"`
}

// History is what GET /history answers: each task's points, oldest first.
type History struct {
	Every float64            `json:"every_seconds"`
	Keep  float64            `json:"keep_seconds"`
	Tasks map[string][]Point `json:"tasks"`
}

// history keeps each task's last samples in a ring, in memory: at the
// default 2s over 15 minutes, 450 points a task.
type history struct {
	every, keep time.Duration
	size        int

	mu      sync.Mutex
	series  map[string]*series
	latest  map[string]Point
	changed chan struct{}
}

type series struct {
	points      []Point // a ring once full
	next        int
	full        bool
	handled     int // the task's count of messages at the last sample
	failed      int
	lastAt      time.Time
	seenInCycle bool
}

func newHistory(every, keep time.Duration) *history {
	return &history{every: every, keep: keep, size: max(int(keep/every), 2),
		series: map[string]*series{}, changed: make(chan struct{})}
}

// add samples a status taken at now. A task that left the status leaves
// the history with it.
func (h *history) add(st engine.Status, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.series {
		s.seenInCycle = false
	}
	latest := make(map[string]Point, len(st.Tasks))
	for _, t := range st.Tasks {
		handled := t.Messages["ack"] + t.Messages["retry"] + t.Messages["dead"]
		failed := t.Messages["retry"] + t.Messages["dead"]
		s := h.series[t.Name]
		p := Point{At: now.UnixMilli(), Depth: t.QueueDepth, Workers: t.Workers.Now, Busy: t.Workers.Busy}
		if s == nil {
			// A task's counts start at zero with the daemon (or with the
			// reload that added it, a little later): its first point's
			// rate is over the daemon's life so far.
			s = &series{points: make([]Point, 0, h.size), lastAt: st.StartedAt}
			h.series[t.Name] = s
		}
		if dt := now.Sub(s.lastAt).Seconds(); dt > 0 && !s.lastAt.IsZero() {
			// Counts only grow; a smaller one is a new daemon's.
			p.Rate = max(float64(handled-s.handled), 0) / dt
			p.Failed = max(float64(failed-s.failed), 0) / dt
		}
		s.handled, s.failed, s.lastAt, s.seenInCycle = handled, failed, now, true
		if len(s.points) < h.size {
			s.points = append(s.points, p)
		} else {
			s.points[s.next] = p
			s.next = (s.next + 1) % h.size
			s.full = true
		}
		latest[t.Name] = p
	}
	for name, s := range h.series {
		if !s.seenInCycle {
			delete(h.series, name)
		}
	}
	h.latest = latest
	close(h.changed)
	h.changed = make(chan struct{})
}

// snapshot copies every series, oldest point first.
func (h *history) snapshot() History {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := History{Every: h.every.Seconds(), Keep: h.keep.Seconds(), Tasks: make(map[string][]Point, len(h.series))}
	for name, s := range h.series {
		ps := make([]Point, 0, len(s.points))
		if s.full {
			ps = append(ps, s.points[s.next:]...)
			ps = append(ps, s.points[:s.next]...)
		} else {
			ps = append(ps, s.points...)
		}
		out.Tasks[name] = ps
	}
	return out
}

// last returns the newest point of every task and a channel closed at the
// next sample.
func (h *history) last() (map[string]Point, <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.latest, h.changed
}
