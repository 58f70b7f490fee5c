package starlarklib

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// testRun is what RunTests reported.
type testReport struct {
	results []TestResult
	sum     TestSummary
	err     error
}

// byName is the result of the test function name (or the file, for a
// file that did not load).
func (r testReport) byName(t *testing.T, name string) TestResult {
	t.Helper()
	for _, res := range r.results {
		if res.Name == name || (res.Name == "" && filepath.Base(res.File) == name) {
			return res
		}
	}
	t.Fatalf("no result for %s; results: %+v", name, r.results)
	return TestResult{}
}

func runTestTree(t *testing.T, files map[string]string, opts TestOptions, paths ...string) (testReport, string) {
	t.Helper()
	root := writeTree(t, files)
	if opts.LookupEnv == nil {
		opts.LookupEnv = noEnv
	}
	var rep testReport
	opts.Report = func(r TestResult) { rep.results = append(rep.results, r) }
	if len(paths) == 0 {
		paths = []string{root}
	} else {
		for i, p := range paths {
			paths[i] = filepath.Join(root, p)
		}
	}
	rep.sum, rep.err = RunTests(paths, opts)
	return rep, root
}

// wantResults checks that exactly the tests in pass passed and that each
// test in fail failed with every fragment (ROOT standing for the root)
// in its failure.
func wantResults(t *testing.T, rep testReport, root string, pass []string, fail map[string][]string) {
	t.Helper()
	if rep.err != nil {
		t.Fatalf("RunTests: %v", rep.err)
	}
	for _, name := range pass {
		if r := rep.byName(t, name); !r.Passed {
			t.Errorf("%s failed, want it to pass:\n%s", name, r.Failure)
		}
	}
	for name, frags := range fail {
		r := rep.byName(t, name)
		if r.Passed {
			t.Errorf("%s passed, want it to fail", name)
			continue
		}
		for _, f := range frags {
			f = strings.ReplaceAll(f, "ROOT", root)
			if !strings.Contains(r.Failure, f) {
				t.Errorf("%s's failure lacks %q:\n%s", name, f, r.Failure)
			}
		}
	}
	if got, want := len(rep.results), len(pass)+len(fail); got != want {
		t.Errorf("%d results, want %d: %+v", got, want, rep.results)
	}
	if rep.sum.Passed != len(pass) || rep.sum.Failed != len(fail) {
		t.Errorf("summary %+v, want %d passed, %d failed", rep.sum, len(pass), len(fail))
	}
}

const helloTask = `
def work(payload, meta):
    if type(payload) != "dict" or not payload.get("name"):
        fail("no name")
    log.info("hello", name = payload["name"], key = meta.routing_key)
    print("printed", meta.attempt)
    return True

task(name = "hello", subscribe_to = ["greeting.en", "greeting.*"], work = work)
`

func TestRunTestsReportsEachTest(t *testing.T) {
	rep, root := runTestTree(t, map[string]string{
		"hello.star": helloTask,
		"hello_test.star": `
def helper(r):
    assert.eq(r.outcome, "ack", "the outcome")

def test_passes():
    r = run_task("hello", {"name": "Ada"})
    assert.eq(r.outcome, "ack")
    assert.eq(r.error, None)
    assert.eq([(l.level, l.msg, l.attrs) for l in r.logs],
              [("info", "hello", {"name": "Ada", "key": "greeting.en"}),
               ("info", "printed 1", {"via": "print"})])

def test_assertion_fails():
    r = run_task("hello", {"name": "Ada"})
    assert.eq(r.outcome, "dead")

def test_task_fails():
    r = run_task("hello", {}, routing_key = "greeting.fr")
    print("the result", r.outcome)
    helper(r)

def test_error_in_test():
    x = {}["missing"]

def not_a_test():
    fail("never runs")

test_not_a_function = 3
`,
	}, TestOptions{})
	wantResults(t, rep, root, []string{"test_passes"}, map[string][]string{
		"test_assertion_fails": {`ROOT/hello_test.star:15:5: assert.eq: got "ack", want "dead"`,
			`last run_task("hello", routing_key = "greeting.en"): ack`},
		"test_task_fails": {
			`ROOT/hello_test.star:3:5: assert.eq: the outcome: got "dead", want "ack"`,
			`last run_task("hello", routing_key = "greeting.fr"): dead: fail: no name`,
			"Traceback (most recent call last):\n  ROOT/hello.star:4:13: in work\nError: fail: no name",
			"printed: the result dead",
		},
		"test_error_in_test": {`ROOT/hello_test.star:23:11: key "missing" not in dict`},
	})
	// In the order of the file.
	var names []string
	for _, r := range rep.results {
		names = append(names, r.Name)
	}
	if want := []string{"test_passes", "test_assertion_fails", "test_task_fails", "test_error_in_test"}; !slices.Equal(names, want) {
		t.Errorf("tests ran in the order %v, want %v", names, want)
	}
	if r := rep.byName(t, "test_error_in_test"); strings.Contains(r.Failure, "last run_task") {
		t.Errorf("a test that ran no task shows a run:\n%s", r.Failure)
	}
}

