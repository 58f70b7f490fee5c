package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
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
	// ScalingInterval is how often pools sample their queue. Defaults to
	// 100ms.
	ScalingInterval time.Duration
	// Version is reported in status.
	Version string
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
	return c
}

// Engine runs one pool per task until it is stopped.
type Engine struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	pools   []*pool
	started time.Time

	// hard is what running handlers see; cancelling it (with
	// tasks.ErrShutdown) stops them.
	hard       context.Context
	cancelHard context.CancelCauseFunc
	forced     atomic.Bool

	ready     chan struct{}
	readyOnce sync.Once
	pending   atomic.Int64 // workers not yet subscribed for the first time

	admin net.Listener
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
	e := &Engine{cfg: cfg, log: cfg.Logger, metrics: m, ready: make(chan struct{})}
	e.hard, e.cancelHard = context.WithCancelCause(context.Background())
	for _, t := range ts {
		e.pools = append(e.pools, newPool(e, t))
	}
	return e, nil
}

// Ready is closed once every worker has subscribed to its queue.
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
	for _, p := range e.pools {
		spec := p.task.Spec
		q := broker.Queue{Name: spec.Queue, Patterns: spec.Patterns, Durable: spec.Persistent}
		if err := e.cfg.Broker.Declare(ctx, q); err != nil {
			return fmt.Errorf("declare queue %s of task %s: %w", spec.Queue, spec.Name, err)
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
	for _, p := range e.pools {
		if err := p.open(); err != nil {
			return err
		}
	}
	defer func() {
		for _, p := range e.pools {
			p.close()
		}
	}()

	total := 0
	for _, p := range e.pools {
		total += p.size()
	}
	e.pending.Store(int64(total))
	if total == 0 {
		e.markReady()
	}
	var wg sync.WaitGroup
	for _, p := range e.pools {
		wg.Go(func() { p.run(ctx, e.hard) })
	}
	e.log.Info("consuming", "tasks", len(e.pools), "workers", total)

	<-ctx.Done()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
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

// subscribed counts a worker's first subscription towards readiness.
func (e *Engine) subscribed() {
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
