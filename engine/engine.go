package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

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
	// Tracer makes each delivery's span. Defaults to spans that go
	// nowhere and carry an incoming trace context along unchanged.
	Tracer trace.Tracer
	// Spawn builds the command of a worker process, for tasks with
	// isolation = "process".
	Spawn Spawner
	// Load loads the next generation for Reload, off to the side.
	Load Loader
	// Location is the time zone of schedules (cron expressions without
	// CRON_TZ=). Defaults to the local zone.
	Location *time.Location
	// Calls counts the capability calls of worker processes; the
	// daemon's own go to it through the World. Nil: not counted.
	Calls *CallMetrics
}

// Generation is one load of what the engine runs: the tasks, and the
// settings that may change while it runs.
type Generation struct {
	Tasks  []tasks.Task
	Tuning Tuning
	// Commit, if set, is called once the generation runs: what the loader
	// prepared for it (a log level, worker processes' copies of the files)
	// takes effect then and not before.
	Commit func()
}

// Tuning are the settings a reload may change live.
type Tuning struct {
	ScalingInterval time.Duration
	ShutdownTimeout time.Duration
	ThrottleMax     int
	ThrottleFactor  float64
}

// Loader loads the next generation. It must not change what runs: the
// engine applies what it returns only when it returns no error.
type Loader func(ctx context.Context) (Generation, error)

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
	if c.Location == nil {
		c.Location = time.Local
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
	forcedCh   chan struct{} // closed by Force

	ready     chan struct{}
	readyOnce sync.Once
	pending   atomic.Int64 // initial pools not yet at min_workers

	tuning atomic.Pointer[Tuning]

	reloading  sync.Mutex // one reload at a time
	mu         sync.Mutex
	intake     context.Context // Run's; nil until Run starts the pools
	current    map[string]*pool
	order      []string // task names, in load order
	draining   map[*pool]bool
	states     map[string]*taskState
	generation int
	lastReload *ReloadResult
	reloads    []ReloadResult // the latest, oldest first
	pools      sync.WaitGroup
}

// keptReloads is how many reloads status lists.
const keptReloads = 20

// ReloadResult is one reload, for status.
type ReloadResult struct {
	At         time.Time `json:"at"`
	Trigger    string    `json:"trigger"`
	Success    bool      `json:"success"`
	Error      string    `json:"error,omitempty"`
	Generation int       `json:"generation"`
	Changed    []string  `json:"changed,omitempty"`
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
		cfg: cfg, log: cfg.Logger, metrics: m, initial: ts, ready: make(chan struct{}), forcedCh: make(chan struct{}), started: time.Now(),
		current: map[string]*pool{}, draining: map[*pool]bool{}, states: map[string]*taskState{},
	}
	e.hard, e.cancelHard = context.WithCancelCause(context.Background())
	e.tuning.Store(&Tuning{ScalingInterval: cfg.ScalingInterval, ShutdownTimeout: cfg.ShutdownTimeout,
		ThrottleMax: cfg.ThrottleMax, ThrottleFactor: cfg.ThrottleFactor})
	m.lastReload.Set(1)
	return e, nil
}

// Ready is closed once every task's pool has min_workers subscribed.
func (e *Engine) Ready() <-chan struct{} { return e.ready }

// Force cuts a graceful stop short: running handlers are cancelled and
// their messages returned to their queues. Run then returns ErrForced.
func (e *Engine) Force() {
	if e.forced.CompareAndSwap(false, true) {
		close(e.forcedCh)
	}
	e.cancelHard(tasks.ErrShutdown)
}

