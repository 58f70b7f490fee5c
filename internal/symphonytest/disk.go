package symphonytest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// need fails the test under CI=true and skips it elsewhere: what it
// needs is missing.
func need(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf(format+" (CI=true: this is a failure)", args...)
	}
	t.Skipf(format, args...)
}

// Tmpfs mounts a tmpfs of size bytes for the test, to fill its disk on
// purpose, and returns its directory; it is unmounted when the test ends.
// It needs root (CAP_SYS_ADMIN).
func Tmpfs(t testing.TB, size int64) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0755", size), "tmpfs", dir).CombinedOutput()
	if err != nil {
		need(t, "mount a tmpfs (needs root): %v %s", err, out)
	}
	// Registered after TempDir's cleanup, so it runs before it.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
	return dir
}

// Fill writes a file in dir until the file system has no room left, and
// returns a function that deletes it again.
func Fill(t testing.TB, dir string) (free func()) {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for size := len(chunk); size > 0; {
		if _, err := f.Write(chunk[:size]); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				f.Close()
				t.Fatalf("fill %s: %v", dir, err)
			}
			// Down to the last byte that fits.
			size /= 2
		}
	}
	if err := f.Close(); err != nil && !errors.Is(err, syscall.ENOSPC) {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	}
}

// Immutable sets or clears the immutable attribute of path (chattr), which
// stops writes even by root and through descriptors already open: the way
// to make a file read-only under a running process.
func Immutable(t testing.TB, path string, on bool) {
	t.Helper()
	flag := "-i"
	if on {
		flag = "+i"
	}
	if out, err := exec.Command("chattr", flag, path).CombinedOutput(); err != nil {
		need(t, "chattr %s %s: %v %s", flag, path, err, out)
	}
	if on {
		t.Cleanup(func() { _ = exec.Command("chattr", "-i", path).Run() })
	}
}
