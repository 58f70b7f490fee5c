package cli_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/symphony-go/symphony/internal/symphonytest"
)

const limitedTask = `
def work(payload, meta):
    log.info("started", n = payload["n"], attempt = meta.attempt, redelivered = meta.redelivered)
    return True

task(name = "limited", subscribe_to = ["limited.#"], work = work, rate_limit = %q%s)
`

// publishBacklog publishes n messages to limited.go, from one command.
func publishBacklog(env *symphonytest.Env, n int) {
	var lines strings.Builder
	for i := range n {
		fmt.Fprintf(&lines, "{\"n\": %d}\n", i)
	}
	env.MustRun(lines.String(), "publish", "--file", "-", "limited.go")
}

// startTimes are when the daemons' handlers started a message, sorted;
// the attempts other than the first and the redeliveries are counted.
func startTimes(t *testing.T, daemons ...*symphonytest.Daemon) (times []time.Time, retried int) {
	t.Helper()
	for _, d := range daemons {
		for _, ev := range d.Events("started") {
			at, err := time.Parse(time.RFC3339Nano, ev.Str("time"))
			if err != nil {
				t.Fatalf("time of %v: %v", ev, err)
			}
			times = append(times, at)
			if ev.Str("attempt") != "1" {
				retried++
			}
		}
	}
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	return times, retried
}

// within counts the times in [from, to).
func within(times []time.Time, from, to time.Time) int {
	n := 0
	for _, at := range times {
		if !at.Before(from) && at.Before(to) {
			n++
		}
	}
	return n
}

// busiest is the most times in any window of length w that starts at one
// of them, within [from, to), and where it starts.
func busiest(times []time.Time, from, to time.Time, w time.Duration) (int, time.Time) {
	best, at := 0, time.Time{}
	for i, start := range times {
		if start.Before(from) || !start.Add(w).Before(to.Add(time.Nanosecond)) {
			continue
		}
		n := 0
		for _, t := range times[i:] {
			if !t.Before(start.Add(w)) {
				break
			}
			n++
		}
		if n > best {
			best, at = n, start
		}
	}
	return best, at
}

// untilStartedAfter waits for a start after at: the backlog lasted that
// long.
func untilStartedAfter(t *testing.T, at time.Time, daemons ...*symphonytest.Daemon) {
	t.Helper()
	symphonytest.Until(t, "a start after "+at.Format(time.TimeOnly), func() bool {
		times, _ := startTimes(t, daemons...)
		return len(times) > 0 && times[len(times)-1].After(at)
	}, daemons...)
}

// Three daemons share a rate limit of 50/s over a backlog: over every 10 s
// window once they all run, the starts are within 10 % over the limit,
// and over the whole steady stretch not far under it; no waiting message
// was dropped or counted as a retry.
func TestRateLimitAcrossThreeDaemons(t *testing.T) {
	t.Parallel()
	symphonytest.OnEachBroker(t, func(t *testing.T, env *symphonytest.Env) {
		dir := writeTasks(t, map[string]string{"limited.star": fmt.Sprintf(limitedTask, "50/s", "")})
		d := env.Start(dir)
		d.Stop()
		// More than the test can start: the backlog lasts.
		publishBacklog(env, 3000)
		daemons := []*symphonytest.Daemon{env.Start(dir), env.Start(dir), env.Start(dir)}
		// Steady once every daemon consumes and RabbitMQ's shares have
		// been counted again (amqp.Rebalance, 2 s) with all three.
		from := time.Now().Add(5 * time.Second)
		const span = 20 * time.Second
		to := from.Add(span)
		untilStartedAfter(t, to, daemons...)
		for _, d := range daemons {
			d.Stop()
		}

		times, retried := startTimes(t, daemons...)
		limit := 50.0
		most, at := busiest(times, from, to, 10*time.Second)
		if max := int(limit * 10 * 1.1); most > max {
			t.Errorf("%d starts in the 10 s from %s, want at most %d (50/s + 10 %%)", most, at.Format(time.StampMilli), max)
		}
		// The lower side over the whole stretch, and generous: a starved
		// machine delays starts, and a delay is not made up.
		n := within(times, from, to)
		if min := int(limit * span.Seconds() * 0.6); n < min {
			t.Errorf("%d starts in the steady %s, want at least %d (60 %% of 50/s)", n, span, min)
		}
		if retried > 0 {
			t.Errorf("%d starts were retries; a message that waits for the limit is not retried", retried)
		}
		t.Logf("%d starts in the steady %s (%.1f/s); busiest 10 s: %d", n, span, float64(n)/span.Seconds(), most)
	})
}

