package starlarklib

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	startime "go.starlark.net/lib/time"
	"go.starlark.net/starlark"
	"gopkg.in/yaml.v3"

	"github.com/symphony-go/symphony/tasks"
)

// loadTask loads src as t.star in a fresh root and returns its task named
// "t" (the file's default).
func loadTask(t *testing.T, src string, opts Options) tasks.Task {
	t.Helper()
	root := writeTree(t, map[string]string{"t.star": src})
	if opts.LookupEnv == nil {
		opts.LookupEnv = noEnv
	}
	got, err := Load([]string{root}, opts)
	if err != nil {
		t.Fatalf("Load() = %v", err)
	}
	for _, tk := range got {
		if tk.Spec.Name == "t" {
			return tk
		}
	}
	t.Fatalf("no task t among %d", len(got))
	return tasks.Task{}
}

// echo publishes repr(payload) as text, so that a test can see exactly
// what the script got.
const echo = `
def work(payload, meta):
    publish("out", repr(payload), content_type = "text/plain")
task(subscribe_to = ["#"], work = work)
`

// handle runs one delivery of body under contentType with a background
// context.
func handle(tk tasks.Task, contentType string, body []byte) tasks.Result {
	return tk.Handler.Handle(context.Background(), &tasks.Delivery{
		Body: body, ContentType: contentType, RoutingKey: "a.b", MessageID: "m-1", Attempt: 1,
	})
}

// published is the body of the run's only publication.
func published(t *testing.T, r tasks.Result) string {
	t.Helper()
	if r.Verdict != tasks.Succeeded {
		t.Fatalf("verdict = %s (%v)\n%s", r.Verdict, r.Err, r.Backtrace)
	}
	if len(r.Publications) != 1 {
		t.Fatalf("%d publications, want 1", len(r.Publications))
	}
	return string(r.Publications[0].Body)
}

func TestDecodePayload(t *testing.T) {
	t.Parallel()
	tk := loadTask(t, echo, Options{})

	var mp bytes.Buffer
	enc := msgpack.NewEncoder(&mp)
	enc.SetSortMapKeys(true)
	if err := enc.Encode(map[string]any{
		"a": int64(-1), "bin": []byte{0, 1}, "l": []any{uint64(1) << 63, "x", nil, true, 2.5},
	}); err != nil {
		t.Fatal(err)
	}
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}

	const jsonDoc = `{"b": 1, "a": [1, 2.5, "x", true, null], "big": 123456789012345678901234567890, "u": "\u00e9"}`
	const jsonRepr = `{"b": 1, "a": [1, 2.5, "x", True, None], "big": 123456789012345678901234567890, "u": "é"}`
	cases := []struct {
		name, contentType string
		body              []byte
		want              string
	}{
		{"json keeps key order and big ints", "application/json", []byte(jsonDoc), jsonRepr},
		{"json with a charset, any case", "Application/JSON; charset=utf-8", []byte(jsonDoc), jsonRepr},
		{"text/javascript is json", "text/javascript", []byte(`[1, {"z": {}}]`), `[1, {"z": {}}]`},
		{"json scalar", "application/json", []byte(` "x" `), `"x"`},
		{"empty json is None", "application/json", nil, `None`},
		{"msgpack", "application/x-msgpack", mp.Bytes(), `{"a": -1, "bin": b"\x00\x01", "l": [9223372036854775808, "x", None, True, 2.5]}`},
		{"yaml keeps key order and merges", "application/x-yaml",
			[]byte("b: 1\na: [1, 2.5, x, true, null]\nbase: &b {k: v, o: 0}\nm:\n  <<: *b\n  o: 1\n"),
			`{"b": 1, "a": [1, 2.5, "x", True, None], "base": {"k": "v", "o": 0}, "m": {"k": "v", "o": 1}}`},
		{"text/x-yaml", "text/x-yaml; charset=utf-8", []byte("- '1'\n- 1\n"), `["1", 1]`},
		{"yaml with only the first document", "application/x-yaml", []byte("a: 1\n---\nb: 2\n"), `{"a": 1}`},
		{"octet-stream is bytes", "application/octet-stream", []byte("hi"), `b"hi"`},
		{"no content type is bytes", "", []byte("hi"), `b"hi"`},
		{"text/plain is a str", "text/plain; charset=utf-8", []byte("hi"), `"hi"`},
		{"text/csv is a str", "text/csv", []byte("a,b\n1,2\n"), `"a,b\n1,2\n"`},
		{"empty text is an empty str", "text/html", nil, `""`},
		{"a +json type is json", "application/vnd.example+json", []byte(`{"a": 1}`), `{"a": 1}`},
		{"application/ld+json", "Application/LD+JSON; profile=x", []byte(`[true]`), `[True]`},
		{"application/msgpack", "application/msgpack", mp.Bytes(), `{"a": -1, "bin": b"\x00\x01", "l": [9223372036854775808, "x", None, True, 2.5]}`},
		{"application/yaml", "application/yaml", []byte("a: [1]\n"), `{"a": [1]}`},
		{"text/yaml", "text/yaml", []byte("a: x\n"), `{"a": "x"}`},
		{"an unknown type is bytes", "application/vnd.example", []byte(`{}`), `b"{}"`},
		{"application/xml is bytes", "application/xml", []byte(`<a/>`), `b"<a/>"`},
		{"empty bytes", "", nil, `b""`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if got := published(t, handle(tk, c.contentType, c.body)); got != c.want {
				t.Errorf("payload = %s\nwant      %s", got, c.want)
			}
		})
	}

	t.Run("binary payload", func(t *testing.T) {
		t.Parallel()
		tk := loadTask(t, `
def work(payload, meta):
    return type(payload) == "bytes" and len(payload) == 256 and payload[0] == b"\x00" and payload[255] == b"\xff"
task(subscribe_to = ["#"], work = work)
`, Options{})
		if r := handle(tk, "application/octet-stream", all); r.Verdict != tasks.Succeeded {
			t.Errorf("verdict = %s (%v)", r.Verdict, r.Err)
		}
	})
}

