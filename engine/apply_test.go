package engine

import (
	"context"
	"testing"

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
