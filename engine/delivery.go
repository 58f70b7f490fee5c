package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/trace"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/tasks"
)

// settleTimeout bounds the broker calls that settle one message. They run
// on their own context so that a shutdown never strands a message between
// its retry copy and its ack.
const settleTimeout = 30 * time.Second

// runner runs the deliveries of one task and settles each on the broker.
type runner struct {
	task   tasks.Task
	broker broker.Broker
	log    *slog.Logger
	tracer trace.Tracer
}

// handled is what became of one delivery.
type handled struct {
	delivery *tasks.Delivery
	outcome  tasks.Outcome
	took     time.Duration
	// ctx carries the delivery's span, for its log lines.
	ctx context.Context
	// abandoned: the run did not stop when cancelled, and its goroutine
	// still runs (callBounded).
	abandoned bool
}

// handle runs one message through the task and settles it. hard is what
// the run sees: cancelling it stops the run and hands the message back.
//
// Each delivery is a span, the child of the W3C traceparent the message
// carries, or the root of a new trace; the run's context carries it into
// the task's log lines, and every message the run publishes carries it on.
//
// c is the worker's caller (nil: a goroutine for this run alone).
func (r *runner) handle(hard context.Context, msg *message.Message, c *caller) handled {
	spec := r.task.Spec
	start := time.Now()
	var (
		res  tasks.Result
		stop error
	)
	d, err := broker.Delivery(msg)
	if err != nil {
		d = &tasks.Delivery{MessageID: msg.UUID, Attempt: broker.Attempt(msg)}
		res = tasks.Result{Verdict: tasks.Failed, Err: fmt.Errorf("read message properties: %v: %w", err, tasks.ErrDecode)}
	}
	traced, span := r.startSpan(hard, d)
	if out, lost := tasks.Lost(spec, d.Attempt); err == nil && lost {
		d.Task = spec.Name
		r.settle(msg, d, out)
		endSpan(span, out)
		return handled{delivery: d, outcome: out, took: time.Since(start), ctx: traced}
	}
	if err == nil {
		d.Task = spec.Name
		if d.Queue == "" {
			d.Queue = spec.Queue
		}
		ctx, cancel := r.runContext(traced)
		res = r.callBounded(ctx, d, c)
		if ctx.Err() != nil {
			stop = context.Cause(ctx)
		}
		cancel()
	}
	out := tasks.Decide(spec, d.Attempt, res, stop)
	if out.Action == tasks.Ack && len(res.Publications) > 0 {
		if err := r.publish(traced, d, res.Publications); errors.Is(err, broker.ErrNoPriority) {
			// A mistake in the task files, not a passing fault: retrying
			// cannot help, so the message is dead-lettered with the error.
			out = tasks.Decide(spec, d.Attempt, tasks.Result{Verdict: tasks.Failed, Err: err}, nil)
		} else if err != nil {
			out = tasks.Decide(spec, d.Attempt, tasks.Result{Verdict: tasks.RetryRequested, Reason: err.Error()}, nil)
		}
	}
	r.settle(msg, d, out)
	endSpan(span, out)
	return handled{delivery: d, outcome: out, took: time.Since(start), ctx: traced, abandoned: errors.Is(res.Err, errAbandoned)}
}

// errAbandoned marks the result of a run that callBounded abandoned.
var errAbandoned = errors.New("run abandoned")

// abandonAfter is how long a cancelled run (timed out, or stopped by a
// shutdown) may take to notice before it is abandoned. Starlark checks
// its thread's cancellation between steps, within milliseconds; a builtin
// in one long call (str() of a list nested 100,000 deep) does not.
const abandonAfter = time.Second

// caller is the goroutine that runs a worker's handler calls, one at a
// time, kept from one message to the next: a goroutine started per
// message would begin with a small stack and grow it again, copying it
// each time, to the depth a Starlark run needs. Only its worker uses it.
type caller struct {
	jobs    chan callJob // nil before the first call and after an abandoned one
	results chan tasks.Result
}

type callJob struct {
	ctx context.Context
	d   *tasks.Delivery
}

func (c *caller) start(r *runner) {
	jobs, results := make(chan callJob), make(chan tasks.Result, 1)
	go func() {
		for j := range jobs {
			results <- r.call(j.ctx, j.d)
		}
	}()
	c.jobs, c.results = jobs, results
}

// stop lets the goroutine end once the call it runs, if any, returned;
// the next call starts another.
func (c *caller) stop() {
	if c.jobs != nil {
		close(c.jobs)
		c.jobs = nil
	}
}