// Run declares every task's queue, starts the pools and consumes until ctx is cancelled. Then it stops intake, lets in-flight
// messages finish for up to the shutdown timeout, cancels what still runs,
// and returns once every message is settled or handed back.
func (e *Engine) Run(ctx context.Context) error {
	defer e.cancelHard(tasks.ErrShutdown)
	for _, t := range e.initial {
		if err := e.declare(ctx, t.Spec); err != nil {
			return err
		}
	}

	var pools []*pool
	for _, t := range e.initial {
		p, err := e.prepare(t, nil, 1)
		if err != nil {
			for _, p := range pools {
				_ = p.sub.Close()
			}
			return err
		}
		pools = append(pools, p)
	}
	e.mu.Lock()
	e.intake = ctx
	e.generation = 1
	e.pending.Store(int64(len(e.initial)))
	if len(e.initial) == 0 {
		e.markReady()
	}
	workers := 0
	for i, t := range e.initial {
		p := pools[i]
		e.start(p)
		p.release()
		go func() {
			select {
			case <-p.up:
				e.poolReady()
			case <-p.done:
			}
		}()
		workers += t.Spec.MinWorkers
	}
	e.mu.Unlock()
	e.log.Info("consuming", "tasks", len(e.initial), "workers", workers)

	<-ctx.Done()
	done := make(chan struct{})
	go func() { e.pools.Wait(); close(done) }()
	grace := e.tuning.Load().ShutdownTimeout
	e.log.Info("stopping: finishing in-flight messages", "timeout", grace.String())
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		e.log.Warn("shutdown timeout: cancelling running handlers")
		e.cancelHard(tasks.ErrShutdown)
		// Cancelled runs hand their messages back within abandonAfter;
		// worker processes are killed forcedWait after they are told.
		// Wait no longer than that, or until a second signal.
		bound := time.NewTimer(forcedWait + abandonAfter)
		defer bound.Stop()
		select {
		case <-done:
		case <-bound.C:
			e.log.Error("handlers did not stop in time; returning their messages")
		case <-e.forcedCh:
		}
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

// declare makes a task's queue exist with exactly its bindings.
func (e *Engine) declare(ctx context.Context, spec tasks.Spec) error {
	if err := e.cfg.Broker.Declare(ctx, queueOf(spec)); err != nil {
		return fmt.Errorf("declare queue %s of task %s: %w", spec.Queue, spec.Name, err)
	}
	return nil
}

// queueOf is the queue a task consumes, as the broker should have it.
func queueOf(spec tasks.Spec) broker.Queue {
	return broker.Queue{Name: spec.Queue, Patterns: spec.Patterns, Durable: spec.Persistent, Type: spec.QueueType, MaxPriority: spec.MaxPriority}
}

// prepare makes a pool for t with its subscriber, touching nothing the
// engine runs: a reload prepares every pool before it changes anything.
// state is what the task's earlier pools counted, if any. It talks to the
// broker: the caller does not hold e.mu.
func (e *Engine) prepare(t tasks.Task, state *taskState, generation int) (*pool, error) {
	if state == nil {
		state = &taskState{}
	}
	p := newPool(e, t, state)
	p.generation = generation
	if err := p.open(); err != nil {
		return nil, err
	}
	return p, nil
}

// start runs a prepared pool as its task's current pool. The caller holds
// e.mu.
func (e *Engine) start(p *pool) {
	name := p.task.Spec.Name
	e.states[name] = p.state
	ctx, cancel := context.WithCancel(e.intake)
	p.cancel = cancel
	if _, ok := e.current[name]; !ok {
		e.order = append(e.order, name)
	}
	e.current[name] = p
	e.pools.Go(func() { p.loop(ctx, e.hard) })
}

// drain stops a pool's intake; it finishes its in-flight messages on the
// code it started them with, hands back the rest and goes. The caller
// holds e.mu.
func (e *Engine) drain(p *pool) {
	e.draining[p] = true
	p.retire()
	go func() {
		<-p.done
		e.mu.Lock()
		delete(e.draining, p)
		e.mu.Unlock()
	}()
}

// Reload loads the next generation with Config.Load and applies it; the
// trigger names what asked for it in logs and status. Reloads run one at
// a time. On any error the running generation stays untouched.
func (e *Engine) Reload(ctx context.Context, trigger string) error {
	e.reloading.Lock()
	defer e.reloading.Unlock()
	if e.cfg.Load == nil {
		return errors.New("reload: the engine has no loader")
	}
	log := e.log.With("trigger", trigger)
	gen, err := e.cfg.Load(ctx)
	var changed []string
	if err == nil {
		changed, err = e.apply(ctx, gen)
	}
	if err == nil && gen.Commit != nil {
		gen.Commit()
	}
	e.mu.Lock()
	result := &ReloadResult{At: time.Now().UTC(), Trigger: trigger, Success: err == nil, Generation: e.generation, Changed: changed}
	e.mu.Unlock()
	if err != nil {
		result.Error = err.Error()
		e.metrics.reloads.WithLabelValues("failure").Inc()
		e.metrics.lastReload.Set(0)
		log.Error("reload failed: the running tasks stay", "err", err)
	} else {
		e.metrics.reloads.WithLabelValues("success").Inc()
		e.metrics.lastReload.Set(1)
		log.Info("reloaded", "generation", result.Generation, "changed", len(changed), "tasks", len(gen.Tasks))
	}
	e.mu.Lock()
	e.lastReload = result
	if len(e.reloads) == keptReloads {
		e.reloads = append(e.reloads[:0], e.reloads[1:]...)
	}
	e.reloads = append(e.reloads, *result)
	e.mu.Unlock()
	return err
}

// Apply makes the running tasks the given ones, as a reload would; see
// apply.
func (e *Engine) Apply(ctx context.Context, ts []tasks.Task) error {
	e.reloading.Lock()
	defer e.reloading.Unlock()
	_, err := e.apply(ctx, Generation{Tasks: ts, Tuning: *e.tuning.Load()})
	return err
}

// takeover bounds how long the new version of a changed task may take to
// subscribe before the old one is retired anyway.
const takeover = 10 * time.Second

// apply makes the running tasks a generation's, without holding the
// engine's lock over any broker call (status answers throughout), and
// without changing what the running tasks consume unless it succeeds. It
// follows planApply: fresh queues are created unbound; every new pool is
// made (a pool that cannot subscribe fails the reload with nothing
// changed); new patterns are bound (a refusal undoes the bindings made so
// far); then, under the lock, the swap: an unchanged task keeps running
// untouched; a changed one starts its new version, held back from
// starting messages until it has subscribed, then the old one stops
// taking messages and finishes what it started on the code it started it
// with, and the new one is let go, so the queue always has a consumer and
// no message starts on the old version after the switch; a removed task
// drains; a new one starts. Last, patterns no task uses any more are
// unbound. It returns the names of the tasks that changed.
func (e *Engine) apply(ctx context.Context, gen Generation) ([]string, error) {
	e.mu.Lock()
	if e.intake == nil || e.intake.Err() != nil {
		e.mu.Unlock()
		return nil, errors.New("apply tasks: the engine is not running")
	}
	running := make([]tasks.Task, 0, len(e.order))
	for _, name := range e.order {
		running = append(running, e.current[name].task)
	}
	states := maps.Clone(e.states)
	next := e.generation + 1
	e.mu.Unlock()
	// Only reloads change e.current and e.order, one at a time
	// (e.reloading), so the snapshot holds until the swap.

	pl := planApply(running, gen.Tasks)
	for _, q := range pl.create {
		if err := e.cfg.Broker.Declare(ctx, q); err != nil {
			return nil, fmt.Errorf("declare queue %s: %w", q.Name, err)
		}
	}
	prepared := map[string]*pool{}
	closePrepared := func() {
		for _, p := range prepared {
			_ = p.sub.Close()
		}
	}
	for _, d := range pl.diffs {
		if d.Change != tasks.Added && d.Change != tasks.Changed {
			continue
		}
		p, err := e.prepare(d.New, states[d.Name], next)
		if err != nil {
			closePrepared()
			return nil, err
		}
		prepared[d.Name] = p
	}
	for i, q := range pl.bind {
		if err := e.cfg.Broker.Declare(ctx, q); err != nil {
			e.restore(pl.rollback[:i])
			closePrepared()
			return nil, fmt.Errorf("declare queue %s: %w", q.Name, err)
		}
	}

	e.mu.Lock()
	if e.intake.Err() != nil {
		e.mu.Unlock()
		e.restore(pl.rollback)
		closePrepared()
		return nil, errors.New("apply tasks: the engine is stopping")
	}
	e.tuning.Store(&gen.Tuning)
	type switchover struct{ old, new *pool }
	var switches []switchover
	var changed []string
	for _, d := range pl.diffs {
		switch d.Change {
		case tasks.Unchanged:
			continue
		case tasks.Added:
			p := prepared[d.Name]
			e.start(p)
			p.release()
			e.log.Info("task started", "task", d.Name, "queue", d.New.Spec.Queue, "generation", next)
		case tasks.Changed:
			old := e.current[d.Name]
			p := prepared[d.Name]
			e.start(p)
			switches = append(switches, switchover{old, p})
		case tasks.Removed:
			e.drain(e.current[d.Name])
			delete(e.current, d.Name)
			e.order = deleteName(e.order, d.Name)
			e.log.Info("task removed: its patterns are unbound and it finishes what it started", "task", d.Name)
		}
		changed = append(changed, d.Name)
	}
	if len(changed) > 0 {
		e.generation = next
	}
	e.mu.Unlock()

	// The new versions subscribe while the old ones still consume.
	deadline := time.NewTimer(takeover)
	defer deadline.Stop()
	for i := 0; i < len(switches); i++ {
		select {
		case <-switches[i].new.up:
		case <-switches[i].new.done:
		case <-e.intake.Done():
			i = len(switches)
		case <-deadline.C:
			e.log.Warn("the new versions are slow to subscribe; switching to them anyway")
			i = len(switches)
		}
	}
	e.mu.Lock()
	for _, sw := range switches {
		e.drain(sw.old)
		e.log.Info("task changed: the new version takes over, the old one finishes what it started",
			"task", sw.new.task.Spec.Name, "generation", next)
		sw.new.release()
	}
	e.mu.Unlock()

	// The new generation runs: what it no longer consumes is unbound. A
	// failure here leaves a binding too many, not a message lost.
	for _, q := range pl.unbind {
		uctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
		if err := e.cfg.Broker.Declare(uctx, q); err != nil {
			e.log.Error("unbind patterns no task uses any more", "queue", q.Name, "patterns", q.Patterns, "err", err)
		}
		cancel()
	}
	return changed, nil
}

// restore declares queues back as they were, after a reload failed
// midway; a failure is logged, as the reload's own error is the one to
// report.
func (e *Engine) restore(queues []broker.Queue) {
	for _, q := range queues {
		ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
		if err := e.cfg.Broker.Declare(ctx, q); err != nil {
			e.log.Error("restore the bindings of a queue after a failed reload", "queue", q.Name, "err", err)
		}
		cancel()
	}
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
