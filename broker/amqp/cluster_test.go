package amqp_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/broker/amqp"
	"github.com/symphony-go/symphony/internal/symphonytest"
	"github.com/symphony-go/symphony/tasks"
)

// A quorum task queue, its dead letters, its binding record and its
// retries all live in quorum queues: declaring any of them as a classic
// queue is refused by RabbitMQ for the x-queue-type that differs.
func TestQuorumQueuesAllTheWay(t *testing.T) {
	e := newEnv(t)
	b := e.open(amqp.Options{})
	q := e.queue("q")
	if err := b.Declare(context.Background(), broker.Queue{Name: q, Patterns: []string{"k"}, Durable: true, Type: tasks.Quorum}); err != nil {
		t.Fatal(err)
	}
	msgs := subscribe(t, b, q, 1)
	if err := b.Publish("k", newMessage(t, "x", nil)); err != nil {
		t.Fatal(err)
	}
	m := next(t, msgs)
	if err := b.Requeue(context.Background(), q, m, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	m.Ack()
	if again := next(t, msgs); string(again.Payload) != "x" {
		t.Fatalf("retried %q, want x", again.Payload)
	} else {
		again.Ack()
	}
	delays := b.DelayNames()
	if len(delays) != 1 || !strings.HasSuffix(delays[0], ".quorum") {
		t.Fatalf("delay queues %v; want one quorum delay queue", delays)
	}
	types := queueTypes(t)
	for _, name := range []string{q, amqp.DeadQueue(q), amqp.RecordQueue(q), delays[0]} {
		if types[name] != "quorum" {
			t.Errorf("queue %s is of type %q, want quorum", name, types[name])
		}
	}
	for _, bad := range []broker.Queue{
		{Name: e.queue("transient"), Patterns: []string{"t"}, Type: tasks.Quorum},
		{Name: e.queue("prio"), Patterns: []string{"p"}, Durable: true, Type: tasks.Quorum, MaxPriority: 3},
	} {
		if err := b.Declare(context.Background(), bad); err == nil || !strings.Contains(err.Error(), "quorum") {
			t.Errorf("declare %+v: %v; want a refusal naming quorum", bad, err)
		}
	}
}

// closedAddr is an address where nothing listens.
func closedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// Several nodes in the URL: the broker connects to the first that answers,
// and when the node it uses goes away, to another, trying the lost one
// last; errors name every node without its password.
func TestSeveralNodes(t *testing.T) {
	e := newEnv(t)
	u, err := url.Parse(e.url)
	if err != nil {
		t.Fatal(err)
	}
	via := func(host string) string {
		v := *u
		v.Host = host
		return v.String()
	}
	a, c := symphonytest.NewProxy(t, u.Host), symphonytest.NewProxy(t, u.Host)
	down := closedAddr(t)
	var logs syncBuffer
	nodes := strings.Join([]string{via(down), via(a.Addr), via(c.Addr)}, ",")
	b := e.openURL(nodes, amqp.Options{Logger: logTo(&logs), ReconnectMin: 20 * time.Millisecond, ReconnectMax: 200 * time.Millisecond})
	q := e.declare(b, "q", "k")
	msgs := subscribe(t, b, q, 1)
	if err := b.Publish("k", newMessage(t, "1", nil)); err != nil {
		t.Fatal(err)
	}
	next(t, msgs).Ack()

	// The node in use goes: the next one takes over.
	a.Cut()
	eventually(t, "reconnected to the third node", func() bool {
		return strings.Count(logs.String(), "connection to the broker restored") >= 2 && b.Connected()
	})
	if got := logs.String(); !strings.Contains(got, c.Addr) {
		t.Errorf("no connection restored through %s:\n%s", c.Addr, got)
	}
	if err := b.Publish("k", newMessage(t, "2", nil)); err != nil {
		t.Fatalf("publish after the node went: %v", err)
	}
	// "1" may come again: its ack may have been lost with the node.
	for m := next(t, msgs); string(m.Payload) != "2"; m = next(t, msgs) {
		if string(m.Payload) != "1" {
			t.Fatalf("got %q, want 2", m.Payload)
		}
		m.Ack()
	}

	// No node answers: one error naming each, without passwords.
	secret := "amqp://user:s3cret@" + closedAddr(t) + "/," + "amqp://other:hunter2@" + closedAddr(t) + "/"
	_, err = amqp.Open(context.Background(), secret, amqp.Options{ConnectTimeout: 300 * time.Millisecond})
	if err == nil {
		t.Fatal("open with no node answering succeeded")
	}
	for _, n := range amqp.Nodes(secret) {
		if !strings.Contains(err.Error(), broker.Redact(n)) {
			t.Errorf("error %q does not name %s", err, broker.Redact(n))
		}
	}
	if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error %q shows a password", err)
	}
}

// A connection whose packets stop while its sockets stay open is found by
// heartbeats (heartbeat=1 in the URL: given up after three silent
// seconds), reported down, and replaced once the route is back; the
// message in flight comes again.
func TestSilentConnectionFoundByHeartbeats(t *testing.T) {
	e := newEnv(t)
	u, err := url.Parse(e.url)
	if err != nil {
		t.Fatal(err)
	}
	p := symphonytest.NewProxy(t, u.Host)
	via := *u
	via.Host = p.Addr
	via.RawQuery = "heartbeat=1"
	var logs syncBuffer
	b := e.openURL(via.String(), amqp.Options{Logger: logTo(&logs), ReconnectMin: 20 * time.Millisecond, ReconnectMax: 200 * time.Millisecond})
	direct := e.open(amqp.Options{})
	q := e.declare(b, "q", "k")
	msgs := subscribe(t, b, q, 1)
	for i := range 3 {
		if err := direct.Publish("k", newMessage(t, fmt.Sprint(i), nil)); err != nil {
			t.Fatal(err)
		}
	}
	inflight := next(t, msgs)

	p.Silence()
	start := time.Now()
	eventually(t, "Connected() false once heartbeats go unanswered", func() bool { return !b.Connected() })
	t.Logf("silence noticed after %s", time.Since(start).Round(time.Millisecond))
	if err := b.Health(); err == nil || !strings.Contains(err.Error(), "down") {
		t.Errorf("Health = %v; want the connection down", err)
	}
	inflight.Ack() // into the void
	p.Restore()
	eventually(t, "Connected() true after the route is back", b.Connected)
	seen := map[string]int{}
	for len(seen) < 3 {
		m := next(t, msgs)
		seen[string(m.Payload)]++
		m.Ack()
	}
	if seen[string(inflight.Payload)] == 0 {
		t.Errorf("the message in flight (%s) never came again: %v", inflight.Payload, seen)
	}
}

// syncBuffer is a log a test reads while the broker writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func logTo(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// queueTypes asks rabbitmqctl for the type of every queue of the default
// vhost: the AMQP protocol cannot tell.
func queueTypes(t *testing.T) map[string]string {
	t.Helper()
	out, err := exec.Command("rabbitmqctl", "-q", "list_queues", "-p", "/", "name", "type", "--no-table-headers").CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl list_queues: %v\n%s", err, out)
	}
	types := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			types[f[0]] = f[1]
		}
	}
	return types
}
