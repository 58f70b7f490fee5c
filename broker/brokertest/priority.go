package brokertest

import (
	"context"
	"errors"
	"strconv"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/tasks"
)

// declarePriority declares a durable queue with a max_priority.
func (f *fixture) declarePriority(name string, maxPriority int, patterns ...string) string {
	f.t.Helper()
	q := f.prefix + "." + name
	f.mu.Lock()
	f.queues = append(f.queues, q)
	f.mu.Unlock()
	err := f.b.Declare(context.Background(), broker.Queue{Name: q, Patterns: patterns, Durable: true, MaxPriority: maxPriority})
	if err != nil {
		f.t.Fatalf("declare %s %v with max_priority %d: %v", q, patterns, maxPriority, err)
	}
	return q
}

// prioritized builds a message with a priority.
func (f *fixture) prioritized(body string, priority int) *message.Message {
	f.t.Helper()
	msg, err := broker.NewMessage(tasks.Publication{Body: []byte(body), ContentType: "text/plain", Priority: priority})
	if err != nil {
		f.t.Fatal(err)
	}
	return msg
}

// drainOrder takes n messages from queue, one at a time, acking each, and
// returns their bodies in the order they came.
func (f *fixture) drainOrder(queue string, n int) []string {
	f.t.Helper()
	c := f.subscribe(queue, broker.ConsumeOptions{Prefetch: 1})
	var got []string
	for range n {
		m := c.next()
		got = append(got, body(m)+"/"+m.Metadata.Get(broker.MetaPriority))
		ack(f.t, m)
	}
	c.close()
	return got
}

// Among waiting messages, higher priorities come first and equal ones by
// age; a priority above the queue's max counts as the max; the priority
// travels with the message.
func testPriorityOrder(t *testing.T, f *fixture) {
	q := f.declarePriority("q", 5, "p.k")
	var msgs []*message.Message
	for i, p := range []int{0, 3, 5, 1, 5, 0} {
		msgs = append(msgs, f.prioritized("m"+strconv.Itoa(i), p))
	}
	if err := f.b.Publish("p.k", msgs...); err != nil {
		t.Fatalf("publish with priorities: %v", err)
	}
	want := []string{"m2/5", "m4/5", "m1/3", "m3/1", "m0/", "m5/"}
	if got := f.drainOrder(q, len(want)); !equal(got, want) {
		t.Errorf("delivery order %v, want %v (priority first, then age)", got, want)
	}

	capped := f.declarePriority("capped", 2, "p.capped")
	for _, m := range []*message.Message{f.prioritized("one", 1), f.prioritized("seven", 7), f.prioritized("two", 2)} {
		if err := f.b.Publish("p.capped", m); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	want = []string{"seven/7", "two/2", "one/1"}
	if got := f.drainOrder(capped, len(want)); !equal(got, want) {
		t.Errorf("with max_priority 2, delivery order %v, want %v (7 counts as 2, and came first)", got, want)
	}

	// A retried message keeps its priority.
	f.publish("p.k", "plain")
	if err := f.b.Publish("p.k", f.prioritized("urgent", 4)); err != nil {
		t.Fatal(err)
	}
	c := f.subscribe(q, broker.ConsumeOptions{Prefetch: 1})
	m := c.next()
	if body(m) != "urgent" {
		t.Fatalf("got %q first, want the one with priority 4", m.Payload)
	}
	if err := f.b.Requeue(context.Background(), q, m, 0); err != nil {
		t.Fatalf("requeue: %v", err)
	}
	ack(t, m)
	c.close()
	want = []string{"urgent/4", "plain/"}
	if got := f.drainOrder(q, len(want)); !equal(got, want) {
		t.Errorf("after a requeue, order %v, want %v", got, want)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A priority on a message that a queue without max_priority would get is
// refused, and nothing is sent; without a priority, or once that queue no
// longer matches, it goes through.
func testPriorityNeedsMaxPriority(t *testing.T, f *fixture) {
	pq := f.declarePriority("prio", 3, "n.*")
	plain := f.declare("plain", "n.plain")
	if err := f.b.Publish("n.only", f.prioritized("a", 2)); err != nil {
		t.Fatalf("publish with a priority to a key only a priority queue takes: %v", err)
	}
	err := f.b.Publish("n.plain", f.prioritized("b", 2))
	if !errors.Is(err, broker.ErrNoPriority) {
		t.Fatalf("publish with a priority to a key a plain queue takes: got %v, want ErrNoPriority", err)
	}
	if n, m := f.depth(pq), f.depth(plain); n != 1 || m != 0 {
		t.Errorf("after the refused publish the queues hold %d and %d, want 1 and 0: nothing is sent", n, m)
	}
	f.publish("n.plain", "c")
	if n, m := f.depth(pq), f.depth(plain); n != 2 || m != 1 {
		t.Errorf("without a priority the queues hold %d and %d, want 2 and 1", n, m)
	}
	// The plain queue moves to another key: the priority goes through.
	f.declare("plain", "n.other.key")
	if err := f.b.Publish("n.plain", f.prioritized("d", 1)); err != nil {
		t.Fatalf("publish with a priority once the plain queue no longer matches: %v", err)
	}
	// A second plain queue on the same pattern keeps it refused after the
	// first one leaves it.
	f.declare("plain2", "n.other.key")
	f.declare("plain", "n.third")
	if err := f.b.Publish("n.other.key", f.prioritized("e", 1)); !errors.Is(err, broker.ErrNoPriority) {
		t.Errorf("a plain queue still bound to the key: got %v, want ErrNoPriority", err)
	}
}

// Neither broker changes max_priority of an existing queue (RabbitMQ
// cannot): Declare says so, and the queue goes on working as it was.
func testDeclareRefusesPriorityChange(t *testing.T, f *fixture) {
	plain := f.declare("plain", "c.plain")
	err := f.b.Declare(context.Background(), broker.Queue{Name: plain, Patterns: []string{"c.plain"}, Durable: true, MaxPriority: 5})
	if !errors.Is(err, broker.ErrPriorityChange) {
		t.Fatalf("declare a plain queue with max_priority 5: got %v, want ErrPriorityChange", err)
	}
	t.Logf("refused as it should be: %v", err)
	pq := f.declarePriority("prio", 5, "c.prio")
	for _, mp := range []int{3, 0} {
		err := f.b.Declare(context.Background(), broker.Queue{Name: pq, Patterns: []string{"c.prio"}, Durable: true, MaxPriority: mp})
		if !errors.Is(err, broker.ErrPriorityChange) {
			t.Fatalf("declare a queue of max_priority 5 with %d: got %v, want ErrPriorityChange", mp, err)
		}
	}
	f.declarePriority("prio", 5, "c.prio", "c.more")
	if err := f.b.Publish("c.more", f.prioritized("x", 5)); err != nil {
		t.Fatalf("publish after the refused declares: %v", err)
	}
	f.publish("c.plain", "y")
	if n, m := f.depth(pq), f.depth(plain); n != 1 || m != 1 {
		t.Errorf("queues hold %d and %d, want 1 and 1", n, m)
	}
}
