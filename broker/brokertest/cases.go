package brokertest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/tasks"
)

// cases is the suite, in the order Run starts them.
func cases() []testCase {
	return []testCase{
		{"RoutingMatrix", testRoutingMatrix},
		{"Unroutable", testUnroutable},
		{"DeclareRemovesStalePattern", testDeclareRemovesStalePattern},
		{"DeclareRefusesWhatEitherBrokerWould", testDeclareRefuses},
		{"AckRemoves", testAckRemoves},
		{"NackRedelivers", testNackRedelivers},
		{"MetadataRoundTrip", testMetadataRoundTrip},
		{"RequeueWithDelay", testRequeueWithDelay},
		{"DelayedPublish", testDelayedPublish},
		{"DeadLetters", testDeadLetters},
		{"DepthCountsReady", testDepthCountsReady},
		{"PrefetchAndCompetingConsumer", testPrefetchAndCompetingConsumer},
		{"EachMessageOnce", testEachMessageOnce},
		{"CancelReturnsPrefetched", testCancelReturnsPrefetched},
		{"CloseReturnsUnacked", testCloseReturnsUnacked},
		{"AutoAck", testAutoAck},
		{"LargeAndBinaryPayloads", testLargeAndBinaryPayloads},
		{"NonDurableQueueGoesWithLastConsumer", testNonDurableQueue},
		{"KilledConsumerMessagesComeBack", testKilledConsumer},
		{"TwoProcesses", testTwoProcesses},
		{"PublishWhileConsumerDown", testPublishWhileConsumerDown},
		{"PriorityOrder", testPriorityOrder},
		{"PriorityNeedsMaxPriority", testPriorityNeedsMaxPriority},
		{"DeclareRefusesPriorityChange", testDeclareRefusesPriorityChange},
		{"ScheduleRecord", testScheduleRecord},
		{"ScheduleLeaderKilled", testScheduleLeaderKilled},
		{"BudgetShared", testBudgetShared},
	}
}

func body(m *message.Message) string { return string(m.Payload) }

func ack(t *testing.T, m *message.Message) {
	t.Helper()
	if !m.Ack() {
		t.Fatalf("ack of %q refused (already nacked?)", m.Payload)
	}
}

func testRoutingMatrix(t *testing.T, f *fixture) {
	bindings := map[string][]string{
		"all":    {"#"},
		"star":   {"a.*"},
		"middle": {"a.#.b"},
		"two":    {"*.b", "a.#"}, // "a.b" matches both: one copy
		"exact":  {"a"},
		"one":    {"*"},
		"ends":   {"#.b"},
	}
	keys := []string{"", "a", "b", "a.b", "a.b.c", "a..b", "a.", ".b", "a.x.y.b", "x.b", "a.b.b", "c.d"}
	queues := map[string]string{}
	for name, patterns := range bindings {
		queues[name] = f.declare(name, patterns...)
	}
	for _, key := range keys {
		f.publish(key, key)
	}
	for name, patterns := range bindings {
		var want []string
		for _, key := range keys {
			if slices.ContainsFunc(patterns, func(p string) bool { return tasks.Match(p, key) }) {
				want = append(want, key)
			}
		}
		c := f.subscribe(queues[name], broker.ConsumeOptions{Prefetch: 20})
		var got []string
		for range want {
			m := c.next()
			if rk := m.Metadata.Get(broker.MetaRoutingKey); rk != body(m) {
				t.Errorf("queue %s: message %q arrived with routing key %q", name, m.Payload, rk)
			}
			got = append(got, body(m))
			ack(t, m)
		}
		c.close()
		slices.Sort(want)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("queue %s %v got keys %q, want %q", name, patterns, got, want)
		}
		if n := f.depth(queues[name]); n != 0 {
			t.Errorf("queue %s %v has %d more messages than the matcher says", name, patterns, n)
		}
	}
}

func testUnroutable(t *testing.T, f *fixture) {
	q := f.declare("q", "a.*")
	err := f.b.Publish("b.c", f.message("lost"))
	if !errors.Is(err, broker.ErrUnroutable) {
		t.Fatalf("publish to an unbound key: got %v, want ErrUnroutable", err)
	}
	if !strings.Contains(err.Error(), "b.c") {
		t.Errorf("error %q does not name the routing key", err)
	}
	f.publish("a.c", "kept")
	if n := f.depth(q); n != 1 {
		t.Errorf("depth %d, want 1 (the unroutable message must not be stored anywhere)", n)
	}
	if _, err := f.b.Depth(context.Background(), f.prefix+".nosuchqueue"); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("depth of an undeclared queue: got %v, want ErrNotFound", err)
	}
}

