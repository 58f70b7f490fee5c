package symphonytest

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
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

// NewRabbitEnvAs is NewRabbitEnv as a user of the test's own with only the
// given permissions on its vhost (regular expressions of the names it may
// configure, write to and read from, as rabbitmqctl set_permissions takes
// them). The user is deleted with the vhost.
func NewRabbitEnvAs(t testing.TB, configure, write, read string) *Env {
	t.Helper()
	env := NewRabbitEnv(t)
	u, _ := url.Parse(env.URL)
	vhost := strings.TrimPrefix(u.Path, "/")
	user, password := UniqueName("symphony-user"), UniqueName("pw")
	rabbitmqctl(t, "add_user", user, password)
	t.Cleanup(func() { rabbitmqctl(t, "delete_user", user) })
	rabbitmqctl(t, "set_permissions", "-p", vhost, user, configure, write, read)
	u.User = url.UserPassword(user, password)
	env.URL = u.String()
	env.Vars = append(env.Vars, "SYMPHONY_BROKER="+env.URL)
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

// Proxy is a TCP proxy between a client under test and a server, which
// the test controls: it can cut every connection (new ones refused), or
// make them silent (packets dropped, sockets left open: a half-open
// connection that only heartbeats reveal), and restore them. It drops a
// broker's connections without touching the broker, which tests of other
// packages share.
type Proxy struct {
	t      testing.TB
	target string
	// Addr is where clients connect.
	Addr string

	mu     sync.Mutex
	ln     net.Listener
	silent bool // connections accepted now are silent
	pairs  map[*pair]struct{}
	wg     sync.WaitGroup
}

// pair is one proxied connection: the client's and, unless it was silent
// from the start, the server's.
type pair struct {
	client, server net.Conn
	silent         atomic.Bool
}

func (c *pair) close() {
	c.client.Close()
	if c.server != nil {
		c.server.Close()
	}
}

// NewProxy starts a proxy to target (host:port).
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	p := &Proxy{t: t, target: target, pairs: map[*pair]struct{}{}}
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
			p.mu.Lock()
			silent := p.silent
			p.mu.Unlock()
			pr := &pair{client: c}
			if silent {
				pr.silent.Store(true)
			} else if pr.server, err = net.Dial("tcp", p.target); err != nil {
				c.Close()
				continue
			}
			if !p.track(pr) {
				pr.close()
				return
			}
			p.wg.Add(1)
			go p.pipe(pr, pr.server, pr.client)
			if pr.server != nil {
				p.wg.Add(1)
				go p.pipe(pr, pr.client, pr.server)
			}
		}
	}()
}

func (p *Proxy) track(pr *pair) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		return false
	}
	p.pairs[pr] = struct{}{}
	return true
}

// pipe copies src to dst until src ends, dropping what it reads while the
// pair is silent. A silent pair's end is not passed on: the other side's
// socket stays open, as across a route that died.
func (p *Proxy) pipe(pr *pair, dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !pr.silent.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			if !pr.silent.Load() {
				pr.close()
			}
			return
		}
	}
}

// Cut closes every proxied connection and refuses new ones.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for pr := range p.pairs {
		pr.close()
	}
	clear(p.pairs)
}

// Silence makes every connection, open ones and new ones, drop what
// either side sends, with their sockets open: the client sees nothing
// wrong until its heartbeats go unanswered.
func (p *Proxy) Silence() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.silent = true
	for pr := range p.pairs {
		pr.silent.Store(true)
	}
}

// Restore accepts connections again, on the same address, and carries
// them through; the connections that were silenced are closed, as a
// client would find them once the route is back.
func (p *Proxy) Restore() {
	p.t.Helper()
	p.mu.Lock()
	p.silent = false
	for pr := range p.pairs {
		if pr.silent.Load() {
			pr.close()
			delete(p.pairs, pr)
		}
	}
	listening := p.ln != nil
	p.mu.Unlock()
	if listening {
		return
	}
	ln, err := net.Listen("tcp", p.Addr)
	if err != nil {
		p.t.Fatalf("listen again on %s: %v", p.Addr, err)
	}
	p.serve(ln)
}