func TestRunTestsFilesAndPaths(t *testing.T) {
	files := map[string]string{
		"hello.star":          helloTask,
		"lib/names.star":      `NAMES = ["Ada", "Grace"]`,
		"a_test.star":         "load(\"lib/names.star\", \"NAMES\")\ndef test_a():\n    for n in NAMES:\n        assert.eq(run_task(\"hello\", {\"name\": n}).outcome, \"ack\")\n",
		"sub/b_test.star":     "def test_b():\n    pass\n\ndef test_c():\n    pass\n",
		"broken_test.star":    "def test_x(:\n",
		".hidden/h_test.star": "def test_hidden():\n    fail('runs')\n",
	}
	rep, root := runTestTree(t, files, TestOptions{})
	wantResults(t, rep, root, []string{"test_a", "test_b", "test_c"}, map[string][]string{
		"broken_test.star": {"ROOT/broken_test.star:1:13: got ':', want ')'"},
	})

	// One file: its directory is the root, only its tests run.
	rep, root = runTestTree(t, files, TestOptions{}, "a_test.star")
	wantResults(t, rep, root, []string{"test_a"}, nil)

	// --run selects by name.
	rep, root = runTestTree(t, files, TestOptions{Run: regexp.MustCompile("^test_[bc]$")}, "sub")
	wantResults(t, rep, root, []string{"test_b", "test_c"}, nil)
	rep, _ = runTestTree(t, files, TestOptions{Run: regexp.MustCompile("nothing")}, "sub")
	if !errors.Is(rep.err, ErrNoTests) || !strings.Contains(rep.err.Error(), `matches "nothing"`) {
		t.Errorf("no test matching: %v", rep.err)
	}
}

func TestRunTestsBadPaths(t *testing.T) {
	for _, c := range []struct {
		name  string
		files map[string]string
		path  string
		want  string
	}{
		{"no test files", map[string]string{"hello.star": helloTask}, "", "no tests to run: no *_test.star files under ROOT"},
		{"no test functions", map[string]string{"hello.star": helloTask, "hello_test.star": "X = 1\n"}, "", "define no test_* functions"},
		{"a task file", map[string]string{"hello.star": helloTask}, "hello.star", "ROOT/hello.star is not a test file"},
		{"missing", map[string]string{}, "nope", "read tests: stat ROOT/nope: no such file or directory"},
		{"tasks do not load", map[string]string{"hello.star": "task(name = 1)\n", "hello_test.star": "def test_x():\n    pass\n"}, "",
			"ROOT/hello.star:1:1: task: name must be a string"},
		{"a secret read as the files load", map[string]string{"hello.star": "T = secret(\"T\")\n" + helloTask, "hello_test.star": "def test_x():\n    pass\n"}, "",
			"ROOT/hello.star:1:5: secret: secret T read outside run_task: in a task test, capabilities answer from the stubs of run_task(...), and a file's top level runs before any; call it from the work function"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var paths []string
			if c.path != "" {
				paths = []string{c.path}
			}
			rep, root := runTestTree(t, c.files, TestOptions{}, paths...)
			want := strings.ReplaceAll(c.want, "ROOT", root)
			if rep.err == nil || !strings.Contains(rep.err.Error(), want) {
				t.Errorf("RunTests error %v, want it to contain %q", rep.err, want)
			}
			if len(rep.results) != 0 {
				t.Errorf("tests ran: %+v", rep.results)
			}
		})
	}
}

