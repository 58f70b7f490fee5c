// Package brokertest is the conformance suite every broker.Broker passes:
// one set of behaviours (routing, acks, retries, dead letters, prefetch,
// shutdown, crashes, several processes on one broker), written once against
// the interface, so that the embedded broker and RabbitMQ mean the same.
//
// A broker's test package wires it in with a Harness:
//
//	func TestMain(m *testing.M) { brokertest.Main(m, harness) }
//	func TestConformance(t *testing.T) { brokertest.Run(t, harness) }
//
// Main is needed because some cases re-execute the test binary as a second
// process (a publisher, or a consumer that gets killed).
package brokertest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/tasks"
)

// patience bounds every wait for an event. Events normally take
// milliseconds; the bound is for slow machines under -race, and a test
// only waits it out when it fails.
const patience = 20 * time.Second

// Env is where one test's broker lives.
type Env struct {
	// URL is what the harness's Open understands, e.g. "sqlite:/tmp/x.db?lease=2s".
	URL string
	// Exchange is the exchange name, unique per test where the broker is
	// shared.
	Exchange string
}

// Harness adapts one broker to the suite.
type Harness struct {
	// Name names the broker in failure messages.
	Name string
	// Env returns a fresh, isolated namespace for one test (sqlite: a new
	// file in t.TempDir(); amqp: the server URL and a unique exchange).
	// A broker whose consumers die should hand their messages back within
	// a few seconds (sqlite: a short lease in the URL).
	Env func(t *testing.T) Env
	// Open connects to env. It is also called in child processes, so it
	// may use only env.
	Open func(env Env) (broker.Broker, error)
	// Cleanup, if set, runs after each test with the queues it declared,
	// for brokers on a shared server that keep queues after their
	// consumers go.
	Cleanup func(env Env, queues []string) error
	// Skip names cases that do not apply to this broker, with the reason.
	Skip map[string]string
}

// Environment of a child process (see Main).
const (
	envMode     = "SYMPHONY_BROKERTEST_CHILD"
	envURL      = "SYMPHONY_BROKERTEST_URL"
	envExchange = "SYMPHONY_BROKERTEST_EXCHANGE"
	envQueue    = "SYMPHONY_BROKERTEST_QUEUE"
	envKey      = "SYMPHONY_BROKERTEST_KEY"
	envCount    = "SYMPHONY_BROKERTEST_COUNT"
)

// Child modes.
const (
	// modePublish publishes COUNT messages with KEY, one Publish call
	// each, bodies "0".."COUNT-1", prints "published" and exits 0.
	modePublish = "publish"
	// modeHold subscribes to QUEUE with prefetch COUNT, receives one
	// message, prints "holding <uuid>" and waits to be killed.
	modeHold = "hold"
	// modeLead leads the schedule named QUEUE, moves its record from none
	// to a tick at COUNT seconds, publishing the tick with KEY, prints
	// "fired" and waits to be killed.
	modeLead = "lead"
)

// Main is the TestMain of a broker's test package: in a child process
// started by the suite it plays its part and exits; otherwise it runs the
// tests.
func Main(m *testing.M, h Harness) {
	if mode := os.Getenv(envMode); mode != "" {
		os.Exit(child(mode, h))
	}
	os.Exit(m.Run())
}