func testDeclareRemovesStalePattern(t *testing.T, f *fixture) {
	q := f.declare("q", "a.*", "b.*")
	f.publish("b.x", "first")
	f.declare("q", "a.*")
	if err := f.b.Publish("b.x", f.message("second")); !errors.Is(err, broker.ErrUnroutable) {
		t.Fatalf("publish to a removed binding: got %v, want ErrUnroutable", err)
	}
	f.publish("a.x", "third")
	c := f.subscribe(q, broker.ConsumeOptions{Prefetch: 1})
	for _, want := range []string{"first", "third"} {
		m := c.next()
		if body(m) != want {
			t.Errorf("got %q, want %q", m.Payload, want)
		}
		ack(t, m)
	}
}

// Both brokers refuse the same queues, so that a topology that works on
// one works on the other.
func testDeclareRefuses(t *testing.T, f *fixture) {
	longest := f.prefix + "." + strings.Repeat("q", broker.MaxQueueName-len(f.prefix)-1)
	refused := map[string]broker.Queue{
		"empty name":       {Name: "", Patterns: []string{"a"}},
		"name too long":    {Name: longest + "q", Patterns: []string{"a"}},
		"reserved name":    {Name: "amq." + f.prefix, Patterns: []string{"a"}},
		"an empty word":    {Name: f.prefix + ".bad", Patterns: []string{"a..b"}},
		"a glued wildcard": {Name: f.prefix + ".bad", Patterns: []string{"a*"}},
	}
	for what, q := range refused {
		if err := f.b.Declare(context.Background(), q); err == nil {
			t.Errorf("%s: Declare(%.40q, %q) succeeded, want an error", what, q.Name, q.Patterns)
		}
	}
	// The longest name is taken, and works.
	f.mu.Lock()
	f.queues = append(f.queues, longest)
	f.mu.Unlock()
	if err := f.b.Declare(context.Background(), broker.Queue{Name: longest, Patterns: []string{"long.key"}, Durable: true}); err != nil {
		t.Fatalf("declare a queue named with %d bytes: %v", len(longest), err)
	}
	f.publish("long.key", "x")
	if n := f.depth(longest); n != 1 {
		t.Errorf("the longest-named queue holds %d messages, want 1", n)
	}
}

func testAckRemoves(t *testing.T, f *fixture) {
	q := f.declare("q", "k")
	f.publish("k", "one")
	c := f.subscribe(q, broker.ConsumeOptions{Prefetch: 1})
	m := c.next()
	if m.Metadata.Get(broker.MetaRedelivered) == "true" {
		t.Errorf("first delivery marked redelivered")
	}
	ack(t, m)
	c.close()
	// Had the ack been lost, "one" would come before "two".
	f.publish("k", "two")
	c = f.subscribe(q, broker.ConsumeOptions{Prefetch: 1})
	if m := c.next(); body(m) != "two" {
		t.Fatalf("got %q after acking %q; wanted the next message", m.Payload, "one")
	} else {
		ack(t, m)
	}
	c.close()
	if n := f.depth(q); n != 0 {
		t.Errorf("depth %d after acking everything", n)
	}
}

// A nacked message is handed back on purpose: it comes again, marked
// redelivered, as the same attempt (SPEC §3: only a lost delivery counts).
// Where it comes back in the queue is the broker's: at its head on the
// embedded broker, at its tail on RabbitMQ, where a hand-back is a copy.
func testNackRedelivers(t *testing.T, f *fixture) {
	q := f.declare("q", "k")
	sent := f.publish("k", "one", "two")
	c := f.subscribe(q, broker.ConsumeOptions{Prefetch: 1})
	m := c.next()
	if body(m) != "one" || m.Metadata.Get(broker.MetaRedelivered) == "true" {
		t.Fatalf("first delivery %q redelivered=%q", m.Payload, m.Metadata.Get(broker.MetaRedelivered))
	}
	m.Nack()
	got := map[string]*message.Message{}
	for range 2 {
		m := c.next()
		got[body(m)] = m
		ack(t, m)
	}
	again := got["one"]
	if again == nil || got["two"] == nil || again.UUID != sent[0].UUID {
		t.Fatalf("after a nack got %v; want one again and two", got)
	}
	if again.Metadata.Get(broker.MetaRedelivered) != "true" {
		t.Errorf("nacked message redelivered without redelivered=true: %v", again.Metadata)
	}
	if a := broker.Attempt(again); a != 1 {
		t.Errorf("a nacked message came back as attempt %d, want 1: a hand-back is not an attempt", a)
	}
	if n := f.depth(q); n != 0 {
		t.Errorf("depth %d at the end", n)
	}
}

