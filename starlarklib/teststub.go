package starlarklib

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"

	"github.com/symphony-go/symphony/tasks"
)

// testSession is one RunTests: the tasks loaded once from disk, and the
// World they were loaded with, whose every part answers from the stubs of
// the run_task running now. Tests run one at a time, so there is one
// current run.
type testSession struct {
	world   *World
	environ *environment
	pos     posMapper
	tasks   []tasks.Task
	roots   []string
	// run is the run_task running now, nil between runs.
	run *testRun
}

func newTestSession() *testSession {
	s := &testSession{}
	s.world = &World{
		HTTP:     stubHTTP{s},
		Exec:     stubRunner{s},
		Files:    stubFiles{s},
		SQL:      stubSQL{s},
		Secrets:  stubSecrets{s},
		Calls:    callRecorder{s},
		Redactor: NewRedactor(),
	}
	return s
}

// env is the environment the tasks were loaded in.
func (s *testSession) env() *environment { return s.environ }

// errNoRun is what a capability reached outside run_task answers: at the
// top level of a file while the tasks load, or from a test function.
func errNoRun(what string) error {
	return fmt.Errorf("%s outside run_task: in a task test, capabilities answer from the stubs of run_task(...), and a file's top level runs before any; call it from the work function", what)
}

// callRecord is one capability call of a run, for run_task's result.
type callRecord struct {
	module, function, target string
	result                   string
	err                      error
	// fields are what the call asked for: method and url, argv, ...
	fields starlark.StringDict
}

type callKey struct{}

// callRecorder is the test World's CallObserver: it records every call
// a task makes, refused ones included, and hands the stub its record
// through the call's context.
type callRecorder struct{ s *testSession }

func (o callRecorder) StartCall(ctx context.Context, c *tasks.Call) context.Context {
	r := o.s.run
	if r == nil {
		return ctx
	}
	rec := &callRecord{module: c.Module, function: c.Function, target: c.Target, fields: starlark.StringDict{}}
	r.calls = append(r.calls, rec)
	return context.WithValue(ctx, callKey{}, rec)
}

func (o callRecorder) EndCall(ctx context.Context, c *tasks.Call) {
	if rec, ok := ctx.Value(callKey{}).(*callRecord); ok {
		rec.result, rec.err = c.Result, c.Err
	}
}

// record returns the call's record, made by StartCall.
func (r *testRun) record(ctx context.Context, module, function, target string) *callRecord {
	if rec, ok := ctx.Value(callKey{}).(*callRecord); ok {
		return rec
	}
	rec := &callRecord{module: module, function: function, target: target, fields: starlark.StringDict{}}
	r.calls = append(r.calls, rec)
	return rec
}

func (c *callRecord) value() starlark.Value {
	d := starlark.StringDict{
		"module":   starlark.String(c.module),
		"function": starlark.String(c.function),
		"target":   starlark.String(c.target),
		"result":   starlark.String(c.result),
		"error":    starlark.None,
	}
	if c.err != nil {
		d["error"] = starlark.String(c.err.Error())
	}
	for k, v := range c.fields {
		d[k] = v
	}
	return starlarkstruct.FromStringDict(starlark.String("call"), d)
}

// errUnstubbed is what the task sees of a call no stub answers; run_task
// then fails the test, naming the call.
var errUnstubbed = errors.New("no stub answers this call in the task test")

// unstubbed notes the run's first call that no stub answers, with the
// stub that would, and returns the error the task sees.
func (r *testRun) unstubbed(call, hint string) error {
	if r.missing == "" {
		r.missing = fmt.Sprintf("the task called %s, which no stub answers: pass %s to run_task", call, hint)
	}
	return errUnstubbed
}

// stubFailed notes a stub that is wrong (an answer of the wrong shape, a
// function stub that fails): the test's mistake, not the task's.
func (r *testRun) stubFailed(err error) error {
	if r.stubErr == nil {
		r.stubErr = err
	}
	return err
}

// anyCall is the key of a stub that answers every call of its module
// that no other key of the table matches.
const anyCall = "*"

