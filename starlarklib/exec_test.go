//go:build unix

package starlarklib

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/symphony-go/symphony/tasks"
)

func TestExec(t *testing.T) {
	dir := t.TempDir()
	runChecks(t, `, allow = ["exec"], allow_commands = ["sh", "cat", "env", "/bin/pwd"]`, `
    r = exec.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    eq((r.code, r.stdout, r.stderr), (3, "out\n", "err\n"))
    eq(exec.run(["cat"], stdin = "hello").stdout, "hello")
    eq(exec.run(["cat"], stdin = b"\x00\x01").stdout, "\x00\x01")
    # A clean environment: PATH alone, unless env is given.
    eq([l.split("=")[0] for l in exec.run(["env"]).stdout.splitlines()], ["PATH"])
    eq(exec.run(["sh", "-c", "echo \"$FOO|$HOME\""], env = {"FOO": "1"}).stdout, "1|\n")
    eq(exec.run(["/bin/pwd"], cwd = "`+dir+`").stdout.strip(), "`+dir+`")
    eq(exec.run(["sh", "-c", "kill -9 $$"]).code, -9)
`, Options{})
}

func TestExecRefusalsAndBounds(t *testing.T) {
	calls := &callLog{}
	w := NewWorld(WorldConfig{})
	w.Calls = calls
	tk := loadTask(t, `
def work(payload, meta):
    r = exec.run(payload["argv"], **payload.get("args", {}))
    publish("out", {"code": r.code, "stdout": r.stdout})
task(subscribe_to = ["#"], work = work, allow = ["exec"], allow_commands = ["sh", "sleep", "yes", "no-such-program-here", "/no/such/program"])
`, Options{World: w})
	cases := []struct {
		argv   []string
		args   map[string]any
		want   string
		result string
	}{
		{[]string{"ls"}, nil, "exec.run: ls is not in allow_commands of task t (sh, sleep, yes, no-such-program-here, /no/such/program)", "refused"},
		{[]string{"/bin/sh", "-c", "true"}, nil, "exec.run: /bin/sh is not in allow_commands", "refused"},
		{[]string{}, nil, "exec.run: argv is empty", "error"},
		{[]string{"no-such-program-here"}, nil, "exec.run: program no-such-program-here is not found in PATH", "error"},
		{[]string{"/no/such/program"}, nil, "exec.run: program /no/such/program: stat /no/such/program: no such file or directory", "error"},
		{[]string{"yes"}, nil, "exec.run yes: killed: its stdout went over max_output (10485760 bytes)", "error"},
		{[]string{"sh", "-c", "yes >&2"}, map[string]any{"max_output": "64KiB"}, "killed: its stderr went over max_output (65536 bytes)", "error"},
		{[]string{"sleep", "30"}, map[string]any{"timeout": 0.2}, "exec.run sleep: killed: timeout (200ms)", "error"},
		// A program that ignores TERM gets KILL a second later.
		{[]string{"sh", "-c", "trap '' TERM; sleep 30; sleep 30"}, map[string]any{"timeout": 0.2}, "killed: timeout (200ms)", "error"},
	}
	for _, c := range cases {
		args := c.args
		if args == nil {
			args = map[string]any{}
		}
		start := time.Now()
		before := len(calls.results())
		r := request(t, tk, context.Background(), map[string]any{"argv": c.argv, "args": args})
		if r.Verdict != tasks.Failed || !strings.Contains(r.Err.Error(), c.want) {
			t.Errorf("%v: %s %v\nwant %s", c.argv, r.Verdict, r.Err, c.want)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("%v took %s", c.argv, took)
		}
		if got := calls.results(); len(got) != before+1 || !strings.HasSuffix(got[len(got)-1], " "+c.result) {
			t.Errorf("%v: calls %v, want one %s", c.argv, got[before:], c.result)
		}
	}
	// The run's context (its timeout, shutdown) stops a program too.
	ctx, cancel := context.WithTimeoutCause(context.Background(), 200*time.Millisecond, tasks.ErrTimeout)
	defer cancel()
	r := request(t, tk, ctx, map[string]any{"argv": []string{"sleep", "30"}})
	if r.Verdict != tasks.Failed || !strings.Contains(r.Err.Error(), "killed: "+tasks.ErrTimeout.Error()) {
		t.Errorf("run timeout: %s %v", r.Verdict, r.Err)
	}
}

// alive tells whether pid is a process that has not exited (a zombie
// waiting for its parent has).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z" && fields[0] != "X"
}

func TestExecLeavesNothingBehind(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("needs /proc")
	}
	tk := loadTask(t, `
def work(payload, meta):
    r = exec.run(["sh", "-c", payload["script"]], **payload["args"])
    publish("out", r.stdout)
task(subscribe_to = ["#"], work = work, allow = ["exec"], allow_commands = ["sh"])
`, Options{})
	pidFile := t.TempDir() + "/pid"
	for _, c := range []struct {
		script string
		args   map[string]any
	}{
		// Forks a grandchild and exits at once.
		{"sleep 300 & echo $! > " + pidFile, map[string]any{}},
		// Forks one that ignores TERM, then runs past its timeout.
		{"sh -c 'trap \"\" TERM; sleep 300' & echo $! > " + pidFile + "; sleep 300", map[string]any{"timeout": 0.3}},
	} {
		os.Remove(pidFile)
		start := time.Now()
		r := request(t, tk, context.Background(), map[string]any{"script": c.script, "args": c.args})
		if want := c.args["timeout"] == nil; (r.Verdict == tasks.Succeeded) != want {
			t.Fatalf("%s: verdict %s %v", c.script, r.Verdict, r.Err)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("%s took %s", c.script, took)
		}
		b, err := os.ReadFile(pidFile)
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			t.Fatalf("%s: no pid written: %v %q", c.script, err, b)
		}
		// KILL is delivered at once but takes effect when the process is
		// next scheduled: on a loaded machine, a moment later. It is not
		// our child, so there is nothing to wait on but its state.
		for deadline := time.Now().Add(5 * time.Second); alive(pid) && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		if alive(pid) {
			t.Errorf("%s: process %d is still running", c.script, pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
