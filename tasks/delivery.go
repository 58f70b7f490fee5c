package tasks

import (
	"context"
	"errors"
	"time"
)

// Delivery is one message handed to a task's handler.
type Delivery struct {
	Body          []byte
	ContentType   string
	RoutingKey    string
	Exchange      string
	Queue         string
	Task          string
	MessageID     string
	CorrelationID string
	// Headers are the application headers with their types (AMQP tables
	// nest: x-death is a list of dicts).
	Headers     map[string]any
	Timestamp   time.Time
	Redelivered bool
	// Attempt is 1 on the first delivery and grows with every retry.
	Attempt int
}

// Publication is a message a handler asked to publish. The engine sends it
// only when the handler succeeded, before the delivery is acknowledged.
type Publication struct {
	RoutingKey  string
	Body        []byte
	ContentType string
	Headers     map[string]any
	Delay       time.Duration
	// Priority, 0 to PriorityLimit, orders the message among those waiting
	// in a queue with a max_priority; above zero it is refused by a queue
	// without one.
	Priority int
}

// Verdict is how a handler's run ended.
type Verdict int

const (
	// Succeeded: the handler returned None or a truthy value.
	Succeeded Verdict = iota
	// Declined: the handler returned False (or another falsy value).
	Declined
	// RetryRequested: the handler returned retry(...).
	RetryRequested
	// Failed: the handler raised an error, or the payload did not decode.
	Failed
)

func (v Verdict) String() string {
	switch v {
	case Succeeded:
		return "succeeded"
	case Declined:
		return "declined"
	case RetryRequested:
		return "retry-requested"
	case Failed:
		return "failed"
	}
	return "unknown"
}

// Result is what one run of a handler produced.
type Result struct {
	Verdict Verdict
	// RetryAfter is the delay asked for by retry(after = ...); zero means
	// the task's backoff.
	RetryAfter time.Duration
	// Reason is the reason given to retry(reason = ...).
	Reason string
	// Err is set when Verdict is Failed.
	Err error
	// Backtrace is the script's call stack at the failure, if any.
	Backtrace string
	// Publications are the messages to publish if the run succeeded.
	Publications []Publication
}

// Handler runs deliveries. It must be safe for concurrent use: the engine
// calls it from every worker of a pool at once.
type Handler interface {
	// Handle runs one delivery. It must return promptly once ctx is done,
	// with a Failed result.
	Handle(ctx context.Context, d *Delivery) Result
}

// Task is a loaded task: what it is and the code that runs it.
type Task struct {
	Spec    Spec
	Handler Handler
}

// Errors a handler wraps so that the outcome can name the reason.
var (
	// ErrDecode: the payload did not decode by its content type.
	ErrDecode = errors.New("payload does not decode")
	// ErrStepLimit: the script ran more than max_steps steps.
	ErrStepLimit = errors.New("step limit exceeded")
)

// Causes the engine gives the context of a run when it stops the run.
var (
	// ErrTimeout: the run exceeded the task's timeout.
	ErrTimeout = errors.New("timeout exceeded")
	// ErrShutdown: the daemon stopped before the run finished.
	ErrShutdown = errors.New("shutting down")
)