func child(mode string, h Harness) int {
	fail := func(what string, err error) int {
		fmt.Fprintf(os.Stderr, "brokertest child %s: %s: %v\n", mode, what, err)
		return 1
	}
	n, err := strconv.Atoi(os.Getenv(envCount))
	if err != nil {
		return fail("read count", err)
	}
	b, err := h.Open(Env{URL: os.Getenv(envURL), Exchange: os.Getenv(envExchange)})
	if err != nil {
		return fail("open broker", err)
	}
	switch mode {
	case modePublish:
		key := os.Getenv(envKey)
		for i := range n {
			msg, err := newMessage(key, []byte(strconv.Itoa(i)))
			if err != nil {
				return fail("build message", err)
			}
			if err := b.Publish(key, msg); err != nil {
				return fail("publish", err)
			}
		}
		if err := b.Close(); err != nil {
			return fail("close broker", err)
		}
		fmt.Println("published")
		return 0
	case modeHold:
		s, err := b.Subscriber(broker.ConsumeOptions{Prefetch: n})
		if err != nil {
			return fail("create subscriber", err)
		}
		ch, err := s.Subscribe(context.Background(), os.Getenv(envQueue))
		if err != nil {
			return fail("subscribe", err)
		}
		select {
		case msg := <-ch:
			fmt.Println("holding", msg.UUID)
		case <-time.After(patience):
			return fail("receive", errors.New("no message"))
		}
		// Wait for the parent's SIGKILL; exit on our own only if it
		// never comes, so an orphan does not linger.
		time.Sleep(5 * patience)
		return 2
	case modeLead:
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		l, err := b.Schedules().Lead(ctx, os.Getenv(envQueue))
		if err != nil {
			return fail("lead", err)
		}
		old, err := l.Record(ctx)
		if err != nil {
			return fail("read record", err)
		}
		msg, err := newMessage(os.Getenv(envKey), []byte("tick"))
		if err != nil {
			return fail("build message", err)
		}
		if err := l.Swap(ctx, old, tickRecord(n), os.Getenv(envKey), msg); err != nil {
			return fail("fire", err)
		}
		fmt.Println("fired")
		time.Sleep(5 * patience)
		return 2
	}
	return fail("run", fmt.Errorf("unknown mode %q", mode))
}

// Run runs every case against the broker of h, each as a parallel subtest
// in its own Env.
func Run(t *testing.T, h Harness) {
	for _, c := range cases() {
		t.Run(c.name, func(t *testing.T) {
			if why, ok := h.Skip[c.name]; ok {
				t.Skip(why)
			}
			t.Parallel()
			c.run(t, setup(t, h))
		})
	}
}

type testCase struct {
	name string
	run  func(t *testing.T, f *fixture)
}

// fixture is one test's broker and names.
type fixture struct {
	t      *testing.T
	h      Harness
	env    Env
	b      broker.Broker
	prefix string

	mu     sync.Mutex
	queues []string
}

var nonName = regexp.MustCompile(`[^a-z0-9]+`)

func setup(t *testing.T, h Harness) *fixture {
	t.Helper()
	env := h.Env(t)
	b, err := h.Open(env)
	if err != nil {
		t.Fatalf("%s: open broker: %v", h.Name, err)
	}
	var rnd [3]byte
	_, _ = rand.Read(rnd[:])
	name := nonName.ReplaceAllString(strings.ToLower(t.Name()[strings.LastIndex(t.Name(), "/")+1:]), "-")
	f := &fixture{t: t, h: h, env: env, b: b, prefix: "bt-" + name + "-" + hex.EncodeToString(rnd[:])}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("close broker: %v", err)
		}
		if h.Cleanup != nil {
			f.mu.Lock()
			qs := f.queues
			f.mu.Unlock()
			if err := h.Cleanup(env, qs); err != nil {
				t.Errorf("clean up queues: %v", err)
			}
		}
	})
	return f
}

// declare declares a durable queue named after the test and name, bound to
// patterns, and returns its full name.
func (f *fixture) declare(name string, patterns ...string) string {
	f.t.Helper()
	return f.declareQueue(name, true, patterns...)
}

func (f *fixture) declareQueue(name string, durable bool, patterns ...string) string {
	f.t.Helper()
	q := f.prefix + "." + name
	f.mu.Lock()
	f.queues = append(f.queues, q)
	f.mu.Unlock()
	if err := f.b.Declare(context.Background(), broker.Queue{Name: q, Patterns: patterns, Durable: durable}); err != nil {
		f.t.Fatalf("declare %s %v: %v", q, patterns, err)
	}
	return q
}

func newMessage(key string, body []byte) (*message.Message, error) {
	return broker.NewMessage(tasks.Publication{RoutingKey: key, Body: body, ContentType: "text/plain"})
}

// message builds a message as the engine would publish it.
func (f *fixture) message(body string) *message.Message {
	f.t.Helper()
	msg, err := newMessage("", []byte(body))
	if err != nil {
		f.t.Fatal(err)
	}
	return msg
}

