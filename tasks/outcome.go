package tasks

import (
	"errors"
	"fmt"
	"time"
)

// Action is what happens to a delivered message.
type Action int

const (
	// Ack removes the message from its queue.
	Ack Action = iota
	// Retry delivers the message again after Outcome.Delay, as attempt+1.
	Retry
	// Dead stores the message as a dead letter with Outcome.Reason.
	Dead
	// Release returns the message to its queue at once, as the same
	// attempt: the daemon stopped before its handler finished.
	Release
)

func (a Action) String() string {
	switch a {
	case Ack:
		return "ack"
	case Retry:
		return "retry"
	case Dead:
		return "dead"
	case Release:
		return "release"
	}
	return "unknown"
}

// Reasons a message is dead-lettered.
const (
	ReasonMaxAttempts = "max-attempts"
	ReasonError       = "error"
	ReasonDecode      = "decode"
	ReasonTimeout     = "timeout"
	ReasonMaxSteps    = "max-steps"
	// ReasonWorkerLost: the message's earlier deliveries all ended with
	// their worker (a killed worker process, one over max_memory, the
	// daemon killed), max_attempts of them.
	ReasonWorkerLost = "worker-lost"
)

// Outcome is the decision about one delivery.
type Outcome struct {
	Action Action
	// Delay before the retried delivery (Retry only).
	Delay time.Duration
	// Reason is why the message was retried or dead-lettered.
	Reason string
	// Error is the failure's text with its backtrace (Dead only).
	Error string
	// TimedOut is set when the run exceeded the task's timeout.
	TimedOut bool
}

// Decide maps the result of a run to what happens to its message (SPEC §3).
// attempt is the delivery's attempt number; stop is the cause the engine
// gave the run's context when it stopped the run early, or nil. A run that
// finished before it noticed the stop keeps its own verdict.
func Decide(spec Spec, attempt int, r Result, stop error) Outcome {
	if !spec.Acknowledge {
		// The broker forgot the message on delivery: nothing to decide.
		return Outcome{Action: Ack}
	}
	if r.Verdict != Failed {
		stop = nil
	}
	switch {
	case errors.Is(stop, ErrShutdown):
		return Outcome{Action: Release, Reason: "shutdown"}
	case errors.Is(stop, ErrTimeout):
		if spec.TimeoutAction == TimeoutRetry {
			o := retry(spec, attempt, 0, ReasonTimeout)
			o.TimedOut = true
			return o
		}
		return Outcome{Action: Dead, Reason: ReasonTimeout, TimedOut: true,
			Error: fmt.Sprintf("handler exceeded its timeout of %s", spec.Timeout)}
	}
	switch r.Verdict {
	case Succeeded:
		return Outcome{Action: Ack}
	case Declined:
		return retry(spec, attempt, 0, "returned False")
	case RetryRequested:
		reason := r.Reason
		if reason == "" {
			reason = "retry requested"
		}
		return retry(spec, attempt, r.RetryAfter, reason)
	}
	reason := ReasonError
	switch {
	case errors.Is(r.Err, ErrDecode):
		reason = ReasonDecode
	case errors.Is(r.Err, ErrStepLimit):
		reason = ReasonMaxSteps
	}
	text := "unknown failure"
	if r.Err != nil {
		text = r.Err.Error()
	}
	if r.Backtrace != "" {
		text = r.Backtrace
	}
	return Outcome{Action: Dead, Reason: reason, Error: text}
}

// Lost decides, before a delivery runs, whether it may: a delivery whose
// worker died without settling it counts as an attempt (SPEC §3), so a
// delivery past max_attempts can only follow lost ones, and the message
// is dead-lettered with reason worker-lost without running again: a
// message that kills every worker that takes it stops coming back.
func Lost(spec Spec, attempt int) (Outcome, bool) {
	if !spec.Acknowledge || attempt <= spec.MaxAttempts {
		return Outcome{}, false
	}
	return Outcome{Action: Dead, Reason: ReasonWorkerLost,
		Error: fmt.Sprintf("its worker died during its last deliveries, %d attempts in all (max_attempts %d): "+
			"a worker process killed or over max_memory, or the daemon killed", attempt-1, spec.MaxAttempts)}, true
}

// retry retries the message, or dead-letters it when it has had all its
// attempts.
func retry(spec Spec, attempt int, after time.Duration, reason string) Outcome {
	if attempt >= spec.MaxAttempts {
		return Outcome{Action: Dead, Reason: ReasonMaxAttempts,
			Error: fmt.Sprintf("gave up after %d attempts; last: %s", attempt, reason)}
	}
	if after <= 0 {
		after = spec.Backoff(attempt)
	}
	return Outcome{Action: Retry, Delay: after, Reason: reason}
}
