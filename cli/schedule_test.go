package cli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/broker/amqp"
	"github.com/symphony-go/symphony/broker/sqlite"
	"github.com/symphony-go/symphony/internal/symphonytest"
)

const tickTask = `
def work(payload, meta):
    log.info("tick", at = payload["scheduled_at"], redelivered = meta.redelivered)
    return True

task(name = "tick", schedule = %q, work = work)
`

// openBroker opens the broker of env as a client of its own.
func openBroker(t *testing.T, env *symphonytest.Env) broker.Broker {
	t.Helper()
	var b broker.Broker
	var err error
	if path, ok := strings.CutPrefix(env.URL, "sqlite:"); ok {
		b, err = sqlite.Open(context.Background(), path, sqlite.Options{})
	} else {
		b, err = amqp.Open(context.Background(), env.URL, amqp.Options{})
	}
	if err != nil {
		t.Fatalf("open broker: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// observer is a queue of the test's own bound to a key: it sees every
// message published with it, whoever publishes and whoever consumes.
type observer struct {
	t     *testing.T
	b     broker.Broker
	queue string
}

func observe(t *testing.T, env *symphonytest.Env, key string) *observer {
	t.Helper()
	b := openBroker(t, env)
	o := &observer{t: t, b: b, queue: "observer"}
	if err := b.Declare(context.Background(), broker.Queue{Name: o.queue, Patterns: []string{key}, Durable: true}); err != nil {
		t.Fatal(err)
	}
	return o
}

// ticks drains the queue and returns the scheduled_at of each message.
func (o *observer) ticks() []string {
	o.t.Helper()
	n, err := o.b.Depth(context.Background(), o.queue)
	if err != nil {
		o.t.Fatal(err)
	}
	sub, err := o.b.Subscriber(broker.ConsumeOptions{Prefetch: 100})
	if err != nil {
		o.t.Fatal(err)
	}
	defer sub.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := sub.Subscribe(ctx, o.queue)
	if err != nil {
		o.t.Fatal(err)
	}
	var out []string
	for range n {
		select {
		case m := <-ch:
			var body struct {
				At string `json:"scheduled_at"`
			}
			if err := json.Unmarshal(m.Payload, &body); err != nil {
				o.t.Fatalf("tick %q: %v", m.Payload, err)
			}
			out = append(out, body.At)
			m.Ack()
		case <-time.After(symphonytest.Wait):
			o.t.Fatalf("observer queue: %d of %d messages", len(out), n)
		}
	}
	return out
}

// seconds parses RFC 3339 instants and sorts them.
func seconds(t *testing.T, ats []string) []time.Time {
	t.Helper()
	var out []time.Time
	for _, a := range ats {
		at, err := time.Parse(time.RFC3339, a)
		if err != nil {
			t.Fatalf("scheduled_at %q: %v", a, err)
		}
		out = append(out, at)
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out
}

// handled counts, over daemons, the ticks handled, and those handled again
// after a delivery that did not finish (redelivered).
func handled(daemons ...*symphonytest.Daemon) (first map[string]int, again map[string]int) {
	first, again = map[string]int{}, map[string]int{}
	for _, d := range daemons {
		for _, ev := range d.Events("tick") {
			if ev.Str("redelivered") == "true" {
				again[ev.Str("at")]++
			} else {
				first[ev.Str("at")]++
			}
		}
	}
	return first, again
}

// leader is the daemon that fires the ticks now: on RabbitMQ the last to
// say it leads; on the embedded broker every daemon leads, and the last
// to fire a tick is as good as any.
func leader(daemons []*symphonytest.Daemon) int {
	best, at := 0, ""
	for i, d := range daemons {
		for _, msg := range []string{"leading schedule", "tick fired"} {
			if evs := d.Events(msg); len(evs) > 0 {
				if ts := evs[len(evs)-1].Str("time"); ts > at {
					best, at = i, ts
				}
			}
		}
	}
	return best
}

// Three daemons share a schedule of every second; halfway the one firing
// the ticks is SIGKILLed and started again. Every second from the first
// tick to the last is published once, and handled.
func TestScheduleOnceAcrossThreeDaemons(t *testing.T) {
	t.Parallel()
	symphonytest.OnEachBroker(t, func(t *testing.T, env *symphonytest.Env) {
		dir := writeTasks(t, map[string]string{"tick.star": fmt.Sprintf(tickTask, "every 1s")})
		// The first daemon declares the task's queue and records the
		// schedule; the observer binds to the same key.
		daemons := []*symphonytest.Daemon{env.Start(dir)}
		obs := observe(t, env, "schedule.tick")
		daemons = append(daemons, env.Start(dir), env.Start(dir))
		count := func() int {
			first, _ := handled(daemons...)
			return len(first)
		}
		symphonytest.Until(t, "15 ticks handled", func() bool { return count() >= 15 }, daemons...)
		victim := leader(daemons)
		daemons[victim].Signal(syscall.SIGKILL)
		daemons[victim].Exit()
		daemons = append(daemons, env.Start(dir))
		symphonytest.Until(t, "30 ticks handled", func() bool { return count() >= 30 }, daemons...)
		for i, d := range daemons {
			if i != victim {
				d.Stop()
			}
		}

		fired := obs.ticks()
		ticks := seconds(t, fired)
		for i := 1; i < len(ticks); i++ {
			switch d := ticks[i].Sub(ticks[i-1]); {
			case d == 0:
				t.Errorf("tick %s published twice", ticks[i].Format(time.RFC3339))
			case d != time.Second:
				t.Errorf("no tick between %s and %s", ticks[i-1].Format(time.RFC3339), ticks[i].Format(time.RFC3339))
			}
		}
		first, again := handled(daemons...)
		for _, at := range fired {
			if first[at]+again[at] == 0 {
				t.Errorf("tick %s published but never handled", at)
			}
			if first[at] > 1 {
				t.Errorf("tick %s handled %d times as a first delivery", at, first[at])
			}
		}
		t.Logf("%d ticks from %s to %s; %d handled again after the kill", len(ticks),
			ticks[0].Format(time.TimeOnly), ticks[len(ticks)-1].Format(time.TimeOnly), len(again))
	})
}

// A schedule edited while the daemon runs fires on the new expression from
// its next tick, none twice; ticks missed while no daemon ran fire once,
// as the latest, when one starts again; status and metrics show the next
// and last tick.
func TestScheduleReloadAndCatchUp(t *testing.T) {
	t.Parallel()
	symphonytest.OnEachBroker(t, func(t *testing.T, env *symphonytest.Env) {
		dir := writeTasks(t, map[string]string{"tick.star": fmt.Sprintf(tickTask, "every 1s")})
		d := env.Start(dir)
		obs := observe(t, env, "schedule.tick")
		d.WaitForNth(2, "tick fired", nil)

		st := status(t, d)
		sched := st["tasks"].([]any)[0].(map[string]any)["schedule"].(map[string]any)
		if sched["expression"] != "every 1s" || sched["next_tick"] == nil || sched["last_tick"] == nil {
			t.Errorf("status schedule = %v, want the expression, next and last tick", sched)
		}
		addr := d.WaitFor("admin server listening", nil).Str("addr")
		if out := env.MustRun("", "status", "--admin-addr", addr).Stdout; !strings.Contains(out, "NEXT TICK") ||
			!strings.Contains(out, "every 1s") {
			t.Errorf("symphony status does not show the schedule:\n%s", out)
		}
		if m := metrics(t, d); !strings.Contains(m, `symphony_schedule_next_tick_timestamp_seconds{task="tick"}`) ||
			!strings.Contains(m, `symphony_schedule_last_tick_timestamp_seconds{task="tick"}`) {
			t.Errorf("metrics lack the schedule's ticks:\n%s", m)
		}

		if err := os.WriteFile(filepath.Join(dir, "tick.star"), []byte(fmt.Sprintf(tickTask, "every 2s")), 0o644); err != nil {
			t.Fatal(err)
		}
		d.WaitFor("reloaded", nil)
		reloaded := time.Now()
		fires := d.Count("tick fired", nil)
		d.WaitForNth(fires+3, "tick fired", nil)
		d.Stop()

		// Down for two ticks of the new schedule or more: time passing is
		// the event.
		time.Sleep(5 * time.Second)
		d = env.Start(dir)
		catchUp := d.WaitForNth(1, "tick fired", nil)
		d.Stop()

		ticks := seconds(t, obs.ticks())
		var after []time.Time
		for i, at := range ticks {
			if i > 0 && at.Equal(ticks[i-1]) {
				t.Errorf("tick %s published twice", at.Format(time.RFC3339))
			}
			if at.After(reloaded.Add(time.Second)) {
				after = append(after, at)
			}
		}
		for _, at := range after {
			if at.Unix()%2 != 0 {
				t.Errorf("tick %s after the reload is not of every 2s", at.Format(time.RFC3339))
			}
		}
		// The last tick is the catch-up: the latest multiple of 2 s
		// before the daemon started again, once.
		last := ticks[len(ticks)-1]
		if got := catchUp.Str("scheduled_at"); got != last.Format(time.RFC3339) {
			t.Errorf("catch-up fired %s, the last published is %s", got, last.Format(time.RFC3339))
		}
		if len(after) < 3 || last.Sub(after[len(after)-2]) < 4*time.Second {
			t.Errorf("ticks after the reload %v: want the catch-up alone for the time the daemon was down", after)
		}
	})
}

// metrics reads the daemon's /metrics.
func metrics(t *testing.T, d *symphonytest.Daemon) string {
	t.Helper()
	addr := d.WaitFor("admin server listening", nil).Str("addr")
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
