package amqp_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/broker/amqp"
	"github.com/symphony-go/symphony/internal/symphonytest"
	"github.com/symphony-go/symphony/tasks"
)

// patience bounds every wait for an event; a test waits it out only when
// it fails.
const patience = 20 * time.Second

// env is one test's exchange and queues on the shared RabbitMQ, deleted
// when the test ends.
type env struct {
	t        *testing.T
	url      string
	exchange string

	mu      sync.Mutex
	queues  []string
	brokers []*amqp.Broker
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, url: requireRabbit(t), exchange: uniqueName("at")}
	t.Cleanup(func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		var delays []string
		for _, b := range e.brokers {
			b.Close()
			delays = append(delays, b.DelayNames()...)
		}
		if err := deleteAll(e.url, e.exchange, e.queues, delays); err != nil {
			t.Errorf("clean up: %v", err)
		}
	})
	return e
}

func (e *env) open(opts amqp.Options) *amqp.Broker {
	e.t.Helper()
	return e.openURL(e.url, opts)
}

func (e *env) openURL(u string, opts amqp.Options) *amqp.Broker {
	e.t.Helper()
	if opts.Exchange == "" {
		opts.Exchange = e.exchange
	}
	b, err := amqp.Open(context.Background(), u, opts)
	if err != nil {
		e.t.Fatalf("open broker: %v", err)
	}
	e.mu.Lock()
	e.brokers = append(e.brokers, b)
	e.mu.Unlock()
	return b
}

// queue is a unique queue name, deleted with the test.
func (e *env) queue(name string) string {
	q := e.exchange + "." + name
	e.mu.Lock()
	e.queues = append(e.queues, q)
	e.mu.Unlock()
	return q
}

func (e *env) declare(b *amqp.Broker, name string, patterns ...string) string {
	e.t.Helper()
	q := e.queue(name)
	if err := b.Declare(context.Background(), broker.Queue{Name: q, Patterns: patterns, Durable: true}); err != nil {
		e.t.Fatalf("declare %s: %v", q, err)
	}
	return q
}

// raw is a plain amqp091 channel on the test's RabbitMQ.
func (e *env) raw() *amqp091.Channel {
	e.t.Helper()
	conn, err := amqp091.Dial(e.url)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		e.t.Fatal(err)
	}
	return ch
}

func subscribe(t *testing.T, b broker.Broker, queue string, prefetch int) <-chan *message.Message {
	t.Helper()
	sub, err := b.Subscriber(broker.ConsumeOptions{Prefetch: prefetch})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := sub.Subscribe(ctx, queue)
	if err != nil {
		cancel()
		t.Fatalf("subscribe to %s: %v", queue, err)
	}
	t.Cleanup(func() {
		cancel()
		sub.Close()
	})
	return ch
}

func next(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("subscription closed; wanted a message")
		}
		return m
	case <-time.After(patience):
		t.Fatalf("no message within %s", patience)
	}
	return nil
}

func newMessage(t *testing.T, body string, headers map[string]any) *message.Message {
	t.Helper()
	m, err := broker.NewMessage(tasks.Publication{Body: []byte(body), ContentType: "application/json", Headers: headers})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// eventually polls cond, for states that announce themselves with no
// event the test could wait on (a connection seen as lost or restored).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, patience)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func headersOf(t *testing.T, m *message.Message) map[string]any {
	t.Helper()
	d, err := broker.Delivery(m)
	if err != nil {
		t.Fatalf("read delivery: %v", err)
	}
	return d.Headers
}