func TestDecodeErrors(t *testing.T) {
	t.Parallel()
	tk := loadTask(t, echo, Options{})
	cases := []struct {
		name, contentType, body, want string
	}{
		{"invalid json", "application/json", `{"id": 7, x}`,
			"decode application/json payload: invalid character 'x' looking for beginning of object key string at offset 10: payload does not decode"},
		{"invalid json under a charset", "application/json; charset=utf-8", `nope`,
			"decode application/json payload: invalid character 'o' in literal null (expecting 'u') at offset 1: payload does not decode"},
		{"truncated json", "application/json", `{"id": [1, 2`,
			"decode application/json payload: unexpected end of JSON input at offset 12: payload does not decode"},
		{"two json values", "text/javascript", `{} {}`,
			"decode text/javascript payload: invalid character '{' after top-level value at offset 3: payload does not decode"},
		{"invalid msgpack", "application/x-msgpack", "\xc1",
			"decode application/x-msgpack payload: msgpack: unknown code c1 decoding interface{}: payload does not decode"},
		{"truncated msgpack", "application/x-msgpack", "\x92\x01",
			"decode application/x-msgpack payload: EOF: payload does not decode"},
		{"invalid yaml", "application/x-yaml", "a: [1, 2\n",
			"decode application/x-yaml payload: yaml: line 1: did not find expected ',' or ']': payload does not decode"},
		{"a yaml alias bomb", "application/x-yaml",
			"a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n",
			"decode application/x-yaml payload: aliases expand to too many values: payload does not decode"},
		{"an unhashable yaml key", "application/x-yaml", "? [1]\n: x\n",
			"decode application/x-yaml payload: line 1: mapping key: unhashable type: list: payload does not decode"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r := handle(tk, c.contentType, []byte(c.body))
			if r.Verdict != tasks.Failed || !errors.Is(r.Err, tasks.ErrDecode) {
				t.Fatalf("result = %s, %v; want failed with ErrDecode", r.Verdict, r.Err)
			}
			if r.Err.Error() != c.want {
				t.Errorf("error =\n  %s\nwant\n  %s", r.Err, c.want)
			}
			if o := tasks.Decide(tk.Spec, 1, r, nil); o.Action != tasks.Dead || o.Reason != tasks.ReasonDecode {
				t.Errorf("outcome = %+v, want dead with reason decode", o)
			}
		})
	}
}

func TestLargePayload(t *testing.T) {
	t.Parallel()
	tk := loadTask(t, `
def work(payload, meta):
    if type(payload) == "bytes":
        return len(payload) == 10 * 1024 * 1024
    return len(payload["items"]) == 500000 and payload["items"][-1] == "0123456789abcdef"
task(subscribe_to = ["#"], work = work)
`, Options{})

	raw := bytes.Repeat([]byte{0xff, 0x00, 'a', 0x80}, 10*1024*1024/4)
	if r := handle(tk, "application/octet-stream", raw); r.Verdict != tasks.Succeeded {
		t.Errorf("10 MB of bytes: %s (%v)", r.Verdict, r.Err)
	}

	var doc bytes.Buffer
	doc.WriteString(`{"items": [`)
	for i := range 500000 {
		if i > 0 {
			doc.WriteString(", ")
		}
		doc.WriteString(`"0123456789abcdef"`)
	}
	doc.WriteString("]}")
	if doc.Len() < 10*1000*1000 {
		t.Fatalf("the document is only %d bytes", doc.Len())
	}
	if r := handle(tk, "application/json", doc.Bytes()); r.Verdict != tasks.Succeeded {
		t.Errorf("10 MB of JSON: %s (%v)", r.Verdict, r.Err)
	}
}