func testMetadataRoundTrip(t *testing.T, f *fixture) {
	q := f.declare("q", "user.*")
	headers := map[string]any{
		"int":   7,
		"neg":   -3,
		"float": 1.5,
		"big":   int64(9007199254740993),
		"text":  "héllo, \"world\"",
		"flag":  true,
		"x-death": []any{
			map[string]any{"count": 2, "queue": "q", "routing-keys": []any{"user.created"}, "reason": "rejected"},
			map[string]any{"count": 1, "queue": "r", "routing-keys": []any{}},
		},
	}
	msg, err := broker.NewMessage(tasks.Publication{
		RoutingKey:  "user.created",
		Body:        []byte(`{"id": 7}`),
		ContentType: "application/json; charset=utf-8",
		Headers:     headers,
	})
	if err != nil {
		t.Fatal(err)
	}
	msg.Metadata.Set(broker.MetaCorrelationID, "corr-42")
	msg.Metadata.Set(broker.MetaTimestamp, "2024-05-06T07:08:09.123456789Z")
	msg.Metadata.Set(broker.MetaAttempt, "3")
	if err := f.b.Publish("user.created", msg); err != nil {
		t.Fatal(err)
	}
	got := f.subscribe(q, broker.ConsumeOptions{Prefetch: 1}).next()
	defer got.Ack()
	if got.UUID != msg.UUID {
		t.Errorf("uuid %q, want %q", got.UUID, msg.UUID)
	}
	for key, want := range map[string]string{
		broker.MetaContentType:   "application/json; charset=utf-8",
		broker.MetaMessageID:     msg.UUID,
		broker.MetaCorrelationID: "corr-42",
		broker.MetaTimestamp:     "2024-05-06T07:08:09.123456789Z",
		broker.MetaAttempt:       "3",
		broker.MetaRoutingKey:    "user.created",
		broker.MetaExchange:      f.env.Exchange,
		broker.MetaQueue:         q,
	} {
		if v := got.Metadata.Get(key); v != want {
			t.Errorf("metadata %s = %q, want %q", key, v, want)
		}
	}
	if got.Metadata.Get(broker.MetaRedelivered) == "true" {
		t.Errorf("first delivery marked redelivered")
	}
	if body(got) != `{"id": 7}` {
		t.Errorf("body %q", got.Payload)
	}
	d, err := broker.Delivery(got)
	if err != nil {
		t.Fatalf("read delivery: %v", err)
	}
	want := jsonNumbers(t, headers)
	if !reflect.DeepEqual(d.Headers, want) {
		t.Errorf("headers\n got %#v\nwant %#v", d.Headers, want)
	}
	if d.Attempt != 3 || d.CorrelationID != "corr-42" || d.Timestamp.Nanosecond() != 123456789 {
		t.Errorf("delivery %+v", d)
	}
}

// jsonNumbers is v as broker.Delivery decodes headers: numbers as
// json.Number.
func jsonNumbers(t *testing.T, v map[string]any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	out := map[string]any{}
	if err := dec.Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

func testRequeueWithDelay(t *testing.T, f *fixture) {
	const delay = 700 * time.Millisecond
	q := f.declare("q", "k")
	sent := f.publish("k", "retry me")
	c := f.subscribe(q, broker.ConsumeOptions{Prefetch: 5})
	m := c.next()
	m.Metadata.Set(broker.MetaAttempt, "2")
	start := time.Now()
	if err := f.b.Requeue(context.Background(), q, m, delay); err != nil {
		t.Fatalf("requeue: %v", err)
	}
	ack(t, m)
	again := c.next()
	if waited := time.Since(start); waited < delay {
		t.Errorf("requeued message came back after %s, before its delay %s", waited, delay)
	}
	if body(again) != "retry me" || again.UUID != sent[0].UUID {
		t.Errorf("got %q (%s), want the requeued copy", again.Payload, again.UUID)
	}
	if broker.Attempt(again) != 2 {
		t.Errorf("attempt %q, want 2", again.Metadata.Get(broker.MetaAttempt))
	}
	if again.Metadata.Get(broker.MetaRoutingKey) != "k" {
		t.Errorf("routing key %q, want the original %q", again.Metadata.Get(broker.MetaRoutingKey), "k")
	}
	ack(t, again)
	if err := f.b.Requeue(context.Background(), f.prefix+".nosuchqueue", m, 0); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("requeue onto an undeclared queue: got %v, want ErrNotFound", err)
	}
}