// stub is one entry of a stub table: an answer for every call, a list of
// answers for successive calls, or a function of the call that returns
// the answer.
type stub struct {
	key     string
	each    starlark.Value
	answers []starlark.Value
	fn      starlark.Callable
	used    int
}

// answer is the stub's answer to its next call, checked by check.
func (st *stub) answer(r *testRun, table string, call starlark.Value, check func(starlark.Value) error) (starlark.Value, error) {
	st.used++
	var v starlark.Value
	switch {
	case st.fn != nil:
		th := &starlark.Thread{Name: "stub " + st.key}
		th.SetLocal(stateKey, &state{phase: phaseTest, env: r.s.env(), logger: slog.New(slog.DiscardHandler)})
		var err error
		v, err = starlark.Call(th, st.fn, starlark.Tuple{call}, nil)
		if err != nil {
			return nil, r.stubFailed(fmt.Errorf("%s stub %q: %w", table, st.key, err))
		}
	case st.answers != nil:
		if st.used > len(st.answers) {
			return nil, r.stubFailed(fmt.Errorf("%s stub %q lists %d answers, and the task made call %d: add answers to the list",
				table, st.key, len(st.answers), st.used))
		}
		v = st.answers[st.used-1]
	default:
		v = st.each
	}
	if err := check(v); err != nil {
		return nil, r.stubFailed(fmt.Errorf("%s stub %q: %w", table, st.key, err))
	}
	return v, nil
}

// stubTable reads a run_task argument such as http = {...}: a dict from
// keys to stubs. list says whether a list is a list of answers (http,
// exec) or one answer (sql rows). Every answer given is checked now.
func stubTable(arg string, v starlark.Value, list bool, key func(string) (string, error), check func(starlark.Value) error) (map[string]*stub, error) {
	if v == starlark.None {
		return nil, nil
	}
	d, ok := v.(*starlark.Dict)
	if !ok {
		return nil, fmt.Errorf("%s must be a dict of stubs, got %s", arg, describe(v))
	}
	out := map[string]*stub{}
	for _, kv := range d.Items() {
		k, ok := kv[0].(starlark.String)
		if !ok {
			return nil, fmt.Errorf("%s: key %s must be a str", arg, kv[0])
		}
		norm, err := key(string(k))
		if err != nil {
			return nil, fmt.Errorf("%s: key %q: %v", arg, string(k), err)
		}
		if prev, dup := out[norm]; dup {
			return nil, fmt.Errorf("%s: keys %q and %q stub the same call", arg, prev.key, string(k))
		}
		st := &stub{key: string(k)}
		switch x := kv[1].(type) {
		case starlark.Callable:
			st.fn = x
		case *starlark.List:
			if !list {
				st.each = x
				break
			}
			if x.Len() == 0 {
				return nil, fmt.Errorf("%s[%q]: an empty list answers no call: give at least one answer", arg, string(k))
			}
			for i := range x.Len() {
				if err := check(x.Index(i)); err != nil {
					return nil, fmt.Errorf("%s[%q][%d]: %v", arg, string(k), i, err)
				}
				st.answers = append(st.answers, x.Index(i))
			}
		default:
			st.each = x
		}
		if st.each != nil {
			if err := check(st.each); err != nil {
				return nil, fmt.Errorf("%s[%q]: %v", arg, string(k), err)
			}
		}
		out[norm] = st
	}
	return out, nil
}

