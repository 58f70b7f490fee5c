package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/symphony-go/symphony/broker/sqlite"
	"github.com/symphony-go/symphony/engine"
	"github.com/symphony-go/symphony/starlarklib"
	"github.com/symphony-go/symphony/tasks"
)

const wait = 20 * time.Second

type handlerFunc func(ctx context.Context, d *tasks.Delivery) tasks.Result

func (f handlerFunc) Handle(ctx context.Context, d *tasks.Delivery) tasks.Result { return f(ctx, d) }

// seen collects the deliveries a task's handler got.
type seen struct {
	mu      sync.Mutex
	all     []*tasks.Delivery
	changed chan struct{}
}

func newSeen() *seen { return &seen{changed: make(chan struct{})} }

func (s *seen) add(d *tasks.Delivery) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.all = append(s.all, d)
	close(s.changed)
	s.changed = make(chan struct{})
}

// waitFor waits until n deliveries were seen and returns them.
func (s *seen) waitFor(t *testing.T, n int) []*tasks.Delivery {
	t.Helper()
	deadline := time.After(wait)
	for {
		s.mu.Lock()
		all, changed := append([]*tasks.Delivery(nil), s.all...), s.changed
		s.mu.Unlock()
		if len(all) >= n {
			return all
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("saw %d deliveries, want %d", len(all), n)
		}
	}
}

// daemon is an engine on its own embedded broker with an admin server in
// front of it.
type daemon struct {
	t      *testing.T
	engine *engine.Engine
	broker *sqlite.Broker
	base   string
	token  string
}

func spec(name string, patterns ...string) tasks.Spec {
	return tasks.Spec{Name: name, Queue: name, Patterns: patterns, WorkModel: tasks.Longlived, Isolation: tasks.Thread,
		MinWorkers: 1, MaxWorkers: 1, Prefetch: 10, Acknowledge: true, Persistent: true, MaxAttempts: 1,
		RetryDelay: 10 * time.Millisecond, MaxRetryDelay: 10 * time.Millisecond, Timeout: 10 * time.Second}
}

func start(t *testing.T, cfg Config, ts ...tasks.Task) *daemon {
	t.Helper()
	b, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "admin.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	reg := prometheus.NewRegistry()
	e, err := engine.New(engine.Config{Broker: b, BrokerURL: "amqp://user:secret@host/", Exchange: "ex", Registry: reg,
		ScalingInterval: 10 * time.Millisecond}, ts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	engineDone := make(chan error, 1)
	go func() { engineDone <- e.Run(ctx) }()
	select {
	case <-e.Ready():
	case err := <-engineDone:
		t.Fatalf("engine stopped: %v", err)
	case <-time.After(wait):
		t.Fatal("engine not ready")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Daemon, cfg.Gatherer = e, reg
	if cfg.CheckPayload == nil {
		cfg.CheckPayload = starlarklib.CheckPayload
	}
	srv := New(ln, cfg)
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-srvDone; err != nil {
			t.Errorf("admin server: %v", err)
		}
		if err := <-engineDone; err != nil {
			t.Errorf("engine: %v", err)
		}
	})
	return &daemon{t: t, engine: e, broker: b, base: "http://" + srv.Addr(), token: cfg.Token}
}

