package engine

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/tasks"
)

// budgetRetry is how long a worker waits before asking the broker again
// for a start it could not claim (the broker is unreachable, or its disk
// full): the message it holds waits, neither dropped nor retried.
const budgetRetry = time.Second

// awaitStart blocks until spec's rate limit lets one more message start,
// and reports false when ctx ended first. waiting counts the workers that
// hold a message waiting for its start.
func awaitStart(ctx context.Context, b broker.Broker, spec tasks.Spec, log *slog.Logger, waiting *atomic.Int64) bool {
	if spec.RateLimit.IsZero() {
		return true
	}
	waiting.Add(1)
	defer waiting.Add(-1)
	warned := false
	for {
		err := b.Budgets().Wait(ctx, spec.Name, spec.Queue, spec.RateLimit)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if !warned {
			log.Warn("rate limit: no start claimed; the message waits", "err", err)
			warned = true
		}
		select {
		case <-time.After(budgetRetry):
		case <-ctx.Done():
			return false
		}
	}
}
