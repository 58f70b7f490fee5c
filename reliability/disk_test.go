package reliability_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/symphony-go/symphony/internal/symphonytest"
)

// The embedded broker on a disk that fills up: publishes are refused with
// exit 1 and a clear error, none of them is stored, /readyz says the
// broker cannot store, and once there is room again the daemon goes on
// by itself: every accepted message handled, no refused one.
func TestEmbeddedBrokerDiskFull(t *testing.T) {
	t.Parallel()
	dir := symphonytest.Tmpfs(t, 16<<20)
	env := symphonytest.NewEnv(t)
	env.UseBroker("sqlite:" + filepath.Join(dir, "symphony.db"))
	d := env.Start(symphonytest.WriteTasks(t, map[string]string{"count.star": countTask}))
	d.WaitReady(200)
	n := scale(200, 5000)
	env.MustRun(lines(0, n), "publish", "--file", "-", "count.up")
	awaitHandled(t, seq(0, n), d)

	free := symphonytest.Fill(t, dir)
	// The journal may have room left: publish until a write needs more.
	pad := strings.Repeat("x", 256<<10)
	accepted := seq(0, n)
	refused := -1
	for i := n; refused < 0; i++ {
		r := env.Run(fmt.Sprintf(`{"n": %d, "pad": %q}`, i, pad), "publish", "count.up")
		switch {
		case r.Code == 0:
			accepted = append(accepted, i)
		case r.Code == 1 && strings.Contains(r.Stderr, "disk is full"):
			refused = i
		default:
			t.Fatalf("publish to a full disk: exit %d, %s; want exit 1 saying the disk is full", r.Code, r.Stderr)
		}
		if i > n+64 {
			t.Fatal("64 publishes of 256 KiB to a full 16 MiB disk all succeeded")
		}
	}
	body := d.WaitReady(503)
	if !strings.Contains(body, "disk is full") {
		t.Errorf("/readyz says %q while the disk is full", body)
	}

	free()
	d.WaitReady(200)
	more := scale(100, 2000)
	env.MustRun(lines(refused+1, more), "publish", "--file", "-", "count.up")
	accepted = append(accepted, seq(refused+1, more)...)
	seen := awaitHandled(t, accepted, d)
	if seen[fmt.Sprint(refused)] > 0 {
		t.Errorf("message %d was refused and handled", refused)
	}
	report(t, "disk full", accepted, seen, 2*10)
	d.Stop()
}

// The database file removed under a running daemon: it notices within a
// poll, says so in its log and at /readyz, and refuses to go on with the
// file; `symphony publish` says the file is missing. A restart starts on
// a new file once the removed database's journal is moved away too.
func TestEmbeddedBrokerFileRemoved(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	tasks := symphonytest.WriteTasks(t, map[string]string{"count.star": countTask})
	d := env.Start(tasks)
	env.MustRun(lines(0, 10), "publish", "--file", "-", "count.up")
	awaitHandled(t, seq(0, 10), d)

	db := strings.TrimPrefix(env.URL, "sqlite:")
	if err := os.Remove(db); err != nil {
		t.Fatal(err)
	}
	d.WaitFor("database file removed or replaced; refusing to write", nil)
	if body := d.WaitReady(503); !strings.Contains(body, "removed or replaced") {
		t.Errorf("/readyz says %q after the file was removed", body)
	}
	r := env.Run(`{"n": 10}`, "publish", "count.up")
	if r.Code != 1 || !strings.Contains(r.Stderr, "does not exist") {
		t.Errorf("publish after the file was removed: exit %d, %s; want 1 saying it does not exist", r.Code, r.Stderr)
	}
	d.Stop()
	// What is left of the removed database is refused too, until the
	// operator moves it away.
	r = env.Run("", "run", "--no-watch", tasks)
	if r.Code != 1 || !strings.Contains(r.Stderr, "-wal") {
		t.Errorf("run beside the removed database's journal: exit %d, %s; want 1 naming the journal", r.Code, r.Stderr)
	}
	for _, f := range []string{db + "-wal", db + "-shm"} {
		if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}

	again := env.Start(tasks)
	env.MustRun(`{"n": 11}`, "publish", "count.up")
	awaitHandled(t, []int{11}, again)
	again.Stop()
}

// The database file made read-only (immutable) under a running daemon:
// publishes are refused, /readyz says why, and the daemon goes on by
// itself once the file is writable again, nothing lost.
func TestEmbeddedBrokerFileMadeReadOnly(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	d := env.Start(symphonytest.WriteTasks(t, map[string]string{"count.star": countTask}))
	env.MustRun(lines(0, 10), "publish", "--file", "-", "count.up")
	awaitHandled(t, seq(0, 10), d)

	db := strings.TrimPrefix(env.URL, "sqlite:")
	symphonytest.Immutable(t, db, true)
	if body := d.WaitReady(503); !strings.Contains(body, "read-only") {
		t.Errorf("/readyz says %q while the file is read-only", body)
	}
	r := env.Run(`{"n": 10}`, "publish", "count.up")
	if r.Code != 1 || !strings.Contains(r.Stderr, "read-only") {
		t.Errorf("publish to a read-only file: exit %d, %s; want 1 saying it is read-only", r.Code, r.Stderr)
	}
	symphonytest.Immutable(t, db, false)
	d.WaitReady(200)
	env.MustRun(lines(11, 10), "publish", "--file", "-", "count.up")
	want := append(seq(0, 10), seq(11, 10)...)
	report(t, "file made read-only", want, awaitHandled(t, want, d), 0)
	d.Stop()
}
