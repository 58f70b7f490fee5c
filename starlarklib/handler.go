package starlarklib

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.starlark.net/starlark"

	"github.com/symphony-go/symphony/tasks"
)

// handler runs a task's deliveries. It holds only values frozen at load
// time, so any number of goroutines may call Handle at once; each run gets
// its own thread.
type handler struct {
	env *environment
	def *taskDef
}

func newHandler(env *environment, def *taskDef) *handler {
	return &handler{env: env, def: def}
}

var _ tasks.Handler = (*handler)(nil)

// bounds are the limits of one run on a thread: a step limit (none when
// zero) that cancels it with why, and ctx, whose end cancels it.
type bounds struct {
	ctx         context.Context
	stepLimited bool
	stop        func() bool
}

func bound(ctx context.Context, th *starlark.Thread, steps uint64, why string) *bounds {
	b := &bounds{ctx: ctx}
	if steps > 0 {
		th.SetMaxExecutionSteps(steps)
		th.OnMaxSteps = func(th *starlark.Thread) {
			b.stepLimited = true
			th.Cancel(why)
		}
	}
	b.stop = context.AfterFunc(ctx, func() { th.Cancel(context.Cause(ctx).Error()) })
	return b
}

// causes are what a run's error is also, for errors.Is: the step limit,
// or the context's cause when it ended the run.
func (b *bounds) causes(err error) []error {
	causes := []error{err}
	if b.stepLimited {
		causes = append(causes, tasks.ErrStepLimit)
	} else if b.ctx.Err() != nil {
		causes = append(causes, context.Cause(b.ctx))
	}
	return causes
}

// runError is a failed run: the script's error, and the causes the engine
// may test with errors.Is (tasks.ErrStepLimit, the context's cause).
type runError struct {
	msg    string
	causes []error
}

func (e *runError) Error() string   { return e.msg }
func (e *runError) Unwrap() []error { return e.causes }

// Handle runs one delivery through the task's work function (or routes)
// on a fresh thread. The context's end cancels the thread, so even a
// `while True: pass` stops.
func (h *handler) Handle(ctx context.Context, d *tasks.Delivery) tasks.Result {
	spec := &h.def.spec
	if ctx.Err() != nil {
		return tasks.Result{Verdict: tasks.Failed, Err: fmt.Errorf("run %s: not started: %w", spec.Name, context.Cause(ctx))}
	}
	payload, err := decodePayload(d.ContentType, d.Body)
	if err != nil {
		return tasks.Result{Verdict: tasks.Failed, Err: err}
	}
	meta := newMeta(d, spec)
	st := &state{
		phase:   phaseRun,
		ctx:     ctx,
		task:    h.def,
		logger:  h.env.logger,
		logWith: []any{"task", spec.Name, "message_id", d.MessageID, "attempt", d.Attempt},
	}
	th := h.env.thread("task "+spec.Name, st)
	b := bound(ctx, th, spec.MaxSteps, fmt.Sprintf("step limit exceeded (max_steps = %d)", spec.MaxSteps))
	defer b.stop()

	redactor := h.env.world.Redactor
	fail := func(err error) tasks.Result {
		r := tasks.Result{Verdict: tasks.Failed}
		causes := b.causes(err)
		msg := err.Error()
		var eval *starlark.EvalError
		if errors.As(err, &eval) {
			msg = eval.Msg
			r.Backtrace = redactor.Redact(backtrace(eval))
		}
		r.Err = &runError{msg: redactor.Redact(msg), causes: causes}
		return r
	}

	def := h.def
	if spec.WorkModel == tasks.Oneshot {
		if def, err = h.rerun(th, st); err != nil {
			return fail(err)
		}
	}
	st.phase = phaseRun
	st.mod = nil

	args := starlark.Tuple{payload, meta}
	if def.work != nil {
		v, err := starlark.Call(th, def.work, args, nil)
		if err != nil {
			return fail(err)
		}
		return redactor.result(verdict(v, st))
	}
	matched := false
	for _, r := range def.routes {
		if !tasks.Match(r.pattern, d.RoutingKey) {
			continue
		}
		matched = true
		v, err := starlark.Call(th, r.fn, args, nil)
		if err != nil {
			return fail(err)
		}
		if res := verdict(v, st); res.Verdict != tasks.Succeeded {
			return redactor.result(res)
		}
	}
	if !matched {
		st.log().DebugContext(ctx, "no route matches the routing key", "routing_key", d.RoutingKey)
	}
	return redactor.result(tasks.Result{Verdict: tasks.Succeeded, Publications: st.publications})
}

// result scrubs secret values from what a run hands the engine: a retry's
// reason and the messages it publishes (their bodies and headers).
func (r *Redactor) result(res tasks.Result) tasks.Result {
	res.Reason = r.Redact(res.Reason)
	for i := range res.Publications {
		p := &res.Publications[i]
		p.Body = r.RedactBytes(p.Body)
		p.RoutingKey = r.Redact(p.RoutingKey)
		for k, v := range p.Headers {
			if s, ok := v.(string); ok {
				p.Headers[k] = r.Redact(s)
			}
		}
	}
	return res
}

// verdict reads a handler's return value: retry(...) asks for a retry,
// None and truthy values succeed, other falsy values (False, 0, "", [],
// {}) decline. Publications go with a success only.
func verdict(v starlark.Value, st *state) tasks.Result {
	switch x := v.(type) {
	case retryValue:
		return tasks.Result{Verdict: tasks.RetryRequested, RetryAfter: x.after, Reason: x.reason}
	case starlark.NoneType:
	default:
		if !v.Truth() {
			return tasks.Result{Verdict: tasks.Declined}
		}
	}
	return tasks.Result{Verdict: tasks.Succeeded, Publications: st.publications}
}

// rerun executes a oneshot task's file anew on th, with fresh globals
// that are not frozen and belong to this run alone, and returns that
// execution's task of the same name. Loaded libraries are the frozen
// modules of the load: frozen, they carry no state between runs.
func (h *handler) rerun(th *starlark.Thread, st *state) (*taskDef, error) {
	m := h.def.mod
	st.phase, st.mod = phaseExec, m
	th.Load = func(_ *starlark.Thread, name string) (starlark.StringDict, error) {
		dep := m.loadNames[name]
		if dep == nil {
			return nil, fmt.Errorf("%s was not loaded when the tasks were loaded", name)
		}
		return dep.globals, nil
	}
	if _, err := m.prog.Init(th, h.env.predeclared); err != nil {
		return nil, err
	}
	for _, d := range st.rerun {
		if d.spec.Name == h.def.spec.Name {
			return d, nil
		}
	}
	return nil, fmt.Errorf("run %s: %s did not register task %q when it ran again", h.def.spec.Name, m.name, h.def.spec.Name)
}

// backtrace is the Starlark backtrace of a failed run, without the
// repetition of a builtin's name: a builtin's error already starts with it
// ("fail: negative"), so "Error in fail: fail: negative" reads
// "Error: fail: negative".
func backtrace(eval *starlark.EvalError) string {
	bt := eval.Backtrace()
	stack := eval.CallStack
	if len(stack) == 0 {
		return bt
	}
	name := stack[len(stack)-1].Name
	last := "Error in " + name + ": " + eval.Msg
	if strings.HasPrefix(eval.Msg, name+": ") && strings.HasSuffix(bt, last) {
		return bt[:len(bt)-len(last)] + "Error: " + eval.Msg
	}
	return bt
}
