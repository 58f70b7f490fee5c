package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// What the workers and reload benchmarks read about a running daemon: its
// /status, its processes in /proc and its JSON log as it is written.

// daemonStatus is the part of /status the benchmarks read.
type daemonStatus struct {
	Ready      bool `json:"ready"`
	Generation int  `json:"generation"`
	LastReload *struct {
		At      time.Time `json:"at"`
		Success bool      `json:"success"`
		Error   string    `json:"error"`
	} `json:"last_reload"`
	Settings struct {
		ScalingInterval float64 `json:"scaling_interval_seconds"`
	} `json:"settings"`
	Tasks []taskStatus `json:"tasks"`
}

type taskStatus struct {
	Name      string `json:"name"`
	WorkModel string `json:"work_model"`
	Isolation string `json:"isolation"`
	Workers   struct {
		Now  int `json:"now"`
		Busy int `json:"busy"`
		Min  int `json:"min"`
		Max  int `json:"max"`
	} `json:"workers"`
	Prefetch   int            `json:"prefetch"`
	QueueDepth int64          `json:"queue_depth"`
	Draining   int            `json:"draining"`
	Messages   map[string]int `json:"messages"`
}

// status reads /status.
func (d *daemon) status(ctx context.Context) (daemonStatus, error) {
	var st daemonStatus
	code, body, err := get(ctx, d.admin+"/status")
	if err != nil || code != http.StatusOK {
		return st, fmt.Errorf("GET /status: %d %v", code, err)
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, fmt.Errorf("read /status: %v", err)
	}
	return st, nil
}

// task reads /status, which must show the one task name.
func (d *daemon) task(ctx context.Context, name string) (taskStatus, error) {
	st, err := d.status(ctx)
	if err != nil {
		return taskStatus{}, err
	}
	if len(st.Tasks) != 1 || st.Tasks[0].Name != name {
		return taskStatus{}, fmt.Errorf("/status does not show the one task %s: %+v", name, st.Tasks)
	}
	return st.Tasks[0], nil
}

// waitTask polls the task's /status every pollEvery until ok holds, for
// at most limit; it fails if the daemon exits.
func (d *daemon) waitTask(ctx context.Context, name string, limit time.Duration, what string, ok func(taskStatus) bool) (taskStatus, time.Time, error) {
	deadline := time.Now().Add(limit)
	for {
		select {
		case <-d.proc.done:
			return taskStatus{}, time.Time{}, fmt.Errorf("the daemon exited while waiting for %s: %v", what, d.proc.err)
		default:
		}
		t, err := d.task(ctx, name)
		if err != nil {
			return t, time.Time{}, err
		}
		now := time.Now()
		if ok(t) {
			return t, now, nil
		}
		if now.After(deadline) {
			return t, time.Time{}, fmt.Errorf("no %s after %s: task status %+v", what, limit, t)
		}
		if err := sleepCtx(ctx, pollEvery); err != nil {
			return t, time.Time{}, err
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// pid is the daemon's process id.
func (d *daemon) pid() int { return d.proc.cmd.Process.Pid }

// ppid is the parent of pid, from /proc/PID/stat; 0 when it is gone.
func ppid(pid int) int {
	f := statFields(pid)
	if len(f) < 2 {
		return 0
	}
	p, _ := strconv.Atoi(f[1]) // field 4
	return p
}

// children are the processes whose parent is pid, in pid order.
func children(pid int) []int {
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, d := range dirs {
		p, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		if ppid(p) == pid {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// descendants are pid's children, theirs, and so on.
func descendants(pid int) []int {
	var out []int
	todo := []int{pid}
	for len(todo) > 0 {
		p := todo[0]
		todo = todo[1:]
		kids := children(p)
		out = append(out, kids...)
		todo = append(todo, kids...)
	}
	return out
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	f := statFields(pid)
	return len(f) > 0 && f[0] != "Z"
}

// cmdline is the command line of pid, arguments separated by spaces.
func cmdline(pid int) string {
	b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}

// memory is a process's resident memory: RSS (VmRSS of /proc/PID/status,
// every resident page it maps, shared ones whole) and PSS
// (/proc/PID/smaps_rollup: each shared page divided among the processes
// mapping it), in bytes.
type memory struct {
	rss, pss int64
}

func memOf(pid int) (memory, error) {
	var m memory
	dir := filepath.Join("/proc", strconv.Itoa(pid))
	rss, err := kBField(filepath.Join(dir, "status"), "VmRSS:")
	if err != nil {
		return m, err
	}
	pss, err := kBField(filepath.Join(dir, "smaps_rollup"), "Pss:")
	if err != nil {
		return m, err
	}
	return memory{rss: rss, pss: pss}, nil
}

// kBField reads "NAME   123 kB" from a /proc file, in bytes.
func kBField(path, name string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("%s: cannot read %q", path, line)
		}
		v, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %q: %v", path, line, err)
		}
		return v << 10, nil
	}
	return 0, fmt.Errorf("%s has no %s line", path, name)
}

// mib writes bytes in MiB.
func mib(b float64) string { return fmt.Sprintf("%.1f MiB", b/(1<<20)) }

// logEvent is one line of the daemon's JSON log.
type logEvent struct {
	Time  time.Time `json:"time"`
	Level string    `json:"level"`
	Msg   string    `json:"msg"`
	Task  string    `json:"task"`
	// The "handled" lines the benchmarks' tasks write.
	Version string `json:"version"`
	Seq     *int   `json:"seq"`
	At      int64  `json:"at"` // unix nanoseconds, from the handler's time.now()
	// Sent is when the load benchmark's publisher sent the message (unix
	// nanoseconds, its clock).
	Sent int64 `json:"sent"`
	// WorkerPID is set on the lines of worker processes.
	WorkerPID int `json:"worker_pid"`
	raw       []byte
}

// follower reads a log file as it grows, one complete line at a time.
type follower struct {
	f       *os.File
	partial []byte
	buf     []byte
}

func follow(path string) (*follower, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	return &follower{f: f, buf: make([]byte, 1<<16)}, nil
}

func (f *follower) close() { f.f.Close() }

// poll hands every line written since the last poll to fn. A line that is
// not JSON (a Go panic, say) is an error: the daemon logs JSON only.
func (f *follower) poll(fn func(logEvent) error) error {
	for {
		n, err := f.f.Read(f.buf)
		f.partial = append(f.partial, f.buf[:n]...)
		for {
			i := bytes.IndexByte(f.partial, '\n')
			if i < 0 {
				break
			}
			line := f.partial[:i]
			if len(bytes.TrimSpace(line)) > 0 {
				var ev logEvent
				if jerr := json.Unmarshal(line, &ev); jerr != nil {
					return fmt.Errorf("the daemon logged a line that is not JSON: %q", line)
				}
				ev.raw = append([]byte(nil), line...)
				if ferr := fn(ev); ferr != nil {
					return ferr
				}
			}
			f.partial = f.partial[i+1:]
		}
		if err == io.EOF || n == 0 {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
