package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/symphony-go/symphony/tasks"
)

// Worker processes load their task's files themselves. To run exactly the
// code the daemon loaded, and not whatever the files hold by the time a
// process starts, they load a copy: every generation with a task of
// isolation = "process" writes the sources it read into a directory of
// its own, and the worker processes of its tasks load from there.

// snapshotsKept is how many generations' copies stay on disk: the pools of
// older generations have long drained.
const snapshotsKept = 8

// snapshots are the copies of the daemon's generations.
type snapshots struct {
	dir   string   // the daemon's own temporary directory
	roots []string // the tasks roots as given to run

	mu     sync.Mutex
	n      int
	kept   []string            // directories, oldest first
	byHash map[string]snapshot // a task's code → the copy it runs from
}

// snapshot is one generation's copy: the roots a worker process loads and
// how their positions are shown.
type snapshot struct {
	dir   string
	roots []string
	shown map[string]string
}

func newSnapshots(roots []string) (*snapshots, error) {
	dir, err := os.MkdirTemp("", fmt.Sprintf("symphony-%d-", os.Getpid()))
	if err != nil {
		return nil, fmt.Errorf("make a directory for worker processes' copies of the task files: %w", err)
	}
	return &snapshots{dir: dir, roots: roots, byHash: map[string]snapshot{}}, nil
}

// sources collects the files one load reads.
type sources map[string]map[string][]byte // root → rel → source

func (s sources) add(root, rel string, src []byte) {
	if s[root] == nil {
		s[root] = map[string][]byte{}
	}
	s[root][rel] = src
}

// keep writes a generation's sources if one of its tasks runs in worker
// processes, and makes it the copy those tasks' processes load.
func (ss *snapshots) keep(src sources, ts []tasks.Task) error {
	if ss == nil {
		return nil // check: nothing runs
	}
	var process []tasks.Task
	for _, t := range ts {
		if t.Spec.Isolation == tasks.Process {
			process = append(process, t)
		}
	}
	if len(process) == 0 {
		return nil
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.n++
	dir := filepath.Join(ss.dir, fmt.Sprintf("g%d", ss.n))
	snap := snapshot{dir: dir, shown: map[string]string{}}
	for i, given := range ss.roots {
		root := filepath.Clean(given)
		base := ""
		if info, err := os.Stat(given); err == nil && !info.IsDir() {
			root, base = filepath.Dir(root), filepath.Base(given)
		}
		copyRoot := filepath.Join(dir, fmt.Sprintf("r%d", i))
		for rel, b := range src[root] {
			p := filepath.Join(copyRoot, filepath.FromSlash(rel))
			if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
				return fmt.Errorf("copy task files for worker processes: %w", err)
			}
			if err := os.WriteFile(p, b, 0o600); err != nil {
				return fmt.Errorf("copy task files for worker processes: %w", err)
			}
		}
		snap.roots = append(snap.roots, filepath.Join(copyRoot, base))
		snap.shown[copyRoot] = root
	}
	for _, t := range process {
		ss.byHash[t.Spec.Hash] = snap
	}
	ss.kept = append(ss.kept, dir)
	for len(ss.kept) > snapshotsKept {
		old := ss.kept[0]
		ss.kept = ss.kept[1:]
		os.RemoveAll(old)
		for hash, s := range ss.byHash {
			if s.dir == old {
				delete(ss.byHash, hash)
			}
		}
	}
	return nil
}

// of returns the copy a task's worker processes load.
func (ss *snapshots) of(hash string) (snapshot, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s, ok := ss.byHash[hash]
	return s, ok
}

// remove deletes every copy.
func (ss *snapshots) remove() { os.RemoveAll(ss.dir) }