func TestUnroutableBatch(t *testing.T) {
	e := newEnv(t)
	b := e.open(amqp.Options{})
	e.declare(b, "q", "a.*")
	// More messages than a confirm window holds returns: the reader of
	// the connection must never block on them.
	msgs := make([]*message.Message, 1000)
	for i := range msgs {
		msgs[i] = newMessage(t, strconv.Itoa(i), nil)
	}
	start := time.Now()
	err := b.Publish("nobody.listens", msgs...)
	if !errors.Is(err, broker.ErrUnroutable) || !strings.Contains(err.Error(), "nobody.listens") {
		t.Fatalf("publish to an unbound key: %v; want ErrUnroutable naming the key", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("unroutable publish took %s", took)
	}
	if err := b.Publish("a.b", msgs[:10]...); err != nil {
		t.Fatalf("publish to a bound key after an unroutable one: %v", err)
	}
}

func TestExchangeWithOtherSettings(t *testing.T) {
	e := newEnv(t)
	ch := e.raw()
	for _, c := range []struct {
		kind    string
		durable bool
		want    string
	}{
		{"fanout", true, "'type'"},
		{"topic", false, "'durable'"},
	} {
		name := e.exchange + "-" + c.kind
		if err := ch.ExchangeDeclare(name, c.kind, c.durable, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { deleteAll(e.url, name, nil, nil) })
		_, err := amqp.Open(context.Background(), e.url, amqp.Options{Exchange: name})
		if err == nil {
			t.Fatalf("open with a %s exchange (durable %v) of our name succeeded", c.kind, c.durable)
		}
		for _, want := range []string{name, c.want, "already exists with other settings"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
		if strings.Contains(err.Error(), "guest:guest") {
			t.Errorf("error %q shows the password", err)
		}
	}
}

func TestQueueWithOtherArguments(t *testing.T) {
	e := newEnv(t)
	b := e.open(amqp.Options{})
	q := e.queue("q")
	ch := e.raw()
	if _, err := ch.QueueDeclare(q, true, false, false, false, amqp091.Table{"x-max-length": int32(10)}); err != nil {
		t.Fatal(err)
	}
	err := b.Declare(context.Background(), broker.Queue{Name: q, Patterns: []string{"k"}, Durable: true})
	if err == nil {
		t.Fatal("declare over a queue with other arguments succeeded")
	}
	for _, want := range []string{q, "x-max-length", "already exists with other settings"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	// The failed declare closed a channel, not the broker.
	if err := b.Declare(context.Background(), broker.Queue{Name: e.queue("other"), Patterns: []string{"k"}, Durable: true}); err != nil {
		t.Errorf("declare after a failed one: %v", err)
	}
}

func TestStaleBindingRemovedAcrossProcesses(t *testing.T) {
	e := newEnv(t)
	q := e.queue("q")
	// Another process declares the queue and goes away; this one knows
	// nothing in memory: the record on the broker says b.* was bound.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), envDeclare+"="+strings.Join([]string{e.url, e.exchange, q, "a.*", "b.*"}, " "))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child declaring %s: %v\n%s", q, err, out)
	}
	second := e.open(amqp.Options{})
	if err := second.Declare(context.Background(), broker.Queue{Name: q, Patterns: []string{"a.*"}, Durable: true}); err != nil {
		t.Fatal(err)
	}
	if err := second.Publish("b.x", newMessage(t, "stale", nil)); !errors.Is(err, broker.ErrUnroutable) {
		t.Fatalf("publish to the removed pattern: %v; want ErrUnroutable", err)
	}
	if err := second.Publish("a.x", newMessage(t, "kept", nil)); err != nil {
		t.Fatal(err)
	}
	// The record holds one message, the latest.
	st, err := e.raw().QueueDeclarePassive(amqp.RecordQueue(q), false, false, false, false, nil)
	if err != nil || st.Messages != 1 {
		t.Errorf("binding record: %+v, %v; want one message", st, err)
	}
	// A third declare adding a pattern back works from the record too.
	third := e.open(amqp.Options{})
	if err := third.Declare(context.Background(), broker.Queue{Name: q, Patterns: []string{"b.*"}, Durable: true}); err != nil {
		t.Fatal(err)
	}
	if err := third.Publish("a.x", newMessage(t, "gone", nil)); !errors.Is(err, broker.ErrUnroutable) {
		t.Fatalf("publish to a.x after it was replaced by b.*: %v; want ErrUnroutable", err)
	}
}

func TestConnectionDrop(t *testing.T) {
	e := newEnv(t)
	u, err := url.Parse(e.url)
	if err != nil {
		t.Fatal(err)
	}
	p := symphonytest.NewProxy(t, u.Host)
	via := *u
	via.Host = p.Addr
	b := e.openURL(via.String(), amqp.Options{Logger: testLogger(t), ReconnectMin: 20 * time.Millisecond, ReconnectMax: 200 * time.Millisecond, PublishTimeout: 2 * time.Second})
	direct := e.open(amqp.Options{})
	q := e.declare(b, "q", "k")

	const n = 300
	// Publish directly to RabbitMQ, so messages keep coming while the
	// broker under test is cut off.
	published := make(chan error, 1)
	gate := make(chan struct{})
	go func() {
		for i := range n {
			if i == n/3 {
				<-gate
			}
			if err := direct.Publish("k", newMessage(t, strconv.Itoa(i), nil)); err != nil {
				published <- err
				return
			}
		}
		published <- nil
	}()
	msgs := subscribe(t, b, q, 10)
	seen := map[string]int{}
	for len(seen) < n/6 {
		m := next(t, msgs)
		seen[string(m.Payload)]++
		m.Ack()
	}
	// Cut with a message in flight: it must come again.
	inflight := next(t, msgs)
	seen[string(inflight.Payload)]++
	p.Cut()
	eventually(t, "Connected() false while cut", func() bool { return !b.Connected() })
	start := time.Now()
	if err := b.Publish("k", newMessage(t, "while cut", nil)); err == nil {
		t.Error("publish while cut succeeded")
	} else if took := time.Since(start); took > 5*time.Second {
		t.Errorf("publish while cut took %s to fail", took)
	}
	inflight.Ack() // lost with the channel
	close(gate)
	p.Restore()
	eventually(t, "Connected() true after restore", b.Connected)
	// The message in flight comes back as a copy at the tail of the
	// queue, its lost delivery counted as an attempt.
	for len(seen) < n || seen[string(inflight.Payload)] < 2 {
		m := next(t, msgs)
		seen[string(m.Payload)]++
		if string(m.Payload) == string(inflight.Payload) && broker.Attempt(m) != 2 {
			t.Errorf("the message in flight at the cut came back as attempt %d, want 2", broker.Attempt(m))
		}
		m.Ack()
	}
	if err := <-published; err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if seen[strconv.Itoa(i)] == 0 {
			t.Errorf("message %d lost", i)
		}
	}
	if c := seen[string(inflight.Payload)]; c < 2 {
		t.Errorf("the message in flight at the cut (%s) came %d times; its ack was lost, so it must come again", inflight.Payload, c)
	}
	if err := b.Publish("k", newMessage(t, "after", nil)); err != nil {
		t.Errorf("publish after the connection came back: %v", err)
	}
	if m := next(t, msgs); string(m.Payload) != "after" {
		t.Errorf("got %q after the reconnect, want %q", m.Payload, "after")
	} else {
		m.Ack()
	}
}

func TestUnreachableAtOpen(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	raw := "amqp://user:s3cret@" + addr + "/"
	start := time.Now()
	_, err = amqp.Open(context.Background(), raw, amqp.Options{ConnectTimeout: 700 * time.Millisecond})
	took := time.Since(start)
	if err == nil {
		t.Fatal("open of an unreachable broker succeeded")
	}
	if took < 700*time.Millisecond || took > 5*time.Second {
		t.Errorf("open gave up after %s; want about the 700ms connect timeout", took)
	}
	if strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), broker.Redact(raw)) {
		t.Errorf("error %q should name %s and not the password", err, broker.Redact(raw))
	}
}

