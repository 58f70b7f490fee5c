//go:build unix

package cli_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/symphony-go/symphony/internal/symphonytest"
)

// callsToken is a secret the calling task reads; it must show nowhere.
const callsToken = "calls-token-4f1e9a"

const callingTask = `
def work(payload, meta):
    if payload.get("refused"):
        # A scheme http does not take, and the secret in the URL:
        # refused, and the error that says so shows the secret's name.
        http.get("gopher://127.0.0.1/" + secret("CALLS_TOKEN"))
    r = http.get(payload["url"], headers = {"Authorization": "Bearer " + secret("CALLS_TOKEN")})
    e = exec.run(["sh", "-c", "exit 3"])
    log.info("called", status = r.status, code = e.code)
    return True

task(name = "caller", subscribe_to = ["call.#"], work = work, allow = ["http", "exec"],
     allow_hosts = ["127.0.0.1"], allow_commands = ["sh"])
`

// The worker process reports its calls to the daemon, which counts them.
const isolatedCalling = `
def work(payload, meta):
    exec.run(["true"])
    return True

task(name = "isolated", subscribe_to = ["isolated.#"], work = work, isolation = "process",
     allow = ["exec"], allow_commands = ["true"])
`

// Every capability call is counted by task, module and result, timed,
// and logged at debug with its method, host, status and time; a refused
// call too, with the secret in it redacted.
func TestCallsAreCountedAndLogged(t *testing.T) {
	t.Parallel()
	symphonytest.NeedsWorkerProcesses(t)
	var (
		mu   sync.Mutex
		auth []string
	)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auth = append(auth, r.Header.Get("Authorization"))
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(api.Close)
	env := symphonytest.NewEnv(t)
	env.Vars = append(env.Vars, "CALLS_TOKEN="+callsToken)
	d := env.Start(writeTasks(t, map[string]string{"caller.star": callingTask, "isolated.star": isolatedCalling}))

	env.MustRun("", "publish", "call.ok", fmt.Sprintf(`{"url": %q}`, api.URL+"/hook"))
	d.WaitFor("message acked", map[string]string{"task": "caller"})
	env.MustRun("", "publish", "call.refused", `{"refused": true}`)
	d.WaitFor("message dead-lettered", map[string]string{"task": "caller"})
	env.MustRun("", "publish", "isolated.go", `{}`)
	d.WaitFor("message acked", map[string]string{"task": "isolated"})
	mu.Lock()
	if len(auth) != 1 || auth[0] != "Bearer "+callsToken {
		t.Errorf("the server saw Authorization %q", auth)
	}
	mu.Unlock()

	m := metrics(t, d)
	for series, want := range map[string]string{
		`symphony_calls_total{module="http",result="ok",task="caller"}`:                "1",
		`symphony_calls_total{module="http",result="refused",task="caller"}`:           "1",
		`symphony_calls_total{module="exec",result="ok",task="caller"}`:                "1",
		`symphony_calls_total{module="exec",result="ok",task="isolated"}`:              "1",
		`symphony_call_duration_seconds_count{module="http",task="caller"}`:            "2",
		`symphony_call_duration_seconds_count{module="exec",task="caller"}`:            "1",
		`symphony_call_duration_seconds_count{module="exec",task="isolated"}`:          "1",
		`symphony_call_duration_seconds_bucket{module="http",task="caller",le="+Inf"}`: "2",
	} {
		if got := seriesValue(m, series); got != want {
			t.Errorf("%s = %q, want %s", series, got, want)
		}
	}
	if !regexp.MustCompile(`(?m)^symphony_call_duration_seconds_sum\{module="http",task="caller"\} [0-9.e-]+$`).MatchString(m) {
		t.Errorf("no duration sum for caller's http calls:\n%s", m)
	}

	ok := d.WaitFor("call", map[string]string{"task": "caller", "module": "http", "result": "ok"})
	if ok.Str("method") != "GET" || ok.Str("host") != "127.0.0.1" || ok.Str("status") != "202" || ok.Str("took") == "" ||
		ok.Str("function") != "get" || ok.Str("message_id") == "" {
		t.Errorf("the http call's debug line: %v", ok)
	}
	run := d.WaitFor("call", map[string]string{"task": "caller", "module": "exec"})
	if run.Str("target") != "sh" || run.Str("code") != "3" || run.Str("result") != "ok" {
		t.Errorf("the exec call's debug line: %v", run)
	}
	refused := d.WaitFor("call", map[string]string{"task": "caller", "result": "refused"})
	if !strings.Contains(refused.Str("err"), "unsupported URL scheme") || !strings.Contains(refused.Str("err"), "<secret CALLS_TOKEN>") {
		t.Errorf("the refused call's debug line: %v", refused)
	}
	d.Stop()
	if strings.Contains(d.Log(), callsToken) {
		t.Errorf("the secret shows in the log:\n%s", d.Log())
	}
}

// seriesValue is the value of one series in a /metrics text.
func seriesValue(text, series string) string {
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			return rest
		}
	}
	return ""
}

// An http request in flight when TERM arrives, to a server that never
// answers, ends within the shutdown timeout: the daemon cancels the run
// and exits, the message handed back for the next daemon.
func TestHTTPInFlightEndsAtShutdown(t *testing.T) {
	t.Parallel()
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release); api.Close() })
	env := symphonytest.NewEnv(t)
	d := env.Start("--shutdown-timeout", "1s", writeTasks(t, map[string]string{"hang.star": `
def work(payload, meta):
    http.get(payload["url"])
    return True

task(name = "hang", subscribe_to = ["hang.#"], work = work, timeout = None, allow = ["http"], allow_hosts = ["127.0.0.1"])
`}))
	env.MustRun("", "publish", "hang.now", fmt.Sprintf(`{"url": %q}`, api.URL))
	<-arrived
	start := time.Now()
	d.Signal(syscall.SIGTERM)
	if code := d.Exit(); code != 0 {
		t.Errorf("exit %d", code)
	}
	// The shutdown timeout, and the time to close the broker and exit.
	if took := time.Since(start); took < time.Second || took > 6*time.Second {
		t.Errorf("the daemon took %s to stop, with a shutdown timeout of 1s", took)
	}
	d.WaitFor("message returned to the queue", map[string]string{"task": "hang"})
	call := d.WaitFor("call", map[string]string{"task": "hang", "module": "http"})
	if call.Str("result") != "error" || !strings.Contains(call.Str("err"), "shut") {
		t.Errorf("the call's line: %v", call)
	}
}
