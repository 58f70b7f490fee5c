package engine

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/tasks"
)

// settleTimeout bounds the broker calls that settle one message. They run
// on their own context so that a shutdown never strands a message between
// its retry copy and its ack.
const settleTimeout = 30 * time.Second

// pool is the workers of one task.
type pool struct {
	eng  *Engine
	task tasks.Task
	log  *slog.Logger
	sub  message.Subscriber

	workers atomic.Int64
	depth   atomic.Int64
	counts  [3]atomic.Int64 // by tasks.Action: Ack, Retry, Dead

	mu      sync.Mutex
	lastErr *failure
}

// failure is the last message a pool dead-lettered or retried, for status.
type failure struct {
	At        time.Time `json:"at"`
	MessageID string    `json:"message_id"`
	Outcome   string    `json:"outcome"`
	Reason    string    `json:"reason"`
	Error     string    `json:"error,omitempty"`
}

func newPool(e *Engine, t tasks.Task) *pool {
	return &pool{eng: e, task: t, log: e.log.With("task", t.Spec.Name)}
}

func (p *pool) open() error {
	spec := p.task.Spec
	sub, err := p.eng.cfg.Broker.Subscriber(broker.ConsumeOptions{
		Prefetch: spec.EffectivePrefetch(),
		AutoAck:  !spec.Acknowledge,
	})
	if err != nil {
		return fmt.Errorf("subscribe to queue %s of task %s: %w", spec.Queue, spec.Name, err)
	}
	p.sub = sub
	return nil
}

// close ends every subscription; anything still unacked goes back to the
// queue.
func (p *pool) close() {
	if p.sub == nil {
		return
	}
	if err := p.sub.Close(); err != nil {
		p.log.Error("close subscriber", "err", err)
	}
}

// size is how many workers the pool runs. It is the one place the pool
// decides its size.
func (p *pool) size() int { return p.task.Spec.MaxWorkers }

// run starts the workers and samples the queue until intake stops, then
// waits for the workers to settle or hand back their messages.
func (p *pool) run(intake, hard context.Context) {
	var wg sync.WaitGroup
	for i := range p.size() {
		wg.Go(func() { p.work(intake, hard, i) })
	}
	p.sample(intake)
	tick := time.NewTicker(p.eng.cfg.ScalingInterval)
	defer tick.Stop()
	for {
		select {
		case <-intake.Done():
			wg.Wait()
			return
		case <-tick.C:
			p.sample(intake)
		}
	}
}

func (p *pool) sample(ctx context.Context) {
	n, err := p.eng.cfg.Broker.Depth(ctx, p.task.Spec.Queue)
	if err != nil {
		if ctx.Err() == nil {
			p.log.Warn("measure queue depth", "err", err)
		}
		return
	}
	p.depth.Store(int64(n))
	p.eng.metrics.depth.WithLabelValues(p.task.Spec.Name).Set(float64(n))
}

// work is one worker: a subscription whose messages it handles one at a
// time until intake stops. A subscription that breaks is made again, with
// a growing pause.
func (p *pool) work(intake, hard context.Context, id int) {
	name := p.task.Spec.Name
	p.eng.metrics.workers.WithLabelValues(name).Set(float64(p.workers.Add(1)))
	defer func() { p.eng.metrics.workers.WithLabelValues(name).Set(float64(p.workers.Add(-1))) }()
	log := p.log.With("worker", id)
	var first sync.Once
	pause := 100 * time.Millisecond
	for intake.Err() == nil {
		msgs, err := p.sub.Subscribe(intake, p.task.Spec.Queue)
		if err != nil {
			log.Error("subscribe", "err", err, "retry_in", pause.String())
			select {
			case <-intake.Done():
			case <-time.After(pause):
			}
			pause = min(pause*2, 5*time.Second)
			continue
		}
		first.Do(p.eng.subscribed)
		pause = 100 * time.Millisecond
		for msg := range msgs {
			p.handle(hard, msg)
		}
	}
}

// handle runs one message through the task and settles it on the broker.
func (p *pool) handle(hard context.Context, msg *message.Message) {
	spec := p.task.Spec
	start := time.Now()
	var (
		res  tasks.Result
		stop error
	)
	d, err := broker.Delivery(msg)
	if err != nil {
		d = &tasks.Delivery{MessageID: msg.UUID, Attempt: broker.Attempt(msg)}
		res = tasks.Result{Verdict: tasks.Failed, Err: fmt.Errorf("read message properties: %v: %w", err, tasks.ErrDecode)}
	} else {
		d.Task = spec.Name
		if d.Queue == "" {
			d.Queue = spec.Queue
		}
		ctx, cancel := p.runContext(hard)
		res = p.call(ctx, d)
		if ctx.Err() != nil {
			stop = context.Cause(ctx)
		}
		cancel()
	}
	out := tasks.Decide(spec, d.Attempt, res, stop)
	if out.Action == tasks.Ack && len(res.Publications) > 0 {
		if err := p.publish(d, res.Publications); err != nil {
			out = tasks.Decide(spec, d.Attempt, tasks.Result{Verdict: tasks.RetryRequested, Reason: err.Error()}, nil)
		}
	}
	p.settle(msg, d, out)
	p.record(d, out, time.Since(start))
}