func TestQueueDeletedWhileConsumed(t *testing.T) {
	e := newEnv(t)
	b := e.open(amqp.Options{ReconnectMin: 20 * time.Millisecond, ReconnectMax: 200 * time.Millisecond})
	q := e.declare(b, "q", "k")
	msgs := subscribe(t, b, q, 5)
	if err := b.Publish("k", newMessage(t, "before", nil)); err != nil {
		t.Fatal(err)
	}
	next(t, msgs).Ack()
	if _, err := e.raw().QueueDelete(q, false, false, false); err != nil {
		t.Fatal(err)
	}
	// The consumer declares the queue again with its binding; until it
	// has, the key is unroutable.
	eventually(t, "queue declared again", func() bool {
		err := b.Publish("k", newMessage(t, "after", nil))
		return err == nil
	})
	if m := next(t, msgs); string(m.Payload) != "after" {
		t.Errorf("got %q, want %q", m.Payload, "after")
	} else {
		m.Ack()
	}
}

func TestForeignPublisher(t *testing.T) {
	if _, err := exec.LookPath("amqp-publish"); err != nil {
		t.Skip("amqp-publish (Debian's amqp-tools) is not installed")
	}
	e := newEnv(t)
	b := e.open(amqp.Options{})
	q := e.declare(b, "q", "user.#")
	publish := func(args ...string) {
		t.Helper()
		cmd := exec.Command("amqp-publish", append([]string{"-u", toolURL(t, e.url), "-e", e.exchange}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("amqp-publish %v: %v\n%s", args, err, out)
		}
	}
	publish("-r", "user.created", "-C", "application/json", "-p", "-b", `{"id": 7}`)
	publish("-r", "user.bad", "-C", "application/json", "-b", `{"id": `)
	publish("-r", "user.raw", "-b", "no content type")
	msgs := subscribe(t, b, q, 1)
	for _, want := range []struct{ key, ctype, body string }{
		{"user.created", "application/json", `{"id": 7}`},
		{"user.bad", "application/json", `{"id": `},
		{"user.raw", "", "no content type"},
	} {
		m := next(t, msgs)
		md := m.Metadata
		if string(m.Payload) != want.body || md.Get(broker.MetaRoutingKey) != want.key ||
			md.Get(broker.MetaContentType) != want.ctype || md.Get(broker.MetaExchange) != e.exchange ||
			md.Get(broker.MetaQueue) != q {
			t.Errorf("got %q with metadata %v; want %+v", m.Payload, md, want)
		}
		for _, k := range []string{broker.MetaMessageID, broker.MetaCorrelationID, broker.MetaAttempt, broker.MetaHeaders, broker.MetaRedelivered} {
			if v, ok := md[k]; ok {
				t.Errorf("metadata %s = %q on a message that has none", k, v)
			}
		}
		d, err := broker.Delivery(m)
		if err != nil || d.Attempt != 1 || d.MessageID == "" {
			t.Errorf("delivery %+v, %v", d, err)
		}
		m.Ack()
	}
}

func TestTypedHeaders(t *testing.T) {
	e := newEnv(t)
	b := e.open(amqp.Options{})
	q := e.declare(b, "q", "k")
	at := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	headers := amqp091.Table{
		"i8": int8(-8), "i16": int16(16), "i32": int32(-32), "i64": int64(1 << 40), "u8": uint8(200),
		"f32": float32(1.5), "f64": 2.0, "yes": true, "no": false, "s": "text",
		"utf8":   []byte("bytes"),
		"binary": []byte{0xff, 0x00, 0x01},
		"at":     at,
		"dec":    amqp091.Decimal{Scale: 2, Value: 12345},
		"void":   nil,
		"list":   []any{int32(1), "two", true, []any{int64(3)}},
		"one": amqp091.Table{"two": amqp091.Table{"three": amqp091.Table{
			"n": int32(3), "flag": true, "list": []any{int32(1), int32(2)},
		}}},
	}
	ch := e.raw()
	if err := ch.Publish(e.exchange, "k", true, false, amqp091.Publishing{
		Headers: headers, ContentType: "text/plain", Body: []byte("typed"), Timestamp: at,
	}); err != nil {
		t.Fatal(err)
	}
	m := next(t, subscribe(t, b, q, 1))
	defer m.Ack()
	var got map[string]any
	dec := json.NewDecoder(strings.NewReader(m.Metadata.Get(broker.MetaHeaders)))
	dec.UseNumber()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("headers %q: %v", m.Metadata.Get(broker.MetaHeaders), err)
	}
	want := map[string]any{
		"i8": json.Number("-8"), "i16": json.Number("16"), "i32": json.Number("-32"), "i64": json.Number("1099511627776"),
		"u8": json.Number("200"), "f32": json.Number("1.5"), "f64": json.Number("2.0"), "yes": true, "no": false, "s": "text",
		"utf8": "bytes", "binary": "/wAB", "at": "2024-05-06T07:08:09Z", "dec": json.Number("123.45"), "void": nil,
		"list": []any{json.Number("1"), "two", true, []any{json.Number("3")}},
		"one": map[string]any{"two": map[string]any{"three": map[string]any{
			"n": json.Number("3"), "flag": true, "list": []any{json.Number("1"), json.Number("2")},
		}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("headers\n got %#v\nwant %#v", got, want)
	}
	if ts := m.Metadata.Get(broker.MetaTimestamp); ts != "2024-05-06T07:08:09Z" {
		t.Errorf("timestamp %q", ts)
	}
}

func TestOtherClientsReadOurMessages(t *testing.T) {
	e := newEnv(t)
	b := e.open(amqp.Options{})
	q := e.declare(b, "q", "k")
	m := newMessage(t, `{"id": 7}`, map[string]any{"n": 7, "f": 1.5, "s": "x", "t": map[string]any{"deep": true}})
	m.Metadata.Set(broker.MetaCorrelationID, "corr")
	if err := b.Publish("k", m); err != nil {
		t.Fatal(err)
	}
	ch := e.raw()
	d, ok, err := ch.Get(q, true)
	if err != nil || !ok {
		t.Fatalf("get: %v, %v", ok, err)
	}
	if d.ContentType != "application/json" || d.MessageId != m.UUID || d.CorrelationId != "corr" ||
		d.DeliveryMode != amqp091.Persistent || d.Timestamp.IsZero() || string(d.Body) != `{"id": 7}` || d.RoutingKey != "k" {
		t.Errorf("properties %+v", d)
	}
	for k, want := range map[string]any{"n": int64(7), "f": 1.5, "s": "x", "t": amqp091.Table{"deep": true}} {
		if !reflect.DeepEqual(d.Headers[k], want) {
			t.Errorf("header %s = %#v (%T), want %#v", k, d.Headers[k], d.Headers[k], want)
		}
	}
	if _, err := exec.LookPath("amqp-get"); err != nil {
		return
	}
	if err := b.Publish("k", newMessage(t, "plain text for amqp-get", nil)); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("amqp-get", "-u", toolURL(t, e.url), "-q", q).CombinedOutput()
	if err != nil || string(out) != "plain text for amqp-get" {
		t.Errorf("amqp-get: %q, %v", out, err)
	}
}

func TestRetrySurvivesRestartAndKeepsUserDeaths(t *testing.T) {
	e := newEnv(t)
	first := e.open(amqp.Options{})
	q := e.declare(first, "q", "k")
	userDeath := []any{map[string]any{"queue": "theirs", "reason": "rejected", "count": 1}}
	if err := first.Publish("k", newMessage(t, "retry me", map[string]any{"x-death": userDeath})); err != nil {
		t.Fatal(err)
	}
	m := next(t, subscribe(t, first, q, 1))
	m.Metadata.Set(broker.MetaAttempt, "2")
	start := time.Now()
	if err := first.Requeue(context.Background(), q, m, 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	m.Ack()
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	// The delay lives in RabbitMQ: a new process gets the retry.
	second := e.open(amqp.Options{})
	again := next(t, subscribe(t, second, q, 1))
	defer again.Ack()
	if time.Since(start) < 500*time.Millisecond {
		t.Errorf("retry came after %s, before its delay", time.Since(start))
	}
	if broker.Attempt(again) != 2 || again.Metadata.Get(broker.MetaRoutingKey) != "k" || again.Metadata.Get(broker.MetaExchange) != e.exchange {
		t.Errorf("retried metadata %v", again.Metadata)
	}
	h := headersOf(t, again)
	deaths, _ := h["x-death"].([]any)
	if len(deaths) != 1 || deaths[0].(map[string]any)["queue"] != "theirs" {
		t.Errorf("x-death %#v; want only the user's entry", h["x-death"])
	}
	for k := range h {
		if strings.HasPrefix(k, "x-first-death") || strings.HasPrefix(k, "x-symphony") {
			t.Errorf("header %s leaked to the handler", k)
		}
	}
}

func TestDeadLettersOfEveryQueue(t *testing.T) {
	e := newEnv(t)
	fresh := e.open(amqp.Options{})
	if _, err := fresh.DeadLetters().List(context.Background(), "", 10); !errors.Is(err, amqp.ErrAllQueues) {
		t.Errorf("list every queue with none known: %v; want ErrAllQueues", err)
	}
	b := e.open(amqp.Options{})
	q := e.declare(b, "q", "k")
	if err := b.Publish("k", newMessage(t, "doomed", nil)); err != nil {
		t.Fatal(err)
	}
	m := next(t, subscribe(t, b, q, 1))
	if err := b.Bury(context.Background(), q, m, broker.Grave{Task: "t", Reason: "failed", Error: "boom", Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	m.Ack()
	// A CLI that names the queues it knows from the task files.
	cli := e.open(amqp.Options{Queues: []string{q}})
	list, err := cli.DeadLetters().List(context.Background(), "", 10)
	if err != nil || len(list) != 1 || string(list[0].Body) != "doomed" || !strings.HasPrefix(list[0].ID, q+"/") {
		t.Fatalf("list: %+v, %v", list, err)
	}
	// Replay by id alone finds the queue from the id.
	if n, err := cli.DeadLetters().Replay(context.Background(), "", []string{list[0].ID}); err != nil || n != 1 {
		t.Fatalf("replay by id: %d, %v", n, err)
	}
	if n, err := cli.DeadLetters().Count(context.Background(), ""); err != nil || n != 0 {
		t.Errorf("count after replay: %d, %v", n, err)
	}
}

// toolURL is url as amqp-tools read it: they take a path of "/" for the
// vhost "", where AMQP URIs mean the default vhost "/".
func toolURL(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if u.Path == "/" {
		u.Path = ""
	}
	return u.String()
}

// testLogger writes the broker's log to the test's.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func TestBuryHugeError(t *testing.T) {
	e := newEnv(t)
	b := e.open(amqp.Options{})
	q := e.declare(b, "q", "k")
	if err := b.Publish("k", newMessage(t, "doomed", nil)); err != nil {
		t.Fatal(err)
	}
	m := next(t, subscribe(t, b, q, 1))
	// Larger than an AMQP frame: it must not break the connection.
	huge := strings.Repeat("traceback line\n", 20000)
	if err := b.Bury(context.Background(), q, m, broker.Grave{Task: "t", Reason: "failed", Error: huge, Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	m.Ack()
	list, err := b.DeadLetters().List(context.Background(), q, 0)
	if err != nil || len(list) != 1 {
		t.Fatalf("list: %v, %v", list, err)
	}
	if e := list[0].Error; len(e) >= len(huge) || !strings.HasSuffix(e, "(truncated)") || !strings.HasPrefix(huge, strings.TrimSuffix(e, "\n... (truncated)")) {
		t.Errorf("error of %d bytes stored as %d bytes ending %q", len(huge), len(e), e[max(0, len(e)-30):])
	}
	if !b.Connected() {
		t.Error("the broker lost its connection")
	}
}

func TestHugeHeadersRefused(t *testing.T) {
	e := newEnv(t)
	b := e.open(amqp.Options{})
	e.declare(b, "q", "k")
	err := b.Publish("k", newMessage(t, "x", map[string]any{"big": strings.Repeat("x", 200<<10)}))
	if err == nil || !strings.Contains(err.Error(), "frame") {
		t.Fatalf("publish with 200 KiB of headers: %v; want an error about the frame size", err)
	}
	if err := b.Publish("k", newMessage(t, "x", map[string]any{"ok": strings.Repeat("x", 64<<10)})); err != nil {
		t.Fatalf("publish with 64 KiB of headers: %v", err)
	}
	if !b.Connected() {
		t.Error("the broker lost its connection")
	}
}
