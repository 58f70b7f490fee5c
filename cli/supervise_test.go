//go:build unix

package cli_test

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/symphony-go/symphony/internal/symphonytest"
)

// alive reports whether a process exists (and is not a zombie).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

const processTask = `
def work(payload, meta):
    log.info("working", n = payload["n"], redelivered = meta.redelivered)
    if payload.get("sleep"):
        sleep(payload["sleep"])
    log.info("done", n = payload["n"])
    return True

task(name = "proc", subscribe_to = ["proc.#"], work = work, isolation = "process", max_workers = 2, min_workers = 2, prefetch = 1)
task(name = "once", subscribe_to = ["once.#"], work = work, isolation = "process", work_model = "oneshot", max_workers = 2)
`

func TestWorkerProcesses(t *testing.T) {
	t.Parallel()
	symphonytest.NeedsWorkerProcesses(t)
	symphonytest.OnEachBroker(t, func(t *testing.T, env *symphonytest.Env) {
		if strings.HasPrefix(env.URL, "sqlite:") {
			// A killed worker's messages come back when its lease ends.
			env.Vars[0] += "?lease=2s"
		}
		d := env.Start("--shutdown-timeout", "1s", writeTasks(t, map[string]string{"p.star": processTask}))

		// Messages are handled in child processes, counted by the daemon.
		for i := range 4 {
			env.MustRun("", "publish", "proc.x", fmt.Sprintf(`{"n": %d}`, i))
		}
		for i := range 4 {
			ev := d.WaitFor("done", map[string]string{"n": strconv.Itoa(i)})
			if ev.Str("worker_pid") == "" {
				t.Errorf("message %d was not handled in a worker process: %v", i, ev)
			}
		}
		symphonytest.Until(t, "4 acks in /status", func() bool {
			return taskStatus(t, d, "proc")["messages"].(map[string]any)["ack"].(float64) == 4
		}, d)

		// A worker killed in the middle of a message: the message comes
		// back and is handled.
		env.MustRun("", "publish", "proc.x", `{"n": 100, "sleep": 3600}`)
		working := d.WaitFor("working", map[string]string{"n": "100"})
		pid, _ := strconv.Atoi(working.Str("worker_pid"))
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		d.WaitFor("worker failed", map[string]string{"task": "proc"})
		again := d.WaitForNth(2, "working", map[string]string{"n": "100"})
		if again.Str("redelivered") != "true" || again.Str("worker_pid") == working.Str("worker_pid") {
			t.Errorf("after the kill: %v", again)
		}

		// oneshot: one process per message.
		pids := map[string]bool{}
		for i := range 3 {
			env.MustRun("", "publish", "once.x", fmt.Sprintf(`{"n": %d}`, 200+i))
		}
		for i := range 3 {
			pids[d.WaitFor("done", map[string]string{"n": strconv.Itoa(200 + i)}).Str("worker_pid")] = true
		}
		if len(pids) != 3 {
			t.Errorf("3 oneshot messages ran in %d processes, want 3", len(pids))
		}

		// Shutdown: workers get TERM; the one asleep is cancelled when the
		// shutdown timeout passes; nothing is left behind.
		var children []int
		for _, ev := range d.Events("working") {
			if p, err := strconv.Atoi(ev.Str("worker_pid")); err == nil {
				children = append(children, p)
			}
		}
		d.Signal(syscall.SIGTERM)
		if code := d.Exit(); code != 0 {
			t.Fatalf("exit %d", code)
		}
		for _, p := range children {
			if alive(p) {
				t.Errorf("worker process %d outlived the daemon", p)
			}
		}
	})
}

const scaledTask = `
def grow(stats):
    return stats.max

def broken(stats):
    fail("cannot decide")

def endless(stats):
    while True:
        pass

work = lambda payload, meta: True

task(name = "grows", subscribe_to = ["grows"], work = work, max_workers = 3, work_model = scaler(decide = grow, interval = 0.05))
task(name = "broken", subscribe_to = ["broken"], work = work, min_workers = 2, max_workers = 3, work_model = scaler(decide = broken, interval = 0.05))
task(name = "endless", subscribe_to = ["endless"], work = work, max_workers = 3, max_steps = 100000, work_model = scaler(decide = endless, interval = 0.05))
`

// A oneshot worker process that handled its message is replaced at once,
// not at the pool's next scaling tick: with an interval of an hour, three
// messages through one place are still handled one after the other.
func TestOneshotProcessesFollowEachOther(t *testing.T) {
	t.Parallel()
	symphonytest.NeedsWorkerProcesses(t)
	env := symphonytest.NewEnv(t)
	d := env.Start("--scaling-interval", "1h", writeTasks(t, map[string]string{"p.star": `
def work(payload, meta):
    log.info("done", n = payload["n"])
    return True

task(name = "once", subscribe_to = ["once.#"], work = work, isolation = "process", work_model = "oneshot", max_workers = 1)
`}))
	pids := map[string]bool{}
	for i := range 3 {
		env.MustRun("", "publish", "once.x", fmt.Sprintf(`{"n": %d}`, i))
	}
	for i := range 3 {
		pids[d.WaitFor("done", map[string]string{"n": strconv.Itoa(i)}).Str("worker_pid")] = true
	}
	if len(pids) != 3 {
		t.Errorf("3 oneshot messages ran in %d processes, want 3", len(pids))
	}
	d.Stop()
}

