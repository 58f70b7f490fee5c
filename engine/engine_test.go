package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/broker/sqlite"
	"github.com/symphony-go/symphony/tasks"
)

// wait bounds every wait for an event; generous for a slow CI under -race.
const wait = 20 * time.Second

// handlerFunc adapts a function to tasks.Handler.
type handlerFunc func(ctx context.Context, d *tasks.Delivery) tasks.Result

func (f handlerFunc) Handle(ctx context.Context, d *tasks.Delivery) tasks.Result { return f(ctx, d) }

// events is a slog handler that turns the engine's log records into events
// a test can wait for.
type events struct {
	mu      sync.Mutex
	records []slog.Record
	changed chan struct{}
}

func newEvents() *events { return &events{changed: make(chan struct{})} }

func (e *events) Enabled(context.Context, slog.Level) bool { return true }
func (e *events) WithAttrs(as []slog.Attr) slog.Handler    { return &withAttrs{e, as} }
func (e *events) WithGroup(string) slog.Handler            { return e }
func (e *events) Handle(_ context.Context, r slog.Record) error {
	e.add(r)
	return nil
}

func (e *events) add(r slog.Record) {
	e.mu.Lock()
	e.records = append(e.records, r)
	close(e.changed)
	e.changed = make(chan struct{})
	e.mu.Unlock()
}

type withAttrs struct {
	e  *events
	as []slog.Attr
}

func (w *withAttrs) Enabled(context.Context, slog.Level) bool { return true }
func (w *withAttrs) WithAttrs(as []slog.Attr) slog.Handler {
	return &withAttrs{w.e, append(append([]slog.Attr{}, w.as...), as...)}
}
func (w *withAttrs) WithGroup(string) slog.Handler { return w }
func (w *withAttrs) Handle(_ context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(w.as...)
	w.e.add(r)
	return nil
}

func attrs(r slog.Record) map[string]string {
	m := map[string]string{}
	r.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.String(); return true })
	return m
}

// waitFor returns the n-th record (counting from 1) with message msg whose
// attributes include want.
func (e *events) waitFor(t *testing.T, n int, msg string, want map[string]string) map[string]string {
	t.Helper()
	deadline := time.After(wait)
	for {
		e.mu.Lock()
		seen := 0
		for _, r := range e.records {
			if r.Message != msg {
				continue
			}
			a := attrs(r)
			ok := true
			for k, v := range want {
				if a[k] != v {
					ok = false
				}
			}
			if ok {
				if seen++; seen == n {
					e.mu.Unlock()
					return a
				}
			}
		}
		changed := e.changed
		e.mu.Unlock()
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("no %d× %q with %v within %s", n, msg, want, wait)
		}
	}
}

// rig is an engine on a fresh embedded broker.
type rig struct {
	t       *testing.T
	broker  broker.Broker
	engine  *Engine
	events  *events
	reg     *prometheus.Registry
	cancel  context.CancelFunc
	done    chan error
	stopped bool
}

func spec(name string, patterns ...string) tasks.Spec {
	s := tasks.NewSpec(name)
	s.Patterns = patterns
	s.RetryDelay = 10 * time.Millisecond
	s.MaxRetryDelay = 40 * time.Millisecond
	return s
}

func newRig(t *testing.T, cfg Config, ts ...tasks.Task) *rig {
	t.Helper()
	return newRigWith(t, cfg, true, ts...)
}