// answerFields reads an answer dict, whose keys must be among allowed.
func answerFields(v starlark.Value, what string, allowed ...string) (map[string]starlark.Value, error) {
	d, ok := v.(*starlark.Dict)
	if !ok {
		return nil, fmt.Errorf("an answer must be a dict %s, got %s", what, describe(v))
	}
	out := map[string]starlark.Value{}
	for _, kv := range d.Items() {
		k, ok := kv[0].(starlark.String)
		if !ok || !slices.Contains(allowed, string(k)) {
			msg := fmt.Sprintf("unknown key %s in an answer: the keys are %s", kv[0], strings.Join(allowed, ", "))
			if ok {
				if n := nearest(string(k), allowed); n != "" {
					msg += fmt.Sprintf("; did you mean %q?", n)
				}
			}
			return nil, errors.New(msg)
		}
		out[string(k)] = kv[1]
	}
	if e, ok := out["error"]; ok {
		if _, ok := e.(starlark.String); !ok {
			return nil, fmt.Errorf("error must be a str, the error the task sees, got %s", describe(e))
		}
		if len(out) > 1 {
			return nil, errors.New("an answer with an error has no other keys")
		}
	}
	return out, nil
}

// stubbedError is the error a stub's answer asks for.
func stubbedError(f map[string]starlark.Value) error {
	if e, ok := f["error"]; ok {
		return errors.New(string(e.(starlark.String)))
	}
	return nil
}

// ---- http ----

var httpMethod = regexp.MustCompile(`^[A-Za-z]+$`)

// httpStubKey is "METHOD URL" or "URL" (any method), stored as
// "METHOD URL" or "* URL".
func httpStubKey(k string) (string, error) {
	if k == anyCall {
		return anyCall, nil
	}
	method, rawURL := "*", k
	if m, u, ok := strings.Cut(k, " "); ok && httpMethod.MatchString(m) {
		method, rawURL = strings.ToUpper(m), strings.TrimSpace(u)
	}
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", errors.New(`want "METHOD URL" or "URL", with an http or https URL, as "POST https://api.example.com/orders"`)
	}
	return method + " " + u.String(), nil
}

func checkHTTPAnswer(v starlark.Value) error {
	f, err := answerFields(v, `such as {"status": 200, "json": {...}}`, "status", "headers", "body", "json", "error")
	if err != nil {
		return err
	}
	if s, ok := f["status"]; ok {
		n, ok := s.(starlark.Int)
		i, fits := n.Int64()
		if !ok || !fits || i < 100 || i > 999 {
			return fmt.Errorf("status must be an HTTP status code, got %s", describe(s))
		}
	}
	if h, ok := f["headers"]; ok {
		d, ok := h.(*starlark.Dict)
		if !ok {
			return fmt.Errorf("headers must be a dict of str, got %s", describe(h))
		}
		for _, kv := range d.Items() {
			_, kok := kv[0].(starlark.String)
			_, vok := kv[1].(starlark.String)
			if !kok || !vok {
				return fmt.Errorf("headers must map str to str, got %s: %s", kv[0].Type(), kv[1].Type())
			}
		}
	}
	_, hasBody := f["body"]
	_, hasJSON := f["json"]
	if hasBody && hasJSON {
		return errors.New("give body or json, not both")
	}
	if b, ok := f["body"]; ok {
		if _, ok := dataOf(b); !ok {
			return fmt.Errorf("body must be str or bytes, got %s", describe(b))
		}
	}
	if j, ok := f["json"]; ok {
		if _, err := toGo(j, false); err != nil {
			return fmt.Errorf("json: %v", err)
		}
	}
	return nil
}

// stubHTTP is the test World's HTTPClient.
type stubHTTP struct{ s *testSession }