func TestMeta(t *testing.T) {
	t.Parallel()
	tk := loadTask(t, `
def check(what, got, want):
    if got != want or type(got) != type(want):
        fail("meta.%s = %r (%s), want %r (%s)" % (what, got, type(got), want, type(want)))

def work(payload, meta):
    check("routing_key", meta.routing_key, "user.created")
    check("exchange", meta.exchange, "symphony")
    check("queue", meta.queue, "q")
    check("task", meta.task, "t")
    check("message_id", meta.message_id, "m-7")
    check("correlation_id", meta.correlation_id, "c-9")
    check("content_type", meta.content_type, "application/json; charset=utf-8")
    check("redelivered", meta.redelivered, True)
    check("attempt", meta.attempt, 3)
    check("timestamp", type(meta.timestamp), "time.time")
    check("timestamp.unix", meta.timestamp.unix, 1700000000)
    h = meta.headers
    check("headers keys", sorted(h.keys()), ["big", "f", "flag", "n", "nothing", "s", "x-death"])
    check("headers.n", h["n"], 3)
    check("headers.big", h["big"], 123456789012345678901234567890)
    check("headers.f", h["f"], 2.5)
    check("headers.s", h["s"], "v")
    check("headers.flag", h["flag"], False)
    check("headers.nothing", h["nothing"], None)
    death = h["x-death"]
    check("x-death", type(death), "list")
    check("x-death[0].count", death[0]["count"], 2)
    check("x-death[0].routing-keys", death[0]["routing-keys"], ["user.created"])
    check("x-death[0].time", death[0]["time"], 1.7e9)
    return True
task(subscribe_to = ["#"], work = work)
`, Options{})
	d := &tasks.Delivery{
		Body: []byte(`{}`), ContentType: "application/json; charset=utf-8",
		RoutingKey: "user.created", Exchange: "symphony", Queue: "q", Task: "t",
		MessageID: "m-7", CorrelationID: "c-9",
		Headers: map[string]any{
			"n":       json.Number("3"),
			"big":     json.Number("123456789012345678901234567890"),
			"f":       json.Number("2.5"),
			"s":       "v",
			"flag":    false,
			"nothing": nil,
			"x-death": []any{map[string]any{
				"count": json.Number("2"), "routing-keys": []any{"user.created"}, "time": json.Number("1.7e9"),
			}},
		},
		Timestamp:   time.Unix(1700000000, 0),
		Redelivered: true,
		Attempt:     3,
	}
	if r := tk.Handler.Handle(context.Background(), d); r.Verdict != tasks.Succeeded {
		t.Fatalf("verdict = %s: %v", r.Verdict, r.Err)
	}

	// A message without timestamp, headers, queue or task name.
	tk = loadTask(t, `
def work(payload, meta):
    if meta.timestamp != None: fail("timestamp %r" % meta.timestamp)
    if meta.headers != {}: fail("headers %r" % meta.headers)
    if meta.task != "t" or meta.queue != "t": fail("task %r queue %r" % (meta.task, meta.queue))
    if meta.attempt != 1 or meta.redelivered: fail("attempt %r" % meta.attempt)
task(subscribe_to = ["#"], work = work)
`, Options{})
	if r := handle(tk, "", nil); r.Verdict != tasks.Succeeded {
		t.Errorf("bare delivery: %s: %v", r.Verdict, r.Err)
	}
}

func TestVerdicts(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, ret string
		want      tasks.Result
	}{
		{"None", "return None", tasks.Result{Verdict: tasks.Succeeded}},
		{"no return", "pass", tasks.Result{Verdict: tasks.Succeeded}},
		{"True", "return True", tasks.Result{Verdict: tasks.Succeeded}},
		{"a truthy int", "return 7", tasks.Result{Verdict: tasks.Succeeded}},
		{"a truthy string", `return "done"`, tasks.Result{Verdict: tasks.Succeeded}},
		{"a truthy list", "return [0]", tasks.Result{Verdict: tasks.Succeeded}},
		{"False", "return False", tasks.Result{Verdict: tasks.Declined}},
		{"zero", "return 0", tasks.Result{Verdict: tasks.Declined}},
		{"zero float", "return 0.0", tasks.Result{Verdict: tasks.Declined}},
		{"empty string", `return ""`, tasks.Result{Verdict: tasks.Declined}},
		{"empty list", "return []", tasks.Result{Verdict: tasks.Declined}},
		{"empty dict", "return {}", tasks.Result{Verdict: tasks.Declined}},
		{"retry()", "return retry()", tasks.Result{Verdict: tasks.RetryRequested}},
		{"retry with seconds and a reason", `return retry(after = 30, reason = "busy")`,
			tasks.Result{Verdict: tasks.RetryRequested, RetryAfter: 30 * time.Second, Reason: "busy"}},
		{"retry with a fraction", "return retry(0.25)", tasks.Result{Verdict: tasks.RetryRequested, RetryAfter: 250 * time.Millisecond}},
		{"retry with a duration string", `return retry(after = "1m30s")`, tasks.Result{Verdict: tasks.RetryRequested, RetryAfter: 90 * time.Second}},
		{"retry with a time.duration", `return retry(after = 2 * time.second)`, tasks.Result{Verdict: tasks.RetryRequested, RetryAfter: 2 * time.Second}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			tk := loadTask(t, fmt.Sprintf("def work(payload, meta):\n    %s\ntask(subscribe_to = [\"#\"], work = work)\n", c.ret), Options{})
			got := handle(tk, "", nil)
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("Handle() = %+v, want %+v", got, c.want)
			}
		})
	}

	failures := []struct {
		name, body, msg string
		backtrace       []string
	}{
		{"fail()", `fail("boom")`, "fail: boom", []string{"Traceback (most recent call last):", "t.star:2:9: in work", "\nError: fail: boom"}},
		{"a runtime error", "return 1 // 0", "floored division by zero", []string{"t.star:2:14: in work", "Error: floored division by zero"}},
		{"an error in a helper", "return helper()", `key "k" not in dict`, []string{"t.star:2:18: in work", "in helper", `Error: key "k" not in dict`}},
		{"a bad retry", `return retry(after = "soon")`, `retry: after: "soon" is not a duration`, []string{"\nError: retry: after: \"soon\""}},
		{"a negative retry", `return retry(after = -1)`, `retry: after must not be negative, got -1`, nil},
		{"task() in a run", `task(subscribe_to = ["x"], work = work)`, "task: tasks are registered when files load", nil},
		{"config() in a run", `config(log_level = "x")`, "config: only allowed in symphony.star at the tasks root", nil},
	}
	for _, c := range failures {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			tk := loadTask(t, fmt.Sprintf("def work(payload, meta):\n    %s\ndef helper():\n    return {}[\"k\"]\ntask(subscribe_to = [\"#\"], work = work)\n", c.body), Options{})
			r := handle(tk, "", nil)
			if r.Verdict != tasks.Failed || r.Err == nil {
				t.Fatalf("Handle() = %+v, want failed", r)
			}
			if !strings.Contains(r.Err.Error(), c.msg) {
				t.Errorf("error = %q, want it to contain %q", r.Err, c.msg)
			}
			for _, b := range c.backtrace {
				if !strings.Contains(r.Backtrace, b) {
					t.Errorf("backtrace\n%s\nlacks %q", r.Backtrace, b)
				}
			}
			if errors.Is(r.Err, tasks.ErrDecode) || errors.Is(r.Err, tasks.ErrStepLimit) {
				t.Errorf("error %v claims a decode or step-limit failure", r.Err)
			}
		})
	}
}

