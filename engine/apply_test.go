package engine

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/broker/sqlite"
	"github.com/symphony-go/symphony/tasks"
)

// A task renamed with its queue kept: the old task goes, the new one
// consumes the same queue, and the queue keeps its bindings.
func TestApplyKeepsTheBindingsOfAQueueStillInUse(t *testing.T) {
	t.Parallel()
	ok := handlerFunc(func(context.Context, *tasks.Delivery) tasks.Result {
		return tasks.Result{Verdict: tasks.Succeeded}
	})
	r := newRig(t, Config{}, tasks.Task{Spec: spec("a", "k"), Handler: ok})
	renamed := spec("b", "k")
	renamed.Queue = "a"
	if err := r.engine.Apply(context.Background(), []tasks.Task{{Spec: renamed, Handler: ok}}); err != nil {
		t.Fatal(err)
	}
	id := r.publish("k", "after the rename", nil)
	r.events.waitFor(t, 1, "message acked", map[string]string{"message_id": id, "task": "b"})
}

// Two changed tasks that swap queues: each queue is still in use, so
// neither loses the bindings its new task gave it when the old versions
// finish draining.
func TestApplySwappingQueuesKeepsBothBound(t *testing.T) {
	t.Parallel()
	ok := handlerFunc(func(context.Context, *tasks.Delivery) tasks.Result {
		return tasks.Result{Verdict: tasks.Succeeded}
	})
	x, y := spec("x", "kx"), spec("y", "ky")
	x.Queue, y.Queue = "qx", "qy"
	r := newRig(t, Config{}, tasks.Task{Spec: x, Handler: ok}, tasks.Task{Spec: y, Handler: ok})
	r.engine.mu.Lock()
	olds := []*pool{r.engine.current["x"], r.engine.current["y"]}
	r.engine.mu.Unlock()
	x2, y2 := x, y
	x2.Queue, y2.Queue = "qy", "qx"
	if err := r.engine.Apply(context.Background(), []tasks.Task{{Spec: x2, Handler: ok}, {Spec: y2, Handler: ok}}); err != nil {
		t.Fatal(err)
	}
	for _, p := range olds {
		<-p.done
	}
	for _, key := range []string{"kx", "ky"} {
		id := r.publish(key, "after the swap", nil)
		r.events.waitFor(t, 1, "message acked", map[string]string{"message_id": id})
	}
}

// subscribersRunOut is the embedded broker, whose subscribers run out
// after a number of them: a broker failing in the middle of a reload.
type subscribersRunOut struct {
	broker.Broker
	left atomic.Int64
}

func (b *subscribersRunOut) Subscriber(o broker.ConsumeOptions) (message.Subscriber, error) {
	if b.left.Add(-1) < 0 {
		return nil, errors.New("no more subscribers")
	}
	return b.Broker.Subscriber(o)
}

// A reload whose second new pool cannot subscribe fails with every
// running task as it was: none switched, none added.
func TestApplyThatFailsChangesNothing(t *testing.T) {
	t.Parallel()
	db, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "engine.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	b := &subscribersRunOut{Broker: db}
	b.left.Store(1 << 20)
	ok := handlerFunc(func(context.Context, *tasks.Delivery) tasks.Result {
		return tasks.Result{Verdict: tasks.Succeeded}
	})
	a := tasks.Task{Spec: spec("a", "ka"), Handler: ok}
	e, err := New(Config{Broker: b, Registry: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler)}, []tasks.Task{a})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-e.Ready()
	e.mu.Lock()
	before := e.current["a"]
	generation := e.generation
	e.mu.Unlock()

	changed := tasks.Task{Spec: spec("a", "ka", "kb"), Handler: ok}
	added := tasks.Task{Spec: spec("c", "kc"), Handler: ok}
	b.left.Store(1) // the first new pool subscribes, the second cannot
	if err := e.Apply(context.Background(), []tasks.Task{changed, added}); err == nil {
		t.Fatal("the reload succeeded")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.current["a"] != before || e.current["c"] != nil || len(e.current) != 1 || e.generation != generation {
		t.Errorf("after a failed reload: tasks %v, generation %d (was %d), a's pool replaced: %v",
			e.order, e.generation, generation, e.current["a"] != before)
	}
}