func testDelayedPublish(t *testing.T, f *fixture) {
	const delay = 700 * time.Millisecond
	q := f.declare("q", "k")
	later := f.message("later")
	later.Metadata.Set(broker.MetaDelay, delay.String())
	start := time.Now()
	if err := f.b.Publish("k", later); err != nil {
		t.Fatal(err)
	}
	f.publish("k", "now")
	c := f.subscribe(q, broker.ConsumeOptions{Prefetch: 5})
	first := c.next()
	if body(first) != "now" {
		t.Fatalf("got %q first; the delayed message overtook an undelayed one", first.Payload)
	}
	ack(t, first)
	second := c.next()
	if waited := time.Since(start); waited < delay {
		t.Errorf("delayed message arrived after %s, before its delay %s", waited, delay)
	}
	if body(second) != "later" {
		t.Errorf("got %q, want %q", second.Payload, "later")
	}
	if second.Metadata.Get(broker.MetaDelay) != "" {
		t.Errorf("the delay is still on the delivered message: %q", second.Metadata.Get(broker.MetaDelay))
	}
	ack(t, second)
}

func testDeadLetters(t *testing.T, f *fixture) {
	ctx := context.Background()
	q := f.declare("q", "k")
	other := f.declare("other", "k") // sees every message too; replay must not reach it
	dl := f.b.DeadLetters()

	before := time.Now().Add(-time.Second)
	f.publish("k", "1", "2", "3")
	c := f.subscribe(q, broker.ConsumeOptions{Prefetch: 5})
	var buried []*message.Message
	for i := range 3 {
		m := c.next()
		grave := broker.Grave{Task: "t", Reason: "max-attempts", Error: "boom " + strconv.Itoa(i), Attempt: 5}
		if err := f.b.Bury(ctx, q, m, grave); err != nil {
			t.Fatalf("bury: %v", err)
		}
		ack(t, m)
		buried = append(buried, m)
	}
	o := f.subscribe(other, broker.ConsumeOptions{Prefetch: 5})
	for range 3 {
		ack(t, o.next())
	}

	if n, err := dl.Count(ctx, q); err != nil || n != 3 {
		t.Fatalf("count %d, %v; want 3", n, err)
	}
	if n, err := dl.Count(ctx, ""); err != nil || n < 3 {
		t.Errorf("count of every queue %d, %v; want at least 3", n, err)
	}
	list, err := dl.List(ctx, q, 10)
	if err != nil || len(list) != 3 {
		t.Fatalf("list: %d, %v; want 3", len(list), err)
	}
	for i, d := range list {
		m := buried[i]
		if string(d.Body) != strconv.Itoa(i+1) {
			t.Errorf("dead letter %d body %q; want oldest first", i, d.Body)
		}
		if d.Queue != q || d.Task != "t" || d.RoutingKey != "k" || d.ContentType != "text/plain" ||
			d.MessageID != m.Metadata.Get(broker.MetaMessageID) || d.Reason != "max-attempts" ||
			d.Error != "boom "+strconv.Itoa(i) || d.Attempt != 5 {
			t.Errorf("dead letter %d: %+v", i, d)
		}
		if d.DeadAt.Before(before) || d.DeadAt.After(time.Now().Add(time.Second)) {
			t.Errorf("dead letter %d died at %s", i, d.DeadAt)
		}
		if d.ID == "" {
			t.Errorf("dead letter %d has no id", i)
		}
	}
	if l, err := dl.List(ctx, q, 1); err != nil || len(l) != 1 || l[0].ID != list[0].ID {
		t.Errorf("list with limit 1: %v, %v", l, err)
	}
	shown, err := dl.Show(ctx, list[1].ID)
	if err != nil || !reflect.DeepEqual(shown, list[1]) {
		t.Errorf("show %s: %+v, %v; want %+v", list[1].ID, shown, err, list[1])
	}
	if _, err := dl.Show(ctx, "no-such-id"); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("show unknown id: got %v, want ErrNotFound", err)
	}

	// Replay one: back on q only, as a first attempt.
	if n, err := dl.Replay(ctx, q, []string{list[0].ID}); err != nil || n != 1 {
		t.Fatalf("replay one: %d, %v", n, err)
	}
	m := c.next()
	if body(m) != "1" || broker.Attempt(m) != 1 || m.Metadata.Get(broker.MetaAttempt) != "1" {
		t.Errorf("replayed %q attempt %q; want %q attempt 1", m.Payload, m.Metadata.Get(broker.MetaAttempt), "1")
	}
	if m.Metadata.Get(broker.MetaRoutingKey) != "k" || m.Metadata.Get(broker.MetaMessageID) != list[0].MessageID {
		t.Errorf("replayed message lost its routing key or id: %v", m.Metadata)
	}
	ack(t, m)
	if n, err := dl.Count(ctx, q); err != nil || n != 2 {
		t.Errorf("count after replaying one: %d, %v; want 2", n, err)
	}
	// Replay the rest.
	if n, err := dl.Replay(ctx, q, nil); err != nil || n != 2 {
		t.Fatalf("replay all: %d, %v", n, err)
	}
	var got []string
	for range 2 {
		m := c.next()
		got = append(got, body(m))
		ack(t, m)
	}
	slices.Sort(got)
	if !slices.Equal(got, []string{"2", "3"}) {
		t.Errorf("replayed %q, want 2 and 3", got)
	}
	if n, err := dl.Count(ctx, q); err != nil || n != 0 {
		t.Errorf("count after replaying all: %d, %v", n, err)
	}
	o.close()
	if n := f.depth(other); n != 0 {
		t.Errorf("replay reached queue %s too: depth %d", other, n)
	}

	// Purge: by id, then the rest.
	f.publish("k", "4", "5")
	for range 2 {
		m := c.next()
		if err := f.b.Bury(ctx, q, m, broker.Grave{Task: "t", Reason: "failed", Attempt: 1}); err != nil {
			t.Fatal(err)
		}
		ack(t, m)
	}
	list, err = dl.List(ctx, q, 0)
	if err != nil || len(list) != 2 {
		t.Fatalf("list without limit: %d, %v", len(list), err)
	}
	if n, err := dl.Purge(ctx, q, []string{list[0].ID}); err != nil || n != 1 {
		t.Errorf("purge one: %d, %v", n, err)
	}
	if _, err := dl.Show(ctx, list[0].ID); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("show purged: got %v, want ErrNotFound", err)
	}
	if n, err := dl.Purge(ctx, q, nil); err != nil || n != 1 {
		t.Errorf("purge rest: %d, %v", n, err)
	}
	if n, err := dl.Count(ctx, q); err != nil || n != 0 {
		t.Errorf("count after purge: %d, %v", n, err)
	}
}