func TestRoutes(t *testing.T) {
	t.Parallel()
	logs := &logBuffer{}
	tk := loadTask(t, `
def route(name, result):
    def run(payload, meta):
        log.info("route ran", route = name)
        publish("ran." + name, {})
        return result
    return run

task(
    routes = {
        "user.created": route("created", True),
        "user.*": route("any", None),
        "user.#": route("declines", False),
        "#": route("last", True),
    },
    subscribe_to = ["audit.#"],
)
`, Options{Logger: logs.logger()})
	if want := []string{"user.created", "user.*", "user.#", "#", "audit.#"}; !reflect.DeepEqual(tk.Spec.Patterns, want) {
		t.Errorf("patterns = %v, want %v", tk.Spec.Patterns, want)
	}
	ran := func() []string {
		var out []string
		for _, rec := range logs.records(t) {
			if rec["msg"] == "route ran" {
				out = append(out, rec["route"].(string))
			}
		}
		return out
	}
	keys := func(r tasks.Result) []string {
		var out []string
		for _, p := range r.Publications {
			out = append(out, p.RoutingKey)
		}
		return out
	}

	// Every match runs in order until one does not succeed.
	r := tk.Handler.Handle(context.Background(), &tasks.Delivery{RoutingKey: "user.created"})
	if r.Verdict != tasks.Declined || r.Publications != nil {
		t.Errorf("user.created: %+v, want declined without publications", r)
	}
	if got := ran(); !reflect.DeepEqual(got, []string{"created", "any", "declines"}) {
		t.Errorf("user.created ran %v", got)
	}

	// Every match succeeds: all their publications, in order.
	r = tk.Handler.Handle(context.Background(), &tasks.Delivery{RoutingKey: "order.paid"})
	if r.Verdict != tasks.Succeeded || !reflect.DeepEqual(keys(r), []string{"ran.last"}) {
		t.Errorf("order.paid: %+v", r)
	}

	// No route matches: acked, nothing runs.
	tk2 := loadTask(t, `
def on(payload, meta):
    fail("must not run")
task(routes = {"a.b": on}, subscribe_to = ["c.#"])
`, Options{})
	r = tk2.Handler.Handle(context.Background(), &tasks.Delivery{RoutingKey: "c.d"})
	if r.Verdict != tasks.Succeeded || r.Publications != nil {
		t.Errorf("no match: %+v, want succeeded", r)
	}

	// A failing route fails the message and drops what earlier ones published.
	tk3 := loadTask(t, `
def ok(payload, meta):
    publish("x", 1)
def bad(payload, meta):
    fail("second")
task(routes = {"#": ok, "a": bad})
`, Options{})
	r = tk3.Handler.Handle(context.Background(), &tasks.Delivery{RoutingKey: "a"})
	if r.Verdict != tasks.Failed || r.Publications != nil || !strings.Contains(r.Err.Error(), "fail: second") {
		t.Errorf("failing route: %+v", r)
	}
	r = tk3.Handler.Handle(context.Background(), &tasks.Delivery{RoutingKey: "b"})
	if r.Verdict != tasks.Succeeded || len(r.Publications) != 1 {
		t.Errorf("first route only: %+v", r)
	}
}

