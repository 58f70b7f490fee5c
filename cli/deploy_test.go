package cli_test

import (
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/symphony-go/symphony/internal/symphonytest"
)

// notifications listens on a datagram socket as systemd does for a
// Type=notify service, and hands out each datagram it receives.
func notifications(t *testing.T) (string, <-chan string) {
	t.Helper()
	// A short path: a unix socket's name is limited to about 100 bytes.
	dir, err := os.MkdirTemp("", "sdn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	out := make(chan string, 16)
	go func() {
		defer close(out)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			out <- string(buf[:n])
		}
	}()
	return path, out
}

// next waits for the next notification, which must hold every one of
// want's lines.
func next(t *testing.T, got <-chan string, want ...string) string {
	t.Helper()
	select {
	case msg := <-got:
		lines := strings.Split(strings.TrimSpace(msg), "\n")
		for _, w := range want {
			found := false
			for _, l := range lines {
				if l == w || (strings.HasSuffix(w, "=") && strings.HasPrefix(l, w)) {
					found = true
				}
			}
			if !found {
				t.Fatalf("notification %q lacks %q", msg, w)
			}
		}
		return msg
	case <-time.After(symphonytest.Wait):
		t.Fatalf("no notification with %v", want)
	}
	return ""
}

func TestSystemdNotify(t *testing.T) {
	t.Parallel()
	socket, got := notifications(t)
	env := symphonytest.NewEnv(t)
	env.Vars = append(env.Vars, "NOTIFY_SOCKET="+socket)
	dir := t.TempDir()
	write(t, filepath.Join(dir, "n.star"), versioned("n", "v1"))
	d := env.StartNoWait(dir)

	next(t, got, "READY=1", "MAINPID=", "STATUS=consuming: 1 tasks")
	// Ready means what /readyz means.
	addr := d.WaitFor("admin server listening", nil).Str("addr")
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("READY=1 sent while /readyz answers %d", resp.StatusCode)
	}
	d.Signal(syscall.SIGHUP)
	next(t, got, "RELOADING=1", "MONOTONIC_USEC=")
	next(t, got, "READY=1", "STATUS=consuming")
	d.WaitFor("reloaded", map[string]string{"trigger": "SIGHUP"})

	// A reload that fails still ends with READY: the daemon runs on.
	write(t, filepath.Join(dir, "n.star"), "def broken(:\n")
	next(t, got, "RELOADING=1")
	next(t, got, "READY=1", "STATUS=consuming; the last reload failed, the running tasks stay")

	d.Signal(syscall.SIGTERM)
	next(t, got, "STOPPING=1")
	if code := d.Exit(); code != 0 {
		t.Errorf("exit %d", code)
	}
}

// TestConfigMapSwap lays the tasks out as Kubernetes mounts a ConfigMap:
// each file a symlink through ..data to a timestamped directory, which an
// update replaces by swapping the ..data symlink in one rename.
func TestConfigMapSwap(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	root := t.TempDir()
	version := func(stamp, text string) {
		t.Helper()
		dir := filepath.Join(root, stamp)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "cm.star"), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(root, "..data_tmp")
		if err := os.Symlink(stamp, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(root, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	version("..2026_01_02_03_04_05.000000001", versioned("cm", "v1"))
	if err := os.Symlink(filepath.Join("..data", "cm.star"), filepath.Join(root, "cm.star")); err != nil {
		t.Fatal(err)
	}
	d := env.Start(root)
	env.MustRun("", "publish", "cm.x", `{"id": 1}`)
	d.WaitFor("handled", map[string]string{"version": "v1", "id": "1"})

	version("..2026_01_02_03_09_00.000000002", versioned("cm", "v2"))
	if err := os.RemoveAll(filepath.Join(root, "..2026_01_02_03_04_05.000000001")); err != nil {
		t.Fatal(err)
	}
	d.WaitFor("reloaded", map[string]string{"changed": "1"})
	env.MustRun("", "publish", "cm.x", `{"id": 2}`)
	d.WaitFor("handled", map[string]string{"version": "v2", "id": "2"})
	if n := d.Count("task loaded", nil); n != 1 {
		t.Errorf("the timestamped directories were loaded as tasks too: %d tasks", n)
	}
	d.Stop()
}
