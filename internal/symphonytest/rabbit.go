package symphonytest

import (
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/symphony-go/symphony/broker"
)

// RabbitURL is the RabbitMQ the tests use: SYMPHONY_TEST_AMQP_URL, by
// default the local one. A test that needs it and cannot reach it skips,
// unless CI=true, where that is a failure.
func RabbitURL(t testing.TB) string {
	t.Helper()
	raw := os.Getenv("SYMPHONY_TEST_AMQP_URL")
	if raw == "" {
		raw = "amqp://guest:guest@127.0.0.1:5672/"
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("SYMPHONY_TEST_AMQP_URL %q does not parse: %v", broker.Redact(raw), err)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "5672")
	}
	c, err := net.DialTimeout("tcp", host, 2*time.Second)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("RabbitMQ at %s is not reachable and CI=true: %v", broker.Redact(raw), err)
		}
		t.Skipf("RabbitMQ at %s is not reachable (%v); set SYMPHONY_TEST_AMQP_URL or start rabbitmq-server", broker.Redact(raw), err)
	}
	c.Close()
	return raw
}

// UniqueName is prefix with a random suffix.
func UniqueName(prefix string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

// NewRabbitEnv is NewEnv on RabbitMQ, in a virtual host of the test's own:
// task queues are named after their tasks, and a vhost keeps tests that run
// at once from sharing them. The vhost is deleted with everything in it when
// the test ends. It needs rabbitmqctl, as the local RabbitMQ has no
// management API.
func NewRabbitEnv(t testing.TB) *Env {
	t.Helper()
	raw := RabbitURL(t)
	vhost := UniqueName("symphony-test")
	rabbitmqctl(t, "add_vhost", vhost)
	t.Cleanup(func() { rabbitmqctl(t, "delete_vhost", vhost) })
	u, _ := url.Parse(raw)
	rabbitmqctl(t, "set_permissions", "-p", vhost, u.User.Username(), ".*", ".*", ".*")
	u.Path = "/" + vhost
	env := NewEnv(t)
	env.Vars[0] = "SYMPHONY_BROKER=" + u.String()
	env.URL = u.String()
	return env
}

// OnEachBroker runs f as two parallel subtests: on the embedded broker and
// on RabbitMQ.
func OnEachBroker(t *testing.T, f func(t *testing.T, env *Env)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		f(t, NewEnv(t))
	})
	t.Run("rabbitmq", func(t *testing.T) {
		t.Parallel()
		f(t, NewRabbitEnv(t))
	})
}

func rabbitmqctl(t testing.TB, args ...string) {
	t.Helper()
	out, err := exec.Command("rabbitmqctl", append([]string{"-q"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl %v: %v\n%s", args, err, out)
	}
}

// Proxy is a TCP proxy between a client under test and a server that the
// test can cut (every connection closed, new ones refused) and restore,
// to drop a broker's connections without restarting the broker, which
// tests of other packages share.
type Proxy struct {
	t      testing.TB
	target string
	// Addr is where clients connect.
	Addr string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// NewProxy starts a proxy to target (host:port).
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	p := &Proxy{t: t, target: target, conns: map[net.Conn]struct{}{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.Addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(func() {
		p.Cut()
		p.wg.Wait()
	})
	return p
}

func (p *Proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			if !p.track(c, up) {
				c.Close()
				up.Close()
				return
			}
			p.wg.Add(2)
			go p.pipe(c, up)
			go p.pipe(up, c)
		}
	}()
}

func (p *Proxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		return false
	}
	for _, c := range conns {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *Proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
}

// Cut closes every proxied connection and refuses new ones.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// Restore accepts connections again, on the same address.
func (p *Proxy) Restore() {
	p.t.Helper()
	ln, err := net.Listen("tcp", p.Addr)
	if err != nil {
		p.t.Fatalf("listen again on %s: %v", p.Addr, err)
	}
	p.serve(ln)
}