// callBounded runs the handler on c's goroutine, and when its context
// ends gives it abandonAfter to return. A run that does not is
// abandoned: its message is settled as the context's cause says (a
// timeout by the task's timeout_action, a shutdown by handing it back)
// and its goroutine is left to end on its own, its result discarded (c
// starts another for the next call). Go cannot stop a goroutine; what
// matters is that the message, the worker and the daemon's shutdown do
// not wait for it.
func (r *runner) callBounded(ctx context.Context, d *tasks.Delivery, c *caller) tasks.Result {
	if c == nil {
		c = &caller{}
		defer c.stop()
	}
	if c.jobs == nil {
		c.start(r)
	}
	c.jobs <- callJob{ctx, d}
	select {
	case res := <-c.results:
		return res
	case <-ctx.Done():
	}
	grace := time.NewTimer(abandonAfter)
	defer grace.Stop()
	select {
	case res := <-c.results:
		return res
	case <-grace.C:
		c.stop()
		cause := context.Cause(ctx)
		r.log.Warn("run did not stop when cancelled: abandoned, its message settled without it",
			"message_id", d.MessageID, "cause", cause.Error(), "waited", abandonAfter.String())
		return tasks.Result{Verdict: tasks.Failed, Err: fmt.Errorf("%w: %w", errAbandoned, cause)}
	}
}

// call runs the handler; a panic in it fails the run instead of the
// daemon.
func (r *runner) call(ctx context.Context, d *tasks.Delivery) (res tasks.Result) {
	defer func() {
		if p := recover(); p != nil {
			res = tasks.Result{Verdict: tasks.Failed, Err: fmt.Errorf("handler panicked: %v", p),
				Backtrace: fmt.Sprintf("handler panicked: %v\n%s", p, debug.Stack())}
		}
	}()
	return r.task.Handler.Handle(ctx, d)
}

// runContext bounds one run by the task's timeout and by the hard stop.
func (r *runner) runContext(hard context.Context) (context.Context, context.CancelFunc) {
	if t := r.task.Spec.Timeout; t > 0 {
		return context.WithTimeoutCause(hard, t, tasks.ErrTimeout)
	}
	return context.WithCancel(hard)
}

// publish sends what a successful run published, before its delivery is
// acked: a crash in between repeats the message, never loses one.
func (r *runner) publish(ctx context.Context, d *tasks.Delivery, pubs []tasks.Publication) error {
	correlation := d.CorrelationID
	if correlation == "" {
		correlation = d.MessageID
	}
	for _, pub := range pubs {
		pub.Headers = withTrace(ctx, pub.Headers)
		msg, err := broker.NewMessage(pub)
		if err != nil {
			return fmt.Errorf("publish %s: %w", pub.RoutingKey, err)
		}
		msg.Metadata.Set(broker.MetaCorrelationID, correlation)
		if err := r.broker.Publish(pub.RoutingKey, msg); err != nil {
			return fmt.Errorf("publish %s: %w", pub.RoutingKey, err)
		}
	}
	return nil
}

// settle carries out an outcome on the broker. A retry or dead letter is
// stored before the original is acked; if storing fails the original goes
// back to the queue instead.
func (r *runner) settle(msg *message.Message, d *tasks.Delivery, out tasks.Outcome) {
	switch out.Action {
	case tasks.Ack:
		msg.Ack()
		return
	case tasks.Release:
		msg.Nack()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	queue := r.task.Spec.Queue
	switch out.Action {
	case tasks.Retry:
		again := msg.Copy()
		again.Metadata.Set(broker.MetaAttempt, strconv.Itoa(d.Attempt+1))
		delete(again.Metadata, broker.MetaRedelivered)
		if err := r.broker.Requeue(ctx, queue, again, out.Delay); err != nil {
			r.log.Error("requeue message for retry; returning it to the queue", "message_id", d.MessageID, "err", err)
			msg.Nack()
			return
		}
		msg.Ack()
	case tasks.Dead:
		grave := broker.Grave{Task: r.task.Spec.Name, Reason: out.Reason, Error: out.Error, Attempt: d.Attempt}
		if err := r.broker.Bury(ctx, queue, msg, grave); err != nil {
			r.log.Error("dead-letter message; returning it to the queue", "message_id", d.MessageID, "err", err)
			msg.Nack()
			return
		}
		msg.Ack()
	}
}

// logOutcome logs what became of a message, once it is counted: whoever
// sees the line sees the metrics that include it. An ack is logged at
// debug level, and nothing is built for a line that would not be written.
func (r *runner) logOutcome(h handled) {
	out := h.outcome
	var (
		level slog.Level
		msg   string
		more  []any
	)
	switch out.Action {
	case tasks.Release:
		level, msg, more = slog.LevelInfo, "message returned to the queue", []any{"reason", out.Reason}
	case tasks.Ack:
		level, msg = slog.LevelDebug, "message acked"
	case tasks.Retry:
		level, msg, more = slog.LevelWarn, "message will be retried", []any{"reason", out.Reason, "delay", out.Delay.String()}
	case tasks.Dead:
		level, msg, more = slog.LevelError, "message dead-lettered", []any{"reason", out.Reason, "error", out.Error}
	default:
		return
	}
	ctx := h.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	if !r.log.Enabled(ctx, level) {
		return
	}
	d := h.delivery
	attrs := append([]any{"message_id", d.MessageID, "routing_key", d.RoutingKey, "attempt", d.Attempt, "took", h.took.String()}, more...)
	r.log.Log(ctx, level, msg, attrs...)
}