// publish publishes one message per body with key, in one call.
func (f *fixture) publish(key string, bodies ...string) []*message.Message {
	f.t.Helper()
	msgs := make([]*message.Message, len(bodies))
	for i, body := range bodies {
		msgs[i] = f.message(body)
	}
	if err := f.b.Publish(key, msgs...); err != nil {
		f.t.Fatalf("publish %q: %v", key, err)
	}
	return msgs
}

func (f *fixture) depth(queue string) int {
	f.t.Helper()
	n, err := f.b.Depth(context.Background(), queue)
	if err != nil {
		f.t.Fatalf("depth of %s: %v", queue, err)
	}
	return n
}

// consumer is one subscription under test.
type consumer struct {
	t      *testing.T
	name   string
	sub    message.Subscriber
	ch     <-chan *message.Message
	cancel context.CancelFunc
}

func (f *fixture) subscribe(queue string, opts broker.ConsumeOptions) *consumer {
	f.t.Helper()
	sub, err := f.b.Subscriber(opts)
	if err != nil {
		f.t.Fatalf("create subscriber: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := sub.Subscribe(ctx, queue)
	if err != nil {
		cancel()
		f.t.Fatalf("subscribe to %s: %v", queue, err)
	}
	c := &consumer{t: f.t, name: queue, sub: sub, ch: ch, cancel: cancel}
	f.t.Cleanup(func() {
		cancel()
		if err := sub.Close(); err != nil {
			f.t.Errorf("close subscriber: %v", err)
		}
	})
	return c
}

// next waits for the next message.
func (c *consumer) next() *message.Message {
	c.t.Helper()
	select {
	case msg, ok := <-c.ch:
		if !ok {
			c.t.Fatalf("subscription to %s closed; wanted a message", c.name)
		}
		return msg
	case <-time.After(patience):
		c.t.Fatalf("no message from %s within %s", c.name, patience)
	}
	return nil
}

// closed waits for the channel to close; a message instead is a failure.
func (c *consumer) closed() {
	c.t.Helper()
	select {
	case msg, ok := <-c.ch:
		if ok {
			c.t.Fatalf("got message %q from %s; wanted the subscription closed", msg.Payload, c.name)
		}
	case <-time.After(patience):
		c.t.Fatalf("subscription to %s still open after %s", c.name, patience)
	}
}

func (c *consumer) close() {
	c.t.Helper()
	if err := c.sub.Close(); err != nil {
		c.t.Fatalf("close subscriber: %v", err)
	}
}

// proc is a child process of the suite.
type proc struct {
	cmd    *exec.Cmd
	lines  chan string
	stderr *bytes.Buffer
	done   chan error
}

// spawn starts the test binary as a child in mode.
func (f *fixture) spawn(mode string, vars map[string]string) *proc {
	f.t.Helper()
	exe, err := os.Executable()
	if err != nil {
		f.t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), envMode+"="+mode, envURL+"="+f.env.URL, envExchange+"="+f.env.Exchange)
	for k, v := range vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &proc{cmd: cmd, lines: make(chan string, 16), stderr: &bytes.Buffer{}, done: make(chan error, 1)}
	cmd.Stderr = p.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		f.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		f.t.Fatalf("start child %s: %v", mode, err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case p.lines <- sc.Text():
			default: // nobody listens; the children say one line
			}
		}
		close(p.lines)
		p.done <- cmd.Wait()
	}()
	f.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		p.done <- nil
	})
	return p
}

// line waits for the child's next line of output.
func (p *proc) line(t *testing.T) string {
	t.Helper()
	select {
	case l, ok := <-p.lines:
		if !ok {
			err := <-p.done
			p.done <- err
			t.Fatalf("child ended (%v) without the expected output; stderr:\n%s", err, p.stderr)
		}
		return l
	case <-time.After(patience):
		t.Fatalf("child said nothing within %s", patience)
	}
	return ""
}

// wait waits for the child to exit, which must be a success.
func (p *proc) wait(t *testing.T) {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Fatalf("child failed: %v; stderr:\n%s", err, p.stderr)
		}
	case <-time.After(patience):
		t.Fatalf("child still running after %s", patience)
	}
}