func testDepthCountsReady(t *testing.T, f *fixture) {
	q := f.declare("q", "k")
	if n := f.depth(q); n != 0 {
		t.Errorf("empty queue depth %d", n)
	}
	delayed := f.message("delayed")
	delayed.Metadata.Set(broker.MetaDelay, "1h")
	if err := f.b.Publish("k", delayed); err != nil {
		t.Fatal(err)
	}
	f.publish("k", "1", "2", "3")
	if n := f.depth(q); n != 3 {
		t.Errorf("depth %d, want 3 (a delayed message is not ready)", n)
	}
	c := f.subscribe(q, broker.ConsumeOptions{Prefetch: 1})
	m := c.next()
	if n := f.depth(q); n != 2 {
		t.Errorf("depth %d while one is held, want 2", n)
	}
	ack(t, m)
}

func testPrefetchAndCompetingConsumer(t *testing.T, f *fixture) {
	q := f.declare("q", "k")
	f.publish("k", "0", "1", "2", "3", "4")
	a := f.subscribe(q, broker.ConsumeOptions{Prefetch: 2})
	first := a.next() // a now holds two
	b := f.subscribe(q, broker.ConsumeOptions{Prefetch: 10})
	got := []string{body(first)}
	for range 3 {
		m := b.next()
		got = append(got, body(m))
		ack(t, m)
	}
	ack(t, first)
	second := a.next()
	ack(t, second)
	got = append(got, body(second))
	slices.Sort(got)
	if !slices.Equal(got, []string{"0", "1", "2", "3", "4"}) {
		t.Errorf("the two consumers got %q; want each of 0-4 once", got)
	}
	a.close()
	b.close()
	if n := f.depth(q); n != 0 {
		t.Errorf("depth %d at the end", n)
	}
}

