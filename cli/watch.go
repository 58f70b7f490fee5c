package cli

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Defaults of the watcher: a save is acted on after the files have been
// quiet for watchQuiet, or watchMaxDelay after the first change at most;
// watchPoll compares the files anyway, for file systems that send no
// events (NFS, some container volumes).
const (
	watchQuiet    = 100 * time.Millisecond
	watchMaxDelay = time.Second
	watchPoll     = 10 * time.Second
)

// watcher tells of changes to the task files under the roots. Events are
// only hints: when they settle, it hashes every file again and speaks only
// if the hash differs from the last one it saw, so a save that changes
// nothing does nothing, and an editor's rename-and-replace, a git
// checkout, a deleted and re-created file or a Kubernetes ConfigMap's
// symlink swap all come down to the same comparison.
type watcher struct {
	roots []string
	log   *slog.Logger
	// events: use file system events; poll: compare every so often
	// (zero: never).
	events         bool
	quiet, longest time.Duration
	poll           time.Duration
	// seen is the hash of the files as last compared.
	seen string
	fsw  *fsnotify.Watcher
}

func newWatcher(roots []string, log *slog.Logger) *watcher {
	return &watcher{roots: roots, log: log, events: true, quiet: watchQuiet, longest: watchMaxDelay,
		poll: watchPoll, seen: treeHash(roots)}
}

// start watches the directories, so that every change from now on is
// seen; run reports them.
func (w *watcher) start() {
	if !w.events {
		return
	}
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		w.log.Warn("file events are not available; comparing the task files every interval instead",
			"err", err, "interval", w.poll.String())
		return
	}
	w.fsw = fsw
	for _, r := range w.roots {
		w.watchTree(fsw, r)
	}
}

// run sends a trigger on changed whenever the files differ from when it
// last looked, until ctx ends.
func (w *watcher) run(ctx context.Context, changed chan<- string) {
	fsw := w.fsw
	var events <-chan fsnotify.Event
	var errs <-chan error
	if fsw != nil {
		defer fsw.Close()
		events, errs = fsw.Events, fsw.Errors
	}
	var poll <-chan time.Time
	if w.poll > 0 {
		t := time.NewTicker(w.poll)
		defer t.Stop()
		poll = t.C
	}
	var settle *time.Timer
	var settled <-chan time.Time
	var first time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-events:
			if ev.Has(fsnotify.Create) {
				if info, err := os.Lstat(ev.Name); err == nil && info.IsDir() && !hidden(ev.Name) {
					w.watchTree(fsw, ev.Name)
				}
			}
			if ev.Op == fsnotify.Chmod {
				continue
			}
			now := time.Now()
			if settled == nil {
				first = now
			}
			wait := min(w.quiet, w.longest-now.Sub(first))
			if settle == nil {
				settle = time.NewTimer(wait)
			} else {
				settle.Reset(wait)
			}
			settled = settle.C
		case err := <-errs:
			// An overflowed queue lost events: compare now.
			w.log.Warn("file events", "err", err)
			w.compare(changed, "file change")
		case <-settled:
			settled = nil
			w.compare(changed, "file change")
		case <-poll:
			w.compare(changed, "poll")
		}
	}
}

// compare hashes the files and sends trigger if they changed.
func (w *watcher) compare(changed chan<- string, trigger string) {
	h := treeHash(w.roots)
	if h == w.seen {
		return
	}
	w.seen = h
	select {
	case changed <- trigger:
	default: // a reload is due already; it reads the newest files
	}
}

// treeOf is the directory a tasks root stands for: the root, or for a
// single task file its directory, whose libraries and symphony.star the
// file may use.
func treeOf(root string) string {
	if info, err := os.Stat(root); err == nil && !info.IsDir() {
		return filepath.Dir(root)
	}
	return root
}

// watchTree watches the tree of root, every directory but hidden ones.
func (w *watcher) watchTree(fsw *fsnotify.Watcher, root string) {
	dir := treeOf(root)
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if p != dir && hidden(p) {
			return filepath.SkipDir
		}
		if err := fsw.Add(p); err != nil {
			w.log.Warn("watch directory", "dir", p, "err", err)
		}
		return nil
	})
}

func hidden(p string) bool { return strings.HasPrefix(filepath.Base(p), ".") }

// treeHash covers the name and content of every .star file under the
// roots but task tests (*_test.star, which the daemon never loads),
// following symlinks to files, and the errors met reading them.
func treeHash(roots []string) string {
	h := sha256.New()
	for _, root := range roots {
		r := treeOf(root)
		var files []string
		err := filepath.WalkDir(r, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				fmt.Fprintf(h, "error\x00%s\x00%v\x00", p, err)
				return nil
			}
			if p != r && hidden(p) {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if !d.IsDir() && strings.HasSuffix(p, ".star") && !strings.HasSuffix(p, "_test.star") {
				files = append(files, p)
			}
			return nil
		})
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(h, "error\x00%s\x00%v\x00", r, err)
		}
		slices.Sort(files)
		for _, p := range files {
			b, err := os.ReadFile(p)
			if err != nil {
				fmt.Fprintf(h, "file\x00%s\x00error\x00%v\x00", p, err)
				continue
			}
			fmt.Fprintf(h, "file\x00%s\x00%d\x00", p, len(b))
			h.Write(b)
		}
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}
