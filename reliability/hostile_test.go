package reliability_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/symphony-go/symphony/internal/symphonytest"
)

// goodTask is the well-behaved task beside each hostile one: it must keep
// flowing whatever its neighbour does.
const goodTask = `
def work(payload, meta):
    log.info("good", n = payload["n"])
    return True

task(name = "good", subscribe_to = ["good.#"], work = work)
`

// probeTimeout is how long a health probe may take: Kubernetes' default
// (timeoutSeconds: 1) is tighter, but this is two shared cores under the
// race detector; a daemon stalled by a neighbour's memory takes tens of
// seconds.
const probeTimeout = 5 * time.Second

// contained checks that, while whatever the test started goes on, the
// daemon answers its health probes and the good task handles a batch of
// messages. from numbers the batch, so that each check waits for its own.
func contained(t *testing.T, env *symphonytest.Env, d *symphonytest.Daemon, from int) {
	t.Helper()
	// "consuming" is logged as the workers start subscribing; ready is
	// when they have.
	d.WaitReady(http.StatusOK)
	addr := d.AdminAddr()
	stop := make(chan struct{})
	var (
		wg       sync.WaitGroup
		slowest  time.Duration
		probes   int
		probeErr error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		client := &http.Client{Timeout: probeTimeout}
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			start := time.Now()
			resp, err := client.Get("http://" + addr + "/readyz")
			took := time.Since(start)
			if err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("/readyz answered %d %q after %s", resp.StatusCode, body, took.Round(time.Millisecond))
				}
			}
			if err != nil && probeErr == nil {
				probeErr = err
			}
			probes++
			slowest = max(slowest, took)
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	const batch = 20
	env.MustRun(lines(from, batch), "publish", "--file", "-", "good.x")
	for n := from; n < from+batch; n++ {
		d.WaitFor("good", map[string]string{"n": itoa(n)})
	}
	close(stop)
	wg.Wait()
	t.Logf("the good task handled %d messages; %d health probes, the slowest %s", batch, probes, slowest.Round(time.Millisecond))
	if probeErr != nil {
		t.Errorf("a health probe failed while the good task ran: %v", probeErr)
	}
}

// waitEvent is WaitFor with a patience of its own, for what takes longer
// than symphonytest.Wait.
func waitEvent(t *testing.T, d *symphonytest.Daemon, patience time.Duration, msg string, want map[string]string) symphonytest.Event {
	t.Helper()
	deadline := time.After(patience)
	for {
		changed := d.Changed()
		for _, ev := range d.Events(msg) {
			if matchesAll(ev, want) {
				return ev
			}
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("no %q %v within %s", msg, want, patience)
		}
	}
}

func matchesAll(ev symphonytest.Event, want map[string]string) bool {
	for k, v := range want {
		if ev.Str(k) != v {
			return false
		}
	}
	return true
}

