package engine

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

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

// slowDeclares is the embedded broker, whose Declare waits, once armed,
// until the test lets it go: a slow broker in the middle of a reload.
type slowDeclares struct {
	broker.Broker
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (b *slowDeclares) Declare(ctx context.Context, q broker.Queue) error {
	if b.armed.CompareAndSwap(true, false) {
		close(b.entered)
		<-b.release
	}
	return b.Broker.Declare(ctx, q)
}

// runEngine runs an engine on b until the test ends.
func runEngine(t *testing.T, b broker.Broker, ts ...tasks.Task) *Engine {
	t.Helper()
	e, err := New(Config{Broker: b, Registry: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler)}, ts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	<-e.Ready()
	return e
}

func openSQLite(t *testing.T) broker.Broker {
	t.Helper()
	db, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "engine.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// The engine's lock is not held while a reload talks to the broker: status
// answers while a declaration takes its time.
func TestStatusAnswersDuringASlowReload(t *testing.T) {
	t.Parallel()
	b := &slowDeclares{Broker: openSQLite(t), entered: make(chan struct{}), release: make(chan struct{})}
	ok := handlerFunc(func(context.Context, *tasks.Delivery) tasks.Result { return tasks.Result{Verdict: tasks.Succeeded} })
	e := runEngine(t, b, tasks.Task{Spec: spec("a", "ka"), Handler: ok})
	b.armed.Store(true)
	applied := make(chan error, 1)
	go func() {
		applied <- e.Apply(context.Background(), []tasks.Task{{Spec: spec("a", "ka", "kb"), Handler: ok}})
	}()
	<-b.entered
	status := make(chan Status, 1)
	go func() { status <- e.Status() }()
	select {
	case st := <-status:
		if len(st.Tasks) != 1 || st.Generation != 1 {
			t.Errorf("status during the reload: %+v", st)
		}
	case <-time.After(wait):
		t.Fatal("status did not answer while the reload declared a queue")
	}
	close(b.release)
	if err := <-applied; err != nil {
		t.Fatal(err)
	}
	if st := e.Status(); st.Generation != 2 {
		t.Errorf("after the reload: generation %d", st.Generation)
	}
}

// routable reports whether a key reaches a queue, by publishing to it.
func routable(t *testing.T, b broker.Broker, key string) bool {
	t.Helper()
	msg, err := broker.NewMessage(tasks.Publication{RoutingKey: key, Body: []byte("x"), ContentType: "text/plain"})
	if err != nil {
		t.Fatal(err)
	}
	err = b.Publish(key, msg)
	if err != nil && !errors.Is(err, broker.ErrUnroutable) {
		t.Fatal(err)
	}
	return err == nil
}

// A reload that the broker refuses halfway (here, a queue's max_priority,
// which neither broker can change) leaves the bindings as they were, also
// those of the tasks it had handled before.
func TestApplyThatFailsLeavesTheBindings(t *testing.T) {
	t.Parallel()
	b := openSQLite(t)
	ok := handlerFunc(func(context.Context, *tasks.Delivery) tasks.Result { return tasks.Result{Verdict: tasks.Succeeded} })
	e := runEngine(t, b, tasks.Task{Spec: spec("a", "ka"), Handler: ok}, tasks.Task{Spec: spec("b", "kb"), Handler: ok})
	e.mu.Lock()
	before := e.current["a"]
	e.mu.Unlock()
	a2 := tasks.Task{Spec: spec("a", "ka2"), Handler: ok}
	b2 := tasks.Task{Spec: spec("b", "kb"), Handler: ok}
	b2.Spec.MaxPriority = 5
	c := tasks.Task{Spec: spec("c", "kc"), Handler: ok}
	err := e.Apply(context.Background(), []tasks.Task{a2, b2, c})
	if !errors.Is(err, broker.ErrPriorityChange) {
		t.Fatalf("Apply() = %v, want the broker's refusal", err)
	}
	for key, want := range map[string]bool{"ka": true, "kb": true, "ka2": false, "kc": false} {
		if got := routable(t, b, key); got != want {
			t.Errorf("after the failed reload, %s routable: %v, want %v", key, got, want)
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.current["a"] != before || e.current["c"] != nil || e.generation != 1 {
		t.Errorf("after the failed reload: tasks %v, generation %d", e.order, e.generation)
	}
}
