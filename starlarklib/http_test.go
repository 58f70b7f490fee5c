package starlarklib

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/symphony-go/symphony/tasks"
)

// callLog is a CallObserver that keeps every call.
type callLog struct {
	mu    sync.Mutex
	calls []tasks.Call
}

func (l *callLog) StartCall(ctx context.Context, c *tasks.Call) context.Context { return ctx }
func (l *callLog) EndCall(_ context.Context, c *tasks.Call) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, *c)
}

func (l *callLog) results() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, c := range l.calls {
		out = append(out, c.Module+"."+c.Function+" "+c.Target+" "+c.Result)
	}
	return out
}

// hostOf is a test server's host:port.
func hostOf(s *httptest.Server) string {
	return strings.TrimPrefix(strings.TrimPrefix(s.URL, "http://"), "https://")
}

// httpTask loads a task that requests payload["url"] with payload["args"]
// and publishes what came back; allow is its task() arguments.
func httpTask(t *testing.T, allow string, w *World) tasks.Task {
	t.Helper()
	return loadTask(t, `
def work(payload, meta):
    r = http.request(payload.get("method", "GET"), payload["url"], **payload.get("args", {}))
    publish("out", {"status": r.status, "ok": r.ok, "text": r.text, "type": r.headers.get("content-type"), "url": r.url,
                    "json": r.json() if payload.get("json") else None})
task(subscribe_to = ["#"], work = work, allow = ["http"]`+allow+`)
`, Options{World: w})
}

func request(t *testing.T, tk tasks.Task, ctx context.Context, payload map[string]any) tasks.Result {
	t.Helper()
	b, _ := json.Marshal(payload)
	return tk.Handler.Handle(ctx, &tasks.Delivery{Body: b, ContentType: "application/json", RoutingKey: "a", MessageID: "m", Attempt: 1})
}

func publishedJSON(t *testing.T, r tasks.Result) map[string]any {
	t.Helper()
	var out map[string]any
	if err := json.Unmarshal([]byte(published(t, r)), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestHTTPRequests(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/missing" {
			w.WriteHeader(404)
		}
		json.NewEncoder(w).Encode(map[string]any{
			"method": r.Method, "query": r.URL.RawQuery, "auth": r.Header.Get("Authorization"),
			"type": r.Header.Get("Content-Type"), "body": string(body), "agent": r.Header.Get("User-Agent"),
		})
	}))
	defer srv.Close()
	calls := &callLog{}
	w := NewWorld(WorldConfig{LookupEnv: func(k string) (string, bool) { return "tok-" + k, k == "TOKEN" }})
	w.Calls = calls
	tk := loadTask(t, `
def eq(got, want):
    if got != want:
        fail("got %r, want %r" % (got, want))
def work(payload, meta):
    base = payload["url"]
    r = http.get(base + "/x?a=1", params = {"b": "two words", "c": [1, 2]}, headers = {"Authorization": "Bearer " + secret("TOKEN")})
    eq((r.status, r.ok, r.headers["content-type"]), (200, True, "application/json"))
    eq(r.json()["method"], "GET")
    eq(r.json()["query"], "a=1&b=two+words&c=1&c=2")
    eq(r.json()["auth"], "Bearer tok-TOKEN")
    eq(r.json()["agent"], "symphony")
    eq(type(r.body), "bytes")
    r = http.post(base, json = {"n": 1, "key": secret("TOKEN")})
    eq(r.json()["body"], '{"key":"tok-TOKEN","n":1}')
    eq(r.json()["type"], "application/json")
    eq(http.put(base, form = {"a": "b c"}).json()["body"], "a=b+c")
    eq(http.put(base, form = {"a": "b c"}).json()["type"], "application/x-www-form-urlencoded")
    eq(http.patch(base, body = b"\x00raw", headers = {"Content-Type": "application/octet-stream"}).json()["body"], "\x00raw")
    eq(http.delete(base).json()["method"], "DELETE")
    eq(http.head(base).text, "")
    eq(http.request("options", base).json()["method"], "OPTIONS")
    r = http.get(base + "/missing")
    eq((r.status, r.ok), (404, False))
task(subscribe_to = ["#"], work = work, allow = ["http"], allow_hosts = ["`+hostOf(srv)+`"])
`, Options{World: w})
	r := request(t, tk, context.Background(), map[string]any{"url": srv.URL})
	if r.Verdict != tasks.Succeeded {
		t.Fatalf("verdict = %s: %v\n%s", r.Verdict, r.Err, r.Backtrace)
	}
	got := calls.results()
	if len(got) != 9 || got[0] != "http.get 127.0.0.1 ok" || got[8] != "http.get 127.0.0.1 ok" {
		t.Errorf("calls = %v", got)
	}
	for _, c := range calls.calls {
		if c.Task != "t" || c.Took <= 0 {
			t.Errorf("call %+v", c)
		}
	}
}