func TestScalersInTaskFiles(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	d := env.Start(writeTasks(t, map[string]string{"s.star": scaledTask}))
	symphonytest.Until(t, "the pool of grows at max_workers", func() bool {
		return taskStatus(t, d, "grows")["workers"].(map[string]any)["now"].(float64) == 3
	}, d)
	for _, name := range []string{"broken", "endless"} {
		d.WaitFor("scaler failed; the pool keeps its size", map[string]string{"task": name})
		st := taskStatus(t, d, name)
		workers := st["workers"].(map[string]any)
		if workers["now"] != workers["min"] || st["scaler_error"] == nil || st["scaler_error"] == "" {
			t.Errorf("%s: %v", name, st)
		}
	}
	if st := taskStatus(t, d, "broken"); !strings.Contains(st["scaler_error"].(string), "cannot decide") {
		t.Errorf("broken: scaler_error %q", st["scaler_error"])
	}
	d.Stop()
}

func TestSignalsToTheDaemon(t *testing.T) {
	t.Parallel()
	for _, isolation := range []string{"thread", "process"} {
		t.Run(isolation, func(t *testing.T) {
			t.Parallel()
			env := symphonytest.NewEnv(t)
			src := func(version string) string {
				return fmt.Sprintf(`
def work(payload, meta):
    log.info("handled", version = %q)
    if payload.get("sleep"):
        sleep(payload["sleep"])
    return True

task(name = "sig", subscribe_to = ["sig"], work = work, isolation = %q)
`, version, isolation)
			}
			dir := writeTasks(t, map[string]string{"sig.star": src("one")})
			d := env.Start("--no-watch", dir)
			env.MustRun("", "publish", "sig", `{}`)
			d.WaitFor("handled", map[string]string{"version": "one"})

			// HUP: the files are read again and the changed task restarts.
			os.WriteFile(dir+"/sig.star", []byte(src("two")), 0o644)
			d.Signal(syscall.SIGHUP)
			d.WaitFor("reloaded", nil)
			env.MustRun("", "publish", "sig", `{}`)
			d.WaitFor("handled", map[string]string{"version": "two"})

			// USR1: a status summary in the log.
			d.Signal(syscall.SIGUSR1)
			if ev := d.WaitFor("status of task", map[string]string{"task": "sig"}); ev.Str("isolation") != isolation {
				t.Errorf("status: %v", ev)
			}

			// A burst of HUP and USR1 changes nothing and breaks nothing.
			for range 20 {
				d.Signal(syscall.SIGHUP)
				d.Signal(syscall.SIGUSR1)
			}
			env.MustRun("", "publish", "sig", `{"n": 3}`)
			d.WaitForNth(2, "handled", map[string]string{"version": "two"})

			// A burst of TERM while a message runs. The kernel may merge
			// a burst of one signal into one delivery, so the daemon may
			// see a single, graceful, stop; one more TERM after it says
			// so forces it.
			env.MustRun("", "publish", "sig", `{"sleep": 3600}`)
			d.WaitForNth(3, "handled", map[string]string{"version": "two"})
			for range 5 {
				d.Signal(syscall.SIGTERM)
			}
			d.WaitFor("graceful shutdown: send the signal again to force", nil)
			d.SignalIfRunning(syscall.SIGTERM)
			if code := d.Exit(); code != 255 {
				t.Fatalf("exit %d after a burst of TERM, want 255", code)
			}
		})
	}
}

func TestStatusCommand(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	d := env.Start(writeTasks(t, map[string]string{"echo.star": echoTask}))
	env.MustRun("", "publish", "echo.x", `{"n": 1}`)
	d.WaitFor("message acked", nil)
	addr := d.WaitFor("admin server listening", nil).Str("addr")
	out := env.MustRun("", "status", "--admin-addr", addr).Stdout
	for _, want := range []string{"ready", "generation 1", "echo", "longlived", "thread", "1 (1..1)"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(env.MustRun("", "status", "--json", "--admin-addr", addr).Stdout), &st); err != nil || st["tasks"] == nil {
		t.Errorf("status --json: %v %v", err, st)
	}
	d.Stop()
	if r := env.Run("", "status", "--admin-addr", addr); r.Code != 1 || !strings.Contains(r.Stderr, "is it running") {
		t.Errorf("status with no daemon: exit %d %q", r.Code, r.Stderr)
	}
}

