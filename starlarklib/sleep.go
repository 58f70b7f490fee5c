package starlarklib

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.starlark.net/starlark"
)

// sleepBuiltin is sleep(seconds): it pauses the handler, and returns early
// with an error when the run's context ends (timeout or shutdown).
func sleepBuiltin(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var v starlark.Value
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "seconds", &v); err != nil {
		return nil, err
	}
	st := stateOf(th)
	if msg := notDuringLoad(b.Name(), st); msg != "" {
		return nil, errors.New(msg)
	}
	d, err := toDuration(v)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", b.Name(), err)
	}
	if d < 0 {
		return nil, fmt.Errorf("%s: seconds must not be negative, got %s", b.Name(), v)
	}
	ctx := st.context()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return starlark.None, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%s: interrupted: %w", b.Name(), context.Cause(ctx))
	}
}
