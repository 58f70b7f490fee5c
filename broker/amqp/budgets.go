package amqp

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/tasks"
)

// RabbitMQ keeps no counter that processes could claim starts from
// without a round trip per start, so a rate limit is split: each process
// paces its starts with a token bucket of its share, the limit times the
// number of consumers it has of the task's queue over the number RabbitMQ
// reports (a passive queue.declare), checked again every Rebalance. Every
// process that consumes the queue does the same, so the shares add up to
// the limit; while processes come and go the sum is off until each has
// checked again, by at most the share of those that came or went, for at
// most Rebalance.

// Rebalance is how often a process counts the consumers of a
// rate-limited queue again.
const Rebalance = 2 * time.Second

// split is this process's share of one task's limit.
type split struct {
	mu      sync.Mutex
	limiter *rate.Limiter
	limit   tasks.Rate
	queue   string
	share   float64 // of the limit, 0..1
	checked time.Time
}

// Budgets returns the broker's rate limits, each split between the
// processes that consume its queue.
func (b *Broker) Budgets() broker.Budgets { return budgets{b} }

type budgets struct{ b *Broker }

func (s budgets) Wait(ctx context.Context, task, queue string, limit tasks.Rate) error {
	if limit.IsZero() {
		return nil
	}
	sp := s.b.split(task)
	sp.mu.Lock()
	if sp.limit != limit || sp.queue != queue || time.Since(sp.checked) >= Rebalance {
		s.b.rebalance(ctx, sp, queue, limit)
	}
	r := sp.limiter.Reserve()
	sp.mu.Unlock()
	// Not Limiter.Wait, which gives up at once on a context whose
	// deadline comes before the start: a worker waits until its context
	// ends, whatever it is.
	t := time.NewTimer(r.Delay())
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		r.Cancel()
		return ctx.Err()
	}
}

func (b *Broker) split(task string) *split {
	b.mu.Lock()
	defer b.mu.Unlock()
	sp, ok := b.splits[task]
	if !ok {
		sp = &split{limiter: rate.NewLimiter(0, 1)}
		b.splits[task] = sp
	}
	return sp
}

// consuming counts a subscription of queue in (1) or out (-1).
func (b *Broker) consuming(queue string, add int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.consumers[queue] += add
	if b.consumers[queue] <= 0 {
		delete(b.consumers, queue)
	}
}

// rebalance sets sp's share of limit from the consumers of queue now. A
// count that fails keeps the share as it was (a first one takes the
// whole limit, as a process alone would), and is tried again at the next
// check.
func (b *Broker) rebalance(ctx context.Context, sp *split, queue string, limit tasks.Rate) {
	b.mu.Lock()
	own := b.consumers[queue]
	b.mu.Unlock()
	share := sp.share
	ctx, cancel := b.deadline(ctx)
	st, err := b.inspect(ctx, queue)
	cancel()
	switch {
	case err == nil:
		// RabbitMQ may not count a consumer just made yet; a process
		// never counts itself out.
		own = max(own, 1)
		share = float64(own) / float64(max(st.Consumers, own))
	case share == 0:
		share = 1
	}
	if share != sp.share || limit != sp.limit {
		perSecond := limit.PerSecond() * share
		sp.limiter.SetLimit(rate.Limit(perSecond))
		// Two at least: a start that comes late (its worker was still
		// acking the last message, or the machine was busy) is made up
		// by the next instead of lost.
		sp.limiter.SetBurst(max(2, int(perSecond*broker.Tolerance(limit).Seconds())))
	}
	sp.share, sp.limit, sp.queue, sp.checked = share, limit, queue, time.Now()
	if err != nil {
		b.log.Warn("rate limit: cannot count the consumers of the queue; keeping this process's share", "queue", queue,
			"share", share, "err", err)
	}
}
