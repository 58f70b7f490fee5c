package tasks

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestDecide(t *testing.T) {
	t.Parallel()
	spec := NewSpec("t") // max_attempts 5, retry_delay 1s, max_retry_delay 5m
	spec.Timeout = 2 * time.Second
	retrySpec := spec
	retrySpec.TimeoutAction = TimeoutRetry
	fireAndForget := spec
	fireAndForget.Acknowledge = false
	boom := errors.New("fail: boom")

	cases := []struct {
		name    string
		spec    Spec
		attempt int
		result  Result
		stop    error
		want    Outcome
	}{
		{"truthy or None acks", spec, 1, Result{Verdict: Succeeded}, nil, Outcome{Action: Ack}},
		{"False retries after the first delay", spec, 1, Result{Verdict: Declined}, nil,
			Outcome{Action: Retry, Delay: time.Second, Reason: "returned False"}},
		{"the delay doubles", spec, 3, Result{Verdict: Declined}, nil,
			Outcome{Action: Retry, Delay: 4 * time.Second, Reason: "returned False"}},
		{"the last attempt dead-letters", spec, 5, Result{Verdict: Declined}, nil,
			Outcome{Action: Dead, Reason: ReasonMaxAttempts, Error: "gave up after 5 attempts; last: returned False"}},
		{"retry() with a delay", spec, 2, Result{Verdict: RetryRequested, RetryAfter: 7 * time.Second, Reason: "busy"}, nil,
			Outcome{Action: Retry, Delay: 7 * time.Second, Reason: "busy"}},
		{"retry() without a delay backs off", spec, 2, Result{Verdict: RetryRequested}, nil,
			Outcome{Action: Retry, Delay: 2 * time.Second, Reason: "retry requested"}},
		{"retry() on the last attempt dead-letters", spec, 5, Result{Verdict: RetryRequested, Reason: "busy"}, nil,
			Outcome{Action: Dead, Reason: ReasonMaxAttempts, Error: "gave up after 5 attempts; last: busy"}},
		{"a failure dead-letters with its backtrace", spec, 1, Result{Verdict: Failed, Err: boom, Backtrace: "Traceback...\nfail: boom"}, nil,
			Outcome{Action: Dead, Reason: ReasonError, Error: "Traceback...\nfail: boom"}},
		{"a failure without backtrace keeps its text", spec, 1, Result{Verdict: Failed, Err: boom}, nil,
			Outcome{Action: Dead, Reason: ReasonError, Error: "fail: boom"}},
		{"a failure on the last attempt is an error, not max-attempts", spec, 5, Result{Verdict: Failed, Err: boom}, nil,
			Outcome{Action: Dead, Reason: ReasonError, Error: "fail: boom"}},
		{"a payload that does not decode", spec, 1, Result{Verdict: Failed, Err: fmt.Errorf("application/json: %w", ErrDecode)}, nil,
			Outcome{Action: Dead, Reason: ReasonDecode, Error: "application/json: payload does not decode"}},
		{"the step limit", spec, 1, Result{Verdict: Failed, Err: fmt.Errorf("run: %w", ErrStepLimit)}, nil,
			Outcome{Action: Dead, Reason: ReasonMaxSteps, Error: "run: step limit exceeded"}},
		{"timeout with reject", spec, 1, Result{Verdict: Failed, Err: boom}, ErrTimeout,
			Outcome{Action: Dead, Reason: ReasonTimeout, TimedOut: true, Error: "handler exceeded its timeout of 2s"}},
		{"timeout with retry", retrySpec, 1, Result{Verdict: Failed, Err: boom}, ErrTimeout,
			Outcome{Action: Retry, Delay: time.Second, Reason: ReasonTimeout, TimedOut: true}},
		{"timeout with retry on the last attempt", retrySpec, 5, Result{Verdict: Failed, Err: boom}, ErrTimeout,
			Outcome{Action: Dead, Reason: ReasonMaxAttempts, TimedOut: true, Error: "gave up after 5 attempts; last: timeout"}},
		{"a run that finished before the timeout keeps its verdict", spec, 1, Result{Verdict: Succeeded}, ErrTimeout,
			Outcome{Action: Ack}},
		{"shutdown releases the message", spec, 2, Result{Verdict: Failed, Err: boom}, ErrShutdown,
			Outcome{Action: Release, Reason: "shutdown"}},
		{"shutdown after success still acks", spec, 2, Result{Verdict: Succeeded}, ErrShutdown,
			Outcome{Action: Ack}},
		{"acknowledge=False: a failure is forgotten", fireAndForget, 1, Result{Verdict: Failed, Err: boom}, nil,
			Outcome{Action: Ack}},
		{"acknowledge=False: False is forgotten", fireAndForget, 1, Result{Verdict: Declined}, nil,
			Outcome{Action: Ack}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if got := Decide(c.spec, c.attempt, c.result, c.stop); got != c.want {
				t.Errorf("Decide() =\n %+v\nwant\n %+v", got, c.want)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	s := NewSpec("t")
	s.RetryDelay = 3 * time.Second
	s.MaxRetryDelay = 20 * time.Second
	want := []time.Duration{3 * time.Second, 6 * time.Second, 12 * time.Second, 20 * time.Second, 20 * time.Second}
	for i, w := range want {
		if got := s.Backoff(i + 1); got != w {
			t.Errorf("Backoff(%d) = %s, want %s", i+1, got, w)
		}
	}
	// Many attempts neither overflow nor loop long.
	if got := s.Backoff(1 << 30); got != 20*time.Second {
		t.Errorf("Backoff(huge) = %s", got)
	}
}

func TestLost(t *testing.T) {
	t.Parallel()
	spec := NewSpec("t") // max_attempts 5
	fireAndForget := spec
	fireAndForget.Acknowledge = false
	for _, tc := range []struct {
		spec    Spec
		attempt int
		dead    bool
	}{
		{spec, 1, false},
		{spec, 5, false},
		{spec, 6, true},
		{spec, 40, true},
		{fireAndForget, 6, false},
	} {
		out, dead := Lost(tc.spec, tc.attempt)
		if dead != tc.dead || dead && (out.Action != Dead || out.Reason != ReasonWorkerLost ||
			!strings.Contains(out.Error, fmt.Sprintf("%d attempts in all (max_attempts 5)", tc.attempt-1))) {
			t.Errorf("Lost(attempt %d, acknowledge %v) = %+v, %v", tc.attempt, tc.spec.Acknowledge, out, dead)
		}
	}
}

func TestEffectivePrefetch(t *testing.T) {
	t.Parallel()
	s := NewSpec("t")
	if s.EffectivePrefetch() != DefaultPrefetch {
		t.Errorf("longlived prefetch = %d", s.EffectivePrefetch())
	}
	s.WorkModel = Oneshot
	s.Prefetch = 50
	if s.EffectivePrefetch() != 1 {
		t.Errorf("oneshot prefetch = %d, want 1", s.EffectivePrefetch())
	}
	s = NewSpec("t")
	s.Isolation, s.MaxMemory = Process, 64<<20
	if s.EffectivePrefetch() != 1 {
		t.Errorf("prefetch with max_memory = %d, want 1", s.EffectivePrefetch())
	}
}

func TestValidateName(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"hello", "image.thumbs", "a_b-c.9"} {
		if err := ValidateName(ok); err != nil {
			t.Errorf("ValidateName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "Hello", "a b", "a/b", "ü", strings.Repeat("a", 201)} {
		if err := ValidateName(bad); err == nil {
			t.Errorf("ValidateName(%q) = nil, want an error", bad)
		}
	}
}