func testEachMessageOnce(t *testing.T, f *fixture) {
	const n = 200
	q := f.declare("q", "k")
	bodies := make([]string, n)
	for i := range bodies {
		bodies[i] = strconv.Itoa(i)
	}
	f.publish("k", bodies...)
	a := f.subscribe(q, broker.ConsumeOptions{Prefetch: 5})
	b := f.subscribe(q, broker.ConsumeOptions{Prefetch: 5})
	seen := map[string]int{}
	deadline := time.After(patience)
	for len(seen) < n {
		var m *message.Message
		select {
		case m = <-a.ch:
		case m = <-b.ch:
		case <-deadline:
			t.Fatalf("got %d of %d messages within %s", len(seen), n, patience)
		}
		if m == nil {
			t.Fatal("a subscription closed")
		}
		seen[body(m)]++
		ack(t, m)
	}
	for k, c := range seen {
		if c != 1 {
			t.Errorf("message %s delivered %d times", k, c)
		}
	}
	a.close()
	b.close()
	if d := f.depth(q); d != 0 {
		t.Errorf("depth %d at the end", d)
	}
}

func testCancelReturnsPrefetched(t *testing.T, f *fixture) {
	q := f.declare("q", "k")
	f.publish("k", "0", "1", "2", "3", "4")
	a := f.subscribe(q, broker.ConsumeOptions{Prefetch: 5})
	inflight := a.next()
	a.cancel()
	// The other four come back at once, while the first is in flight.
	b := f.subscribe(q, broker.ConsumeOptions{Prefetch: 1})
	var got []string
	for range 4 {
		m := b.next()
		got = append(got, body(m))
		ack(t, m)
	}
	if slices.Contains(got, body(inflight)) {
		t.Errorf("the message in flight (%q) was handed to another consumer", inflight.Payload)
	}
	ack(t, inflight)
	a.closed()
	a.close()
	// Had the in-flight ack been dropped, closing a would have returned
	// the message, and it would come before the marker.
	f.publish("k", "marker")
	if m := b.next(); body(m) != "marker" {
		t.Errorf("got %q; the ack of the message in flight at cancel was lost", m.Payload)
	} else {
		ack(t, m)
	}
}

func testCloseReturnsUnacked(t *testing.T, f *fixture) {
	q := f.declare("q", "k")
	f.publish("k", "0", "1", "2")
	a := f.subscribe(q, broker.ConsumeOptions{Prefetch: 3})
	inflight := a.next()
	a.close()
	a.closed()
	b := f.subscribe(q, broker.ConsumeOptions{Prefetch: 3})
	var got []string
	for range 3 {
		m := b.next()
		if m.UUID == inflight.UUID && m.Metadata.Get(broker.MetaRedelivered) != "true" {
			t.Errorf("the message in flight at close came back without redelivered=true")
		}
		got = append(got, body(m))
		ack(t, m)
	}
	slices.Sort(got)
	if !slices.Equal(got, []string{"0", "1", "2"}) {
		t.Errorf("after close got %q, want 0, 1, 2", got)
	}
	inflight.Ack() // too late: must not disturb anything
	b.close()
	if n := f.depth(q); n != 0 {
		t.Errorf("depth %d at the end", n)
	}
}

func testAutoAck(t *testing.T, f *fixture) {
	q := f.declare("q", "k")
	f.publish("k", "0", "1")
	a := f.subscribe(q, broker.ConsumeOptions{Prefetch: 1, AutoAck: true})
	m := a.next()
	m.Nack() // does nothing under auto-ack
	m2 := a.next()
	if body(m) != "0" || body(m2) != "1" {
		t.Errorf("auto-ack got %q then %q; want 0 then 1", m.Payload, m2.Payload)
	}
	a.close()
	f.publish("k", "marker")
	b := f.subscribe(q, broker.ConsumeOptions{Prefetch: 1})
	if m := b.next(); body(m) != "marker" {
		t.Errorf("got %q; an auto-acked message came back", m.Payload)
	} else {
		ack(t, m)
	}
}

