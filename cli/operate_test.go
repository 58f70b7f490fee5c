package cli_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/broker/sqlite"
	"github.com/symphony-go/symphony/internal/symphonytest"
	"github.com/symphony-go/symphony/tasks"
)

// onTerminal runs the binary with args on a pseudo-terminal (util-linux's
// script), as a person at a terminal would, and returns what it showed.
// With a limit, the command is interrupted (INT) after that long.
func onTerminal(t *testing.T, env *symphonytest.Env, limit time.Duration, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("script"); err != nil {
		t.Skip("script (util-linux) is not installed")
	}
	line := symphonytest.Binary(t)
	if limit > 0 {
		line = fmt.Sprintf("timeout -s INT %.1f %s", limit.Seconds(), line)
	}
	for _, a := range args {
		line += " '" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	cmd := exec.Command("script", "-qec", line, "/dev/null")
	cmd.Dir = env.Dir
	cmd.Env = append(os.Environ(), env.Vars...)
	out, err := cmd.CombinedOutput()
	if err != nil && limit == 0 {
		t.Fatalf("%s: %v\n%s", line, err, out)
	}
	return string(out)
}

func TestPublishDelayHoldsTheMessage(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	dir := t.TempDir()
	write(t, filepath.Join(dir, "d.star"), versioned("d", "v1"))
	d := env.Start(dir)
	sent := time.Now()
	r := env.MustRun("", "publish", "d.x", `{"id": 1}`, "--delay", "1s")
	if !strings.Contains(r.Stderr, "held until") {
		t.Errorf("publish said %q", r.Stderr)
	}
	handled := d.WaitFor("handled", map[string]string{"id": "1"})
	at, err := time.Parse(time.RFC3339Nano, handled.Str("time"))
	if err != nil {
		t.Fatal(err)
	}
	if held := at.Sub(sent); held < time.Second {
		t.Errorf("a message held 1s was handled after %s", held)
	}
	// --at in the past publishes nothing, and says so.
	r = env.Run("", "publish", "d.x", `{"id": 2}`, "--at", "2001-01-01T00:00:00Z")
	if r.Code != 2 || !strings.Contains(r.Stderr, "in the past") {
		t.Errorf("--at in the past: exit %d, %s", r.Code, r.Stderr)
	}
	d.Stop()
	if n := d.Count("handled", map[string]string{"id": "2"}); n != 0 {
		t.Error("a message --at refused was published")
	}
}

// TestDeadReplayProgress replays thousands of dead letters at a terminal:
// a progress bar, as publish --file draws, then the count and the rate.
func TestDeadReplayProgress(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	b, err := sqlite.Open(context.Background(), strings.TrimPrefix(env.URL, "sqlite:"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	if err := b.Declare(ctx, broker.Queue{Name: "many", Patterns: []string{"many.#"}, Durable: true}); err != nil {
		t.Fatal(err)
	}
	const n = 3000
	for i := range n {
		msg, err := broker.NewMessage(tasks.Publication{RoutingKey: "many.x", Body: []byte(`{}`), ContentType: "application/json"})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Bury(ctx, "many", msg, broker.Grave{Task: "many", Reason: "error", Error: "boom", Attempt: i%3 + 1}); err != nil {
			t.Fatal(err)
		}
	}
	out := onTerminal(t, env, 0, "dead", "replay", "many")
	for _, want := range []string{"[==============================] 3000/3000 100%", "replayed 3000 dead letters\r\n", "replayed 3000 dead letters in "} {
		if !strings.Contains(out, want) {
			t.Errorf("the terminal lacks %q:\n%q", want, out)
		}
	}
	if left, err := b.DeadLetters().Count(ctx, "many"); err != nil || left != 0 {
		t.Errorf("dead letters left: %d, %v", left, err)
	}
	if depth, err := b.Depth(ctx, "many"); err != nil || depth != n {
		t.Errorf("queue depth after the replay: %d, %v", depth, err)
	}
	// Not at a terminal, only the count.
	r := env.MustRun("", "dead", "replay", "many")
	if r.Stdout != "replayed 0 dead letters\n" || strings.Contains(r.Stderr, "[") {
		t.Errorf("replay of nothing: %q %q", r.Stdout, r.Stderr)
	}
}

func TestStatusWatch(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	dir := t.TempDir()
	write(t, filepath.Join(dir, "w.star"), versioned("w", "v1"))
	d := env.Start(dir)
	addr := d.WaitFor("admin server listening", nil).Str("addr")

	// Into a pipe: one snapshot after another, until interrupted.
	cmd := exec.Command(symphonytest.Binary(t), "status", "--watch", "--interval", "0.2s", "--admin-addr", addr)
	cmd.Dir = env.Dir
	cmd.Env = append(os.Environ(), env.Vars...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	tables := 0
	for tables < 3 && sc.Scan() {
		if strings.HasPrefix(sc.Text(), "TASK") {
			tables++
		}
	}
	if tables < 3 {
		t.Fatalf("saw %d snapshots", tables)
	}
	// A daemon that goes away is waited for, not the end of the watch.
	d.Stop()
	for sc.Scan() {
		if strings.Contains(sc.Text(), "is it running") {
			break
		}
	}
	cmd.Process.Signal(syscall.SIGINT)
	go func() {
		for sc.Scan() {
		}
	}()
	if err := cmd.Wait(); err != nil {
		t.Errorf("watch interrupted: %v", err)
	}

	// At a terminal: redrawn in place.
	d = env.Start(dir)
	addr = d.WaitFor("admin server listening", nil).Str("addr")
	out := onTerminal(t, env, 1500*time.Millisecond, "status", "--watch", "--interval", "0.2s", "--admin-addr", addr)
	if n := strings.Count(out, "\x1b[H\x1b[2J"); n < 2 || strings.Count(out, "TASK") != n {
		t.Errorf("%d redraws:\n%q", n, out)
	}
	d.Stop()
}

// TestAdminAddress: a busy admin address stops the daemon at once, saying
// which; one beyond loopback without a token is a warning.
func TestAdminAddress(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	env := symphonytest.NewEnv(t)
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.star"), versioned("a", "v1"))
	d := env.StartNoWait("--admin-addr", busy.Addr().String(), dir)
	if code := d.Exit(); code != 1 {
		t.Errorf("exit %d", code)
	}
	if log := d.Log(); !strings.Contains(log, "start admin server on "+busy.Addr().String()) || !strings.Contains(log, "address already in use") {
		t.Errorf("the daemon said:\n%s", log)
	}

	d = env.Start("--admin-addr", "0.0.0.0:0", dir)
	d.WaitFor("the admin server listens beyond this machine without a token: anyone who reaches it sees the status and dead letters; set --admin-token to guard them and to allow actions", nil)
	d.Stop()
	env.Vars = append(env.Vars, "SYMPHONY_ADMIN_TOKEN=t0ken")
	d = env.Start(dir)
	if ev := d.WaitFor("admin server listening", nil); ev.Str("actions") != "true" {
		t.Errorf("with a token: %v", ev)
	}
	d.Stop()
	if d.Count("the admin server listens beyond this machine without a token: anyone who reaches it sees the status and dead letters; set --admin-token to guard them and to allow actions", nil) != 0 {
		t.Error("warned on loopback with a token")
	}
}