// Every run reads the files as they are on disk now.
func TestRunTestsReadsTheFilesEachTime(t *testing.T) {
	root := writeTree(t, map[string]string{
		"hello.star":      helloTask,
		"hello_test.star": "def test_x():\n    assert.eq(run_task(\"hello\", {\"name\": \"Ada\"}).logs[0].msg, \"hello\")\n",
	})
	run := func() TestSummary {
		sum, err := RunTests([]string{root}, TestOptions{LookupEnv: noEnv})
		if err != nil {
			t.Fatal(err)
		}
		return sum
	}
	if sum := run(); sum.Passed != 1 {
		t.Fatalf("first run: %+v", sum)
	}
	src := strings.Replace(helloTask, `log.info("hello"`, `log.info("bonjour"`, 1)
	if err := os.WriteFile(filepath.Join(root, "hello.star"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if sum := run(); sum.Failed != 1 {
		t.Fatalf("after the task changed: %+v", sum)
	}
}

func TestRunTaskOutcomes(t *testing.T) {
	rep, root := runTestTree(t, map[string]string{
		"jobs.star": `
def work(payload, meta):
    if payload == "retry":
        return retry(after = "3s", reason = "later")
    if payload == "decline":
        return False
    if payload == "loop":
        while True:
            pass
    if payload == "meta":
        publish("jobs.seen", {"key": meta.routing_key, "attempt": meta.attempt, "redelivered": meta.redelivered,
                              "headers": meta.headers, "type": meta.content_type, "queue": meta.queue,
                              "exchange": meta.exchange, "task": meta.task},
                headers = {"h": 1}, delay = "2s")
        return True
    return True

task(name = "jobs", subscribe_to = ["jobs.#"], work = work, max_attempts = 3, retry_delay = "1s", timeout = "200ms",
     max_priority = 5)

def bounded(payload, meta):
    while True:
        pass

task(name = "bounded", subscribe_to = ["bounded"], work = bounded, max_steps = 1000, timeout = None)

task(name = "fire", subscribe_to = ["fire"], work = lambda p, m: False, acknowledge = False)

def yaml(payload, meta):
    payload["type"] = meta.content_type
    publish("fire", payload)

task(name = "yaml", subscribe_to = ["yaml"], work = yaml)
`,
		"jobs_test.star": `
def test_ack():
    r = run_task("jobs", {}, routing_key = "jobs.a")
    assert.eq((r.outcome, r.reason, r.delay, r.error, r.backtrace, r.published, r.calls, r.files),
              ("ack", None, None, None, None, [], [], None))

def test_retry_after():
    r = run_task("jobs", "retry", routing_key = "jobs.a")
    assert.eq((r.outcome, r.reason, r.delay, r.error), ("retry", "later", 3.0, None))

def test_declined_backs_off():
    assert.eq(run_task("jobs", "decline", routing_key = "jobs.a").delay, 1.0)
    r = run_task("jobs", "decline", routing_key = "jobs.a", attempt = 2)
    assert.eq((r.outcome, r.reason, r.delay), ("retry", "returned False", 2.0))

def test_last_attempt_dead():
    r = run_task("jobs", "decline", routing_key = "jobs.a", attempt = 3)
    assert.eq((r.outcome, r.reason), ("dead", "max-attempts"))
    assert.eq(r.error, "gave up after 3 attempts; last: returned False")

def test_timeout():
    r = run_task("jobs", "loop", routing_key = "jobs.a")
    assert.eq((r.outcome, r.reason), ("dead", "timeout"))
    assert.contains(r.error, "timeout of 200ms")

def test_step_limit():
    r = run_task("bounded", None)
    assert.eq((r.outcome, r.reason), ("dead", "max-steps"))
    assert.contains(r.error, "max_steps = 1000")
    assert.contains(r.backtrace, "in bounded")

def test_payload_that_does_not_decode():
    r = run_task("jobs", b"{not json", routing_key = "jobs.a", content_type = "application/json")
    assert.eq((r.outcome, r.reason), ("dead", "decode"))

def test_meta_and_published():
    r = run_task("jobs", "meta", routing_key = "jobs.a.b", attempt = 2, headers = {"x": "y"}, bound = ["jobs.seen"])
    assert.eq(r.outcome, "ack")
    assert.eq(len(r.published), 1)
    m = r.published[0]
    assert.eq((m.routing_key, m.content_type, m.headers, m.delay, m.priority), ("jobs.seen", "application/json", {"h": 1}, 2.0, 0))
    assert.eq(m.payload, {"key": "jobs.a.b", "attempt": 2, "redelivered": True, "headers": {"x": "y"},
                          "type": "application/json", "queue": "jobs", "exchange": "symphony", "task": "jobs"})
    assert.eq(type(m.body), "bytes")

def test_content_type():
    r = run_task("yaml", {"a": [1, 2]}, content_type = "application/x-yaml")
    assert.eq(r.published[0].payload, {"a": [1, 2], "type": "application/x-yaml"})

def test_acknowledge_false_always_acks():
    assert.eq(run_task("fire", None).outcome, "ack")
`,
	}, TestOptions{})
	wantResults(t, rep, root, []string{"test_ack", "test_retry_after", "test_declined_backs_off", "test_last_attempt_dead",
		"test_timeout", "test_step_limit", "test_payload_that_does_not_decode", "test_meta_and_published", "test_content_type",
		"test_acknowledge_false_always_acks"}, nil)
}

func TestRunTaskRoutesWhatItPublishes(t *testing.T) {
	rep, root := runTestTree(t, map[string]string{
		"orders.star": `
def work(payload, meta):
    publish(payload["key"], {}, priority = payload.get("priority"))

task(name = "orders", subscribe_to = ["order.placed"], work = work, max_attempts = 2)
task(name = "plain", subscribe_to = ["order.priced", "order.*.urgent"], work = lambda p, m: True)
task(name = "ranked", subscribe_to = ["order.ranked", "order.*.urgent"], work = lambda p, m: True, max_priority = 9)
task(name = "ticks", schedule = "every 1m", work = lambda p, m: True)
`,
		"orders_test.star": `
def test_bound_by_a_task():
    r = run_task("orders", {"key": "order.priced"})
    assert.eq((r.outcome, r.published[0].routing_key), ("ack", "order.priced"))

def test_unbound_retries():
    r = run_task("orders", {"key": "order.shipped"})
    assert.eq((r.outcome, r.delay), ("retry", 1.0))
    assert.contains(r.reason, "publish order.shipped: no task under ")
    assert.contains(r.reason, " subscribes to it, so the broker refuses it and the daemon retries the message")
    assert.contains(r.reason, 'pass bound = ["order.shipped"] to run_task')
    assert.eq(len(r.published), 1)

def test_unbound_on_the_last_attempt_is_dead():
    r = run_task("orders", {"key": "order.shipped"}, attempt = 2)
    assert.eq((r.outcome, r.reason), ("dead", "max-attempts"))
    assert.contains(r.error, "no task under")

def test_bound_outside():
    assert.eq(run_task("orders", {"key": "order.shipped"}, bound = ["order.*"]).outcome, "ack")

def test_priority_to_a_queue_that_takes_none():
    r = run_task("orders", {"key": "order.priced", "priority": 3})
    assert.eq((r.outcome, r.reason), ("dead", "error"))
    assert.contains(r.error, "takes no priorities")
    assert.contains(r.error, "queue plain")
    r = run_task("orders", {"key": "order.x.urgent", "priority": 3})
    assert.eq(r.outcome, "dead")

def test_priority_to_a_queue_that_takes_them():
    assert.eq(run_task("orders", {"key": "order.ranked", "priority": 3}).outcome, "ack")

def test_schedule_tick_key():
    assert.eq(run_task("ticks", {"scheduled_at": "now"}).outcome, "ack")
`,
	}, TestOptions{})
	wantResults(t, rep, root, []string{"test_bound_by_a_task", "test_unbound_retries", "test_unbound_on_the_last_attempt_is_dead",
		"test_bound_outside", "test_priority_to_a_queue_that_takes_none", "test_priority_to_a_queue_that_takes_them",
		"test_schedule_tick_key"}, nil)
}

func TestRunTaskArgumentErrors(t *testing.T) {
	rep, root := runTestTree(t, map[string]string{
		"hello.star": helloTask,
		"wild.star":  "task(name = \"wild\", subscribe_to = [\"a.*\"], work = lambda p, m: True)\n",
		"hello_test.star": `
def test_unknown_task():
    run_task("helo", {})

def test_not_subscribed():
    run_task("hello", {}, routing_key = "farewell.en")

def test_wildcard_needs_a_key():
    run_task("wild", {})

def test_bad_attempt():
    run_task("hello", {}, attempt = 0)

def test_bad_headers():
    run_task("hello", {}, headers = [1])

def test_unknown_argument():
    run_task("hello", {}, htp = {})

def test_payload_that_does_not_encode():
    run_task("hello", {"x": b"bytes"})

def test_bad_key():
    run_task("hello", {}, http = {"api.example.com/x": {}})

def test_duplicate_keys():
    run_task("hello", {}, http = {"GET https://a.example/x": {}, "get https://a.example/x": {}})

def test_empty_answers():
    run_task("hello", {}, http = {"https://a.example/x": []})

def test_bad_answer():
    run_task("hello", {}, exec = {"ls": {"code": "0"}})

def test_bad_secret():
    run_task("hello", {}, secrets = {"A": 1})

def test_bad_file():
    run_task("hello", {}, file = {"../x": "y"})

def test_bad_file_content():
    run_task("hello", {}, file = {"x": 1})

def test_bad_sql():
    run_task("hello", {}, sql = {"SELECT 1": [1]})

def test_bad_sql_answer():
    run_task("hello", {}, sql = {"SELECT 1": {"rows": [], "afected": 1}})

def test_bad_bound():
    run_task("hello", {}, bound = ["a..b"])

def test_publish_in_a_test():
    publish("a", {})

def test_fails_finds_it():
    assert.fails(lambda: run_task("helo", {}), 'no task named "helo"')
`,
		"top_test.star": "run_task(\"hello\", {})\n",
	}, TestOptions{})
	wantResults(t, rep, root, []string{"test_fails_finds_it"}, map[string][]string{
		"test_unknown_task":                 {`ROOT/hello_test.star:3:5: run_task: no task named "helo" under ROOT (the tasks: hello, wild); did you mean "hello"?`},
		"test_not_subscribed":               {`run_task("hello"): the task does not subscribe to "farewell.en" (its patterns: greeting.en, greeting.*)`},
		"test_wildcard_needs_a_key":         {`run_task("wild"): pass routing_key = "...": the task subscribes to a.*, which is not a routing key`},
		"test_bad_attempt":                  {`run_task("hello"): attempt must be 1 or more, got 0`},
		"test_bad_headers":                  {`run_task("hello"): headers must be a dict, got list`},
		"test_unknown_argument":             {`run_task: unexpected keyword argument "htp"`},
		"test_payload_that_does_not_encode": {`run_task("hello"): payload: encode payload as application/json`},
		"test_bad_key":                      {`run_task("hello"): http: key "api.example.com/x": want "METHOD URL" or "URL"`},
		"test_duplicate_keys":               {`stub the same call`},
		"test_empty_answers":                {`an empty list answers no call`},
		"test_bad_answer":                   {`exec["ls"]: code must be an int, got string`},
		"test_bad_secret":                   {`secrets must map names to str values, got string: int`},
		"test_bad_bound":                    {`run_task("hello"): bound: `},
		"test_bad_file":                     {`run_task("hello"): file: "../x" is not a path inside file_root`},
		"test_bad_file_content":             {`run_task("hello"): file["x"] must be str or bytes, the file's content, got int`},
		"test_bad_sql":                      {`run_task("hello"): sql["SELECT 1"]: row 0 must be a dict of column: value, got int`},
		"test_bad_sql_answer":               {`sql["SELECT 1"]: unknown key "afected" in an answer: the keys are rows, affected, error; did you mean "affected"?`},
		"test_publish_in_a_test":            {`publish: not available in a task test`},
		"top_test.star":                     {`ROOT/top_test.star:1:1: run_task: call it from a test_* function of a *_test.star file`},
	})
}

func TestRunTaskStubsHTTP(t *testing.T) {
	rep, root := runTestTree(t, map[string]string{
		"hook.star": `
def work(payload, meta):
    for i in range(payload.get("times", 1)):
        r = http.request(payload.get("method", "POST"), payload["url"], json = payload.get("json"),
                         headers = {"X-Key": "k"}, params = payload.get("params"))
    log.info("answer", status = r.status, text = r.text, type = r.headers.get("content-type", ""))
    if r.status >= 500:
        return retry(reason = "status %d" % r.status)
    publish("hook.done", {"status": r.status, "json": r.json() if r.text else None, "url": r.url})

task(name = "hook", subscribe_to = ["hook"], work = work, allow = ["http"], allow_hosts = ["*.example.com", "10.0.0.7"])
task(name = "sink", subscribe_to = ["hook.done"], work = lambda p, m: True)
task(name = "open", subscribe_to = ["open"], work = work, allow = ["http"])
`,
		"lib.star":  "def get():\n    return http.get(\"https://api.example.com/\")\n",
		"lib2.star": "load(\"lib.star\", \"get\")\ntask(name = \"via_lib\", subscribe_to = [\"via\"], work = lambda p, m: get())\n",
		"hook_test.star": `
URL = "https://api.example.com/orders"

def test_answer_and_call():
    r = run_task("hook", {"url": URL, "json": {"id": 7}},
                 http = {"POST " + URL: {"status": 201, "json": {"ok": True}, "headers": {"X-Id": "1"}}})
    assert.eq(r.outcome, "ack")
    assert.eq(r.published[0].payload, {"status": 201, "json": {"ok": True}, "url": URL})
    assert.eq(r.logs[0].attrs["type"], "application/json")
    assert.eq(len(r.calls), 1)
    c = r.calls[0]
    assert.eq((c.module, c.function, c.target, c.result, c.error), ("http", "request", "api.example.com", "ok", None))
    assert.eq((c.method, c.url, c.json, c.text), ("POST", URL, {"id": 7}, '{"id":7}'))
    assert.eq(c.headers, {"content-type": "application/json", "x-key": "k"})

def test_any_method_and_query():
    r = run_task("hook", {"url": URL, "method": "GET", "params": {"page": "2"}}, http = {URL: {"body": "plain"}})
    assert.eq(r.logs[0].attrs, {"status": 200, "text": "plain", "type": ""})
    assert.eq(r.calls[0].url, URL + "?page=2")

def test_exact_query_wins():
    r = run_task("hook", {"url": URL, "method": "GET", "params": {"page": "2"}},
                 http = {URL: {"body": "any"}, "GET " + URL + "?page=2": {"body": "second"}})
    assert.eq(r.logs[0].attrs["text"], "second")

def test_method_matters():
    run_task("hook", {"url": URL, "method": "PUT"}, http = {"POST " + URL: {}})

def test_answers_in_order():
    r = run_task("hook", {"url": URL, "times": 2}, http = {URL: [{"status": 204}, {"status": 503}]})
    assert.eq((r.outcome, r.reason), ("retry", "status 503"))
    r = run_task("hook", {"url": URL, "times": 2}, http = {URL: [{"status": 503}, {"status": 204}]})
    assert.eq(r.outcome, "ack")
    assert.eq([c.url for c in r.calls], [URL, URL])

def test_too_few_answers():
    run_task("hook", {"url": URL, "times": 2}, http = {URL: [{"status": 200}]})

def test_function_stub():
    seen = []
    def answer(call):
        seen.append(call.method)
        return {"json": {"echo": call.json}}
    r = run_task("hook", {"url": URL, "json": [1]}, http = {URL: answer})
    assert.eq(r.published[0].payload["json"], {"echo": [1]})
    assert.eq(seen, ["POST"])

def test_function_stub_fails():
    run_task("hook", {"url": URL}, http = {URL: lambda call: {}["x"]})

def test_network_error():
    r = run_task("hook", {"url": URL}, http = {URL: {"error": "connection refused"}})
    assert.eq((r.outcome, r.reason), ("dead", "error"))
    assert.eq(r.error, "http.request https://api.example.com/orders: connection refused")
    assert.eq((r.calls[0].result, r.calls[0].error), ("error", r.error))
    assert.contains(r.backtrace, "hook.star:4:25: in work")

def test_unstubbed():
    run_task("hook", {"url": URL + "/7"}, http = {URL: {}})

def test_host_not_allowed_is_refused():
    r = run_task("hook", {"url": "https://evil.test/x"}, http = {"https://evil.test/x": {}})
    assert.eq((r.outcome, r.calls[0].result), ("dead", "refused"))
    assert.contains(r.error, "not in allow_hosts")

def test_private_address_needs_listing():
    for host in ["127.0.0.1", "localhost", "169.254.169.254", "[::1]", "10.0.0.7"]:
        r = run_task("open", {"url": "http://%s/x" % host}, http = {"http://%s/x" % host: {}})
        assert.eq(r.calls[0].result, "refused", host)
        assert.contains(r.error, "is a private, loopback or link-local address", host)
    assert.eq(run_task("open", {"url": "http://93.184.215.14/x"}, http = {"http://93.184.215.14/x": {}}).outcome, "ack")
    assert.eq(run_task("hook", {"url": "http://10.0.0.7/x"}, http = {"http://10.0.0.7/x": {}}).outcome, "ack")

def test_no_grant():
    r = run_task("via_lib", None)
    assert.eq((r.outcome, r.calls[0].result), ("dead", "refused"))
    assert.contains(r.error, 'add allow = ["http"]')
`,
	}, TestOptions{})
	wantResults(t, rep, root, []string{"test_answer_and_call", "test_any_method_and_query", "test_exact_query_wins",
		"test_answers_in_order", "test_function_stub", "test_network_error", "test_host_not_allowed_is_refused",
		"test_private_address_needs_listing", "test_no_grant"}, map[string][]string{
		"test_method_matters": {`run_task("hook"): the task called http.request PUT https://api.example.com/orders, which no stub answers: pass http = {"PUT https://api.example.com/orders": {"status": 200}} to run_task`,
			"last run_task(\"hook\", routing_key = \"hook\"): dead: http.request https://api.example.com/orders: no stub answers this call in the task test\nTraceback"},
		"test_too_few_answers":     {`run_task("hook"): http stub "https://api.example.com/orders" lists 1 answers, and the task made call 2: add answers to the list`},
		"test_function_stub_fails": {`run_task("hook"): http stub "https://api.example.com/orders": key "x" not in dict`},
		"test_unstubbed":           {`the task called http.request POST https://api.example.com/orders/7, which no stub answers`},
	})
}

func TestRunTaskStubsExecAndSecrets(t *testing.T) {
	rep, root := runTestTree(t, map[string]string{
		"thumbs.star": `
def work(payload, meta):
    token = secret("TOKEN")
    for argv in payload["runs"]:
        out = exec.run(argv, stdin = "in", env = {"K": "v"})
        log.info("ran", code = out.code, stdout = out.stdout, stderr = out.stderr, token = token)
        if out.code != 0:
            fail("%s failed with %s: %s" % (argv[0], token, out.stderr))
    log.info("the token is " + str(token) + " " + payload.get("leak", ""))
    publish("thumbs.done", {"token": str(token), "leak": payload.get("leak", "")}, headers = {"h": payload.get("leak", "")})

task(name = "thumbs", subscribe_to = ["thumbs"], work = work, allow = ["exec"],
     allow_commands = ["no-such-program-anywhere", "/opt/nowhere/convert"])
task(name = "done", subscribe_to = ["thumbs.done"], work = lambda p, m: True)
`,
		"thumbs_test.star": `
def test_program_and_command_line():
    r = run_task("thumbs", {"runs": [["no-such-program-anywhere", "a"], ["no-such-program-anywhere", "b", "c"], ["/opt/nowhere/convert"]]},
                 exec = {"no-such-program-anywhere": {"stdout": "any"}, "no-such-program-anywhere b c": {"stdout": "exact", "stderr": b"\xff"},
                         "/opt/nowhere/convert": {"code": 0}},
                 secrets = {"TOKEN": "s3cret-value"})
    assert.eq(r.outcome, "ack")
    assert.eq([l.attrs["stdout"] for l in r.logs[:3]], ["any", "exact", ""])
    assert.eq([c.module for c in r.calls], ["secret", "exec", "exec", "exec"])
    assert.eq(r.calls[0].name, "TOKEN")
    c = r.calls[2]
    assert.eq((c.function, c.target, c.argv, c.stdin, c.env["K"], c.cwd), ("run", "no-such-program-anywhere", ["no-such-program-anywhere", "b", "c"], "in", "v", None))
    assert.contains(c.env, "PATH")

def test_secrets_are_scrubbed_as_the_daemon_does():
    r = run_task("thumbs", {"runs": [], "leak": "s3cret-value"}, secrets = {"TOKEN": "s3cret-value"})
    assert.eq(r.logs[0].msg, "the token is <secret TOKEN> <secret TOKEN>")
    assert.eq(r.published[0].payload, {"token": "<secret TOKEN>", "leak": "<secret TOKEN>"})
    assert.eq(r.published[0].headers, {"h": "<secret TOKEN>"})

def test_failure_scrubs_the_secret():
    r = run_task("thumbs", {"runs": [["/opt/nowhere/convert"]]}, exec = {"/opt/nowhere/convert": {"code": 2, "stderr": "bad s3cret-value"}},
                 secrets = {"TOKEN": "s3cret-value"})
    assert.eq(r.outcome, "dead")
    assert.eq(r.error, "fail: /opt/nowhere/convert failed with <secret TOKEN>: bad <secret TOKEN>")
    assert.eq(r.logs[0].attrs["token"], "<secret TOKEN>")
    assert.true("s3cret" not in r.backtrace)

def test_answers_and_errors():
    r = run_task("thumbs", {"runs": [["/opt/nowhere/convert"]]}, exec = {"/opt/nowhere/convert": {"error": "exec: killed"}},
                 secrets = {"TOKEN": "x"})
    assert.eq(r.error, "exec.run /opt/nowhere/convert: exec: killed")

def test_unstubbed_program():
    run_task("thumbs", {"runs": [["no-such-program-anywhere", "z"]]}, exec = {"/opt/nowhere/convert": {}}, secrets = {"TOKEN": "x"})

def test_unstubbed_secret():
    run_task("thumbs", {"runs": []}, secrets = {"OTHER": "x"})

def test_refused_program():
    r = run_task("thumbs", {"runs": [["rm", "-rf", "/"]]}, exec = {"rm": {}}, secrets = {"TOKEN": "x"})
    assert.eq((r.outcome, r.calls[1].result), ("dead", "refused"))
    assert.contains(r.error, "rm is not in allow_commands")

def test_secret_in_a_test_function():
    secret("TOKEN")
`,
	}, TestOptions{})
	wantResults(t, rep, root, []string{"test_program_and_command_line", "test_secrets_are_scrubbed_as_the_daemon_does",
		"test_failure_scrubs_the_secret", "test_answers_and_errors", "test_refused_program"}, map[string][]string{
		"test_unstubbed_program":         {`run_task("thumbs"): the task called exec.run no-such-program-anywhere z, which no stub answers: pass exec = {"no-such-program-anywhere": {"code": 0, "stdout": ""}} to run_task`},
		"test_unstubbed_secret":          {`run_task("thumbs"): the task called secret("TOKEN"), which no stub answers: pass secrets = {"TOKEN": "..."} to run_task`},
		"test_secret_in_a_test_function": {`ROOT/thumbs_test.star:46:5: secret: secret TOKEN read outside run_task`},
	})
}

func TestAssert(t *testing.T) {
	rep, root := runTestTree(t, map[string]string{
		"a_test.star": `
def test_passing():
    assert.eq(1, 1)
    assert.eq({"a": [1]}, {"a": [1]})
    assert.ne(1, 2)
    assert.ne("1", 1)
    assert.true([1])
    assert.false("")
    assert.contains("abc", "b")
    assert.contains([1, 2], 2)
    assert.contains({"k": 1}, "k")
    assert.eq(assert.fails(lambda: fail("boom 7")), "fail: boom 7")
    assert.eq(assert.fails(lambda: fail("boom 7"), "boom [0-9]"), "fail: boom 7")

def test_eq():
    assert.eq([1, 2], [1, 3], "the list")

def test_ne():
    assert.ne("x", "x")

def test_true():
    assert.true(0)

def test_false():
    assert.false({"a": 1}, msg = "no")

def test_contains():
    assert.contains([1], 2)

def test_fails_when_it_succeeds():
    assert.fails(lambda: 1)

def test_fails_with_another_error():
    assert.fails(lambda: fail("x"), "^y")

def test_fails_does_not_swallow_a_failed_check():
    assert.fails(lambda: assert.eq(1, 2), "anything")

def test_compare_error():
    assert.contains(1, 2)
`,
	}, TestOptions{})
	wantResults(t, rep, root, []string{"test_passing"}, map[string][]string{
		"test_eq":                       {`ROOT/a_test.star:16:5: assert.eq: the list: got [1, 2], want [1, 3]`},
		"test_ne":                       {`ROOT/a_test.star:19:5: assert.ne: both are "x", want them different`},
		"test_true":                     {`ROOT/a_test.star:22:5: assert.true: got 0, want a true value`},
		"test_false":                    {`ROOT/a_test.star:25:5: assert.false: no: got {"a": 1}, want a false value`},
		"test_contains":                 {`ROOT/a_test.star:28:5: assert.contains: 2 is not in [1]`},
		"test_fails_when_it_succeeds":   {`ROOT/a_test.star:31:5: assert.fails: lambda did not fail`},
		"test_fails_with_another_error": {`ROOT/a_test.star:34:5: assert.fails: lambda failed with "fail: x", which does not match "^y"`},
		"test_fails_does_not_swallow_a_failed_check": {`ROOT/a_test.star:37:26: assert.eq: got 1, want 2`},
		"test_compare_error":                         {`ROOT/a_test.star:40:5: assert.contains: unknown binary op: int in int`},
	})
}

// A oneshot task executes its file anew for every run_task, as for every
// delivery: nothing carries over.
func TestRunTaskOneshot(t *testing.T) {
	rep, root := runTestTree(t, map[string]string{
		"once.star": `
seen = []

def work(payload, meta):
    seen.append(payload)
    log.info("seen", n = len(seen))

task(name = "once", subscribe_to = ["once"], work = work, work_model = "oneshot")
`,
		"once_test.star": `
def test_fresh_each_time():
    for i in range(3):
        r = run_task("once", i)
        assert.eq(r.logs[0].attrs["n"], 1)
`,
	}, TestOptions{})
	wantResults(t, rep, root, []string{"test_fresh_each_time"}, nil)
}

func TestRunTaskCatchAllStubs(t *testing.T) {
	rep, root := runTestTree(t, map[string]string{
		"any.star": `
def work(payload, meta):
    a = http.get("https://a.example.com/x").status
    b = http.get("https://b.example.com/y").status
    c = exec.run(["ls", "-l"]).stdout
    d = exec.run(["cat"]).stdout
    log.info("got", a = a, b = b, c = c, d = d)

task(name = "any", subscribe_to = ["any"], work = work, allow = ["http", "exec"], allow_commands = ["ls", "cat"])
`,
		"any_test.star": `
def test_the_most_exact_key_wins():
    r = run_task("any", None, http = {"*": {"status": 204}, "https://b.example.com/y": {"status": 201}},
                 exec = {"*": {"stdout": "any"}, "ls -l": {"stdout": "exact"}})
    assert.eq(r.logs[0].attrs, {"a": 204, "b": 201, "c": "exact", "d": "any"})

def test_a_program_writes_into_the_file_stub():
    r = run_task("any", None, http = {"*": {}}, exec = {"*": {"writes": {"out/a.png": b"\x89PNG", "out/b/": None}}}, file = {"in.txt": "x"})
    assert.eq(r.files, {"in.txt": "x", "out/a.png": b"\x89PNG"})

def test_writes_need_a_file_stub():
    run_task("any", None, http = {"*": {}}, exec = {"*": {"writes": {"a": "b"}}})

def test_writes_out_of_the_root():
    run_task("any", None, http = {"*": {}}, exec = {"*": {"writes": {"../a": "b"}}}, file = {})

def test_writes_not_a_dict():
    run_task("any", None, http = {"*": {}}, exec = {"*": {"writes": ["a"]}}, file = {})
`,
	}, TestOptions{})
	wantResults(t, rep, root, []string{"test_the_most_exact_key_wins", "test_a_program_writes_into_the_file_stub"}, map[string][]string{
		"test_writes_need_a_file_stub": {`run_task("any"): exec stub "*" writes files: pass file = {...} to run_task, the file_root they go to`},
		"test_writes_out_of_the_root":  {`run_task("any"): exec["*"]: writes: "../a" is not a path inside file_root`},
		"test_writes_not_a_dict":       {`run_task("any"): exec["*"]: writes must be a dict of path: content`},
	})
}
