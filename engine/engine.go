package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/tasks"
)

// ErrForced is returned by Run when Force cut the shutdown short.
var ErrForced = errors.New("forced shutdown")

// forcedWait bounds how long a forced shutdown waits for cancelled runs to
// hand their messages back before the subscribers are closed under them.
const forcedWait = 5 * time.Second

// Config is what the engine needs besides its tasks.
type Config struct {
	// Broker carries the messages. Required.
	Broker broker.Broker
	// BrokerURL names the broker in status; any password is redacted.
	BrokerURL string
	// Exchange names the exchange in status.
	Exchange string
	// Logger receives the engine's logs. Defaults to discarding them.
	Logger *slog.Logger
	// Registry receives the metrics and serves /metrics. Defaults to a new
	// registry.
	Registry *prometheus.Registry
	// AdminAddr is where /metrics, /healthz, /readyz and /status listen;
	// empty means no admin server.
	AdminAddr string
	// ShutdownTimeout is how long in-flight messages may finish after a
	// graceful stop before their runs are cancelled. Defaults to 30s.
	ShutdownTimeout time.Duration
	// ScalingInterval is how often pools sample their queue and decide
	// their size. Defaults to 100ms.
	ScalingInterval time.Duration
	// ThrottleMax bounds the worker start throttle's counter. Defaults
	// to 16.
	ThrottleMax int
	// ThrottleFactor is the throttle's seconds per ln(n). Defaults to 1.
	ThrottleFactor float64
	// Version is reported in status.
	Version string
	// Spawn builds the command of a worker process, for tasks with
	// isolation = "process".
	Spawn Spawner
}

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	if c.ScalingInterval <= 0 {
		c.ScalingInterval = 100 * time.Millisecond
	}
	if c.ThrottleMax <= 0 {
		c.ThrottleMax = 16
	}
	if c.ThrottleFactor <= 0 {
		c.ThrottleFactor = 1
	}
	return c
}

// Engine runs one pool per task until it is stopped.
type Engine struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	initial []tasks.Task
	started time.Time

	// hard is what running handlers see; cancelling it (with
	// tasks.ErrShutdown) stops them.
	hard       context.Context
	cancelHard context.CancelCauseFunc
	forced     atomic.Bool

	ready     chan struct{}
	readyOnce sync.Once
	pending   atomic.Int64 // initial pools not yet at min_workers

	admin net.Listener

	mu         sync.Mutex
	intake     context.Context // Run's; nil until Run starts the pools
	current    map[string]*pool
	order      []string // task names, in load order
	draining   map[*pool]bool
	states     map[string]*taskState
	generation int
	pools      sync.WaitGroup
}

// New prepares an engine for the given tasks; Run starts it.
func New(cfg Config, ts []tasks.Task) (*Engine, error) {
	cfg = cfg.withDefaults()
	if cfg.Broker == nil {
		return nil, errors.New("new engine: no broker")
	}
	m, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	e := &Engine{
		cfg: cfg, log: cfg.Logger, metrics: m, initial: ts, ready: make(chan struct{}),
		current: map[string]*pool{}, draining: map[*pool]bool{}, states: map[string]*taskState{},
	}
	e.hard, e.cancelHard = context.WithCancelCause(context.Background())
	return e, nil
}

// Ready is closed once every task's pool has min_workers subscribed.
func (e *Engine) Ready() <-chan struct{} { return e.ready }

// AdminAddr is the address the admin server listens on, once Run has
// started it; empty otherwise.
func (e *Engine) AdminAddr() string {
	if e.admin == nil {
		return ""
	}
	return e.admin.Addr().String()
}

// Force cuts a graceful stop short: running handlers are cancelled and
// their messages returned to their queues. Run then returns ErrForced.
func (e *Engine) Force() {
	e.forced.Store(true)
	e.cancelHard(tasks.ErrShutdown)
}

// Run declares every task's queue, starts the pools and the admin server,
// and consumes until ctx is cancelled. Then it stops intake, lets in-flight
// messages finish for up to the shutdown timeout, cancels what still runs,
// and returns once every message is settled or handed back.
func (e *Engine) Run(ctx context.Context) error {
	defer e.cancelHard(tasks.ErrShutdown)
	e.started = time.Now()
	for _, t := range e.initial {
		if err := e.declare(ctx, t.Spec); err != nil {
			return err
		}
	}
	if e.cfg.AdminAddr != "" {
		ln, err := net.Listen("tcp", e.cfg.AdminAddr)
		if err != nil {
			return fmt.Errorf("start admin server on %s: %w", e.cfg.AdminAddr, err)
		}
		e.admin = ln
		srv := e.adminServer()
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, errServerClosed) {
				e.log.Error("admin server stopped", "err", err)
			}
		}()
		defer func() {
			shutdownCtx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_ = srv.Shutdown(shutdownCtx)
		}()
		e.log.Info("admin server listening", "addr", ln.Addr().String())
	}

	e.mu.Lock()
	e.intake = ctx
	e.generation = 1
	e.pending.Store(int64(len(e.initial)))
	if len(e.initial) == 0 {
		e.markReady()
	}
	workers := 0
	for _, t := range e.initial {
		if err := e.launch(t, e.poolReady); err != nil {
			e.mu.Unlock()
			e.stopAll()
			return err
		}
		workers += t.Spec.MinWorkers
	}
	e.mu.Unlock()
	e.log.Info("consuming", "tasks", len(e.initial), "workers", workers)

	<-ctx.Done()
	done := make(chan struct{})
	go func() { e.pools.Wait(); close(done) }()
	e.log.Info("stopping: finishing in-flight messages", "timeout", e.cfg.ShutdownTimeout.String())
	timer := time.NewTimer(e.cfg.ShutdownTimeout)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		e.log.Warn("shutdown timeout: cancelling running handlers")
		e.cancelHard(tasks.ErrShutdown)
		<-done
	case <-e.hard.Done():
		e.log.Warn("forced shutdown: cancelling running handlers")
		select {
		case <-done:
		case <-time.After(forcedWait):
			e.log.Error("handlers did not stop in time; returning their messages")
		}
	}
	if e.forced.Load() {
		return ErrForced
	}
	e.log.Info("stopped")
	return nil
}

