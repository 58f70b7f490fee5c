package cli

import (
	"context"
	"log/slog"

	"github.com/symphony-go/symphony/engine"
	"github.com/symphony-go/symphony/starlarklib"
)

// reloader turns reload requests into new task sets for the engine, one at
// a time: it loads and validates every file off to the side and hands the
// engine the result only when all of it loaded.
type reloader struct {
	roots  []string
	only   []string
	engine *engine.Engine
	log    *slog.Logger
}

// run serves reload requests until ctx ends; each request names its
// trigger.
func (r *reloader) run(ctx context.Context, requests <-chan string) {
	for {
		select {
		case <-ctx.Done():
			return
		case trigger := <-requests:
			r.reload(ctx, trigger)
		}
	}
}

func (r *reloader) reload(ctx context.Context, trigger string) {
	log := r.log.With("trigger", trigger)
	ts, err := starlarklib.Load(r.roots, starlarklib.Options{Logger: r.log})
	if err == nil {
		ts, err = selectTasks(ts, r.only)
	}
	if err != nil {
		log.Error("reload failed: the running tasks stay", "err", err)
		return
	}
	if err := r.engine.Apply(ctx, ts); err != nil {
		log.Error("reload failed: the running tasks stay", "err", err)
		return
	}
	log.Info("reloaded", "tasks", len(ts))
}
