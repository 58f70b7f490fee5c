package cli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/symphony-go/symphony/internal/symphonytest"
)

// dial connects a plain AMQP client to the test's virtual host, as another
// program would.
func dial(t *testing.T, env *symphonytest.Env) *amqp091.Channel {
	t.Helper()
	conn, err := amqp091.Dial(env.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

const countTask = `
def work(payload, meta):
    log.info("handled", n = payload["n"])
    return True

task(name = "count", subscribe_to = ["count.#"], work = work, max_workers = 2)
`

func TestTwoDaemonsShareTheWork(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewRabbitEnv(t)
	dir := writeTasks(t, map[string]string{"count.star": countTask})
	a, b := env.Start(dir), env.Start(dir)

	const n = 400
	var lines strings.Builder
	for i := range n {
		fmt.Fprintf(&lines, "{\"n\": %d}\n", i)
	}
	env.MustRun(lines.String(), "publish", "--file", "-", "count.up")

	symphonytest.Until(t, fmt.Sprintf("%d messages handled", n), func() bool {
		return a.Count("handled", nil)+b.Count("handled", nil) >= n
	}, a, b)
	a.Stop()
	b.Stop()
	seen := map[string]int{}
	for _, d := range []*symphonytest.Daemon{a, b} {
		for _, ev := range d.Events("handled") {
			seen[ev.Str("n")]++
		}
	}
	for i := range n {
		if c := seen[fmt.Sprint(i)]; c != 1 {
			t.Errorf("message %d handled %d times", i, c)
		}
	}
	t.Logf("daemon a handled %d, daemon b %d", a.Count("handled", nil), b.Count("handled", nil))
}

const metaTask = `
def work(payload, meta):
    log.info("meta", routing_key = meta.routing_key, exchange = meta.exchange, content_type = meta.content_type,
             kind = type(payload), message_id = meta.message_id, headers = json.encode(meta.headers),
             redelivered = meta.redelivered)
    if type(payload) == "dict" and payload.get("reply"):
        publish("out.reply", {"to": payload["reply"]}, headers = {"tenant": "acme", "count": 3})
    return True

task(name = "meta", subscribe_to = ["in.#"], work = work)
`

func TestOtherAMQPClients(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewRabbitEnv(t)
	d := env.Start(writeTasks(t, map[string]string{"meta.star": metaTask}))
	u, _ := url.Parse(env.URL)
	u.Path = "/" + url.PathEscape(strings.TrimPrefix(u.Path, "/"))

	// Debian's amqp-publish, a C client, sends to the symphony exchange.
	if _, err := exec.LookPath("amqp-publish"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("amqp-publish (Debian's amqp-tools) is not installed and CI=true")
		}
		t.Skip("amqp-publish (Debian's amqp-tools) is not installed")
	}
	out, err := exec.Command("amqp-publish", "--url", u.String(), "-e", "symphony", "-r", "in.c", "-C", "application/json",
		"-b", `{"from": "c"}`).CombinedOutput()
	if err != nil {
		t.Fatalf("amqp-publish: %v\n%s", err, out)
	}
	ev := d.WaitFor("meta", map[string]string{"routing_key": "in.c"})
	if ev.Str("kind") != "dict" || ev.Str("exchange") != "symphony" || ev.Str("content_type") != "application/json" || ev.Str("redelivered") != "false" {
		t.Errorf("a message from amqp-publish arrived as %v", ev)
	}

	ch := dial(t, env)
	publish := func(key string, p amqp091.Publishing) {
		t.Helper()
		if err := ch.PublishWithContext(context.Background(), "symphony", key, true, false, p); err != nil {
			t.Fatal(err)
		}
	}
	// No content type: bytes. A content type we do not decode: bytes.
	publish("in.none", amqp091.Publishing{Body: []byte("raw")})
	publish("in.xml", amqp091.Publishing{ContentType: "application/xml", Body: []byte("<a/>")})
	for _, key := range []string{"in.none", "in.xml"} {
		if ev := d.WaitFor("meta", map[string]string{"routing_key": key}); ev.Str("kind") != "bytes" {
			t.Errorf("%s arrived as %v", key, ev)
		}
	}
	// Headers of every type, nested three deep.
	publish("in.headers", amqp091.Publishing{ContentType: "application/json", Body: []byte(`{}`), Headers: amqp091.Table{
		"int": int32(7), "big": int64(1) << 40, "float": 1.5, "bool": true, "text": "t",
		"list":   []any{int32(1), "two", amqp091.Table{"three": int32(3)}},
		"nested": amqp091.Table{"a": amqp091.Table{"b": amqp091.Table{"c": "deep"}}},
	}})
	ev = d.WaitFor("meta", map[string]string{"routing_key": "in.headers"})
	var headers map[string]any
	if err := json.Unmarshal([]byte(ev.Str("headers")), &headers); err != nil {
		t.Fatalf("headers %q: %v", ev.Str("headers"), err)
	}
	want := `{"big":1099511627776,"bool":true,"float":1.5,"int":7,"list":[1,"two",{"three":3}],"nested":{"a":{"b":{"c":"deep"}}},"text":"t"}`
	if got, _ := json.Marshal(headers); string(got) != want {
		t.Errorf("headers arrived as %s, want %s", got, want)
	}
	// Malformed JSON from another client is dead-lettered, not dropped.
	publish("in.bad", amqp091.Publishing{ContentType: "application/json", Body: []byte(`{"a":`), MessageId: "bad-1"})
	dead := d.WaitFor("message dead-lettered", map[string]string{"message_id": "bad-1"})
	if dead.Str("reason") != "decode" {
		t.Errorf("malformed JSON: %v", dead)
	}

	// What a task publishes, another client reads: content type, headers,
	// persistence.
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q.Name, "out.#", "symphony", false, nil); err != nil {
		t.Fatal(err)
	}
	deliveries, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	publish("in.reply", amqp091.Publishing{ContentType: "application/json", Body: []byte(`{"reply": "me"}`)})
	select {
	case m := <-deliveries:
		if m.ContentType != "application/json" || string(m.Body) != `{"to":"me"}` || m.Headers["tenant"] != "acme" ||
			m.Headers["count"] != int64(3) || m.DeliveryMode != amqp091.Persistent || m.MessageId == "" || m.CorrelationId == "" {
			t.Errorf("a task's publication as another client sees it: %+v", m)
		}
	case <-time.After(symphonytest.Wait):
		t.Fatal("the task's publication never arrived")
	}
	d.Stop()
}

