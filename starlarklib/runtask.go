package starlarklib

import (
	"context"
	"fmt"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.starlark.net/lib/json"
	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"

	"github.com/symphony-go/symphony/tasks"
)

var jsonEncode = json.Module.Members["encode"]

// testExchange is the exchange a task under test sees in meta.exchange:
// the daemon's default.
const testExchange = "symphony"

// testRun is one run_task: its stubs, and what the task did.
type testRun struct {
	s     *testSession
	task  tasks.Task
	key   string
	stubs stubSet
	calls []*callRecord
	logs  []logRecord
	// missing is the first call no stub answered; stubErr the first stub
	// that was wrong. Either fails the test.
	missing string
	stubErr error

	res tasks.Result
	out tasks.Outcome
}

// stubSet is what run_task's stub arguments give.
type stubSet struct {
	http, exec, sql map[string]*stub
	secrets         map[string]string
	files           *memDir
}

// runTaskBuiltin is run_task(name, payload = None, routing_key = None,
// headers = None, content_type = None, attempt = 1, http = None,
// exec = None, sql = None, file = None, secrets = None, bound = None): it
// runs one message through the task as the daemon would, without a
// broker, and returns what happened (see RunTests and docs/tasks.md).
func runTaskBuiltin(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	tf, _ := th.Local(testLocal).(*testFile)
	if tf == nil || stateOf(th).phase != phaseTest {
		return nil, fmt.Errorf("%s: call it from a test_* function of a *_test.star file", b.Name())
	}
	s := tf.s
	var (
		name                                               string
		payload, routingKey, headers, contentType          starlark.Value = starlark.None, starlark.None, starlark.None, starlark.None
		httpStubs, execStubs, sqlStubs, fileStubs, secrets starlark.Value = starlark.None, starlark.None, starlark.None, starlark.None, starlark.None
		bound                                              starlark.Value = starlark.None
		attempt                                                           = 1
	)
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "name", &name, "payload?", &payload,
		"routing_key?", &routingKey, "headers?", &headers, "content_type?", &contentType, "attempt?", &attempt,
		"http?", &httpStubs, "exec?", &execStubs, "sql?", &sqlStubs, "file?", &fileStubs, "secrets?", &secrets,
		"bound?", &bound); err != nil {
		return nil, err
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%s(%q): %s", b.Name(), name, fmt.Sprintf(format, args...))
	}
	t, err := s.task(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", b.Name(), err)
	}
	spec := t.Spec
	if attempt < 1 {
		return nil, fail("attempt must be 1 or more, got %d", attempt)
	}

	key, err := testRoutingKey(spec, routingKey)
	if err != nil {
		return nil, fail("%v", err)
	}
	ct := ""
	if contentType != starlark.None {
		c, ok := contentType.(starlark.String)
		if !ok || c == "" {
			return nil, fail("content_type must be a non-empty str such as \"application/json\", got %s", describe(contentType))
		}
		ct = string(c)
	}
	body, ct, err := encodePayload(th, payload, ct)
	if err != nil {
		return nil, fail("payload: %v", err)
	}
	d := &tasks.Delivery{
		Body: body, ContentType: ct, RoutingKey: key, Exchange: testExchange,
		Queue: spec.Queue, Task: spec.Name, MessageID: uuid.NewString(),
		Timestamp: time.Now(), Redelivered: attempt > 1, Attempt: attempt,
	}
	if headers != starlark.None {
		h, ok := headers.(*starlark.Dict)
		if !ok {
			return nil, fail("headers must be a dict, got %s", describe(headers))
		}
		g, err := toGo(h, false)
		if err != nil {
			return nil, fail("headers: %v", err)
		}
		d.Headers = g.(map[string]any)
	}
	var patterns []string
	if bound != starlark.None {
		l, ok := bound.(*starlark.List)
		if !ok {
			return nil, fail("bound must be a list of patterns, got %s", describe(bound))
		}
		for i := range l.Len() {
			p, ok := l.Index(i).(starlark.String)
			if !ok {
				return nil, fail("bound[%d] must be a str, got %s", i, describe(l.Index(i)))
			}
			if err := tasks.ValidatePattern(string(p)); err != nil {
				return nil, fail("bound: %v", err)
			}
			patterns = append(patterns, string(p))
		}
	}

	r := &testRun{s: s, task: t, key: key}
	if r.stubs.http, err = stubTable("http", httpStubs, true, httpStubKey, checkHTTPAnswer); err != nil {
		return nil, fail("%v", err)
	}
	if r.stubs.exec, err = stubTable("exec", execStubs, true, execStubKey, checkExecAnswer); err != nil {
		return nil, fail("%v", err)
	}
	if r.stubs.sql, err = stubTable("sql", sqlStubs, false, sqlStubKey, checkSQLAnswer); err != nil {
		return nil, fail("%v", err)
	}
	if r.stubs.secrets, err = secretStubs(secrets); err != nil {
		return nil, fail("%v", err)
	}
	if r.stubs.files, err = fileStubs2dir(fileStubs); err != nil {
		return nil, fail("%v", err)
	}

	r.run(d)
	r.out = s.route(spec, attempt, r.out, r.res.Publications, patterns)
	tf.last = r
	switch {
	case r.stubErr != nil:
		return nil, fail("%v", r.stubErr)
	case r.missing != "":
		return nil, fail("%s", r.missing)
	}
	return r.value(), nil
}

