package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

const waitTrigger = 10 * time.Second

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// watch runs a watcher on root; changes arrive on the returned channel,
// every one of them (it is large enough never to drop one).
func watch(t *testing.T, root string, configure func(*watcher)) <-chan string {
	t.Helper()
	ch, _ := watchStoppable(t, root, configure)
	return ch
}

// watchStoppable is watch that also returns how to stop the watcher, after
// which its state may be read.
func watchStoppable(t *testing.T, root string, configure func(*watcher)) (<-chan string, func() *watcher) {
	t.Helper()
	w := newWatcher([]string{root}, quietLog())
	if configure != nil {
		configure(w)
	}
	w.start()
	ch := make(chan string, 1000)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.run(ctx, ch); close(done) }()
	stop := func() *watcher { cancel(); <-done; return w }
	t.Cleanup(func() { stop() })
	return ch, stop
}

func next(t *testing.T, ch <-chan string) string {
	t.Helper()
	select {
	case trigger := <-ch:
		return trigger
	case <-time.After(waitTrigger):
		t.Fatalf("no change reported within %s", waitTrigger)
		return ""
	}
}

func mustWrite(t *testing.T, p, src string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestTreeHash(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	mustWrite(t, filepath.Join(root, "a.star"), "a")
	h := treeHash([]string{root})
	mustWrite(t, filepath.Join(root, "a.star"), "a")
	mustWrite(t, filepath.Join(root, "notes.txt"), "not a task file")
	mustWrite(t, filepath.Join(root, ".a.star.swp"), "an editor's")
	mustWrite(t, filepath.Join(root, ".hidden", "x.star"), "hidden")
	mustWrite(t, filepath.Join(root, "a_test.star"), "a task test")
	if got := treeHash([]string{root}); got != h {
		t.Error("the hash changed with no task file changed")
	}
	for _, change := range []func(){
		func() { mustWrite(t, filepath.Join(root, "a.star"), "b") },
		func() { mustWrite(t, filepath.Join(root, "sub", "c.star"), "c") },
		func() { os.Rename(filepath.Join(root, "sub", "c.star"), filepath.Join(root, "sub", "d.star")) },
		func() { os.Symlink(filepath.Join(root, "nowhere"), filepath.Join(root, "broken.star")) },
		func() { os.RemoveAll(filepath.Join(root, "sub")) },
	} {
		change()
		got := treeHash([]string{root})
		if got == h {
			t.Error("a change left the hash as it was")
		}
		h = got
	}
}

// A tasks root that is one file stands for its directory: the libraries
// the file loads and symphony.star beside it are part of it.
func TestTreeHashOfAFileRoot(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "a.star")
	mustWrite(t, file, "a")
	h := treeHash([]string{file})
	for _, change := range []func(){
		func() { mustWrite(t, filepath.Join(dir, "lib", "m.star"), "m") },
		func() { mustWrite(t, filepath.Join(dir, "symphony.star"), "config()") },
	} {
		change()
		got := treeHash([]string{file})
		if got == h {
			t.Error("a change beside the task file left the hash as it was")
		}
		h = got
	}
}

func TestWatcherSeesEditorsSaves(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	mustWrite(t, filepath.Join(root, "a.star"), "v1")
	ch := watch(t, root, nil)

	// Rename-and-replace, as editors save.
	mustWrite(t, filepath.Join(root, "a.star.tmp"), "v2")
	os.Rename(filepath.Join(root, "a.star.tmp"), filepath.Join(root, "a.star"))
	if got := next(t, ch); got != "file change" {
		t.Errorf("trigger %q", got)
	}
	// A new directory, and a file in it.
	mustWrite(t, filepath.Join(root, "new", "b.star"), "b1")
	next(t, ch)
	// Its files are watched too.
	mustWrite(t, filepath.Join(root, "new", "b.star"), "b2")
	next(t, ch)
	// Deleted and created again, with other content.
	os.Remove(filepath.Join(root, "a.star"))
	next(t, ch)
	mustWrite(t, filepath.Join(root, "a.star"), "v3")
	next(t, ch)
}

// A save that leaves the content as it was is no change; one that
// changes it is.
func TestWatcherIgnoresSavesThatChangeNothing(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	file := filepath.Join(root, "a.star")
	mustWrite(t, file, "v1")
	w := newWatcher([]string{root}, quietLog())
	ch := make(chan string, 1)
	mustWrite(t, file, "v1")
	w.compare(ch, "file change")
	if len(ch) != 0 {
		t.Fatalf("a save of the same content reported %q", <-ch)
	}
	mustWrite(t, file, "v2")
	w.compare(ch, "file change")
	if len(ch) != 1 {
		t.Fatal("a save of new content was not reported")
	}
}

func TestWatcherDebouncesAStormOfSaves(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	mustWrite(t, filepath.Join(root, "a.star"), "v0")
	ch, stop := watchStoppable(t, root, nil)
	start := time.Now()
	for i := range 1000 {
		mustWrite(t, filepath.Join(root, "a.star"), fmt.Sprintf("v%d", i))
	}
	storm := time.Since(start)
	next(t, ch)
	deadline := time.After(watchQuiet + watchMaxDelay + time.Second)
	count := 1
	for done := false; !done; {
		select {
		case <-ch:
			count++
		case <-deadline:
			done = true
		}
	}
	// At most one comparison per watchMaxDelay while the storm lasted,
	// plus the one after it.
	if limit := int(storm/watchMaxDelay) + 2; count > limit {
		t.Errorf("%d reloads for 1000 saves in %s, want at most %d", count, storm, limit)
	}
	// And the last state is what it compared last: the final save was not
	// lost in the storm.
	if w := stop(); w.seen != treeHash([]string{root}) {
		t.Error("the watcher's last comparison is not of the files as the storm left them")
	}
}

func TestWatcherPollsWithoutEvents(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	mustWrite(t, filepath.Join(root, "a.star"), "v1")
	ch := watch(t, root, func(w *watcher) { w.events, w.poll = false, 20*time.Millisecond })
	mustWrite(t, filepath.Join(root, "a.star"), "v2")
	if got := next(t, ch); got != "poll" {
		t.Errorf("trigger %q, want poll", got)
	}
}

// A Kubernetes ConfigMap volume: the visible files are symlinks through
// ..data, which is swapped to a new directory by a rename.
func TestWatcherSeesAConfigMapSwap(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	mustWrite(t, filepath.Join(root, "..v1", "a.star"), "v1")
	os.Symlink("..v1", filepath.Join(root, "..data"))
	os.Symlink(filepath.Join("..data", "a.star"), filepath.Join(root, "a.star"))
	ch := watch(t, root, nil)
	mustWrite(t, filepath.Join(root, "..v2", "a.star"), "v2")
	os.Symlink("..v2", filepath.Join(root, "..data_tmp"))
	if err := os.Rename(filepath.Join(root, "..data_tmp"), filepath.Join(root, "..data")); err != nil {
		t.Fatal(err)
	}
	next(t, ch)
	if b, _ := os.ReadFile(filepath.Join(root, "a.star")); string(b) != "v2" {
		t.Fatalf("the swap did not happen: %q", b)
	}
}
