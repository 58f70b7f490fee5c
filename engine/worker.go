package engine

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"
)

// threadWorker is a worker in the daemon's own process: one subscription
// whose messages it handles one at a time.
type threadWorker struct {
	id         int
	pool       *pool
	cancel     context.CancelFunc
	working    atomic.Bool
	lastActive atomic.Int64 // unix nanoseconds
}

func (w *threadWorker) stop()      { w.cancel() }
func (w *threadWorker) busy() bool { return w.working.Load() }

func (w *threadWorker) idle(now time.Time) time.Duration {
	if w.busy() {
		return 0
	}
	return now.Sub(time.Unix(0, w.lastActive.Load()))
}

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
	for msg := range msgs {
		if !p.begin(ctx, msg) {
			msg.Nack()
			continue
		}
		w.working.Store(true)
		h := p.run.handle(hard, msg)
		p.observe(h)
		p.run.logOutcome(h)
		w.lastActive.Store(time.Now().UnixNano())
		w.working.Store(false)
	}
	if ctx.Err() == nil {
		return errSubscriptionEnded
	}
	return nil
}
