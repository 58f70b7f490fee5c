package engine

import (
	"context"
	"testing"
	"time"

	"github.com/symphony-go/symphony/tasks"
)

// stuck is a handler that ignores its context, as a Starlark builtin in
// one long call does, until the test lets it go.
func stuck(release <-chan struct{}) tasks.Handler {
	return handlerFunc(func(context.Context, *tasks.Delivery) tasks.Result {
		<-release
		return tasks.Result{Verdict: tasks.Succeeded}
	})
}

// A run past its timeout is abandoned when it does not stop: its message
// is settled by the timeout action, and the worker goes on.
func TestARunThatIgnoresItsTimeoutIsAbandoned(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	defer close(release)
	s := spec("stuck", "s")
	s.Timeout = 100 * time.Millisecond
	r := newRig(t, Config{}, tasks.Task{Spec: s, Handler: stuck(release)})
	first := r.publish("s", "one", nil)
	second := r.publish("s", "two", nil)
	for _, id := range []string{first, second} {
		r.events.waitFor(t, 1, "run did not stop when cancelled: abandoned, its message settled without it", map[string]string{"message_id": id})
		r.events.waitFor(t, 1, "message dead-lettered", map[string]string{"message_id": id, "reason": tasks.ReasonTimeout})
	}
	if n := r.count("stuck", "dead"); n != 2 {
		t.Errorf("dead count %v, want 2", n)
	}
}

// A shutdown is not held up by a run that ignores its cancellation, even
// when the shutdown timeout passes: the message goes back to the queue.
func TestAShutdownDoesNotWaitForARunThatWillNotStop(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	defer close(release)
	r := newRig(t, Config{ShutdownTimeout: 100 * time.Millisecond}, tasks.Task{Spec: spec("stuck", "s"), Handler: stuck(release)})
	id := r.publish("s", "one", nil)
	r.events.waitFor(t, 1, "message started", map[string]string{"message_id": id})
	if err := r.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	r.events.waitFor(t, 1, "message returned to the queue", map[string]string{"message_id": id, "reason": "shutdown"})
}