// One daemon, worker processes: the limit holds, status shows it and the
// workers it throttles, and a reload that lowers it takes effect without
// a restart.
func TestRateLimitOneDaemonReload(t *testing.T) {
	t.Parallel()
	symphonytest.NeedsWorkerProcesses(t)
	symphonytest.OnEachBroker(t, func(t *testing.T, env *symphonytest.Env) {
		opts := `, isolation = "process", min_workers = 2, max_workers = 2`
		dir := writeTasks(t, map[string]string{"limited.star": fmt.Sprintf(limitedTask, "20/s", opts)})
		d := env.Start(dir)
		publishBacklog(env, 1000)
		d.WaitFor("started", nil)
		first := time.Now()

		symphonytest.Until(t, "status shows a throttled worker", func() bool {
			task := status(t, d)["tasks"].([]any)[0].(map[string]any)
			return task["rate_limit"] == "20/s" && task["throttled"].(float64) > 0
		}, d)
		addr := d.WaitFor("admin server listening", nil).Str("addr")
		if out := env.MustRun("", "status", "--admin-addr", addr).Stdout; !strings.Contains(out, "RATE LIMIT OF") ||
			!strings.Contains(out, "20/s") {
			t.Errorf("symphony status does not show the rate limit:\n%s", out)
		}

		from := first.Add(2 * time.Second)
		const span = 5 * time.Second
		untilStartedAfter(t, from.Add(span), d)
		times, _ := startTimes(t, d)
		// 20/s for 5 s, and the tolerance of a tenth of a second.
		if n := within(times, from, from.Add(span)); n > 20*5+2+1 || n < 20*5/2 {
			t.Errorf("%d starts in %s under 20/s, want 50 to 103", n, span)
		}

		if err := os.WriteFile(filepath.Join(dir, "limited.star"), []byte(fmt.Sprintf(limitedTask, "4/s", opts)), 0o644); err != nil {
			t.Fatal(err)
		}
		d.WaitFor("reloaded", nil)
		from = time.Now().Add(time.Second)
		const slow = 6 * time.Second
		untilStartedAfter(t, from.Add(slow), d)
		times, retried := startTimes(t, d)
		// 4/s for 6 s: 24, and one start of tolerance, and one per
		// process that the old limit let start as the reload came.
		if n := within(times, from, from.Add(slow)); n > 4*6+1+1 || n < 4*6/2 {
			t.Errorf("%d starts in %s after the limit became 4/s, want 12 to 26", n, slow)
		}
		if task := status(t, d)["tasks"].([]any)[0].(map[string]any); task["rate_limit"] != "4/s" {
			t.Errorf("status rate_limit = %v after the reload, want 4/s", task["rate_limit"])
		}
		if retried > 0 {
			t.Errorf("%d starts were retries; a message that waits for the limit is not retried", retried)
		}
		d.Stop()
	})
}

// A rate limit that allows nothing, or is not a rate: the file does not
// load, with where and why; a good one is what check shows.
func TestRateLimitBadInput(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	good := writeTasks(t, map[string]string{"limited.star": fmt.Sprintf(limitedTask, "20/m", "")})
	if out := env.MustRun("", "check", good).Stdout; !strings.Contains(out, "rate_limit=20/m") {
		t.Errorf("check does not show the rate limit:\n%s", out)
	}
	dir := writeTasks(t, map[string]string{
		"zero.star":  fmt.Sprintf(limitedTask, "0/s", ""),
		"words.star": strings.ReplaceAll(fmt.Sprintf(limitedTask, "fast", ""), `"limited"`, `"words"`),
	})
	for _, cmd := range []string{"check", "run"} {
		r := env.Run("", cmd, dir)
		if r.Code != 1 {
			t.Errorf("%s: exit %d, want 1", cmd, r.Code)
		}
		for _, want := range []string{"zero.star:6:1:", `"0/s" allows no starts`, "words.star:6:1:", `"fast" is not a rate limit`} {
			if !strings.Contains(r.Stderr, want) {
				t.Errorf("%s: stderr lacks %q:\n%s", cmd, want, r.Stderr)
			}
		}
	}
}