func (h stubHTTP) Do(ctx context.Context, req *HTTPRequest) (*HTTPResponse, error) {
	r := h.s.run
	if r == nil {
		return nil, errNoRun("http")
	}
	u, err := url.Parse(req.URL)
	if err != nil {
		return nil, err
	}
	rec := r.record(ctx, tasks.CapHTTP, strings.ToLower(req.Method), u.Hostname())
	headers := starlark.NewDict(len(req.Header))
	for _, k := range sortedKeys(req.Header) {
		headers.SetKey(starlark.String(strings.ToLower(k)), starlark.String(strings.Join(req.Header[k], ", ")))
	}
	var decoded starlark.Value = starlark.None
	if v, err := decodeJSON(req.Body); err == nil && len(req.Body) > 0 {
		decoded = v
	}
	rec.fields["method"] = starlark.String(req.Method)
	rec.fields["url"] = starlark.String(req.URL)
	rec.fields["headers"] = headers
	rec.fields["body"] = starlark.Bytes(req.Body)
	rec.fields["text"] = starlark.String(req.Body)
	rec.fields["json"] = decoded

	// What the real client checks after DNS, as far as the URL tells
	// without asking DNS: a loopback, private or link-local address, or
	// localhost, needs allow_hosts to list it.
	host := strings.ToLower(u.Hostname())
	if !hostListed(req.AllowHosts, host, portOf(u)) {
		if a, err := netip.ParseAddr(host); (err == nil && !publicAddr(a)) || host == "localhost" || strings.HasSuffix(host, ".localhost") {
			return nil, refusedf("%s is a private, loopback or link-local address: list %q in allow_hosts to allow it", host, host)
		}
	}

	noQuery := *u
	noQuery.RawQuery, noQuery.ForceQuery = "", false
	var st *stub
	for _, k := range []string{req.Method + " " + u.String(), "* " + u.String(), req.Method + " " + noQuery.String(), "* " + noQuery.String(), anyCall} {
		if st = r.stubs.http[k]; st != nil {
			break
		}
	}
	if st == nil {
		call := fmt.Sprintf("http.%s %s", rec.function, req.URL)
		if rec.function == "request" {
			call = fmt.Sprintf("http.request %s %s", req.Method, req.URL)
		}
		return nil, r.unstubbed(call,
			fmt.Sprintf(`http = {"%s %s": {"status": 200}}`, req.Method, noQuery.String()))
	}
	v, err := st.answer(r, "http", rec.value(), checkHTTPAnswer)
	if err != nil {
		return nil, err
	}
	f, _ := answerFields(v, "", "status", "headers", "body", "json", "error")
	if err := stubbedError(f); err != nil {
		return nil, err
	}
	resp := &HTTPResponse{Status: 200, Header: map[string][]string{}, URL: req.URL}
	if s, ok := f["status"]; ok {
		n, _ := s.(starlark.Int).Int64()
		resp.Status = int(n)
	}
	if h, ok := f["headers"]; ok {
		for _, kv := range h.(*starlark.Dict).Items() {
			resp.Header[string(kv[0].(starlark.String))] = []string{string(kv[1].(starlark.String))}
		}
	}
	if b, ok := f["body"]; ok {
		resp.Body, _ = dataOf(b)
	}
	if j, ok := f["json"]; ok {
		s, err := starlark.Call(&starlark.Thread{}, jsonEncode, starlark.Tuple{j}, nil)
		if err != nil {
			return nil, r.stubFailed(fmt.Errorf("http stub %q: json: %w", st.key, err))
		}
		resp.Body = []byte(s.(starlark.String))
		if !hasHeader(resp.Header, "Content-Type") {
			resp.Header["Content-Type"] = []string{"application/json"}
		}
	}
	if max := req.MaxBytes; max > 0 && int64(len(resp.Body)) > max {
		return nil, fmt.Errorf("the response body (status %d) is larger than max_bytes (%d bytes)", resp.Status, max)
	}
	return resp, nil
}