// acks is a task's acknowledged messages in the daemon's /status.
func acks(t *testing.T, d *symphonytest.Daemon, task string) int {
	t.Helper()
	resp, err := http.Get("http://" + d.AdminAddr() + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		Tasks []struct {
			Name     string
			Messages struct{ Ack int }
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	for _, ts := range st.Tasks {
		if ts.Name == task {
			return ts.Messages.Ack
		}
	}
	t.Fatalf("/status has no task %s", task)
	return 0
}

// rss is a process's resident memory in bytes.
func rss(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// An infinite loop is stopped by the task's timeout: the default (10
// minutes) in the full form, 15 s in CI's. Meanwhile the other task
// flows and the daemon answers its probes; the loop's message is
// dead-lettered with reason timeout.
func TestHostileInfiniteLoop(t *testing.T) {
	t.Parallel()
	timeout, patience := `, timeout = "15s"`, 15*time.Second
	if full {
		timeout, patience = "", 10*time.Minute
	}
	env := symphonytest.NewEnv(t)
	d := env.Start(symphonytest.WriteTasks(t, map[string]string{
		"good.star": goodTask,
		"spin.star": `
def work(payload, meta):
    log.info("spinning")
    while True:
        pass

task(name = "spin", subscribe_to = ["spin"], work = work, max_attempts = 1` + timeout + `)
`}))
	env.MustRun("{}", "publish", "spin")
	d.WaitFor("spinning", nil)
	contained(t, env, d, 0)
	if n := d.Count("message dead-lettered", map[string]string{"task": "spin"}); n != 0 {
		t.Fatalf("the loop ended before the good task's batch was handled: the check proves nothing")
	}
	dead := waitEvent(t, d, patience+symphonytest.Wait, "message dead-lettered", map[string]string{"task": "spin"})
	if dead.Str("reason") != "timeout" {
		t.Errorf("the loop's message: %v", dead)
	}
	contained(t, env, d, 100)
	d.Stop()
}

// Recursion is refused by Starlark: the message is dead-lettered with an
// error that says so. str() of a list nested 300,000 deep runs in Go
// (for minutes), where a timeout cannot reach: the run is abandoned a
// second after its timeout and its message dead-lettered; in a worker
// process the process then exits, taking the run with it, and another
// takes its place; in the daemon's own threads the run goes on in the
// background, which is what thread isolation cannot bound (README).
func TestHostileRecursionAndNesting(t *testing.T) {
	t.Parallel()
	for _, isolation := range []string{"thread", "process"} {
		t.Run(isolation, func(t *testing.T) {
			t.Parallel()
			if isolation == "process" {
				symphonytest.NeedsWorkerProcesses(t)
			}
			env := symphonytest.NewEnv(t)
			d := env.Start(symphonytest.WriteTasks(t, map[string]string{
				"good.star": goodTask,
				"deep.star": fmt.Sprintf(`
def down(n):
    return down(n - 1) if n else 0

def nested(depth):
    x = []
    for i in range(depth):
        x = [x]
    return x

def work(payload, meta):
    log.info("deep", how = payload["how"])
    if payload["how"] == "recursion":
        down(100000)
    elif payload["how"] == "str":
        log.info("str", n = len(str(nested(300000))))
    return True

task(name = "deep", subscribe_to = ["deep"], work = work, max_attempts = 1,
     timeout = "5s", isolation = %q, min_workers = 1, max_workers = 1)
`, isolation)}))
			for _, c := range []struct{ how, want string }{
				{"recursion", "called recursively"},
				{"str", "handler exceeded its timeout"},
			} {
				id := published(t, env.MustRun(`{"how": "`+c.how+`"}`, "publish", "deep"))
				dead := d.WaitFor("message dead-lettered", map[string]string{"message_id": id})
				if !strings.Contains(dead.Str("error"), c.want) {
					t.Errorf("%s: dead-lettered with %q, want %q in it", c.how, dead.Str("error"), c.want)
				}
				if c.how == "str" {
					d.WaitFor("run did not stop when cancelled: abandoned, its message settled without it", map[string]string{"message_id": id})
				}
				contained(t, env, d, len(d.Events("good")))
			}
			if isolation == "process" {
				// The process whose run was abandoned is gone, and the
				// task works on in another.
				d.WaitFor("worker failed", map[string]string{"task": "deep"})
				id := published(t, env.MustRun(`{"how": "none"}`, "publish", "deep"))
				d.WaitFor("message acked", map[string]string{"message_id": id})
			}
			if n := d.Count("str", nil); n != 0 {
				t.Errorf("str() of a value nested 300,000 deep finished")
			}
			d.Stop()
		})
	}
}

// published is the message id `symphony publish` printed.
func published(t *testing.T, r symphonytest.Result) string {
	t.Helper()
	_, rest, ok := strings.Cut(r.Stderr, "published message ")
	if !ok {
		t.Fatalf("publish printed no message id: %q", r.Stderr)
	}
	id, _, _ := strings.Cut(rest, " ")
	return id
}

// A memory bomb in a worker process with max_memory: the process is
// killed each time it goes over, the message is dead-lettered as
// worker-lost after max_attempts such deliveries, and the daemon itself
// neither grows nor stalls: its probes answer and its other pool flows.
// (In the daemon's own threads nothing bounds it: README.)
func TestHostileMemoryBomb(t *testing.T) {
	t.Parallel()
	symphonytest.NeedsWorkerProcesses(t)
	env := symphonytest.NewEnv(t)
	d := env.Start(symphonytest.WriteTasks(t, map[string]string{
		"good.star": goodTask,
		"bomb.star": `
def work(payload, meta):
    log.info("bombing", attempt = meta.attempt)
    x = [0] * 50000000
    log.info("bombed", n = len(x))
    return True

task(name = "bomb", subscribe_to = ["bomb"], work = work, isolation = "process",
     max_memory = "128MiB", max_attempts = 2)
`}))
	before := rss(t, d.Pid())
	id := published(t, env.MustRun("{}", "publish", "bomb"))
	d.WaitFor("bombing", map[string]string{"attempt": "1"})
	contained(t, env, d, 0)
	dead := d.WaitFor("message dead-lettered", map[string]string{"message_id": id})
	if dead.Str("reason") != "worker-lost" {
		t.Errorf("the bomb's message: %v", dead)
	}
	if n := d.Count("bombed", nil); n != 0 {
		t.Errorf("a 400 MB list was made %d times under max_memory 128MiB", n)
	}
	after := rss(t, d.Pid())
	t.Logf("the daemon's RSS: %d MiB before, %d MiB after", before>>20, after>>20)
	// The bomb is 400 MB; the daemon must not have taken it in.
	if after > before+64<<20 {
		t.Errorf("the daemon grew from %d MiB to %d MiB", before>>20, after>>20)
	}
	contained(t, env, d, 100)
	d.Stop()
}

// A handler asleep past the shutdown timeout does not hold the daemon:
// it exits when the timeout passes (the message handed back, the other
// task's messages done), and the next daemon handles the message again.
func TestHostileSleepPastShutdown(t *testing.T) {
	t.Parallel()
	symphonytest.OnEachBroker(t, func(t *testing.T, env *symphonytest.Env) {
		tasks := symphonytest.WriteTasks(t, map[string]string{
			"good.star": goodTask,
			"sleepy.star": `
def work(payload, meta):
    log.info("sleeping", redelivered = meta.redelivered)
    if not meta.redelivered:
        sleep(3600)
    return True

task(name = "sleepy", subscribe_to = ["sleepy"], work = work, timeout = None)
`})
		d := env.Start("--shutdown-timeout", "2s", tasks)
		id := published(t, env.MustRun("{}", "publish", "sleepy"))
		d.WaitFor("sleeping", map[string]string{"redelivered": "false"})
		contained(t, env, d, 0)
		start := time.Now()
		d.Signal(syscall.SIGTERM)
		if code := d.Exit(); code != 0 {
			t.Errorf("exit %d after TERM", code)
		}
		t.Logf("exited %s after TERM (shutdown timeout 2s)", time.Since(start).Round(time.Millisecond))
		again := env.Start(tasks)
		again.WaitFor("sleeping", map[string]string{"message_id": id, "redelivered": "true"})
		again.WaitFor("message acked", map[string]string{"message_id": id})
		again.Stop()
	})
}

// A handler that publishes a flood (100,000 messages in the full form,
// 2,000 in CI's): every one arrives, the flood's own message is acked
// once, and the daemon answers and works its other tasks meanwhile.
func TestHostileFlood(t *testing.T) {
	t.Parallel()
	n := scale(2000, 100000)
	symphonytest.OnEachBroker(t, func(t *testing.T, env *symphonytest.Env) {
		d := env.Start(symphonytest.WriteTasks(t, map[string]string{
			"good.star": goodTask,
			"flood.star": `
def flood(payload, meta):
    log.info("flooding", n = payload["n"])
    for i in range(payload["n"]):
        publish("sink.x", {"i": i})
    return True

def sink(payload, meta):
    return True

task(name = "flood", subscribe_to = ["flood"], work = flood)
task(name = "sink", subscribe_to = ["sink.#"], work = sink, min_workers = 2, max_workers = 2)
`}))
		env.MustRun(fmt.Sprintf(`{"n": %d}`, n), "publish", "flood")
		d.WaitFor("flooding", nil)
		contained(t, env, d, 0)
		deadline := time.Now().Add(patience(n))
		for got := acks(t, d, "sink"); got < n; got = acks(t, d, "sink") {
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d flooded messages handled after %s", got, n, patience(n))
			}
			// /status is a question, not an event: ask again shortly.
			time.Sleep(100 * time.Millisecond)
		}
		if got := acks(t, d, "flood"); got != 1 {
			t.Errorf("the flood's message acked %d times", got)
		}
		contained(t, env, d, 100)
		if got := acks(t, d, "sink"); got != n {
			t.Errorf("%d flooded messages handled, want %d", got, n)
		}
		d.Stop()
	})
}

// A task file that loops at load time: its step budget stops it, the
// reload it caused is refused naming the file, and the running tasks flow
// all the while (a load runs beside them, not instead).
func TestHostileLoadTimeLoop(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	dir := symphonytest.WriteTasks(t, map[string]string{"good.star": goodTask})
	d := env.Start(dir)
	contained(t, env, d, 0)
	if err := os.WriteFile(filepath.Join(dir, "loop.star"), []byte(`
def spin():
    while True:
        pass

spin()
`), 0o644); err != nil {
		t.Fatal(err)
	}
	contained(t, env, d, 100)
	if d.Count("reload failed: the running tasks stay", nil) != 0 {
		t.Fatal("the load ended before the good task's batch was handled: the check proves nothing")
	}
	// 100 million steps: a few seconds, a minute under the race detector.
	failed := waitEvent(t, d, 5*time.Minute, "reload failed: the running tasks stay", nil)
	if err := failed.Str("err"); !strings.Contains(err, "loop.star") || !strings.Contains(err, "steps") {
		t.Errorf("the refused reload says %q", err)
	}
	contained(t, env, d, 200)
	d.Stop()
}
