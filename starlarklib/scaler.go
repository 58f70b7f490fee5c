package starlarklib

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	startime "go.starlark.net/lib/time"
	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"

	"github.com/symphony-go/symphony/tasks"
)

// DefaultDecideSteps bounds one call of a scaler's decide function when the
// task sets no max_steps: far more than looking at a hundred samples needs,
// and still a fraction of a second.
const DefaultDecideSteps = 10_000_000

// scalerValue is what scaler(decide, interval = None) returns: a work model
// whose pool size a Starlark function decides. task(work_model = ...)
// turns it into a tasks.Scaler.
type scalerValue struct {
	decide   starlark.Callable
	interval time.Duration
	env      *environment
}

var _ starlark.Value = scalerValue{}

func (s scalerValue) String() string {
	if s.interval == 0 {
		return fmt.Sprintf("scaler(decide = %s)", s.decide)
	}
	return fmt.Sprintf("scaler(decide = %s, interval = %q)", s.decide, s.interval)
}
func (s scalerValue) Type() string         { return "scaler" }
func (s scalerValue) Freeze()              { s.decide.Freeze() }
func (s scalerValue) Truth() starlark.Bool { return true }
func (s scalerValue) Hash() (uint32, error) {
	return 0, errors.New("unhashable type: scaler")
}

// scalerBuiltin is scaler(decide, interval = None): the work model of a
// task that decides its own pool size. decide(stats) returns the number of
// workers wanted; interval (seconds or "30s") is how often it is asked,
// by default the daemon's scaling_interval. Only while files load.
func scalerBuiltin(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var (
		decide   starlark.Value
		interval starlark.Value = starlark.None
	)
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "decide", &decide, "interval?", &interval); err != nil {
		return nil, err
	}
	st := stateOf(th)
	switch st.phase {
	case phaseConfig:
		return nil, fmt.Errorf("%s: not allowed in symphony.star: use it in a task file, as task(work_model = scaler(decide = fn))", b.Name())
	case phaseRun, phaseScale:
		return nil, fmt.Errorf("%s: work models are chosen when files load, not while tasks run: call scaler() at the top level of the file, as in task(work_model = scaler(decide = fn))", b.Name())
	}
	fn, problem := callableWith(b.Name()+": decide", decide, "stats")
	if problem != "" {
		return nil, errors.New(problem)
	}
	s := scalerValue{decide: fn, env: st.env}
	if interval != starlark.None {
		d, err := toDuration(interval)
		if err != nil {
			return nil, fmt.Errorf("%s: interval: %v", b.Name(), err)
		}
		if d <= 0 {
			return nil, fmt.Errorf("%s: interval must be positive, got %s: it is how often the pool decides; leave it out to use the daemon's scaling_interval", b.Name(), interval)
		}
		s.interval = d
	}
	if s.env == nil {
		s.env = newEnvironment(Options{})
	}
	return s, nil
}

// scaler runs a task's decide function: it is the tasks.Scaler of a task
// whose work model is scaler(...). It holds only values frozen at load
// time, so any number of goroutines may call Decide at once; each call
// gets its own thread.
type scaler struct {
	env      *environment
	task     string
	decide   starlark.Callable
	maxSteps uint64 // the task's max_steps; zero means DefaultDecideSteps
}

var _ tasks.Scaler = (*scaler)(nil)

// newScaler is the tasks.Scaler of the task spec whose work model is v.
func newScaler(v scalerValue, spec *tasks.Spec) *scaler {
	return &scaler{env: v.env, task: spec.Name, decide: v.decide, maxSteps: spec.MaxSteps}
}

// Decide calls decide(stats) on a fresh thread. The context's end cancels
// the thread, so even a `while True: pass` returns promptly, and the step
// limit bounds it without one. Errors carry the Starlark backtrace.
func (s *scaler) Decide(ctx context.Context, stats tasks.Stats) (int, error) {
	if ctx.Err() != nil {
		return 0, fmt.Errorf("decide: not started: %w", context.Cause(ctx))
	}
	st := &state{
		phase:  phaseScale,
		ctx:    ctx,
		logger: s.env.logger.With("task", s.task),
	}
	th := s.env.thread("scaler "+s.task, st)
	limit := s.maxSteps
	why := fmt.Sprintf("step limit exceeded (max_steps = %d)", limit)
	if limit == 0 {
		limit = DefaultDecideSteps
		why = fmt.Sprintf("step limit exceeded (decide may run %d steps)", limit)
	}
	b := bound(ctx, th, limit, why)
	defer b.stop()

	v, err := starlark.Call(th, s.decide, starlark.Tuple{statsValue(stats)}, nil)
	if err != nil {
		return 0, &runError{msg: s.env.world.Redactor.Redact("decide: " + withBacktrace(err)), causes: b.causes(err)}
	}
	n, ok := v.(starlark.Int)
	if !ok {
		hint := ""
		switch v.(type) {
		case starlark.NoneType:
			hint = ": is a return statement missing?"
		case starlark.Float:
			hint = ": round it with int(...)"
		}
		return 0, fmt.Errorf("decide returned %s, want an int (the number of workers)%s", describe(v), hint)
	}
	i, ok := n.Int64()
	if !ok || int64(int(i)) != i {
		return 0, fmt.Errorf("decide returned %s, which is out of range for a number of workers", n)
	}
	return int(i), nil
}

// withBacktrace is err's message followed by the Starlark call stack that
// led to it, innermost call last.
func withBacktrace(err error) string {
	var eval *starlark.EvalError
	if !errors.As(err, &eval) {
		return err.Error()
	}
	stack := eval.CallStack
	if n := len(stack); n > 0 && stack[n-1].Pos.Filename() == "<builtin>" {
		stack = stack[:n-1]
	}
	return eval.Msg + "\n" + strings.TrimSuffix(stack.String(), "\n")
}

// statsValue is the stats struct a decide function gets: samples (a list
// of structs with at, a time, and ready, oldest first), workers, min, max
// and busy (ints), idle (a float of seconds per worker) and idle_timeout
// (float seconds).
func statsValue(s tasks.Stats) starlark.Value {
	samples := make([]starlark.Value, len(s.Samples))
	for i, x := range s.Samples {
		samples[i] = starlarkstruct.FromStringDict(starlark.String("sample"), starlark.StringDict{
			"at":    startime.Time(x.At),
			"ready": starlark.MakeInt(x.Ready),
		})
	}
	idle := make([]starlark.Value, len(s.Idle))
	for i, d := range s.Idle {
		idle[i] = starlark.Float(d.Seconds())
	}
	return starlarkstruct.FromStringDict(starlark.String("stats"), starlark.StringDict{
		"samples":      starlark.NewList(samples),
		"workers":      starlark.MakeInt(s.Workers),
		"min":          starlark.MakeInt(s.Min),
		"max":          starlark.MakeInt(s.Max),
		"busy":         starlark.MakeInt(s.Busy),
		"idle":         starlark.NewList(idle),
		"idle_timeout": starlark.Float(s.IdleTimeout.Seconds()),
	})
}