func TestPublish(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, call string
		want       tasks.Publication
	}{
		{"a dict is json", `publish("a.b", {"z": 1, "a": [True, None]})`,
			tasks.Publication{RoutingKey: "a.b", Body: []byte(`{"a":[true,null],"z":1}`), ContentType: "application/json"}},
		{"a str is json too", `publish("a.b", "hi")`,
			tasks.Publication{RoutingKey: "a.b", Body: []byte(`"hi"`), ContentType: "application/json"}},
		{"bytes are raw", `publish("a.b", b"\x00\xff")`,
			tasks.Publication{RoutingKey: "a.b", Body: []byte{0, 0xff}, ContentType: "application/octet-stream"}},
		{"bytes keep a given type", `publish("a.b", b"<x/>", content_type = "application/xml")`,
			tasks.Publication{RoutingKey: "a.b", Body: []byte("<x/>"), ContentType: "application/xml"}},
		{"a str under text is raw", `publish("a.b", "héllo", content_type = "text/plain; charset=utf-8")`,
			tasks.Publication{RoutingKey: "a.b", Body: []byte("héllo"), ContentType: "text/plain; charset=utf-8"}},
		{"headers and a delay in seconds", `publish("a.b", 1, headers = {"k": "v", "n": 1, "big": 1 << 70, "f": 0.5, "nested": {"l": [1, None]}}, delay = 5)`,
			tasks.Publication{RoutingKey: "a.b", Body: []byte(`1`), ContentType: "application/json",
				Headers: map[string]any{"k": "v", "n": int64(1), "big": bigInt("1180591620717411303424"), "f": 0.5,
					"nested": map[string]any{"l": []any{int64(1), nil}}},
				Delay: 5 * time.Second}},
		{"a delay string", `publish("a.b", None, delay = "1m30s", headers = {})`,
			tasks.Publication{RoutingKey: "a.b", Body: []byte(`null`), ContentType: "application/json", Delay: 90 * time.Second}},
		{"a priority", `publish("a.b", {}, priority = 7)`,
			tasks.Publication{RoutingKey: "a.b", Body: []byte(`{}`), ContentType: "application/json", Priority: 7}},
		{"the empty routing key", `publish("", {})`,
			tasks.Publication{RoutingKey: "", Body: []byte(`{}`), ContentType: "application/json"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			tk := loadTask(t, fmt.Sprintf("def work(payload, meta):\n    %s\ntask(subscribe_to = [\"#\"], work = work)\n", c.call), Options{})
			r := handle(tk, "", nil)
			if r.Verdict != tasks.Succeeded || len(r.Publications) != 1 {
				t.Fatalf("Handle() = %+v", r)
			}
			if got := r.Publications[0]; !reflect.DeepEqual(got, c.want) {
				t.Errorf("publication =\n %+v (%s)\nwant\n %+v (%s)", got, got.Body, c.want, c.want.Body)
			}
		})
	}

	t.Run("msgpack and yaml keep dict order and round-trip", func(t *testing.T) {
		t.Parallel()
		tk := loadTask(t, `
V = {"z": 1, "a": [True, None, 2.5, "s", b"\x01"], "big": 1 << 63, "t": time.from_timestamp(1700000000)}
def work(payload, meta):
    publish("m", V, content_type = "application/x-msgpack")
    publish("y", {"z": 1, "a": ["true", 2.0, None], "n": {"k": b"\x01"}}, content_type = "text/x-yaml")
task(subscribe_to = ["#"], work = work)
`, Options{})
		r := handle(tk, "", nil)
		if r.Verdict != tasks.Succeeded || len(r.Publications) != 2 {
			t.Fatalf("Handle() = %+v", r)
		}
		m, err := decodeMsgpack(r.Publications[0].Body)
		if err != nil {
			t.Fatal(err)
		}
		d := m.(*starlark.Dict)
		ts, _, _ := d.Get(starlark.String("t"))
		if tv, ok := ts.(startime.Time); !ok || time.Time(tv).Unix() != 1700000000 {
			t.Errorf("msgpack time = %v", ts)
		}
		_ = d.SetKey(starlark.String("t"), starlark.None)
		if want := `{"z": 1, "a": [True, None, 2.5, "s", b"\x01"], "big": 9223372036854775808, "t": None}`; m.String() != want {
			t.Errorf("msgpack round trip = %s\nwant %s", m, want)
		}
		if r.Publications[0].ContentType != "application/x-msgpack" {
			t.Errorf("content type %q", r.Publications[0].ContentType)
		}
		y := string(r.Publications[1].Body)
		if !strings.HasPrefix(y, "z: 1\na:\n") {
			t.Errorf("yaml does not keep the dict order:\n%s", y)
		}
		var back map[string]any
		if err := yaml.Unmarshal(r.Publications[1].Body, &back); err != nil {
			t.Fatal(err)
		}
		want := map[string]any{"z": 1, "a": []any{"true", 2.0, nil}, "n": map[string]any{"k": "\x01"}}
		if !reflect.DeepEqual(back, want) {
			t.Errorf("yaml round trip = %#v\nwant %#v\n%s", back, want, y)
		}
	})

	errs := []struct{ name, call, msg string }{
		{"a routing key too long", `publish("k" * 256, {})`, "publish: routing key"},
		{"a content type that is not a string", `publish("a", {}, content_type = 1)`, "publish: content_type must be a non-empty string"},
		{"headers that are not a dict", `publish("a", {}, headers = [1])`, "publish: headers must be a dict, got list [1]"},
		{"bytes in headers", `publish("a", {}, headers = {"b": b"x"})`, "publish: headers: in key \"b\": cannot encode bytes here"},
		{"a header key that is not a string", `publish("a", {}, headers = {1: 2})`, "publish: headers: dict key 1 is a int; keys must be strings"},
		{"a negative delay", `publish("a", {}, delay = -1)`, "publish: delay must not be negative, got -1"},
		{"a bad delay", `publish("a", {}, delay = "later")`, `publish: delay: "later" is not a duration`},
		{"a dict as text", `publish("a", {}, content_type = "text/plain")`, "publish: cannot encode a dict as text/plain: pass a str or bytes"},
		{"json that cannot be", `publish("a", {1: 2})`, "publish: encode payload as application/json: json.encode: dict has int key, want string"},
		{"a missing payload", `publish("a")`, "publish: missing argument for payload"},
		{"a priority of 300", `publish("a", {}, priority = 300)`, "publish: priority 300 is out of range: use 0 to 10 (a task's max_priority is at most 10)"},
		{"a negative priority", `publish("a", {}, priority = -1)`, "publish: priority -1 is out of range"},
		{"a priority that is not an int", `publish("a", {}, priority = "high")`, `publish: priority must be an int from 0 to 10, got string "high"`},
	}
	for _, c := range errs {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			tk := loadTask(t, fmt.Sprintf("def work(payload, meta):\n    %s\ntask(subscribe_to = [\"#\"], work = work)\n", c.call), Options{})
			r := handle(tk, "", nil)
			if r.Verdict != tasks.Failed || !strings.Contains(r.Err.Error(), c.msg) {
				t.Errorf("Handle() = %s %v, want failed with %q", r.Verdict, r.Err, c.msg)
			}
		})
	}

	// Publications go with a success only.
	for _, ending := range []string{`fail("no")`, "return False", "return retry()", "return 1 // 0"} {
		t.Run("dropped on "+ending, func(t *testing.T) {
			t.Parallel()
			tk := loadTask(t, fmt.Sprintf("def work(payload, meta):\n    publish(\"a\", 1)\n    %s\ntask(subscribe_to = [\"#\"], work = work)\n", ending), Options{})
			r := handle(tk, "", nil)
			if r.Verdict == tasks.Succeeded || r.Publications != nil {
				t.Errorf("Handle() = %+v, want no publications", r)
			}
		})
	}
}