// testRoutingKey is run_task's routing_key, which the task must
// subscribe to; by default the task's first pattern, when it is a key.
func testRoutingKey(spec tasks.Spec, v starlark.Value) (string, error) {
	if v == starlark.None {
		if len(spec.Patterns) > 0 {
			if p := spec.Patterns[0]; tasks.ValidateRoutingKey(p) == nil && !strings.ContainsAny(p, "*#") {
				return p, nil
			}
		}
		return "", fmt.Errorf("pass routing_key = \"...\": the task subscribes to %s, which is not a routing key",
			strings.Join(spec.Patterns, ", "))
	}
	k, ok := v.(starlark.String)
	if !ok {
		return "", fmt.Errorf("routing_key must be a str, got %s", describe(v))
	}
	key := string(k)
	if err := tasks.ValidateRoutingKey(key); err != nil {
		return "", fmt.Errorf("routing_key: %v", err)
	}
	if !slices.ContainsFunc(spec.Patterns, func(p string) bool { return tasks.Match(p, key) }) {
		return "", fmt.Errorf("the task does not subscribe to %q (its patterns: %s), so the daemon would never give it this message",
			key, strings.Join(spec.Patterns, ", "))
	}
	return key, nil
}

// run runs the delivery as the engine does: bounded by the task's
// timeout, a panic a failure, the outcome decided by tasks.Decide.
func (r *testRun) run(d *tasks.Delivery) {
	s, spec := r.s, r.task.Spec
	ctx, cancel := context.WithCancel(context.Background())
	if spec.Timeout > 0 {
		ctx, cancel = context.WithTimeoutCause(context.Background(), spec.Timeout, tasks.ErrTimeout)
	}
	defer cancel()
	s.world.Redactor = NewRedactor()
	s.run = r
	defer func() { s.run = nil }()
	func() {
		defer func() {
			if p := recover(); p != nil {
				r.res = tasks.Result{Verdict: tasks.Failed, Err: fmt.Errorf("handler panicked: %v", p),
					Backtrace: fmt.Sprintf("handler panicked: %v\n%s", p, debug.Stack())}
			}
		}()
		r.res = r.task.Handler.Handle(ctx, d)
	}()
	var stop error
	if ctx.Err() != nil {
		stop = context.Cause(ctx)
	}
	r.out = tasks.Decide(spec, d.Attempt, r.res, stop)
}

// route settles what a successful run published as a broker bound to
// the tasks under test (and to bound) would: a key that no task
// subscribes to is refused, and the daemon retries the message; a
// priority for a queue that takes none dead-letters it.
func (s *testSession) route(spec tasks.Spec, attempt int, out tasks.Outcome, pubs []tasks.Publication, bound []string) tasks.Outcome {
	if out.Action != tasks.Ack {
		return out
	}
	for _, p := range pubs {
		matched := slices.ContainsFunc(bound, func(b string) bool { return tasks.Match(b, p.RoutingKey) })
		var plain []string
		for _, t := range s.tasks {
			if slices.ContainsFunc(t.Spec.Patterns, func(pat string) bool { return tasks.Match(pat, p.RoutingKey) }) {
				matched = true
				if t.Spec.MaxPriority == 0 {
					plain = append(plain, t.Spec.Queue)
				}
			}
		}
		if !matched {
			return tasks.Decide(spec, attempt, tasks.Result{Verdict: tasks.RetryRequested, Reason: fmt.Sprintf(
				"publish %s: no task under %s subscribes to it, so the broker refuses it and the daemon retries the message; if a consumer outside these tasks binds it, pass bound = [%q] to run_task",
				p.RoutingKey, strings.Join(s.roots, ", "), p.RoutingKey)}, nil)
		}
		if p.Priority > 0 && len(plain) > 0 {
			return tasks.Decide(spec, attempt, tasks.Result{Verdict: tasks.Failed, Err: fmt.Errorf(
				"publish %s: a queue bound to the routing key takes no priorities (its task has no max_priority): queue %s; set max_priority on its task, or publish without a priority",
				p.RoutingKey, strings.Join(plain, ", "))}, nil)
		}
	}
	return out
}

