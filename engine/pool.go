package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/tasks"
)

// taskState is what outlives a task's pools across reloads: its counts and
// last failure.
type taskState struct {
	counts [3]atomic.Int64 // by tasks.Action: Ack, Retry, Dead

	mu      sync.Mutex
	lastErr *Failure

	tick tickState
}

// messages are the task's counts by outcome name, for status.
func (s *taskState) messages() map[string]int {
	m := make(map[string]int, len(s.counts))
	for _, a := range []tasks.Action{tasks.Ack, tasks.Retry, tasks.Dead} {
		m[a.String()] = int(s.counts[a].Load())
	}
	return m
}

// Failure is the last message a task dead-lettered or retried, for status.
type Failure struct {
	At        time.Time `json:"at"`
	MessageID string    `json:"message_id"`
	Outcome   string    `json:"outcome"`
	Reason    string    `json:"reason"`
	Error     string    `json:"error,omitempty"`
}

// Happening is a dated reason, for status: why a worker started or exited.
type Happening struct {
	At     time.Time `json:"at"`
	Reason string    `json:"reason"`
}

// worker is one of a pool's workers: a goroutine or a child process.
type worker interface {
	// stop asks the worker to take no more messages; it finishes the one
	// it handles and exits.
	stop()
	// busy reports whether it handles a message now.
	busy() bool
	// idle is how long ago it last finished a message (or started).
	idle(now time.Time) time.Duration
}

// exit is a worker's end: nil err for a clean stop.
type exit struct {
	id  int
	err error
}

// pool is the workers of one task, sized by its work model.
type pool struct {
	eng    *Engine
	task   tasks.Task
	state  *taskState
	log    *slog.Logger
	run    *runner
	sub    message.Subscriber
	scaler tasks.Scaler
	every  time.Duration

	// generation is the one that started the pool.
	generation int
	// cancel stops the pool's intake: its workers drain and exit.
	cancel context.CancelFunc
	// gate orders message starts against retire: a worker starts a message
	// holding it shared, retire stops intake holding it alone, so no
	// message starts on a pool after it was retired.
	gate sync.RWMutex
	// released is closed when the pool's workers may start messages: at
	// once, or, for the new version of a changed task, when the old one is
	// retired.
	released chan struct{}
	// up is closed when min_workers have subscribed.
	up   chan struct{}
	done chan struct{}

	subscribed atomic.Int64
	exits      chan exit
	// throttled counts the workers that hold a message waiting for the
	// rate limit to let it start.
	throttled atomic.Int64

	// Owned by the pool's loop.
	workers  map[int]worker
	stopping map[int]bool
	nextID   int
	samples  ring
	throttle throttle
	restarts int // failed workers not yet replaced

	mu   sync.Mutex
	view poolView

	// The task's series, looked up once rather than per message or tick.
	outcomes       [3]prometheus.Counter // by tasks.Action: Ack, Retry, Dead
	duration       prometheus.Observer
	timeouts       prometheus.Counter
	depthGauge     prometheus.Gauge
	sizeGauge      prometheus.Gauge
	restartCounter prometheus.Counter
}

// poolView is what status shows of a pool.
type poolView struct {
	Workers     int
	Busy        int
	Depth       int64
	Throttle    time.Duration
	LastStart   *Happening
	LastExit    *Happening
	ScalerError string
	Processes   []Process
}

// processes are the view's worker processes with their memory now.
func (v poolView) processes() []Process {
	if len(v.Processes) == 0 {
		return nil
	}
	out := slices.Clone(v.Processes)
	for i := range out {
		out[i].RSS, _ = rssOf(out[i].PID)
	}
	return out
}

func newPool(e *Engine, t tasks.Task, state *taskState) *pool {
	spec := t.Spec
	log := e.log.With("task", spec.Name)
	p := &pool{
		eng:      e,
		task:     t,
		state:    state,
		log:      log,
		run:      &runner{task: t, broker: e.cfg.Broker, log: log, tracer: e.cfg.Tracer},
		done:     make(chan struct{}),
		up:       make(chan struct{}),
		released: make(chan struct{}),
		exits:    make(chan exit),
		workers:  map[int]worker{},
		stopping: map[int]bool{},
	}
	m := e.metrics
	for _, a := range []tasks.Action{tasks.Ack, tasks.Retry, tasks.Dead} {
		p.outcomes[a] = m.messages.WithLabelValues(spec.Name, a.String())
	}
	p.duration = m.duration.WithLabelValues(spec.Name)
	p.timeouts = m.timeouts.WithLabelValues(spec.Name)
	p.depthGauge = m.depth.WithLabelValues(spec.Name)
	p.sizeGauge = m.workers.WithLabelValues(spec.Name)
	p.restartCounter = m.restarts.WithLabelValues(spec.Name)
	switch spec.WorkModel {
	case tasks.Oneshot:
		p.scaler = fill{}
	case tasks.Scaled:
		p.scaler = spec.Scaler
	default:
		p.scaler = longlived{}
	}
	return p
}