func bigInt(s string) *big.Int {
	n, _ := new(big.Int).SetString(s, 10)
	return n
}

func TestCancellation(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, body, msg string }{
		{"a busy loop", "while True:\n        pass", "Starlark computation cancelled: timeout exceeded"},
		{"a long sleep", "sleep(100)", "sleep: interrupted: timeout exceeded"},
		{"a long sleep as a duration", `sleep("1h")`, "sleep: interrupted: timeout exceeded"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			tk := loadTask(t, fmt.Sprintf("def work(payload, meta):\n    %s\ntask(subscribe_to = [\"#\"], work = work)\n", c.body), Options{})
			ctx, cancel := context.WithTimeoutCause(context.Background(), 20*time.Millisecond, tasks.ErrTimeout)
			defer cancel()
			done := make(chan tasks.Result, 1)
			go func() { done <- tk.Handler.Handle(ctx, &tasks.Delivery{}) }()
			var r tasks.Result
			select {
			case r = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("Handle() did not return after its context ended")
			}
			if r.Verdict != tasks.Failed || !errors.Is(r.Err, tasks.ErrTimeout) || !strings.Contains(r.Err.Error(), c.msg) {
				t.Errorf("Handle() = %s %v, want failed with %q wrapping ErrTimeout", r.Verdict, r.Err, c.msg)
			}
			if o := tasks.Decide(tk.Spec, 1, r, context.Cause(ctx)); o.Action != tasks.Dead || o.Reason != tasks.ReasonTimeout {
				t.Errorf("outcome = %+v", o)
			}
		})
	}

	t.Run("a context done before the run", func(t *testing.T) {
		t.Parallel()
		tk := loadTask(t, echo, Options{})
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(tasks.ErrShutdown)
		r := tk.Handler.Handle(ctx, &tasks.Delivery{})
		if r.Verdict != tasks.Failed || !errors.Is(r.Err, tasks.ErrShutdown) || r.Publications != nil {
			t.Errorf("Handle() = %+v", r)
		}
	})

	t.Run("a short sleep finishes", func(t *testing.T) {
		t.Parallel()
		tk := loadTask(t, "def work(payload, meta):\n    sleep(0.001)\n    sleep(\"1ms\")\ntask(subscribe_to = [\"#\"], work = work)\n", Options{})
		if r := handle(tk, "", nil); r.Verdict != tasks.Succeeded {
			t.Errorf("Handle() = %s %v", r.Verdict, r.Err)
		}
	})
}