func TestMaxMemoryKillsTheWorkerProcess(t *testing.T) {
	t.Parallel()
	symphonytest.NeedsWorkerProcesses(t)
	env := symphonytest.NewEnv(t)
	d := env.Start(writeTasks(t, map[string]string{"m.star": `
def work(payload, meta):
    s = "x" * (payload["mb"] * 1024 * 1024)
    log.info("allocated", mb = payload["mb"], size = len(s))
    return True

task(name = "m", subscribe_to = ["m"], work = work, isolation = "process", max_memory = "96MiB", max_attempts = 2)
`}))
	env.MustRun("", "publish", "m", `{"mb": 4}`)
	d.WaitFor("allocated", map[string]string{"mb": "4"})
	poison := published(t, env.MustRun("", "publish", "m", `{"mb": 400}`))
	killed := d.WaitFor("worker process over max_memory: killing it", nil)
	if rss, _ := strconv.ParseInt(killed.Str("rss_bytes"), 10, 64); rss <= 96<<20 {
		t.Errorf("killed at %d bytes, under the limit", rss)
	}
	d.WaitFor("worker failed", map[string]string{"task": "m"})
	// Each delivery lost with its worker counts as an attempt (SPEC §3):
	// after max_attempts of them the message is dead-lettered rather than
	// killing workers for ever.
	dead := d.WaitFor("message dead-lettered", map[string]string{"message_id": poison})
	if dead.Str("reason") != "worker-lost" || dead.Str("attempt") != "3" {
		t.Errorf("the message that kills its workers: %v", dead)
	}
	if n := d.Count("worker process over max_memory: killing it", nil); n != 2 {
		t.Errorf("%d workers were killed for it, want max_attempts (2)", n)
	}
	if n := d.Count("allocated", map[string]string{"mb": "400"}); n != 0 {
		t.Errorf("the 400 MiB message ran to its end %d times under a 96 MiB limit", n)
	}
	// The others are not held up.
	env.MustRun("", "publish", "m", `{"mb": 5}`)
	d.WaitFor("allocated", map[string]string{"mb": "5"})
	d.Stop()
}

// A worker process that cannot run says why as a line of the daemon's log,
// in its format, and exits 1: here, task files changed under it.
func TestWorkerProcessFailureIsALogLine(t *testing.T) {
	t.Parallel()
	symphonytest.NeedsWorkerProcesses(t)
	env := symphonytest.NewEnv(t)
	dir := writeTasks(t, map[string]string{"p.star": processTask})
	r := env.Run("", "worker", "--log-format", "json", "--task-name", "once", "--hash", "not-the-loaded-code", dir)
	if r.Code != 1 {
		t.Fatalf("exit %d, want 1\nstderr: %s", r.Code, r.Stderr)
	}
	var line map[string]any
	if err := json.Unmarshal([]byte(strings.TrimSpace(r.Stderr)), &line); err != nil {
		t.Fatalf("stderr is not one JSON line: %v\n%s", err, r.Stderr)
	}
	if line["level"] != "ERROR" || line["msg"] != "worker process failed" ||
		!strings.Contains(fmt.Sprint(line["err"]), "its files changed since the daemon loaded them") || line["worker_pid"] == nil {
		t.Errorf("the failure line: %v", line)
	}
}

// A worker process gets the broker URL on its standard input, not in its
// environment, and task code cannot read the daemon's settings.
func TestWorkerProcessesDoNotSeeTheBrokerURL(t *testing.T) {
	t.Parallel()
	symphonytest.NeedsWorkerProcesses(t)
	env := symphonytest.NewEnv(t)
	env.Vars = append(env.Vars, "SYMPHONY_ADMIN_TOKEN=not-for-workers")
	d := env.Start(writeTasks(t, map[string]string{"p.star": `
def work(payload, meta):
    log.info("working")
    sleep(payload["sleep"])
    return True

task(name = "p", subscribe_to = ["p"], work = work, isolation = "process")
`}), "--shutdown-timeout", "0.1s")
	env.MustRun("", "publish", "p", `{"sleep": 3600}`)
	pid := d.WaitFor("working", nil).Str("worker_pid")
	environ, err := os.ReadFile("/proc/" + pid + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range strings.Split(string(environ), "\x00") {
		if strings.HasPrefix(kv, "SYMPHONY_BROKER=") || strings.HasPrefix(kv, "SYMPHONY_ADMIN_TOKEN=") || strings.Contains(kv, env.URL) {
			t.Errorf("the worker process's environment holds %q", kv)
		}
	}
	d.Stop()
	d = env.Start(writeTasks(t, map[string]string{"q.star": `
def work(payload, meta):
    env("SYMPHONY_BROKER")
    return True

task(name = "q", subscribe_to = ["q"], work = work, isolation = "process")
`}))
	env.MustRun("", "publish", "q", `{}`)
	dead := d.WaitFor("message dead-lettered", nil)
	if !strings.Contains(dead.Str("error"), "symphony's own settings") || strings.Contains(dead.Str("error"), env.URL) {
		t.Errorf("env(\"SYMPHONY_BROKER\") in a worker process: %v", dead)
	}
	d.Stop()
}