// do sends a request and returns the status code and body.
func (d *daemon) do(method, path, token, body string, header ...string) (int, string) {
	d.t.Helper()
	req, err := http.NewRequest(method, d.base+path, strings.NewReader(body))
	if err != nil {
		d.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (d *daemon) publish(key, body string) string {
	d.t.Helper()
	id, err := d.engine.Publish(tasks.Publication{RoutingKey: key, Body: []byte(body), ContentType: "application/json"})
	if err != nil {
		d.t.Fatal(err)
	}
	return id
}

func collect(s *seen, res tasks.Result) handlerFunc {
	return func(_ context.Context, d *tasks.Delivery) tasks.Result {
		s.add(d)
		return res
	}
}

func TestReadRoutes(t *testing.T) {
	t.Parallel()
	got := newSeen()
	d := start(t, Config{}, tasks.Task{Spec: spec("t", "t.#"), Handler: collect(got, tasks.Result{Verdict: tasks.Succeeded})})
	d.publish("t.x", `{}`)
	got.waitFor(t, 1)

	if code, _ := d.do("GET", "/healthz", "", ""); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	if code, body := d.do("GET", "/readyz", "", ""); code != 200 {
		t.Errorf("/readyz = %d %s", code, body)
	}
	// The outcome is counted just after the handler returns.
	var st engine.Status
	deadline := time.Now().Add(wait)
	for {
		_, body := d.do("GET", "/status", "", "")
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			t.Fatalf("/status: %v\n%s", err, body)
		}
		if strings.Contains(body, "secret") {
			t.Fatalf("/status shows the broker password: %s", body)
		}
		if len(st.Tasks) == 1 && st.Tasks[0].Messages["ack"] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/status = %s", body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st.Tasks[0].Workers.Now != 1 || !st.Ready || st.Reloads == nil {
		t.Errorf("/status = %+v", st)
	}
	_, metrics := d.do("GET", "/metrics", "", "")
	for _, want := range []string{
		`symphony_messages_total{outcome="ack",task="t"} 1`,
		`symphony_message_duration_seconds_count{task="t"} 1`,
		`symphony_workers{task="t"} 1`,
		`symphony_queue_depth{task="t"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	var h History
	_, body := d.do("GET", "/history", "", "")
	if err := json.Unmarshal([]byte(body), &h); err != nil || len(h.Tasks["t"]) == 0 || h.Keep != 900 {
		t.Errorf("/history = %s (%v)", body, err)
	}
	code, page := d.do("GET", "/", "", "")
	if code != 200 || !strings.Contains(page, `<script src="app.js"`) {
		t.Errorf("/ = %d %.200s", code, page)
	}
	for _, asset := range []string{"/app.js", "/style.css", "/favicon.svg"} {
		if code, _ := d.do("GET", asset, "", ""); code != 200 {
			t.Errorf("%s = %d", asset, code)
		}
	}
	// The page names no other host: it works with no internet.
	for _, asset := range []string{"/", "/app.js", "/style.css"} {
		_, text := d.do("GET", asset, "", "")
		if strings.Contains(text, "http://") || strings.Contains(text, "https://") {
			t.Errorf("%s loads something from elsewhere", asset)
		}
	}
}

func TestNoTokenNoActions(t *testing.T) {
	t.Parallel()
	got := newSeen()
	d := start(t, Config{}, tasks.Task{Spec: spec("t", "t.#"), Handler: collect(got, tasks.Result{Verdict: tasks.Failed, Err: io.EOF})})
	d.publish("t.x", `{"n": 1}`)
	got.waitFor(t, 1)
	waitDead(t, d, 1)
	for _, c := range []struct{ path, body string }{
		{"/publish", `{"routing_key": "t.x"}`},
		{"/dead/replay", `{"queue": "t"}`},
		{"/dead/purge", `{"queue": "t"}`},
	} {
		code, body := d.do("POST", c.path, "anything", c.body)
		if code != http.StatusForbidden || !strings.Contains(body, "--admin-token") {
			t.Errorf("POST %s without a configured token = %d %s", c.path, code, body)
		}
	}
	// Nothing changed: the one message was handled once and stays dead.
	n, err := d.engine.DeadLetters().Count(t.Context(), "t")
	if err != nil || n != 1 {
		t.Errorf("dead letters = %d, %v; want 1", n, err)
	}
	if len(got.waitFor(t, 1)) != 1 {
		t.Error("a message was published or replayed")
	}
	// Reading stays open without a token.
	list := deadListOf(t, d, "")
	if list.Total != 1 {
		t.Fatalf("dead list = %+v", list)
	}
	if code, body := d.do("GET", "/dead/"+list.Letters[0].ID, "", ""); code != 200 || !strings.Contains(body, `\"n\": 1`) {
		t.Errorf("dead show = %d %s", code, body)
	}
}

// waitDead waits until queue t has n dead letters: a failed message is
// stored just after its handler returns.
func waitDead(t *testing.T, d *daemon, n int) deadListAnswer {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		list := deadListOf(t, d, "")
		if list.Total >= n {
			return list
		}
		if time.Now().After(deadline) {
			t.Fatalf("dead letters: %+v, want %d", list, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type deadListAnswer struct {
	Total   int          `json:"total"`
	Letters []deadLetter `json:"letters"`
}

func deadListOf(t *testing.T, d *daemon, token string) deadListAnswer {
	t.Helper()
	code, body := d.do("GET", "/dead?queue=t", token, "")
	var out deadListAnswer
	if err := json.Unmarshal([]byte(body), &out); code != 200 || err != nil {
		t.Fatalf("GET /dead = %d %s (%v)", code, body, err)
	}
	return out
}

func TestPublish(t *testing.T) {
	t.Parallel()
	got := newSeen()
	prio := spec("p", "p.#")
	prio.MaxPriority = 9
	d := start(t, Config{Token: "s3cret"}, tasks.Task{Spec: spec("t", "t.#"), Handler: collect(got, tasks.Result{Verdict: tasks.Succeeded})},
		tasks.Task{Spec: prio, Handler: collect(got, tasks.Result{Verdict: tasks.Succeeded})})

	code, body := d.do("POST", "/publish", "s3cret", `{"routing_key": "t.one", "payload": {"id": 7, "big": 12345678901234567890},
		"headers": {"h": "v", "n": 3}, "content_type": "application/json; charset=utf-8"}`)
	if code != http.StatusAccepted {
		t.Fatalf("POST /publish = %d %s", code, body)
	}
	var answer struct {
		MessageID string `json:"message_id"`
	}
	if err := json.Unmarshal([]byte(body), &answer); err != nil || answer.MessageID == "" {
		t.Fatalf("POST /publish answered %s", body)
	}
	m := got.waitFor(t, 1)[0]
	if m.MessageID != answer.MessageID || m.RoutingKey != "t.one" || string(m.Body) != `{"id": 7, "big": 12345678901234567890}` ||
		m.ContentType != "application/json; charset=utf-8" || m.Headers["h"] != "v" || m.Headers["n"] != json.Number("3") {
		t.Errorf("delivered %+v (body %s)", m, m.Body)
	}

	// A priority goes through to a queue that takes priorities.
	if code, body := d.do("POST", "/publish", "s3cret", `{"routing_key": "p.one", "payload": 1, "priority": 7}`); code != http.StatusAccepted {
		t.Fatalf("POST /publish with a priority = %d %s", code, body)
	}
	if m := got.waitFor(t, 2)[1]; m.RoutingKey != "p.one" {
		t.Errorf("delivered %+v", m)
	}

	// Text under a text type; a delay holds the message back.
	sent := time.Now()
	code, body = d.do("POST", "/publish", "s3cret", `{"routing_key": "t.two", "payload": "plain words", "content_type": "text/plain", "delay": "300ms"}`)
	if code != http.StatusAccepted {
		t.Fatalf("POST /publish text = %d %s", code, body)
	}
	m = got.waitFor(t, 3)[2]
	if string(m.Body) != "plain words" || m.ContentType != "text/plain" {
		t.Errorf("delivered %+v (body %q)", m, m.Body)
	}
	if took := time.Since(sent); took < 300*time.Millisecond {
		t.Errorf("a message delayed 300ms came after %s", took)
	}
}

func TestPublishRefusals(t *testing.T) {
	t.Parallel()
	got := newSeen()
	d := start(t, Config{Token: "s3cret"}, tasks.Task{Spec: spec("t", "t.#"), Handler: collect(got, tasks.Result{Verdict: tasks.Succeeded})})
	for _, c := range []struct {
		name, token, body string
		header            []string
		code              int
		says              string
	}{
		{"no token", "", `{"routing_key": "t.x"}`, nil, 401, "admin token"},
		{"wrong token", "s3cre", `{"routing_key": "t.x"}`, nil, 401, "admin token"},
		{"unroutable", "s3cret", `{"routing_key": "nobody.listens"}`, nil, 404, "no queue is bound to the routing key nobody.listens"},
		{"no routing key", "s3cret", `{"payload": 1}`, nil, 400, "routing_key is required"},
		{"routing key too long", "s3cret", `{"routing_key": "` + strings.Repeat("k", 256) + `"}`, nil, 400, "AMQP allows 255"},
		{"unknown field", "s3cret", `{"routing_key": "t.x", "payload_json": 1}`, nil, 400, "payload_json"},
		{"not JSON", "s3cret", `{"routing_key": `, nil, 400, "read request"},
		{"YAML that does not decode", "s3cret", `{"routing_key": "t.x", "content_type": "application/x-yaml", "payload": "a: [1"}`, nil, 400, "the daemon would refuse it"},
		{"text payload not a string", "s3cret", `{"routing_key": "t.x", "content_type": "text/plain", "payload": {"a": 1}}`, nil, 400, "JSON string"},
		{"bad delay", "s3cret", `{"routing_key": "t.x", "delay": "soon"}`, nil, 400, "not a duration"},
		{"negative delay", "s3cret", `{"routing_key": "t.x", "delay": -1}`, nil, 400, "negative"},
		{"priority to a queue without", "s3cret", `{"routing_key": "t.x", "priority": 5}`, nil, 400, "takes no priorities"},
		{"priority out of range", "s3cret", `{"routing_key": "t.x", "priority": 11}`, nil, 400, "out of range"},
		{"form post", "s3cret", `routing_key=t.x`, []string{"Content-Type", "application/x-www-form-urlencoded"}, 415, "application/json"},
		{"cross-site", "s3cret", `{"routing_key": "t.x"}`, []string{"Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example"}, 403, ""},
		{"cross-site without the token", "", `{"routing_key": "t.x"}`, []string{"Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example"}, 403, ""},
		{"cross-origin", "s3cret", `{"routing_key": "t.x"}`, []string{"Origin", "https://evil.example"}, 403, ""},
	} {
		code, body := d.do("POST", "/publish", c.token, c.body, c.header...)
		if code != c.code || !strings.Contains(body, c.says) {
			t.Errorf("%s: POST /publish = %d %s; want %d saying %q", c.name, code, body, c.code, c.says)
		}
	}
	// None of them published anything; a good one after them is the
	// first message the task sees.
	if code, body := d.do("POST", "/publish", "s3cret", `{"routing_key": "t.last"}`); code != 202 {
		t.Fatalf("POST /publish = %d %s", code, body)
	}
	if all := got.waitFor(t, 1); all[0].RoutingKey != "t.last" {
		t.Errorf("first delivery was %s", all[0].RoutingKey)
	}
}

func TestDeadLetterActions(t *testing.T) {
	t.Parallel()
	got := newSeen()
	var fails sync.Map // message ids that fail
	h := handlerFunc(func(_ context.Context, d *tasks.Delivery) tasks.Result {
		got.add(d)
		if _, ok := fails.Load(string(d.Body)); ok {
			return tasks.Result{Verdict: tasks.Failed, Err: io.ErrUnexpectedEOF, Backtrace: "Traceback\n  t.star:3:5: in work\nError: boom"}
		}
		return tasks.Result{Verdict: tasks.Succeeded}
	})
	d := start(t, Config{Token: "s3cret"}, tasks.Task{Spec: spec("t", "t.#"), Handler: h})
	fails.Store(`{"n": 1}`, true)
	fails.Store(`{"n": 2}`, true)
	d.publish("t.a", `{"n": 1}`)
	d.publish("t.b", `{"n": 2}`)
	got.waitFor(t, 2)
	first := waitDead(t, d, 2).Letters[0]
	if first.RoutingKey != "t.a" || first.Reason != "error" || !strings.HasSuffix(first.Error, "Error: boom") || first.Body != nil {
		t.Errorf("listed %+v", first)
	}

	// With a token set, a body is shown only to who has it.
	if code, _ := d.do("GET", "/dead/"+first.ID, "", ""); code != 401 {
		t.Errorf("dead show without the token = %d", code)
	}
	code, body := d.do("GET", "/dead/"+first.ID, "s3cret", "")
	if code != 200 || !strings.Contains(body, `"body": "{\"n\": 1}"`) {
		t.Errorf("dead show = %d %s", code, body)
	}
	if code, body := d.do("GET", "/dead/nope", "s3cret", ""); code != 404 {
		t.Errorf("dead show of no such id = %d %s", code, body)
	}

	// Replay one: it runs again, and succeeds this time.
	fails.Delete(`{"n": 1}`)
	if code, body := d.do("POST", "/dead/replay", "wrong", `{"ids": ["`+first.ID+`"]}`); code != 401 {
		t.Errorf("replay with a wrong token = %d %s", code, body)
	}
	if code, body := d.do("POST", "/dead/replay", "s3cret", `{"ids": ["`+first.ID+`"]}`); code != 200 || !strings.Contains(body, `"replayed": 1`) {
		t.Fatalf("replay = %d %s", code, body)
	}
	if again := got.waitFor(t, 3)[2]; string(again.Body) != `{"n": 1}` {
		t.Errorf("replayed %s", again.Body)
	}
	if list := deadListOf(t, d, ""); list.Total != 1 {
		t.Errorf("after replay: %+v", list)
	}
	if code, body := d.do("POST", "/dead/purge", "s3cret", `{}`); code != 400 {
		t.Errorf("purge of nothing named = %d %s", code, body)
	}
	if code, body := d.do("POST", "/dead/purge", "s3cret", `{"queue": "t"}`); code != 200 || !strings.Contains(body, `"purged": 1`) {
		t.Fatalf("purge = %d %s", code, body)
	}
	if list := deadListOf(t, d, ""); list.Total != 0 {
		t.Errorf("after purge: %+v", list)
	}
}

func TestEventStream(t *testing.T) {
	t.Parallel()
	got := newSeen()
	d := start(t, Config{Every: 50 * time.Millisecond, Push: 50 * time.Millisecond},
		tasks.Task{Spec: spec("t", "t.#"), Handler: collect(got, tasks.Result{Verdict: tasks.Succeeded})})
	resp, err := http.Get(d.base + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	events := map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	var name string
	for sc.Scan() && (events["status"] == "" || events["sample"] == "") {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "event: "); ok {
			name = v
		}
		if v, ok := strings.CutPrefix(line, "data: "); ok {
			events[name] = v
		}
	}
	var st engine.Status
	if err := json.Unmarshal([]byte(events["status"]), &st); err != nil || len(st.Tasks) != 1 {
		t.Errorf("status event %s (%v)", events["status"], err)
	}
	var sample map[string]Point
	if err := json.Unmarshal([]byte(events["sample"]), &sample); err != nil || sample["t"].At == 0 {
		t.Errorf("sample event %s (%v)", events["sample"], err)
	}
}

func TestHistory(t *testing.T) {
	status := func(depth int64, counts ...int) engine.Status {
		st := engine.Status{}
		for i, c := range counts {
			name := []string{"a", "b"}[i]
			st.Tasks = append(st.Tasks, engine.TaskStatus{Name: name, QueueDepth: depth,
				Messages: map[string]int{"ack": c, "retry": c / 2, "dead": 1}})
		}
		return st
	}
	h := newHistory(2*time.Second, 10*time.Second) // 5 points a task
	t0 := time.Unix(1000, 0)
	h.add(status(3, 0, 0), t0)
	h.add(status(4, 10, 4), t0.Add(2*time.Second))
	snap := h.snapshot()
	a := snap.Tasks["a"]
	if len(a) != 2 || a[0].Rate != 0 || a[1].Rate != 7.5 || a[1].Failed != 2.5 || a[1].Depth != 4 {
		t.Errorf("a = %+v", a)
	}
	// A smaller count is a new daemon: no negative rate.
	h.add(status(0, 2, 4), t0.Add(4*time.Second))
	if p := h.snapshot().Tasks["a"][2]; p.Rate != 0 {
		t.Errorf("after a restart: %+v", p)
	}
	// The ring keeps the last five, oldest first.
	for i := 3; i < 9; i++ {
		h.add(status(int64(i), 2, 4), t0.Add(time.Duration(2*i)*time.Second))
	}
	a = h.snapshot().Tasks["a"]
	if len(a) != 5 || a[0].Depth != 4 || a[4].Depth != 8 {
		t.Errorf("ring = %+v", a)
	}
	// A task gone from the status leaves the history.
	h.add(status(1, 2), t0.Add(time.Minute))
	if _, ok := h.snapshot().Tasks["b"]; ok {
		t.Error("a removed task kept its history")
	}
}