// stopAll drains every pool and waits for them; for a failed start.
func (e *Engine) stopAll() {
	e.mu.Lock()
	for _, p := range e.current {
		p.cancel()
	}
	e.mu.Unlock()
	e.cancelHard(tasks.ErrShutdown)
	e.pools.Wait()
}

// declare makes a task's queue exist with exactly its bindings.
func (e *Engine) declare(ctx context.Context, spec tasks.Spec) error {
	q := broker.Queue{Name: spec.Queue, Patterns: spec.Patterns, Durable: spec.Persistent}
	if err := e.cfg.Broker.Declare(ctx, q); err != nil {
		return fmt.Errorf("declare queue %s of task %s: %w", spec.Queue, spec.Name, err)
	}
	return nil
}

// launch starts a pool for t and makes it the task's current pool. The
// caller holds e.mu.
func (e *Engine) launch(t tasks.Task, ready func()) error {
	name := t.Spec.Name
	state := e.states[name]
	if state == nil {
		state = &taskState{}
		e.states[name] = state
	}
	p := newPool(e, t, state)
	p.ready = ready
	if err := p.open(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(e.intake)
	p.cancel = cancel
	if _, ok := e.current[name]; !ok {
		e.order = append(e.order, name)
	}
	e.current[name] = p
	e.pools.Go(func() { p.loop(ctx, e.hard) })
	return nil
}

// drain stops a pool's intake; it finishes its in-flight messages on the
// code it started them with, hands back the rest and goes. The caller
// holds e.mu.
func (e *Engine) drain(p *pool, then func()) {
	e.draining[p] = true
	p.cancel()
	go func() {
		<-p.done
		if then != nil {
			then()
		}
		e.mu.Lock()
		delete(e.draining, p)
		e.mu.Unlock()
	}()
}

// Apply makes the running tasks the given ones, one task at a time: an
// unchanged task keeps running untouched; a changed one starts its new
// version, then drains the old; a removed one has its patterns unbound and
// drains; a new one declares its queue and starts. Bindings are added
// before stale ones are removed, so a key that both the old and the new
// patterns match is routed throughout.
func (e *Engine) Apply(ctx context.Context, ts []tasks.Task) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.intake == nil {
		return errors.New("apply tasks: the engine is not running")
	}
	if e.intake.Err() != nil {
		return errors.New("apply tasks: the engine is stopping")
	}
	wanted := map[string]bool{}
	for _, t := range ts {
		wanted[t.Spec.Name] = true
	}
	// Declare first: a broker that refuses a queue leaves every pool as it
	// was.
	var changed []tasks.Task
	for _, t := range ts {
		if old := e.current[t.Spec.Name]; old != nil && sameSpec(old.task.Spec, t.Spec) {
			continue
		}
		if err := e.declare(ctx, t.Spec); err != nil {
			return err
		}
		changed = append(changed, t)
	}
	for _, t := range changed {
		old := e.current[t.Spec.Name]
		if err := e.launch(t, nil); err != nil {
			return err
		}
		if old == nil {
			e.log.Info("task started", "task", t.Spec.Name, "queue", t.Spec.Queue)
			continue
		}
		e.log.Info("task changed: new version started, old draining", "task", t.Spec.Name)
		var unbind func()
		if old.task.Spec.Queue != t.Spec.Queue {
			unbind = e.unbinder(old.task.Spec)
		}
		e.drain(old, unbind)
	}
	for _, name := range append([]string(nil), e.order...) {
		if wanted[name] {
			continue
		}
		old := e.current[name]
		e.unbinder(old.task.Spec)()
		e.log.Info("task removed: draining", "task", name)
		e.drain(old, nil)
		delete(e.current, name)
		e.order = deleteName(e.order, name)
	}
	e.generation++
	return nil
}

// unbinder returns a function that removes every binding of a task's queue.
func (e *Engine) unbinder(spec tasks.Spec) func() {
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
		defer cancel()
		q := broker.Queue{Name: spec.Queue, Durable: spec.Persistent}
		if err := e.cfg.Broker.Declare(ctx, q); err != nil {
			e.log.Error("unbind the patterns of a removed queue", "queue", spec.Queue, "err", err)
		}
	}
}

// sameSpec reports whether two loads of a task would run it the same way:
// the same code (Hash covers the file and its libraries) and settings.
func sameSpec(a, b tasks.Spec) bool {
	a.Scaler, b.Scaler = nil, nil
	return reflect.DeepEqual(a, b)
}

func deleteName(names []string, name string) []string {
	out := names[:0]
	for _, n := range names {
		if n != name {
			out = append(out, n)
		}
	}
	return out
}

// poolReady counts an initial pool reaching min_workers.
func (e *Engine) poolReady() {
	if e.pending.Add(-1) == 0 {
		e.markReady()
	}
}

func (e *Engine) markReady() { e.readyOnce.Do(func() { close(e.ready) }) }

func (e *Engine) isReady() bool {
	select {
	case <-e.ready:
		return true
	default:
		return false
	}
}
