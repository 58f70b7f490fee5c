package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/schedule"
	"github.com/symphony-go/symphony/tasks"
)

// ScheduleStatus is what status shows of a task's schedule.
type ScheduleStatus struct {
	Expression string `json:"expression"`
	// Leading: this daemon fires the ticks now (on RabbitMQ one daemon
	// does; on the embedded broker every daemon may, and the broker lets
	// one win each tick).
	Leading bool       `json:"leading"`
	Next    *time.Time `json:"next_tick"`
	Last    *time.Time `json:"last_tick"`
}

// tickState is what this daemon knows of a schedule; it outlives pools.
type tickState struct {
	mu         sync.Mutex
	expression string
	leading    bool
	next, last time.Time
}

// clear forgets a schedule the task no longer has.
func (s *tickState) clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expression, s.leading, s.next, s.last = "", false, time.Time{}, time.Time{}
}

func (s *tickState) status() *ScheduleStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.expression == "" {
		return nil
	}
	out := &ScheduleStatus{Expression: s.expression, Leading: s.leading}
	if !s.next.IsZero() {
		n := s.next.UTC()
		out.Next = &n
	}
	if !s.last.IsZero() {
		l := s.last.UTC()
		out.Last = &l
	}
	return out
}

// scheduler fires the ticks of a task's schedule while its pool takes
// messages. What to do is decided by schedule.Decide from the record on
// the broker; the record's swap is the claim, so a tick fires once
// however many daemons run the task.
type scheduler struct {
	name     string
	key      string
	sched    schedule.Schedule
	loc      *time.Location
	broker   broker.Broker
	state    *tickState
	log      *slog.Logger
	fired    prometheus.Counter
	nextG    prometheus.Gauge
	lastG    prometheus.Gauge
	now      func() time.Time
	retryMin time.Duration
}

func newScheduler(p *pool) (*scheduler, error) {
	spec := p.task.Spec
	sched, err := schedule.Parse(spec.Schedule)
	if err != nil {
		return nil, fmt.Errorf("schedule of task %s: %w", spec.Name, err)
	}
	m := p.eng.metrics
	s := &scheduler{
		name: spec.Name, key: tasks.TickKey(spec.Name), sched: sched, loc: p.eng.cfg.Location,
		broker: p.eng.cfg.Broker, state: &p.state.tick, log: p.log,
		fired: m.ticks.WithLabelValues(spec.Name), nextG: m.nextTick.WithLabelValues(spec.Name),
		lastG: m.lastTick.WithLabelValues(spec.Name), now: time.Now, retryMin: 100 * time.Millisecond,
	}
	s.state.mu.Lock()
	s.state.expression = sched.String()
	s.state.mu.Unlock()
	return s, nil
}

// run leads the schedule whenever the broker lets it, until ctx ends.
func (s *scheduler) run(ctx context.Context) {
	backoff := time.Duration(0)
	for ctx.Err() == nil {
		s.show(func(t *tickState) { t.leading = false; t.next = s.sched.Next(s.now(), s.loc) })
		l, err := s.broker.Schedules().Lead(ctx, s.name)
		if err == nil {
			s.show(func(t *tickState) { t.leading = true })
			err = s.lead(ctx, l)
			l.Release()
		}
		if ctx.Err() != nil {
			break
		}
		backoff = min(max(2*backoff, s.retryMin), 5*time.Second)
		s.log.Warn("schedule: lost the lead; trying again", "err", err, "retry_in", backoff.String())
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
	}
	s.show(func(t *tickState) { t.leading = false })
}

// lead fires the schedule's ticks while l lasts.
func (s *scheduler) lead(ctx context.Context, l broker.Lead) error {
	for {
		rec, err := l.Record(ctx)
		if err != nil {
			return err
		}
		step := schedule.Decide(s.sched, s.loc, rec, s.now())
		if rec.Schedule == s.sched.Identity(s.loc) {
			s.seen(rec.Last)
		}
		switch step.Action {
		case schedule.Restart:
			err = l.Swap(ctx, rec, step.Record, "", nil)
			if err == nil && !rec.IsZero() {
				s.log.Info("schedule changed: it fires from its next tick on", "schedule", s.sched.String(), "next_tick", step.Tick)
			}
		case schedule.Fire:
			var msg *message.Message
			if msg, err = s.tick(step.Tick); err != nil {
				return err
			}
			if err = l.Swap(ctx, rec, step.Record, s.key, msg); err == nil {
				s.fired.Inc()
				s.seen(step.Tick)
				s.log.Info("tick fired", "scheduled_at", step.Tick.Format(time.RFC3339), "late", s.now().Sub(step.Tick).String())
			}
		case schedule.Wait:
			s.show(func(t *tickState) { t.next = step.Tick })
			s.nextG.Set(float64(step.Tick.Unix()))
			timer := time.NewTimer(step.Tick.Sub(s.now()))
			select {
			case <-timer.C:
			case <-ctx.Done():
				timer.Stop()
				return context.Cause(ctx)
			case <-l.Lost():
				timer.Stop()
				return errors.New("the broker connection dropped")
			}
			continue
		}
		if err != nil && !errors.Is(err, broker.ErrTickTaken) {
			return err
		}
	}
}

// tick is the message of the tick at t.
func (s *scheduler) tick(t time.Time) (*message.Message, error) {
	body, err := json.Marshal(map[string]string{"scheduled_at": t.In(s.loc).Format(time.RFC3339)})
	if err != nil {
		return nil, err
	}
	return broker.NewMessage(tasks.Publication{RoutingKey: s.key, Body: body, ContentType: "application/json"})
}

// seen notes a tick fired, by this daemon or another.
func (s *scheduler) seen(t time.Time) {
	s.show(func(st *tickState) {
		if t.After(st.last) {
			st.last = t
		}
	})
	s.lastG.Set(float64(s.state.lastUnix()))
}

func (s *tickState) lastUnix() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last.Unix()
}

// handled notes a tick this daemon handled, which another may have fired.
func (s *tickState) handled(d *tasks.Delivery) {
	var body struct {
		At time.Time `json:"scheduled_at"`
	}
	if json.Unmarshal(d.Body, &body) != nil || body.At.IsZero() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if body.At.After(s.last) {
		s.last = body.At
	}
}

func (s *scheduler) show(f func(*tickState)) {
	s.state.mu.Lock()
	f(s.state)
	s.state.mu.Unlock()
}
