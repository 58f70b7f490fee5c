package reliability_test

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/symphony-go/symphony/internal/symphonytest"
)

// viaProxy starts a daemon of env whose connections to RabbitMQ go through
// a proxy the test controls; query is added to the broker URL.
func viaProxy(t *testing.T, env *symphonytest.Env, query string) (*symphonytest.Daemon, *symphonytest.Proxy) {
	t.Helper()
	u, err := url.Parse(env.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := symphonytest.NewProxy(t, u.Host)
	via := *u
	via.Host = proxy.Addr
	via.RawQuery = query
	d := env.Start("--broker", via.String(), symphonytest.WriteTasks(t, map[string]string{"count.star": pacedTask(0.001)}))
	d.WaitReady(200)
	return d, proxy
}

// The daemon's connections to RabbitMQ cut in the middle of a drain, for
// seconds each time, several times: it says it is not ready while cut off,
// reconnects by itself each time and handles every message.
func TestRabbitMQConnectionCutUnderLoad(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewRabbitEnv(t)
	d, proxy := viaProxy(t, env, "")
	n, cuts := scale(3000, 30000), scale(3, 10)
	// Published straight to RabbitMQ, not through the proxy.
	env.MustRun(lines(0, n), "publish", "--file", "-", "count.up")
	failed := 0
	for i := range cuts {
		handledAtLeast(t, d, (i+1)*n/(cuts+1))
		at := d.Count("handled", nil)
		proxy.Cut()
		start := time.Now()
		d.WaitReady(503)
		// Both connections fail to come back five times each: an outage
		// of seconds, the backoff growing to 1.6 s.
		failed += 10
		d.WaitForNth(failed, "reconnect to the broker failed; retrying", nil)
		proxy.Restore()
		restored := time.Now()
		d.WaitReady(200)
		t.Logf("cut %d at %d of %d messages handled: %s without RabbitMQ, ready %s after it was back",
			i+1, at, n, restored.Sub(start).Round(time.Millisecond), time.Since(restored).Round(time.Millisecond))
		failed = d.Count("reconnect to the broker failed; retrying", nil)
	}
	seen := awaitHandled(t, seq(0, n), d)
	// Each cut can hand back what both workers held: prefetch 10 each.
	report(t, fmt.Sprintf("%d cuts", cuts), seq(0, n), seen, cuts*2*10)
	d.Stop()
}

// The daemon's connections go silent (packets dropped, sockets open): only
// heartbeats can tell. With heartbeat=1 in the URL the daemon gives them
// up within three seconds, says it is not ready, and reconnects once the
// route is back; nothing is lost.
func TestRabbitMQSilentConnection(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewRabbitEnv(t)
	d, proxy := viaProxy(t, env, "heartbeat=1")
	n := scale(2000, 20000)
	env.MustRun(lines(0, n), "publish", "--file", "-", "count.up")
	handledAtLeast(t, d, n/3)
	t.Logf("silenced at %d of %d messages handled", d.Count("handled", nil), n)
	proxy.Silence()
	start := time.Now()
	d.WaitForNth(2, "connection to the broker lost; reconnecting", nil)
	t.Logf("silence noticed after %s", time.Since(start).Round(time.Millisecond))
	d.WaitReady(503)
	proxy.Restore()
	restored := time.Now()
	d.WaitReady(200)
	t.Logf("ready %s after the route came back", time.Since(restored).Round(time.Millisecond))
	seen := awaitHandled(t, seq(0, n), d)
	report(t, "silent connection", seq(0, n), seen, 2*10)
	d.Stop()
}

// `symphony publish` with RabbitMQ out of reach, refused or silent: a
// clear error naming the URL without its password, and exit 1, in a
// bounded time (the 10 s connect timeout), never a hang.
func TestPublishWithRabbitMQUnreachable(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewRabbitEnv(t)
	u, err := url.Parse(env.URL)
	if err != nil {
		t.Fatal(err)
	}
	silent := symphonytest.NewProxy(t, u.Host)
	silent.Silence()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusing := ln.Addr().String()
	ln.Close()
	for _, c := range []struct{ name, addr string }{{"refused", refusing}, {"silent", silent.Addr}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			raw := "amqp://guest:hunter2@" + c.addr + "/"
			start := time.Now()
			r := env.Run(`{"n": 1}`, "publish", "--broker", raw, "count.up")
			took := time.Since(start)
			t.Logf("gave up after %s", took.Round(time.Millisecond))
			if r.Code != 1 || !strings.Contains(r.Stderr, "amqp://guest:xxxxx@"+c.addr) || strings.Contains(r.Stderr, "hunter2") {
				t.Errorf("exit %d, stderr %q; want 1 naming the URL without its password", r.Code, r.Stderr)
			}
			if took > 25*time.Second {
				t.Errorf("publish took %s to give up; the connect timeout is 10s", took)
			}
		})
	}
}

// A daemon as a RabbitMQ user allowed only its own names, as README.md
// tells to set one up on a managed RabbitMQ: everything works, retries,
// dead letters and replays included.
func TestRabbitMQLimitedUser(t *testing.T) {
	t.Parallel()
	names := `^(symphony|count|flaky)(\..*)?$`
	env := symphonytest.NewRabbitEnvAs(t, names, `^(amq\.default|symphony|count|flaky)(\..*)?$`, names)
	d := env.Start(symphonytest.WriteTasks(t, map[string]string{
		"count.star": countTask,
		"flaky.star": strings.Replace(flakyTask, `queue_type = "quorum", `, "", 1),
	}))
	env.MustRun(lines(0, 10), "publish", "--file", "-", "count.up")
	env.MustRun(lines(10, 5), "publish", "--file", "-", "flaky.once")
	env.MustRun(`{"n": 15, "dead": true}`, "publish", "flaky.doomed")
	report(t, "limited user", seq(0, 10), awaitHandled(t, seq(0, 10), d), 0)
	awaitRecovered(t, d, seq(10, 5))
	d.WaitFor("message dead-lettered", nil)
	if r := env.MustRun("", "dead", "list", "flaky", "--json"); !strings.Contains(r.Stdout, "doomed 15") {
		t.Errorf("dead list as the limited user: %s\n%s", r.Stdout, r.Stderr)
	}
	env.MustRun("", "dead", "replay", "flaky")
	d.WaitForNth(2, "message dead-lettered", nil)
	d.Stop()
}