// consumeOptions are how a task's workers subscribe, in the daemon or in a
// worker process.
func consumeOptions(spec tasks.Spec) broker.ConsumeOptions {
	return broker.ConsumeOptions{Prefetch: spec.EffectivePrefetch(), AutoAck: !spec.Acknowledge}
}

// open makes the pool's subscriber.
func (p *pool) open() error {
	spec := p.task.Spec
	sub, err := p.eng.cfg.Broker.Subscriber(consumeOptions(spec))
	if err != nil {
		return fmt.Errorf("subscribe to queue %s of task %s: %w", spec.Queue, spec.Name, err)
	}
	p.sub = sub
	return nil
}

// loop starts min_workers, then every interval samples the queue, decides
// the pool's size and moves it one step towards it, until intake stops;
// then it waits for its workers to settle or hand back their messages.
func (p *pool) loop(intake, hard context.Context) {
	defer close(p.done)
	defer func() {
		if err := p.sub.Close(); err != nil {
			p.log.Error("close subscriber", "err", err)
		}
	}()
	p.tune()
	p.throttle.started(time.Now())
	for range p.task.Spec.MinWorkers {
		p.start(intake, hard, "min_workers")
	}
	p.publishView(p.sample(intake, time.Now()))
	if p.task.Spec.Schedule == "" {
		p.state.tick.clear()
	} else {
		if s, err := newScheduler(p); err != nil {
			p.log.Error("schedule: not firing", "err", err)
		} else {
			done := make(chan struct{})
			defer func() { <-done }()
			go func() { defer close(done); s.run(intake) }()
		}
	}
	tick := time.NewTicker(p.every)
	defer tick.Stop()
	for {
		select {
		case ex := <-p.exits:
			p.reap(ex)
			if ex.err == nil && p.task.Spec.WorkModel == tasks.Oneshot && intake.Err() == nil {
				// A oneshot process is done after its message: its place
				// is filled now, not at the next tick, or the pool's rate
				// would be max_workers per scaling interval.
				p.fill(intake, hard, "oneshot: next message")
			}
		case <-tick.C:
			if every := p.every; p.tune() != every {
				tick.Reset(p.every)
			}
			p.tick(intake, hard)
		case <-intake.Done():
			for len(p.workers) > 0 {
				p.reap(<-p.exits)
			}
			p.publishView(p.depthNow())
			return
		}
	}
}

// tune takes the settings a reload may have changed and returns the
// scaling interval.
func (p *pool) tune() time.Duration {
	t := p.eng.tuning.Load()
	p.throttle.limit, p.throttle.factor = t.ThrottleMax, t.ThrottleFactor
	p.every = t.ScalingInterval
	if s := p.task.Spec.ScaleInterval; s > 0 {
		p.every = s
	}
	return p.every
}

// retire stops the pool's intake; no message starts on it afterwards.
func (p *pool) retire() {
	p.gate.Lock()
	defer p.gate.Unlock()
	p.cancel()
}

// begin reports whether a worker may start a message it was handed: not
// after the pool was retired (the message goes back to the queue, for the
// version that replaced it).
func (p *pool) begin(intake context.Context, msg *message.Message) bool {
	select {
	case <-p.released:
	case <-intake.Done():
		return false
	}
	if !awaitStart(intake, p.eng.cfg.Broker, p.task.Spec, p.log, &p.throttled) {
		return false
	}
	p.gate.RLock()
	defer p.gate.RUnlock()
	if intake.Err() != nil {
		return false
	}
	if p.log.Enabled(intake, slog.LevelDebug) {
		p.log.Debug("message started", "message_id", msg.Metadata.Get(broker.MetaMessageID), "generation", p.generation)
	}
	return true
}