// value is run_task's result.
func (r *testRun) value() starlark.Value {
	none := func(s string) starlark.Value {
		if s == "" {
			return starlark.None
		}
		return starlark.String(s)
	}
	var errText string
	switch {
	case r.res.Verdict == tasks.Failed && r.res.Err != nil && r.out.Action == tasks.Dead && r.out.Reason != tasks.ReasonMaxAttempts:
		errText = r.res.Err.Error()
		if r.out.TimedOut {
			errText = r.out.Error
		}
	case r.out.Action == tasks.Dead:
		errText = r.out.Error
		if i := strings.LastIndex(errText, "\nError"); i >= 0 {
			errText = errText[i+1:]
		}
	}
	var delay starlark.Value = starlark.None
	if r.out.Action == tasks.Retry {
		delay = starlark.Float(r.out.Delay.Seconds())
	}
	published := []starlark.Value{}
	if r.res.Verdict == tasks.Succeeded {
		for _, p := range r.res.Publications {
			published = append(published, publicationValue(p))
		}
	}
	logs := make([]starlark.Value, len(r.logs))
	for i, l := range r.logs {
		logs[i] = l.value()
	}
	calls := make([]starlark.Value, len(r.calls))
	for i, c := range r.calls {
		calls[i] = c.value()
	}
	var files starlark.Value = starlark.None
	if r.stubs.files != nil {
		files = r.stubs.files.value()
	}
	return starlarkstruct.FromStringDict(starlark.String("result"), starlark.StringDict{
		"outcome":   starlark.String(r.out.Action.String()),
		"reason":    none(r.out.Reason),
		"delay":     delay,
		"error":     none(errText),
		"backtrace": none(r.res.Backtrace),
		"published": starlark.NewList(published),
		"logs":      starlark.NewList(logs),
		"calls":     starlark.NewList(calls),
		"files":     files,
	})
}

// publicationValue is a published message as a test sees it: the
// payload decoded as the task that receives it would decode it.
func publicationValue(p tasks.Publication) starlark.Value {
	payload, err := decodePayload(p.ContentType, p.Body)
	if err != nil {
		payload = starlark.Bytes(p.Body)
	}
	headers := starlark.NewDict(len(p.Headers))
	for _, k := range sortedKeys(p.Headers) {
		v, err := fromGo(p.Headers[k])
		if err != nil {
			v = starlark.String(fmt.Sprint(p.Headers[k]))
		}
		headers.SetKey(starlark.String(k), v)
	}
	var delay starlark.Value = starlark.None
	if p.Delay > 0 {
		delay = starlark.Float(p.Delay.Seconds())
	}
	return starlarkstruct.FromStringDict(starlark.String("message"), starlark.StringDict{
		"routing_key":  starlark.String(p.RoutingKey),
		"payload":      payload,
		"body":         starlark.Bytes(p.Body),
		"content_type": starlark.String(p.ContentType),
		"headers":      headers,
		"delay":        delay,
		"priority":     starlark.MakeInt(p.Priority),
	})
}

// summary is what a failed test shows of its last run_task: the outcome,
// why, and the task's backtrace.
func (r *testRun) summary() string {
	line := fmt.Sprintf("last run_task(%q, routing_key = %q): %s", r.task.Spec.Name, r.key, r.out.Action)
	why := r.out.Reason
	if r.res.Verdict == tasks.Failed && r.res.Err != nil {
		why = r.res.Err.Error()
	} else if r.out.Error != "" {
		why = r.out.Error
	}
	if why != "" {
		line += ": " + why
	}
	if bt := r.res.Backtrace; bt != "" {
		line += "\n" + bt
	}
	return line
}