func TestMaxSteps(t *testing.T) {
	t.Parallel()
	tk := loadTask(t, `
def work(payload, meta):
    n = 0
    for i in range(payload["loops"]):
        n += i
    return True
task(subscribe_to = ["#"], work = work, max_steps = 1000)
`, Options{})
	// Each run has its own budget: many small runs all succeed.
	for range 5 {
		if r := handle(tk, "application/json", []byte(`{"loops": 50}`)); r.Verdict != tasks.Succeeded {
			t.Fatalf("a small run: %s %v", r.Verdict, r.Err)
		}
	}
	r := handle(tk, "application/json", []byte(`{"loops": 100000}`))
	if r.Verdict != tasks.Failed || !errors.Is(r.Err, tasks.ErrStepLimit) {
		t.Fatalf("Handle() = %s %v, want failed with ErrStepLimit", r.Verdict, r.Err)
	}
	if want := "Starlark computation cancelled: step limit exceeded (max_steps = 1000)"; r.Err.Error() != want {
		t.Errorf("error = %q, want %q", r.Err, want)
	}
	if o := tasks.Decide(tk.Spec, 1, r, nil); o.Reason != tasks.ReasonMaxSteps {
		t.Errorf("outcome = %+v, want reason max-steps", o)
	}

	loop := loadTask(t, "def work(payload, meta):\n    while True:\n        pass\ntask(subscribe_to = [\"#\"], work = work, max_steps = 100)\n", Options{})
	if r := handle(loop, "", nil); !errors.Is(r.Err, tasks.ErrStepLimit) {
		t.Errorf("while True under max_steps: %s %v", r.Verdict, r.Err)
	}
}

func TestOneshotIsFresh(t *testing.T) {
	t.Parallel()
	const src = `
COUNTER = {"n": 0}
log.info("top level ran")
def work(payload, meta):
    COUNTER["n"] += 1
    return COUNTER["n"] == 1
task(subscribe_to = ["#"], work = work, work_model = "%s")
`
	logs := &logBuffer{}
	oneshot := loadTask(t, fmt.Sprintf(src, "oneshot"), Options{Logger: logs.logger()})
	for i := range 3 {
		if r := handle(oneshot, "", nil); r.Verdict != tasks.Succeeded {
			t.Fatalf("oneshot delivery %d: %s %v (state carried over?)", i+1, r.Verdict, r.Err)
		}
	}
	if n := strings.Count(logs.String(), "top level ran"); n != 4 {
		t.Errorf("the top level ran %d times, want 4 (load + 3 deliveries)", n)
	}

	longlived := loadTask(t, fmt.Sprintf(src, "longlived"), Options{})
	r := handle(longlived, "", nil)
	if r.Verdict != tasks.Failed || !strings.Contains(r.Err.Error(), "frozen") {
		t.Errorf("longlived mutating a global: %s %v, want a frozen-value failure", r.Verdict, r.Err)
	}
}

// A oneshot task loads libraries like a longlived one, and its top level
// is bounded by the run's context and steps.
func TestOneshotWithLibrariesAndLimits(t *testing.T) {
	t.Parallel()
	root := writeTree(t, map[string]string{
		"lib/money.star": "def cents(x):\n    return int(x * 100)\n",
		"t.star": `load("lib/money.star", "cents")
def work(payload, meta):
    publish("out", cents(payload["eur"]))
task(subscribe_to = ["#"], work = work, work_model = "oneshot")
`,
		"slow.star": `
def spin():
    n = 0
    for i in range(1000000):
        n += i
    return n
X = spin() if env("SLOW") else 0
task(subscribe_to = ["#"], work = lambda p, m: True, work_model = "oneshot", max_steps = 1000)
`,
	})
	slow := false
	var mu sync.Mutex
	lookup := func(k string) (string, bool) {
		mu.Lock()
		defer mu.Unlock()
		if k == "SLOW" && slow {
			return "1", true
		}
		return "", false
	}
	got, err := Load([]string{root}, Options{LookupEnv: lookup})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]tasks.Task{}
	for _, tk := range got {
		byName[tk.Spec.Name] = tk
	}
	if body := published(t, handle(byName["t"], "application/json", []byte(`{"eur": 1.5}`))); body != "150" {
		t.Errorf("published %s, want 150", body)
	}
	mu.Lock()
	slow = true
	mu.Unlock()
	if r := handle(byName["slow"], "", nil); !errors.Is(r.Err, tasks.ErrStepLimit) {
		t.Errorf("a oneshot top level beyond max_steps: %s %v", r.Verdict, r.Err)
	}
}

