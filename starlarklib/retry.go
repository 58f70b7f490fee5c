package starlarklib

import (
	"fmt"
	"time"

	"go.starlark.net/starlark"
)

// retryValue is what retry(...) returns: a handler that returns it asks
// for its message to be delivered again.
type retryValue struct {
	after  time.Duration
	reason string
}

var _ starlark.Value = retryValue{}

func (r retryValue) String() string {
	return fmt.Sprintf("retry(after = %q, reason = %q)", r.after, r.reason)
}
func (r retryValue) Type() string { return "retry" }
func (r retryValue) Freeze()      {}

// Truth is False: a retry is not a success, whoever tests it.
func (r retryValue) Truth() starlark.Bool { return false }
func (r retryValue) Hash() (uint32, error) {
	return starlark.String(r.String()).Hash()
}

// retryBuiltin is retry(after = None, reason = ""): a value for a handler
// to return when its message should be retried, after the given delay
// (seconds or a duration string) or the task's backoff.
func retryBuiltin(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var (
		after  starlark.Value = starlark.None
		reason string
	)
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "after?", &after, "reason?", &reason); err != nil {
		return nil, err
	}
	r := retryValue{reason: reason}
	if after != starlark.None {
		d, err := nonNegativeDuration("after", after)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b.Name(), err)
		}
		r.after = d
	}
	return r, nil
}