func newRigWith(t *testing.T, cfg Config, waitReady bool, ts ...tasks.Task) *rig {
	t.Helper()
	ev := newEvents()
	b, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "engine.db"), sqlite.Options{Logger: slog.New(ev)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	cfg.Broker = b
	cfg.Logger = slog.New(ev)
	cfg.Registry = prometheus.NewRegistry()
	cfg.ScalingInterval = 10 * time.Millisecond
	e, err := New(cfg, ts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &rig{t: t, broker: b, engine: e, events: ev, reg: cfg.Registry, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- e.Run(ctx) }()
	t.Cleanup(func() {
		if !r.stopped {
			r.stop()
		}
	})
	if !waitReady {
		return r
	}
	select {
	case <-e.Ready():
	case err := <-r.done:
		t.Fatalf("engine stopped before it was ready: %v", err)
	case <-time.After(wait):
		t.Fatal("engine not ready")
	}
	return r
}

func (r *rig) publish(key, body string, headers map[string]any) string {
	r.t.Helper()
	msg, err := broker.NewMessage(tasks.Publication{RoutingKey: key, Body: []byte(body), ContentType: "text/plain", Headers: headers})
	if err != nil {
		r.t.Fatal(err)
	}
	if err := r.broker.Publish(key, msg); err != nil {
		r.t.Fatal(err)
	}
	return msg.UUID
}

// stop stops intake and returns Run's error.
func (r *rig) stop() error {
	r.stopped = true
	r.cancel()
	select {
	case err := <-r.done:
		return err
	case <-time.After(wait):
		r.t.Fatal("engine did not stop")
		return nil
	}
}

func (r *rig) count(task, outcome string) float64 {
	return testutil.ToFloat64(r.engine.metrics.messages.WithLabelValues(task, outcome))
}

func TestOutcomesOnTheBroker(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	attempts := map[string][]int{}
	h := handlerFunc(func(_ context.Context, d *tasks.Delivery) tasks.Result {
		mu.Lock()
		attempts[string(d.Body)] = append(attempts[string(d.Body)], d.Attempt)
		mu.Unlock()
		switch string(d.Body) {
		case "ok":
			return tasks.Result{Verdict: tasks.Succeeded}
		case "no":
			return tasks.Result{Verdict: tasks.Declined}
		case "later":
			if d.Attempt < 2 {
				return tasks.Result{Verdict: tasks.RetryRequested, Reason: "busy"}
			}
			return tasks.Result{Verdict: tasks.Succeeded}
		}
		return tasks.Result{Verdict: tasks.Failed, Err: errors.New("fail: boom"), Backtrace: "Traceback\nfail: boom"}
	})
	s := spec("jobs", "job.#")
	s.MaxAttempts = 3
	r := newRig(t, Config{}, tasks.Task{Spec: s, Handler: h})

	ok := r.publish("job.a", "ok", nil)
	no := r.publish("job.b", "no", nil)
	later := r.publish("job.c", "later", nil)
	boom := r.publish("job.d", "boom", nil)

	r.events.waitFor(t, 1, "message acked", map[string]string{"message_id": ok, "attempt": "1"})
	r.events.waitFor(t, 1, "message acked", map[string]string{"message_id": later, "attempt": "2"})
	dead := r.events.waitFor(t, 1, "message dead-lettered", map[string]string{"message_id": no})
	if dead["reason"] != tasks.ReasonMaxAttempts || dead["attempt"] != "3" {
		t.Errorf("False three times: %v", dead)
	}
	dead = r.events.waitFor(t, 1, "message dead-lettered", map[string]string{"message_id": boom})
	if dead["reason"] != tasks.ReasonError || dead["attempt"] != "1" {
		t.Errorf("a failure: %v", dead)
	}

	mu.Lock()
	if got := fmt.Sprint(attempts["no"]); got != "[1 2 3]" {
		t.Errorf("attempts of a message that returns False = %s, want [1 2 3]", got)
	}
	if got := fmt.Sprint(attempts["boom"]); got != "[1]" {
		t.Errorf("attempts of a failing message = %s, want [1]", got)
	}
	mu.Unlock()

	letters, err := r.broker.DeadLetters().List(t.Context(), "jobs", 10)
	if err != nil {
		t.Fatal(err)
	}
	byBody := map[string]broker.DeadLetter{}
	for _, l := range letters {
		byBody[string(l.Body)] = l
	}
	if l := byBody["boom"]; l.Reason != tasks.ReasonError || l.Error != "Traceback\nfail: boom" || l.RoutingKey != "job.d" || l.Task != "jobs" {
		t.Errorf("dead letter of the failure = %+v", l)
	}
	if l := byBody["no"]; l.Reason != tasks.ReasonMaxAttempts || l.Attempt != 3 || l.RoutingKey != "job.b" {
		t.Errorf("dead letter after max attempts = %+v", l)
	}
	if len(letters) != 2 {
		t.Errorf("%d dead letters, want 2", len(letters))
	}
	for outcome, want := range map[string]float64{"ack": 2, "retry": 3, "dead": 2} {
		if got := r.count("jobs", outcome); got != want {
			t.Errorf("symphony_messages_total{outcome=%q} = %v, want %v", outcome, got, want)
		}
	}
	if err := r.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// blocking returns a handler that reports each run's start and then waits
// for its context or for release.
func blocking(started chan<- *tasks.Delivery, release <-chan struct{}) tasks.Handler {
	return handlerFunc(func(ctx context.Context, d *tasks.Delivery) tasks.Result {
		started <- d
		select {
		case <-release:
			return tasks.Result{Verdict: tasks.Succeeded}
		case <-ctx.Done():
			return tasks.Result{Verdict: tasks.Failed, Err: context.Cause(ctx)}
		}
	})
}

func TestTimeoutStopsTheRun(t *testing.T) {
	t.Parallel()
	started := make(chan *tasks.Delivery, 10)
	reject := spec("reject", "reject")
	reject.Timeout = 50 * time.Millisecond
	again := spec("again", "again")
	again.Timeout = 50 * time.Millisecond
	again.TimeoutAction = tasks.TimeoutRetry
	again.MaxAttempts = 2
	r := newRig(t, Config{},
		tasks.Task{Spec: reject, Handler: blocking(started, nil)},
		tasks.Task{Spec: again, Handler: blocking(started, nil)})

	id := r.publish("reject", "x", nil)
	dead := r.events.waitFor(t, 1, "message dead-lettered", map[string]string{"message_id": id})
	if dead["reason"] != tasks.ReasonTimeout {
		t.Errorf("timeout with reject: %v", dead)
	}
	id = r.publish("again", "x", nil)
	r.events.waitFor(t, 1, "message will be retried", map[string]string{"message_id": id, "reason": tasks.ReasonTimeout})
	dead = r.events.waitFor(t, 1, "message dead-lettered", map[string]string{"message_id": id})
	if dead["reason"] != tasks.ReasonMaxAttempts {
		t.Errorf("timeout with retry on the last attempt: %v", dead)
	}
	if got := testutil.ToFloat64(r.engine.metrics.timeouts.WithLabelValues("again")); got != 2 {
		t.Errorf("symphony_timeouts_total{task=again} = %v, want 2", got)
	}
}

func TestPublicationsGoOutBeforeTheAck(t *testing.T) {
	t.Parallel()
	got := make(chan *tasks.Delivery, 1)
	first := handlerFunc(func(_ context.Context, d *tasks.Delivery) tasks.Result {
		key := "second.in"
		if string(d.Body) == "astray" {
			key = "nobody.listens"
		}
		return tasks.Result{Verdict: tasks.Succeeded, Publications: []tasks.Publication{
			{RoutingKey: key, Body: []byte(`{"n":1}`), ContentType: "application/json", Headers: map[string]any{"k": "v"}},
		}}
	})
	second := handlerFunc(func(_ context.Context, d *tasks.Delivery) tasks.Result {
		got <- d
		return tasks.Result{Verdict: tasks.Succeeded}
	})
	s := spec("first", "first.in")
	s.MaxAttempts = 2
	r := newRig(t, Config{}, tasks.Task{Spec: s, Handler: first}, tasks.Task{Spec: spec("second", "second.in"), Handler: second})

	id := r.publish("first.in", "go", nil)
	select {
	case d := <-got:
		if d.CorrelationID != id || d.RoutingKey != "second.in" || string(d.Body) != `{"n":1}` || d.Headers["k"] != "v" || d.ContentType != "application/json" {
			t.Errorf("published message arrived as %+v; want correlation id %s", d, id)
		}
	case <-time.After(wait):
		t.Fatal("the publication never arrived")
	}
	r.events.waitFor(t, 1, "message acked", map[string]string{"message_id": id})

	// A publication nothing is bound to retries its message, so nothing
	// is lost while the consuming task is missing.
	id = r.publish("first.in", "astray", nil)
	retried := r.events.waitFor(t, 1, "message will be retried", map[string]string{"message_id": id})
	if !strings.Contains(retried["reason"], "no queue is bound") {
		t.Errorf("retry reason = %q", retried["reason"])
	}
	r.events.waitFor(t, 1, "message dead-lettered", map[string]string{"message_id": id, "reason": tasks.ReasonMaxAttempts})
}

func TestGracefulStopFinishesInFlightAndReturnsPrefetched(t *testing.T) {
	t.Parallel()
	started := make(chan *tasks.Delivery, 10)
	release := make(chan struct{})
	s := spec("slow", "slow")
	s.Prefetch = 10
	r := newRig(t, Config{ShutdownTimeout: wait}, tasks.Task{Spec: s, Handler: blocking(started, release)})
	first := r.publish("slow", "1", nil)
	r.publish("slow", "2", nil)
	r.publish("slow", "3", nil)
	if d := <-started; d.MessageID != first {
		t.Fatalf("first run is of %s, want %s", d.MessageID, first)
	}
	r.cancel()
	r.events.waitFor(t, 1, "stopping: finishing in-flight messages", nil)
	close(release)
	if err := r.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	r.events.waitFor(t, 1, "message acked", map[string]string{"message_id": first})
	if n, err := r.broker.Depth(context.Background(), "slow"); err != nil || n != 2 {
		t.Errorf("depth after a graceful stop = %d, %v; want the 2 unstarted messages back", n, err)
	}
}

func TestShutdownTimeoutReleasesTheMessage(t *testing.T) {
	t.Parallel()
	started := make(chan *tasks.Delivery, 10)
	r := newRig(t, Config{ShutdownTimeout: 50 * time.Millisecond},
		tasks.Task{Spec: spec("stuck", "stuck"), Handler: blocking(started, nil)})
	id := r.publish("stuck", "x", nil)
	<-started
	if err := r.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	r.events.waitFor(t, 1, "message returned to the queue", map[string]string{"message_id": id, "reason": "shutdown"})
	if n, err := r.broker.Depth(context.Background(), "stuck"); err != nil || n != 1 {
		t.Errorf("depth after the shutdown timeout = %d, %v; want the message back", n, err)
	}
	if c, _ := r.broker.DeadLetters().Count(context.Background(), ""); c != 0 {
		t.Errorf("%d dead letters; a shutdown must not dead-letter", c)
	}
}

func TestForceCutsTheStopShort(t *testing.T) {
	t.Parallel()
	started := make(chan *tasks.Delivery, 10)
	r := newRig(t, Config{ShutdownTimeout: time.Hour},
		tasks.Task{Spec: spec("stuck", "stuck"), Handler: blocking(started, nil)})
	r.publish("stuck", "x", nil)
	<-started
	r.cancel()
	r.events.waitFor(t, 1, "stopping: finishing in-flight messages", nil)
	r.engine.Force()
	if err := r.stop(); !errors.Is(err, ErrForced) {
		t.Fatalf("Run after Force = %v, want ErrForced", err)
	}
	if n, err := r.broker.Depth(context.Background(), "stuck"); err != nil || n != 1 {
		t.Errorf("depth after a forced stop = %d, %v; want the message back", n, err)
	}
}

func TestAcknowledgeFalseForgets(t *testing.T) {
	t.Parallel()
	s := spec("fire", "fire")
	s.Acknowledge = false
	fails := handlerFunc(func(context.Context, *tasks.Delivery) tasks.Result {
		return tasks.Result{Verdict: tasks.Failed, Err: errors.New("boom")}
	})
	r := newRig(t, Config{}, tasks.Task{Spec: s, Handler: fails})
	id := r.publish("fire", "x", nil)
	r.events.waitFor(t, 1, "message acked", map[string]string{"message_id": id})
	if c, _ := r.broker.DeadLetters().Count(context.Background(), ""); c != 0 {
		t.Errorf("%d dead letters with acknowledge = False", c)
	}
	if n, _ := r.broker.Depth(context.Background(), "fire"); n != 0 {
		t.Errorf("depth = %d", n)
	}
}

func TestPanicAndBadPropertiesDeadLetter(t *testing.T) {
	t.Parallel()
	panics := handlerFunc(func(context.Context, *tasks.Delivery) tasks.Result { panic("oops") })
	r := newRig(t, Config{}, tasks.Task{Spec: spec("p", "p"), Handler: panics})
	id := r.publish("p", "x", nil)
	dead := r.events.waitFor(t, 1, "message dead-lettered", map[string]string{"message_id": id})
	if dead["reason"] != tasks.ReasonError || !strings.Contains(dead["error"], "handler panicked: oops") {
		t.Errorf("panic: %v", dead)
	}

	msg, _ := broker.NewMessage(tasks.Publication{RoutingKey: "p", Body: []byte("x")})
	msg.Metadata.Set(broker.MetaHeaders, "{not json")
	if err := r.broker.Publish("p", msg); err != nil {
		t.Fatal(err)
	}
	dead = r.events.waitFor(t, 1, "message dead-lettered", map[string]string{"message_id": msg.UUID})
	if dead["reason"] != tasks.ReasonDecode {
		t.Errorf("unreadable headers: %v", dead)
	}
}