func testLargeAndBinaryPayloads(t *testing.T, f *fixture) {
	q := f.declare("q", "k")
	large := make([]byte, 10<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range large {
		large[i] = byte(rng.Uint32())
	}
	binary := make([]byte, 256)
	for i := range binary {
		binary[i] = byte(i)
	}
	for _, p := range [][]byte{large, binary, {}} {
		msg, err := newMessage("k", p)
		if err != nil {
			t.Fatal(err)
		}
		msg.Metadata.Set(broker.MetaContentType, "application/octet-stream")
		if err := f.b.Publish("k", msg); err != nil {
			t.Fatalf("publish %d bytes: %v", len(p), err)
		}
	}
	c := f.subscribe(q, broker.ConsumeOptions{Prefetch: 1})
	for _, want := range [][]byte{large, binary, {}} {
		m := c.next()
		if !bytes.Equal(m.Payload, want) {
			t.Errorf("payload of %d bytes came back as %d different bytes", len(want), len(m.Payload))
		}
		ack(t, m)
	}
}

func testNonDurableQueue(t *testing.T, f *fixture) {
	q := f.declareQueue("q", false, "k")
	c := f.subscribe(q, broker.ConsumeOptions{Prefetch: 1})
	f.publish("k", "0")
	ack(t, c.next())
	c.cancel()
	c.closed()
	c.close()
	// The queue and its binding go with the last consumer. RabbitMQ does
	// this asynchronously, so look until it happened.
	deadline := time.Now().Add(patience)
	for {
		err := f.b.Publish("k", f.message("after"))
		if errors.Is(err, broker.ErrUnroutable) {
			break
		}
		if err != nil {
			t.Fatalf("publish: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("non-durable queue still bound %s after its last consumer left", patience)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func testKilledConsumer(t *testing.T, f *fixture) {
	q := f.declare("q", "k")
	f.publish("k", "0", "1", "2")
	p := f.spawn(modeHold, map[string]string{envQueue: q, envCount: "3"})
	held, ok := strings.CutPrefix(p.line(t), "holding ")
	if !ok {
		t.Fatalf("child said something else")
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c := f.subscribe(q, broker.ConsumeOptions{Prefetch: 3})
	var got []string
	for range 3 {
		m := c.next()
		if m.UUID == held && m.Metadata.Get(broker.MetaRedelivered) != "true" {
			t.Errorf("the message the killed consumer held came back without redelivered=true")
		}
		// Its delivery was lost with its consumer: that counts as an
		// attempt (SPEC §3), so that a message that kills every
		// consumer that takes it stops coming back.
		if a := broker.Attempt(m); m.UUID == held && a != 2 {
			t.Errorf("the message the killed consumer held came back as attempt %d, want 2", a)
		}
		got = append(got, body(m))
		ack(t, m)
	}
	slices.Sort(got)
	if !slices.Equal(got, []string{"0", "1", "2"}) {
		t.Errorf("after the kill got %q, want 0, 1, 2", got)
	}
}

func testTwoProcesses(t *testing.T, f *fixture) {
	const n = 200
	q := f.declare("q", "k")
	c := f.subscribe(q, broker.ConsumeOptions{Prefetch: 10})
	p := f.spawn(modePublish, map[string]string{envKey: "k", envCount: strconv.Itoa(n)})
	seen := map[string]int{}
	for range n {
		m := c.next()
		seen[body(m)]++
		ack(t, m)
	}
	p.wait(t)
	for i := range n {
		if c := seen[strconv.Itoa(i)]; c != 1 {
			t.Errorf("message %d arrived %d times", i, c)
		}
	}
	c.close()
	if d := f.depth(q); d != 0 {
		t.Errorf("depth %d at the end", d)
	}
}

func testPublishWhileConsumerDown(t *testing.T, f *fixture) {
	const n = 50
	q := f.declare("q", "k")
	p := f.spawn(modePublish, map[string]string{envKey: "k", envCount: strconv.Itoa(n)})
	p.wait(t)
	if d := f.depth(q); d != n {
		t.Errorf("depth %d after the child published %d", d, n)
	}
	c := f.subscribe(q, broker.ConsumeOptions{Prefetch: 10})
	seen := map[string]int{}
	for range n {
		m := c.next()
		seen[body(m)]++
		ack(t, m)
	}
	if len(seen) != n {
		t.Errorf("got %d distinct messages of %d", len(seen), n)
	}
}
