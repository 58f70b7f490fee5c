package engine

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"
)

// activity is whether a worker handles a message now, and since when it
// has not: what the pool's scaling decisions read of every worker.
type activity struct {
	working    atomic.Bool
	lastActive atomic.Int64 // unix nanoseconds
}

func newActivity() *activity {
	a := &activity{}
	a.lastActive.Store(time.Now().UnixNano())
	return a
}

func (a *activity) begin() { a.working.Store(true) }

func (a *activity) end() {
	a.lastActive.Store(time.Now().UnixNano())
	a.working.Store(false)
}

func (a *activity) busy() bool { return a.working.Load() }

func (a *activity) idle(now time.Time) time.Duration {
	if a.busy() {
		return 0
	}
	return now.Sub(time.Unix(0, a.lastActive.Load()))
}

// threadWorker is a worker in the daemon's own process: one subscription
// whose messages it handles one at a time.
type threadWorker struct {
	*activity
	pool   *pool
	cancel context.CancelFunc
}

func (w *threadWorker) stop() { w.cancel() }

// work subscribes and handles messages until ctx stops it (nil) or the
// subscription fails (an error: the pool replaces the worker through its
// throttle).
func (w *threadWorker) work(ctx, hard context.Context) error {
	p := w.pool
	msgs, err := p.sub.Subscribe(ctx, p.task.Spec.Queue)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("subscribe to queue %s: %w", p.task.Spec.Queue, err)
	}
	p.workerSubscribed()
	var c caller
	defer c.stop()
	for msg := range msgs {
		if !p.begin(ctx, msg) {
			msg.Nack()
			continue
		}
		w.begin()
		h := p.run.handle(hard, msg, &c)
		p.observe(h)
		p.run.logOutcome(h)
		w.end()
	}
	if ctx.Err() == nil {
		return errSubscriptionEnded
	}
	return nil
}