func TestConcurrentHandle(t *testing.T) {
	t.Parallel()
	logs := &logBuffer{}
	for _, model := range []string{"longlived", "oneshot"} {
		t.Run(model, func(t *testing.T) {
			t.Parallel()
			tk := loadTask(t, fmt.Sprintf(`
LOOKUP = {"double": lambda x: 2 * x}
def work(payload, meta):
    log.debug("working", id = payload["id"])
    publish("done", {"id": payload["id"], "twice": LOOKUP["double"](payload["id"]), "key": meta.routing_key})
    return True
task(subscribe_to = ["#"], work = work, work_model = %q)
`, model), Options{Logger: logs.logger()})
			var wg sync.WaitGroup
			errs := make(chan error, 1000)
			for g := range 20 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 25 {
						id := g*100 + i
						r := tk.Handler.Handle(context.Background(), &tasks.Delivery{
							Body: fmt.Appendf(nil, `{"id": %d}`, id), ContentType: "application/json",
							RoutingKey: fmt.Sprintf("k.%d", id),
						})
						want := fmt.Sprintf(`{"id":%d,"key":"k.%d","twice":%d}`, id, id, 2*id)
						if r.Verdict != tasks.Succeeded || len(r.Publications) != 1 || string(r.Publications[0].Body) != want {
							errs <- fmt.Errorf("delivery %d: %+v", id, r)
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

func TestLog(t *testing.T) {
	t.Parallel()
	logs := &logBuffer{}
	tk := loadTask(t, `
log.info("loading", answer = 42)
def work(payload, meta):
    log.debug("d")
    log.info("resizing", id = 7, key = meta.routing_key, big = 1 << 70, f = 1.5, ok = True, none = None, l = [1, "a"], d = {"x": 1})
    log.warn("w")
    log.error("e", why = "because")
    print("printed", 1)
task(subscribe_to = ["#"], work = work)
`, Options{Logger: logs.logger()})
	d := &tasks.Delivery{RoutingKey: "img.up", MessageID: "m-42", Attempt: 2}
	if r := tk.Handler.Handle(context.Background(), d); r.Verdict != tasks.Succeeded {
		t.Fatalf("Handle() = %s %v", r.Verdict, r.Err)
	}
	recs := logs.records(t)
	if len(recs) != 6 {
		t.Fatalf("%d log lines, want 6:\n%s", len(recs), logs)
	}
	load := recs[0]
	if load["msg"] != "loading" || load["answer"] != 42.0 || !strings.HasSuffix(load["file"].(string), "t.star") {
		t.Errorf("load-time line = %v", load)
	}
	wantLevels := []string{"DEBUG", "INFO", "WARN", "ERROR", "INFO"}
	wantMsgs := []string{"d", "resizing", "w", "e", "printed 1"}
	for i, rec := range recs[1:] {
		if rec["level"] != wantLevels[i] || rec["msg"] != wantMsgs[i] {
			t.Errorf("line %d = %v, want %s %q", i+1, rec, wantLevels[i], wantMsgs[i])
		}
		if rec["task"] != "t" || rec["message_id"] != "m-42" || rec["attempt"] != 2.0 {
			t.Errorf("line %d lacks the run's attributes: %v", i+1, rec)
		}
	}
	res := recs[2]
	want := map[string]any{
		"id": 7.0, "key": "img.up", "big": "1180591620717411303424", "f": 1.5, "ok": true, "none": nil,
		"l": []any{1.0, "a"}, "d": map[string]any{"x": 1.0},
	}
	for k, v := range want {
		if !reflect.DeepEqual(res[k], v) {
			t.Errorf("attribute %s = %#v, want %#v", k, res[k], v)
		}
	}
	if recs[4]["why"] != "because" {
		t.Errorf("error line = %v", recs[4])
	}
}

func TestEnv(t *testing.T) {
	t.Parallel()
	lookup := func(k string) (string, bool) {
		if k == "TOPIC" {
			return "billing", true
		}
		return "", false
	}
	tk := loadTask(t, `
def work(payload, meta):
    return env("TOPIC") == "billing" and env("MISSING") == None and env("MISSING", "x") == "x" and env(name = "MISSING", default = 3) == 3
task(subscribe_to = [env("TOPIC") + ".#"], work = work)
`, Options{LookupEnv: lookup})
	if !reflect.DeepEqual(tk.Spec.Patterns, []string{"billing.#"}) {
		t.Errorf("patterns = %v", tk.Spec.Patterns)
	}
	if r := handle(tk, "", nil); r.Verdict != tasks.Succeeded {
		t.Errorf("Handle() = %s %v", r.Verdict, r.Err)
	}
}

// The daemon's own settings (a broker URL with its password) are not for
// task code, in whatever case the name is written.
func TestEnvHidesTheDaemonsSettings(t *testing.T) {
	t.Parallel()
	lookup := func(k string) (string, bool) { return "amqp://u:secret@h/", true }
	tk := loadTask(t, `
def work(payload, meta):
    return env(payload)
task(subscribe_to = ["x"], work = work)
`, Options{LookupEnv: lookup})
	for _, name := range []string{"SYMPHONY_BROKER", "symphony_exchange", "SYMPHONY_"} {
		r := handle(tk, "application/json", []byte(`"`+name+`"`))
		if r.Verdict != tasks.Failed || r.Err == nil || !strings.Contains(r.Err.Error(), "symphony's own settings") ||
			strings.Contains(r.Err.Error(), "secret") {
			t.Errorf("env(%q): %s %v", name, r.Verdict, r.Err)
		}
	}
	if r := handle(tk, "application/json", []byte(`"BROKER"`)); r.Verdict != tasks.Succeeded {
		t.Errorf("env(\"BROKER\"): %s %v", r.Verdict, r.Err)
	}
}