func TestHTTPReusesConnections(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "hi") }))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	tk := httpTask(t, `, allow_hosts = ["`+hostOf(srv)+`"]`, NewWorld(WorldConfig{}))
	for range 5 {
		if got := publishedJSON(t, request(t, tk, context.Background(), map[string]any{"url": srv.URL})); got["text"] != "hi" {
			t.Fatalf("text = %v", got["text"])
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("5 messages opened %d connections, want 1", n)
	}
}

func TestHTTPRefusals(t *testing.T) {
	hits := atomic.Int32{}
	inside := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprint(w, "inside")
	}))
	defer inside.Close()
	_, port, _ := net.SplitHostPort(hostOf(inside))
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, r.URL.Query().Get("to"), http.StatusFound)
	}))
	defer redirector.Close()

	calls := &callLog{}
	w := NewWorld(WorldConfig{})
	w.Calls = calls
	open := httpTask(t, "", w)                                             // any public host
	listed := httpTask(t, `, allow_hosts = ["`+hostOf(redirector)+`"]`, w) // the redirector only
	named := httpTask(t, `, allow_hosts = ["api.example.com"]`, w)

	cases := []struct {
		name string
		tk   tasks.Task
		url  string
		want string
	}{
		{"loopback address", open, inside.URL, "127.0.0.1 is 127.0.0.1, a private, loopback or link-local address: list \"127.0.0.1\" in allow_hosts to allow it"},
		{"a name that resolves to loopback", open, "http://localhost:" + port + "/", "localhost is "},
		{"the metadata service", open, "http://169.254.169.254/latest/meta-data/", "169.254.169.254 is 169.254.169.254, a private, loopback or link-local address"},
		{"a private address", open, "http://10.1.2.3:" + port + "/", "10.1.2.3 is 10.1.2.3, a private"},
		{"IPv6 loopback", open, "http://[::1]:" + port + "/", "::1 is ::1, a private"},
		{"a host outside allow_hosts", named, inside.URL, "http.request: host " + hostOf(inside) + " is not in allow_hosts of task t (api.example.com)"},
		{"an unsupported scheme", open, "ftp://example.com/x", `http.request: unsupported URL scheme "ftp" in ftp://example.com/x: use http or https`},
		{"a file URL", open, "file:///etc/passwd", `unsupported URL scheme "file"`},
		{"a redirect to a host not listed", listed, redirector.URL + "/?to=" + inside.URL + "/secret?token=x", "redirected to " + inside.URL + "/secret: host " + hostOf(inside) + " is not in allow_hosts (" + hostOf(redirector) + ")"},
		{"a redirect to a private address", open, "http://localhost:" + port + "/", "localhost is "},
		{"a redirect to the metadata service", listed, redirector.URL + "/?to=http://169.254.169.254/", "redirected to http://169.254.169.254/: host 169.254.169.254 is not in allow_hosts"},
		{"a redirect to another scheme", listed, redirector.URL + "/?to=ftp://x/", `redirected to ftp://x/: unsupported URL scheme "ftp"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(calls.results())
			r := request(t, c.tk, context.Background(), map[string]any{"url": c.url})
			if r.Verdict != tasks.Failed || !strings.Contains(r.Err.Error(), c.want) {
				t.Fatalf("verdict %s, error %v\nwant it to contain %s", r.Verdict, r.Err, c.want)
			}
			got := calls.results()
			if len(got) != before+1 || !strings.HasSuffix(got[len(got)-1], " refused") {
				t.Errorf("calls = %v, want one more, refused", got[before:])
			}
			if strings.Contains(r.Err.Error(), "token=x") {
				t.Errorf("the error shows the query: %v", r.Err)
			}
		})
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the server that no task may reach was called %d times", n)
	}
	// Listed, loopback is allowed, by address and by name.
	for _, allow := range []string{`"` + hostOf(inside) + `"`, `"localhost"`} {
		tk := httpTask(t, `, allow_hosts = [`+allow+`]`, w)
		u := inside.URL
		if allow == `"localhost"` {
			u = "http://localhost:" + port
		}
		if got := publishedJSON(t, request(t, tk, context.Background(), map[string]any{"url": u})); got["text"] != "inside" {
			t.Errorf("allow_hosts %s: text %v", allow, got["text"])
		}
	}
}

func TestHTTPBounds(t *testing.T) {
	never := make(chan struct{})
	defer close(never)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/never":
			select {
			case <-r.Context().Done():
			case <-never:
			}
		case "/huge":
			// 1 GB, unless the client stops reading.
			chunk := strings.Repeat("x", 1<<20)
			for range 1024 {
				if _, err := io.WriteString(w, chunk); err != nil {
					return
				}
			}
		case "/loop":
			http.Redirect(w, r, "/loop", http.StatusFound)
		}
	}))
	defer srv.Close()
	tk := httpTask(t, `, allow_hosts = ["`+hostOf(srv)+`"]`, NewWorld(WorldConfig{}))

	// The run's context (its timeout, or shutdown) ends a request.
	ctx, cancel := context.WithTimeoutCause(context.Background(), 200*time.Millisecond, tasks.ErrTimeout)
	defer cancel()
	start := time.Now()
	r := request(t, tk, ctx, map[string]any{"url": srv.URL + "/never"})
	if r.Verdict != tasks.Failed || time.Since(start) > 5*time.Second {
		t.Errorf("a server that never answers: %s %v after %s", r.Verdict, r.Err, time.Since(start))
	}
	for _, c := range []struct {
		args map[string]any
		path string
		want string
	}{
		{map[string]any{"timeout": 0.2}, "/never", "no response within timeout (200ms)"},
		{nil, "/huge", "the response body (status 200) is larger than max_bytes (10485760 bytes)"},
		{map[string]any{"max_bytes": "1KiB"}, "/huge", "larger than max_bytes (1024 bytes)"},
		{nil, "/loop", "stopped after 10 redirects"},
		{map[string]any{"body": "x", "json": map[string]any{}}, "/", "give one of body, json and form"},
		{map[string]any{"headers": map[string]any{"a": 1}}, "/", "headers must map str to str"},
	} {
		args := c.args
		if args == nil {
			args = map[string]any{}
		}
		r := request(t, tk, context.Background(), map[string]any{"url": srv.URL + c.path, "args": args})
		if r.Verdict != tasks.Failed || !strings.Contains(r.Err.Error(), c.want) {
			t.Errorf("%s %v: %s %v, want %q", c.path, c.args, r.Verdict, r.Err, c.want)
		}
	}
}

func TestHTTPTLS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "secure") }))
	defer srv.Close()
	allow := `, allow_hosts = ["` + hostOf(srv) + `"]`
	// The server's certificate is signed by a CA of its own: unknown to
	// the system, known to a World given it.
	r := request(t, httpTask(t, allow, NewWorld(WorldConfig{})), context.Background(), map[string]any{"url": srv.URL})
	if r.Verdict != tasks.Failed || !strings.Contains(r.Err.Error(), "certificate signed by unknown authority") {
		t.Errorf("untrusted CA: %s %v", r.Verdict, r.Err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	got := publishedJSON(t, request(t, httpTask(t, allow, NewWorld(WorldConfig{RootCAs: pool})), context.Background(), map[string]any{"url": srv.URL}))
	if got["text"] != "secure" {
		t.Errorf("text = %v", got["text"])
	}
}

func TestCapabilityGrantAtRunTime(t *testing.T) {
	root := writeTree(t, map[string]string{
		"lib/net.star": "def fetch(u):\n    return http.get(u)\n",
		"t.star": `load("lib/net.star", "fetch")
def work(payload, meta):
    fetch("http://example.com/")
task(subscribe_to = ["#"], work = work)
`,
	})
	calls := &callLog{}
	w := NewWorld(WorldConfig{})
	w.Calls = calls
	ts, err := Load([]string{root}, Options{World: w})
	if err != nil {
		t.Fatal(err)
	}
	r := handle(ts[0], "application/json", []byte(`{}`))
	want := `http.get: task t is not allowed to use http: add allow = ["http"] to its task() at ` + root + `/t.star:4:1`
	if r.Verdict != tasks.Failed || !strings.Contains(r.Err.Error(), want) {
		t.Errorf("%s %v, want %s", r.Verdict, r.Err, want)
	}
	if got := calls.results(); len(got) != 1 || got[0] != "http.get example.com refused" {
		t.Errorf("calls = %v", got)
	}
	// At the top level, a capability is not available at all.
	root = writeTree(t, map[string]string{"t.star": "http.get(\"http://example.com\")\n"})
	if _, err := Load([]string{root}, Options{}); err == nil || !strings.Contains(err.Error(), "http.get: not available at the top level of a file") {
		t.Errorf("top-level use: %v", err)
	}
}