// ready reports the daemon's /readyz status code.
func ready(t *testing.T, addr string) int {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitReady waits for /readyz to answer code.
func waitReady(t *testing.T, addr string, code int) {
	t.Helper()
	deadline := time.Now().Add(symphonytest.Wait)
	for ready(t, addr) != code {
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never answered %d", code)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestConnectionDropLosesNothing(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewRabbitEnv(t)
	u, _ := url.Parse(env.URL)
	proxy := symphonytest.NewProxy(t, u.Host)
	via := *u
	via.Host = proxy.Addr
	d := env.Start("--broker", via.String(), writeTasks(t, map[string]string{"count.star": countTask}))
	addr := d.WaitFor("admin server listening", nil).Str("addr")
	waitReady(t, addr, 200)

	var lines strings.Builder
	for i := range 100 {
		fmt.Fprintf(&lines, "{\"n\": %d}\n", i)
	}
	env.MustRun(lines.String(), "publish", "--file", "-", "count.up")
	d.WaitForNth(10, "handled", nil)
	proxy.Cut()
	d.WaitFor("connection to the broker lost; reconnecting", nil)
	waitReady(t, addr, 503)
	// Work keeps arriving while the daemon is cut off.
	lines.Reset()
	for i := 100; i < 200; i++ {
		fmt.Fprintf(&lines, "{\"n\": %d}\n", i)
	}
	env.MustRun(lines.String(), "publish", "--file", "-", "count.up")
	proxy.Restore()
	d.WaitFor("connection to the broker restored", nil)
	waitReady(t, addr, 200)

	symphonytest.Until(t, "200 distinct messages handled", func() bool {
		seen := map[string]bool{}
		for _, ev := range d.Events("handled") {
			seen[ev.Str("n")] = true
		}
		return len(seen) == 200
	}, d)
	d.Stop()
}

func TestRabbitMQStartErrors(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewRabbitEnv(t)
	dir := writeTasks(t, map[string]string{"count.star": countTask})

	t.Run("unreachable", func(t *testing.T) {
		t.Parallel()
		start := time.Now()
		r := env.Run("", "run", "--broker", "amqp://guest:hunter2@127.0.0.1:1/", dir)
		if r.Code != 1 || !strings.Contains(r.Stderr, "amqp://guest:xxxxx@127.0.0.1:1/") || strings.Contains(r.Stderr, "hunter2") {
			t.Errorf("exit %d, stderr %q; want 1 naming the URL without its password", r.Code, r.Stderr)
		}
		if took := time.Since(start); took > 25*time.Second {
			t.Errorf("gave up after %s; the wait should be bounded", took)
		}
	})
	ch := dial(t, env)
	t.Run("exchange of the wrong type", func(t *testing.T) {
		t.Parallel()
		if err := ch.ExchangeDeclare("taken", "direct", true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		r := env.Run("", "run", "--exchange", "taken", dir)
		if r.Code != 1 || !strings.Contains(r.Stderr, `"taken"`) || !strings.Contains(r.Stderr, "topic") {
			t.Errorf("exit %d, stderr %q; want 1 naming the exchange and its type", r.Code, r.Stderr)
		}
	})
	t.Run("queue with other arguments", func(t *testing.T) {
		t.Parallel()
		other := writeTasks(t, map[string]string{"capped.star": `task(name = "capped", subscribe_to = ["capped"], work = lambda p, m: True)`})
		conn, err := amqp091.Dial(env.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		c, _ := conn.Channel()
		if _, err := c.QueueDeclare("capped", true, false, false, false, amqp091.Table{"x-max-length": int32(10)}); err != nil {
			t.Fatal(err)
		}
		r := env.Run("", "run", "--exchange", "capped-ex", other)
		if r.Code != 1 || !strings.Contains(r.Stderr, `capped`) || !strings.Contains(r.Stderr, "x-max-length") {
			t.Errorf("exit %d, stderr %q; want 1 naming the queue and the difference", r.Code, r.Stderr)
		}
	})
}

func TestQueueDeletedWhileConsumed(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewRabbitEnv(t)
	d := env.Start(writeTasks(t, map[string]string{"count.star": countTask}))
	env.MustRun("", "publish", "count.a", `{"n": 1}`)
	d.WaitFor("handled", map[string]string{"n": "1"})
	ch := dial(t, env)
	if _, err := ch.QueueDelete("count", false, false, false); err != nil {
		t.Fatal(err)
	}
	d.WaitFor("consumer cancelled by the broker (queue deleted?); declaring the queue again", nil)
	d.WaitFor("consumer resumed", nil)
	// The queue and its bindings are back: publishing works again.
	env.MustRun("", "publish", "count.a", `{"n": 2}`)
	d.WaitFor("handled", map[string]string{"n": "2"})
	d.Stop()
}

// RabbitMQ cannot list queues: dead-letter commands over every queue take
// the task queues from --tasks, and without it say so.
func TestDeadLettersOfEveryQueueOnRabbitMQ(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewRabbitEnv(t)
	dir := writeTasks(t, map[string]string{"doomed.star": `
def work(payload, meta):
    fail("never")

task(name = "doomed", subscribe_to = ["doomed.#"], work = work, max_attempts = 1)
`})
	d := env.Start(dir)
	env.MustRun("", "publish", "doomed.x", `{"n": 1}`)
	d.WaitFor("message dead-lettered", map[string]string{"task": "doomed"})
	d.Stop()
	if r := env.Run("", "dead", "list"); r.Code != 1 || !strings.Contains(r.Stderr, "give --tasks DIR") {
		t.Errorf("dead list without --tasks: exit %d %q", r.Code, r.Stderr)
	}
	if r := env.MustRun("", "dead", "list", "--tasks", dir); !strings.Contains(r.Stdout, "doomed") || !strings.Contains(r.Stderr, "1 of 1 dead letters") {
		t.Errorf("dead list --tasks:\n%s%s", r.Stdout, r.Stderr)
	}
	if r := env.MustRun("", "dead", "purge", "--all", "--tasks", dir); !strings.Contains(r.Stdout, "purged 1 dead letters") {
		t.Errorf("dead purge --all --tasks: %q %q", r.Stdout, r.Stderr)
	}
}

// Two daemons with different exchanges on one RabbitMQ cannot share a
// task's queue (queue names are global in a virtual host): the second
// refuses to start, naming both exchanges, and the first goes on alone.
func TestTwoExchangesCannotShareAQueue(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewRabbitEnv(t)
	dir := writeTasks(t, map[string]string{"count.star": countTask})
	a := env.Start(dir, "--exchange", "a")
	r := env.Run("", "run", dir, "--exchange", "b", "--admin-addr", "")
	if r.Code != 1 || !strings.Contains(r.Stderr, `exchange "a" binds it`) || !strings.Contains(r.Stderr, `this daemon's exchange is "b"`) {
		t.Errorf("a second daemon on exchange b: exit %d, stderr %q", r.Code, r.Stderr)
	}
	// Nothing of exchange b reaches the queue: publishing there is
	// unroutable.
	if r := env.Run("", "publish", "count.up", `{"n": 1}`, "--exchange", "b"); r.Code != 3 {
		t.Errorf("publish to exchange b: exit %d, stderr %q", r.Code, r.Stderr)
	}
	env.MustRun("", "publish", "count.up", `{"n": 2}`, "--exchange", "a")
	a.WaitFor("handled", map[string]string{"n": "2"})
	// A queue of its own on exchange b works.
	other := writeTasks(t, map[string]string{"count.star": strings.Replace(countTask, "work = work", `work = work, queue = "b.count"`, 1)})
	b := env.Start(other, "--exchange", "b")
	env.MustRun("", "publish", "count.up", `{"n": 3}`, "--exchange", "b")
	b.WaitFor("handled", map[string]string{"n": "3"})
	if a.Count("handled", map[string]string{"n": "3"}) != 0 {
		t.Errorf("the daemon of exchange a handled a message of exchange b")
	}
	a.Stop()
	b.Stop()
}