// call runs the handler; a panic in it fails the run instead of the
// daemon.
func (p *pool) call(ctx context.Context, d *tasks.Delivery) (res tasks.Result) {
	defer func() {
		if r := recover(); r != nil {
			res = tasks.Result{Verdict: tasks.Failed, Err: fmt.Errorf("handler panicked: %v", r), Backtrace: fmt.Sprintf("handler panicked: %v\n%s", r, debug.Stack())}
		}
	}()
	return p.task.Handler.Handle(ctx, d)
}

// runContext bounds one run by the task's timeout and by the hard stop.
func (p *pool) runContext(hard context.Context) (context.Context, context.CancelFunc) {
	if t := p.task.Spec.Timeout; t > 0 {
		return context.WithTimeoutCause(hard, t, tasks.ErrTimeout)
	}
	return context.WithCancel(hard)
}

// publish sends what a successful run published, before its delivery is
// acked: a crash in between repeats the message, never loses one.
func (p *pool) publish(d *tasks.Delivery, pubs []tasks.Publication) error {
	correlation := d.CorrelationID
	if correlation == "" {
		correlation = d.MessageID
	}
	for _, pub := range pubs {
		msg, err := broker.NewMessage(pub)
		if err != nil {
			return fmt.Errorf("publish %s: %w", pub.RoutingKey, err)
		}
		msg.Metadata.Set(broker.MetaCorrelationID, correlation)
		if err := p.eng.cfg.Broker.Publish(pub.RoutingKey, msg); err != nil {
			return fmt.Errorf("publish %s: %w", pub.RoutingKey, err)
		}
	}
	return nil
}

// settle carries out an outcome on the broker. A retry or dead letter is
// stored before the original is acked; if storing fails the original goes
// back to the queue instead.
func (p *pool) settle(msg *message.Message, d *tasks.Delivery, out tasks.Outcome) {
	b := p.eng.cfg.Broker
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	queue := p.task.Spec.Queue
	switch out.Action {
	case tasks.Ack:
		msg.Ack()
	case tasks.Release:
		msg.Nack()
	case tasks.Retry:
		again := msg.Copy()
		again.Metadata.Set(broker.MetaAttempt, strconv.Itoa(d.Attempt+1))
		delete(again.Metadata, broker.MetaRedelivered)
		if err := b.Requeue(ctx, queue, again, out.Delay); err != nil {
			p.log.Error("requeue message for retry; returning it to the queue", "message_id", d.MessageID, "err", err)
			msg.Nack()
			return
		}
		msg.Ack()
	case tasks.Dead:
		grave := broker.Grave{Task: p.task.Spec.Name, Reason: out.Reason, Error: out.Error, Attempt: d.Attempt}
		if err := b.Bury(ctx, queue, msg, grave); err != nil {
			p.log.Error("dead-letter message; returning it to the queue", "message_id", d.MessageID, "err", err)
			msg.Nack()
			return
		}
		msg.Ack()
	}
}

// record counts and logs an outcome.
func (p *pool) record(d *tasks.Delivery, out tasks.Outcome, took time.Duration) {
	name := p.task.Spec.Name
	m := p.eng.metrics
	m.duration.WithLabelValues(name).Observe(took.Seconds())
	if out.TimedOut {
		m.timeouts.WithLabelValues(name).Inc()
	}
	attrs := []any{"message_id", d.MessageID, "routing_key", d.RoutingKey, "attempt", d.Attempt, "took", took.String()}
	switch out.Action {
	case tasks.Release:
		p.log.Info("message returned to the queue", append(attrs, "reason", out.Reason)...)
		return
	case tasks.Ack:
		p.log.Debug("message acked", attrs...)
	case tasks.Retry:
		p.log.Warn("message will be retried", append(attrs, "reason", out.Reason, "delay", out.Delay.String())...)
	case tasks.Dead:
		p.log.Error("message dead-lettered", append(attrs, "reason", out.Reason, "error", out.Error)...)
	}
	p.counts[out.Action].Add(1)
	m.messages.WithLabelValues(name, out.Action.String()).Inc()
	if out.Action != tasks.Ack {
		p.mu.Lock()
		p.lastErr = &failure{At: time.Now().UTC(), MessageID: d.MessageID, Outcome: out.Action.String(), Reason: out.Reason, Error: out.Error}
		p.mu.Unlock()
	}
}