// tick is one scaling step.
func (p *pool) tick(intake, hard context.Context) {
	spec := p.task.Spec
	now := time.Now()
	depth := p.sample(intake, now)
	running := p.running()
	stats := tasks.Stats{Samples: p.samples.snapshot(), Workers: len(running), Min: spec.MinWorkers, Max: spec.MaxWorkers,
		IdleTimeout: spec.IdleTimeout}
	for _, w := range running {
		if w.busy() {
			stats.Busy++
		}
		stats.Idle = append(stats.Idle, w.idle(now))
	}
	p.limitMemory()
	want, err := p.decide(intake, stats)
	p.setScalerError(err)
	if err == nil {
		target := clamp(want, spec.MinWorkers, spec.MaxWorkers)
		switch n := len(running); {
		case target > n:
			// oneshot fills every free place at once; the others grow by
			// one worker per interval.
			if spec.WorkModel == tasks.Oneshot {
				p.fill(intake, hard, "scale up")
			} else if p.throttle.allows(now) {
				p.start(intake, hard, p.startReason("scale up"))
			}
		case target < n:
			p.stopOne(running, now)
		}
	}
	p.publishView(depth)
}

// fill starts workers up to max_workers, as far as the throttle allows.
func (p *pool) fill(intake, hard context.Context, reason string) {
	for n := len(p.running()); n < p.task.Spec.MaxWorkers && p.throttle.allows(time.Now()); n++ {
		p.start(intake, hard, p.startReason(reason))
	}
}

// startReason is why a worker starts: a failed one's replacement says so.
func (p *pool) startReason(reason string) string {
	if p.restarts > 0 {
		return "replace a failed worker"
	}
	return reason
}

// limitMemory kills worker processes whose resident memory is over the
// task's max_memory, once a scaling interval: a hard limit, where the
// process's own soft limit only makes its collector work harder. The
// message it was handling goes back to the queue.
func (p *pool) limitMemory() {
	limit := p.task.Spec.MaxMemory
	if limit <= 0 {
		return
	}
	for id, w := range p.workers {
		pw, ok := w.(*processWorker)
		if !ok || pw.killed.Load() {
			continue
		}
		rss, err := pw.rss()
		if err != nil || rss <= limit {
			continue
		}
		p.log.Warn("worker process over max_memory: killing it", "worker", id, "pid", pw.cmd.Process.Pid,
			"rss_bytes", rss, "max_memory_bytes", limit)
		pw.killed.Store(true)
		pw.signal(syscall.SIGKILL)
	}
}

// sample measures the queue's ready count into the window; on an error it
// returns the last count.
func (p *pool) sample(ctx context.Context, now time.Time) int64 {
	spec := p.task.Spec
	depth, err := p.eng.cfg.Broker.Depth(ctx, spec.Queue)
	if err != nil {
		if ctx.Err() == nil {
			p.log.Warn("measure queue depth", "err", err)
		}
		return p.depthNow()
	}
	p.samples.add(tasks.Sample{At: now, Ready: depth})
	p.depthGauge.Set(float64(depth))
	return int64(depth)
}

// decide asks the work model for the pool's size; a scaler written in
// Starlark gets a deadline, so a slow one cannot stall the pool.
func (p *pool) decide(ctx context.Context, s tasks.Stats) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, max(p.every, time.Second))
	defer cancel()
	return p.scaler.Decide(ctx, s)
}

// running are the workers not asked to stop.
func (p *pool) running() map[int]worker {
	out := make(map[int]worker, len(p.workers))
	for id, w := range p.workers {
		if !p.stopping[id] {
			out[id] = w
		}
	}
	return out
}

// start starts one worker.
func (p *pool) start(intake, hard context.Context, reason string) {
	id := p.nextID
	p.nextID++
	ctx, cancel := context.WithCancel(intake)
	var w worker
	if p.task.Spec.Isolation == tasks.Process {
		pw, err := p.startProcess(ctx, cancel, hard, id)
		if err != nil {
			cancel()
			// Counted as a failed start: the throttle spaces the next try.
			p.throttle.started(time.Now())
			p.throttle.exited(true)
			p.log.Error("start worker process", "err", err)
			p.mu.Lock()
			p.view.LastExit = &Happening{At: time.Now().UTC(), Reason: err.Error()}
			p.mu.Unlock()
			return
		}
		w = pw
	} else {
		tw := &threadWorker{activity: newActivity(), pool: p, cancel: cancel}
		w = tw
		go func() {
			err := tw.work(ctx, hard)
			cancel()
			p.exits <- exit{id: id, err: err}
		}()
	}
	p.workers[id] = w
	now := time.Now()
	p.throttle.started(now)
	if p.restarts > 0 {
		p.restarts--
		p.restartCounter.Inc()
	}
	p.sizeGauge.Inc()
	// Status shows the new count before the log says so: a reader that
	// waits for the line then sees it.
	p.mu.Lock()
	p.view.LastStart = &Happening{At: now.UTC(), Reason: reason}
	p.view.Workers = len(p.workers)
	p.mu.Unlock()
	p.log.Debug("worker started", "worker", id, "reason", reason)
}