func hasHeader(h map[string][]string, name string) bool {
	for k := range h {
		if strings.EqualFold(k, name) {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// ---- exec ----

// execAnswerKeys are the keys of an exec stub's answer.
var execAnswerKeys = []string{"code", "stdout", "stderr", "writes", "error"}

// execStubKey is a program as the task names it ("convert"), or a whole
// command line, its words joined by single spaces.
func execStubKey(k string) (string, error) {
	words := strings.Fields(k)
	if len(words) == 0 {
		return "", errors.New(`want a program ("convert") or a command line ("convert in.png out.jpg")`)
	}
	return strings.Join(words, " "), nil
}

func checkExecAnswer(v starlark.Value) error {
	f, err := answerFields(v, `such as {"code": 0, "stdout": "..."}`, execAnswerKeys...)
	if err != nil {
		return err
	}
	if w, ok := f["writes"]; ok {
		if _, err := fileStubs2dir(w); err != nil {
			// The same checks as run_task's file, said of writes.
			return errors.New("writes" + strings.TrimPrefix(err.Error(), "file"))
		}
	}
	if c, ok := f["code"]; ok {
		n, ok := c.(starlark.Int)
		if _, fits := n.Int64(); !ok || !fits {
			return fmt.Errorf("code must be an int, got %s", describe(c))
		}
	}
	for _, k := range []string{"stdout", "stderr"} {
		if o, ok := f[k]; ok {
			if _, ok := dataOf(o); !ok {
				return fmt.Errorf("%s must be str or bytes, got %s", k, describe(o))
			}
		}
	}
	return nil
}

// stubRunner is the test World's Runner: it runs nothing.
type stubRunner struct{ s *testSession }

// LookPath implements Runner: a stubbed program need not be installed.
func (stubRunner) LookPath(program string) (string, error) { return program, nil }

func (x stubRunner) Run(ctx context.Context, req *ExecRequest) (*ExecResult, error) {
	r := x.s.run
	if r == nil {
		return nil, errNoRun("exec")
	}
	rec := r.record(ctx, tasks.CapExec, "run", req.Argv[0])
	argv := make([]starlark.Value, len(req.Argv))
	for i, a := range req.Argv {
		argv[i] = starlark.String(a)
	}
	env := starlark.NewDict(len(req.Env))
	for _, kv := range req.Env {
		k, v, _ := strings.Cut(kv, "=")
		env.SetKey(starlark.String(k), starlark.String(v))
	}
	rec.fields["argv"] = starlark.NewList(argv)
	rec.fields["stdin"] = starlark.String(req.Stdin)
	rec.fields["env"] = env
	rec.fields["cwd"] = starlark.None
	if req.Dir != "" {
		rec.fields["cwd"] = starlark.String(req.Dir)
	}

	line := strings.Join(req.Argv, " ")
	st := r.stubs.exec[line]
	if st == nil {
		st = r.stubs.exec[req.Argv[0]]
	}
	if st == nil {
		st = r.stubs.exec[anyCall]
	}
	if st == nil {
		return nil, r.unstubbed("exec.run "+line, fmt.Sprintf(`exec = {%q: {"code": 0, "stdout": ""}}`, req.Argv[0]))
	}
	v, err := st.answer(r, "exec", rec.value(), checkExecAnswer)
	if err != nil {
		return nil, err
	}
	f, _ := answerFields(v, "", execAnswerKeys...)
	if err := stubbedError(f); err != nil {
		return nil, err
	}
	if w, ok := f["writes"]; ok {
		if r.stubs.files == nil {
			return nil, r.stubFailed(fmt.Errorf("exec stub %q writes files: pass file = {...} to run_task, the file_root they go to", st.key))
		}
		written, _ := fileStubs2dir(w)
		r.stubs.files.merge(written)
	}
	res := &ExecResult{}
	if c, ok := f["code"]; ok {
		n, _ := c.(starlark.Int).Int64()
		res.Code = int(n)
	}
	if o, ok := f["stdout"]; ok {
		res.Stdout, _ = dataOf(o)
	}
	if o, ok := f["stderr"]; ok {
		res.Stderr, _ = dataOf(o)
	}
	for _, o := range [][]byte{res.Stdout, res.Stderr} {
		if req.MaxOutput > 0 && int64(len(o)) > req.MaxOutput {
			return nil, fmt.Errorf("output over max_output (%d bytes): the program was killed", req.MaxOutput)
		}
	}
	return res, nil
}

// ---- secrets ----

// secretStubs reads secrets = {"NAME": "value"}.
func secretStubs(v starlark.Value) (map[string]string, error) {
	if v == starlark.None {
		return nil, nil
	}
	d, ok := v.(*starlark.Dict)
	if !ok {
		return nil, fmt.Errorf("secrets must be a dict of name: value, got %s", describe(v))
	}
	out := map[string]string{}
	for _, kv := range d.Items() {
		k, kok := kv[0].(starlark.String)
		val, vok := kv[1].(starlark.String)
		if !kok || !vok {
			return nil, fmt.Errorf("secrets must map names to str values, got %s: %s", kv[0].Type(), kv[1].Type())
		}
		if !secretName.MatchString(string(k)) {
			return nil, fmt.Errorf("secrets: %q is not a secret name: use letters, digits, '_', '.' and '-'", string(k))
		}
		out[string(k)] = string(val)
	}
	return out, nil
}

// stubSecrets is the test World's SecretStore.
type stubSecrets struct{ s *testSession }

func (x stubSecrets) Secret(name string) (string, error) {
	r := x.s.run
	if r == nil {
		return "", errNoRun(fmt.Sprintf("secret %s read", name))
	}
	rec := &callRecord{module: "secret", function: "secret", target: name, result: tasks.CallOK,
		fields: starlark.StringDict{"name": starlark.String(name)}}
	r.calls = append(r.calls, rec)
	v, ok := r.stubs.secrets[name]
	if !ok {
		rec.result = tasks.CallError
		rec.err = errUnstubbed
		return "", r.unstubbed(fmt.Sprintf("secret(%q)", name), fmt.Sprintf(`secrets = {%q: "..."}`, name))
	}
	return v, nil
}

// ---- logs ----

// logRecord is one log line of a run.
type logRecord struct {
	level slog.Level
	msg   string
	attrs []slog.Attr
}

func (l logRecord) value() starlark.Value {
	attrs := starlark.NewDict(len(l.attrs))
	for _, a := range l.attrs {
		attrs.SetKey(starlark.String(a.Key), slogValue(a.Value))
	}
	return starlarkstruct.FromStringDict(starlark.String("log"), starlark.StringDict{
		"level": starlark.String(strings.ToLower(l.level.String())),
		"msg":   starlark.String(l.msg),
		"attrs": attrs,
	})
}

func slogValue(v slog.Value) starlark.Value {
	v = v.Resolve()
	switch v.Kind() {
	case slog.KindGroup:
		d := starlark.NewDict(len(v.Group()))
		for _, a := range v.Group() {
			d.SetKey(starlark.String(a.Key), slogValue(a.Value))
		}
		return d
	case slog.KindDuration:
		return starlark.String(v.Duration().String())
	}
	if s, err := fromGo(v.Any()); err == nil {
		return s
	}
	return starlark.String(v.String())
}

// logHandler is the tasks' logger: it keeps the lines a run writes, as
// the daemon would write them (secrets scrubbed), without the attributes
// every line of a run carries (task, message_id, attempt).
func (s *testSession) logHandler() slog.Handler { return logCapture{s} }

type logCapture struct{ s *testSession }

func (c logCapture) Enabled(context.Context, slog.Level) bool { return c.s.run != nil }

func (c logCapture) Handle(ctx context.Context, rec slog.Record) error {
	r := c.s.run
	if r == nil {
		return nil
	}
	return c.s.world.Redactor.Handler(logKeeper{r}).Handle(ctx, rec)
}

func (c logCapture) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c logCapture) WithGroup(string) slog.Handler      { return c }

// logKeeper appends a run's lines, but for the capability calls' own
// debug lines, which the result's calls list already.
type logKeeper struct{ r *testRun }

func (k logKeeper) Enabled(context.Context, slog.Level) bool { return true }

func (k logKeeper) Handle(_ context.Context, rec slog.Record) error {
	var attrs []slog.Attr
	rec.Attrs(func(a slog.Attr) bool {
		attrs = append(attrs, a)
		return true
	})
	if rec.Level == slog.LevelDebug && (rec.Message == "call" || rec.Message == "no route matches the routing key") {
		return nil
	}
	k.r.logs = append(k.r.logs, logRecord{level: rec.Level, msg: rec.Message, attrs: attrs})
	return nil
}

func (k logKeeper) WithAttrs([]slog.Attr) slog.Handler { return k }
func (k logKeeper) WithGroup(string) slog.Handler      { return k }