// stopOne asks the worker idle longest to stop; if every worker is busy,
// the newest finishes its message and stops.
func (p *pool) stopOne(running map[int]worker, now time.Time) {
	ids := make([]int, 0, len(running))
	for id := range running {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b int) int {
		wa, wb := running[a], running[b]
		if wa.busy() != wb.busy() {
			if wa.busy() {
				return 1
			}
			return -1
		}
		if d := wb.idle(now) - wa.idle(now); d != 0 {
			return int(d)
		}
		return b - a
	})
	id := ids[0]
	p.stopping[id] = true
	running[id].stop()
	p.log.Debug("worker stopping", "worker", id, "reason", "scale down")
}

// reap records a worker's end.
func (p *pool) reap(ex exit) {
	asked := p.stopping[ex.id]
	delete(p.workers, ex.id)
	delete(p.stopping, ex.id)
	failed := ex.err != nil
	p.throttle.exited(failed)
	p.sizeGauge.Dec()
	p.mu.Lock()
	p.view.Workers = len(p.workers)
	p.mu.Unlock()
	reason := "stopped"
	switch {
	case failed:
		reason = ex.err.Error()
		p.restarts++
		p.log.Warn("worker failed", "worker", ex.id, "err", ex.err, "throttle", p.throttle.delay().String())
	case asked:
		reason = "scaled down"
		p.log.Debug("worker stopped", "worker", ex.id, "reason", reason)
	}
	p.mu.Lock()
	p.view.LastExit = &Happening{At: time.Now().UTC(), Reason: reason}
	p.mu.Unlock()
}

// workerSubscribed counts a worker's first subscription; the pool is ready
// once min_workers have subscribed.
func (p *pool) workerSubscribed() {
	if p.subscribed.Add(1) == int64(p.task.Spec.MinWorkers) {
		close(p.up)
	}
}

// release lets the pool's workers start messages.
func (p *pool) release() { close(p.released) }

func (p *pool) setScalerError(err error) {
	text := ""
	if err != nil {
		text = err.Error()
	}
	p.mu.Lock()
	changed := p.view.ScalerError != text
	p.view.ScalerError = text
	p.mu.Unlock()
	if changed && err != nil {
		p.log.Error("scaler failed; the pool keeps its size", "err", err)
	}
}

func (p *pool) depthNow() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.view.Depth
}

// publishView refreshes what status shows.
func (p *pool) publishView(depth int64) {
	busy := 0
	for _, w := range p.running() {
		if w.busy() {
			busy++
		}
	}
	var procs []Process
	for _, w := range p.workers {
		if pw, ok := w.(*processWorker); ok {
			procs = append(procs, Process{PID: pw.cmd.Process.Pid, Started: pw.started, Busy: pw.busy()})
		}
	}
	slices.SortFunc(procs, func(a, b Process) int { return a.Started.Compare(b.Started) })
	p.mu.Lock()
	p.view.Processes = procs
	p.view.Workers = len(p.workers)
	p.view.Busy = busy
	p.view.Depth = depth
	p.view.Throttle = p.throttle.delay()
	p.mu.Unlock()
}

func (p *pool) snapshot() poolView {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.view
}

// observe counts a handled message.
func (p *pool) observe(h handled) {
	p.duration.Observe(h.took.Seconds())
	if h.outcome.TimedOut {
		p.timeouts.Inc()
	}
	out := h.outcome
	if out.Action == tasks.Release {
		return // counted when it is handled again
	}
	if spec := p.task.Spec; spec.Schedule != "" && h.delivery.RoutingKey == tasks.TickKey(spec.Name) {
		p.state.tick.handled(h.delivery)
	}
	p.state.counts[out.Action].Add(1)
	p.outcomes[out.Action].Inc()
	if out.Action != tasks.Ack {
		p.state.mu.Lock()
		p.state.lastErr = &Failure{At: time.Now().UTC(), MessageID: h.delivery.MessageID, Outcome: out.Action.String(),
			Reason: out.Reason, Error: out.Error}
		p.state.mu.Unlock()
	}
}

// errSubscriptionEnded: the broker ended a subscription nobody stopped.
var errSubscriptionEnded = errors.New("the subscription ended")
