// Package symphonytest runs the real symphony binary for end-to-end tests:
// it builds the binary once per test process, starts daemons whose JSON log
// lines become events a test can wait for, and runs one-off commands.
package symphonytest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Wait bounds every wait for an event: generous, for slow CI machines
// under the race detector.
const Wait = 30 * time.Second

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
	// binDir holds the binary; Main removes it when the tests end.
	binDir string
)

// Main runs a package's tests (call it from TestMain) and removes the
// binary they built: a test leaves nothing behind in the temporary
// directory.
func Main(m *testing.M) {
	dir, err := os.MkdirTemp("", "symphony-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Binary builds symphony (with the race detector when the tests run with
// it) once per process, and returns its path. The package's TestMain must
// call Main.
func Binary(t testing.TB) string {
	t.Helper()
	if binDir == "" {
		t.Fatal("symphonytest.Binary: call symphonytest.Main from the package's TestMain, which removes the binary at the end")
	}
	buildOnce.Do(func() {
		binary = filepath.Join(binDir, "symphony")
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		args := []string{"build", "-o", binary}
		if raceEnabled {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, ".")...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binary
}

// NeedsWorkerProcesses skips a test of isolation = "process" where the
// daemon refuses it (everywhere but Linux).
func NeedsWorkerProcesses(t testing.TB) {
	if runtime.GOOS != "linux" {
		t.Skipf("worker processes need Linux; this is %s", runtime.GOOS)
	}
}

// Env is the environment every command of a test shares: its own database
// and no admin port clash.
type Env struct {
	t   testing.TB
	Dir string
	// URL is the broker's URL.
	URL string
	// Vars are added to each command's environment.
	Vars []string
}

// NewEnv gives a test its own directory and embedded broker.
func NewEnv(t testing.TB) *Env {
	dir := t.TempDir()
	url := "sqlite:" + filepath.Join(dir, "symphony.db")
	// What a command puts in the temporary directory (a daemon's copies
	// of task files, even when a test kills it) goes with the test's.
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	vars := []string{
		"SYMPHONY_BROKER=" + url,
		"SYMPHONY_ADMIN_ADDR=127.0.0.1:0",
		"TMPDIR=" + tmp,
	}
	if os.Getenv("GORACE") == "" {
		// A binary built with -race sleeps a second as it exits, for
		// goroutines to report races: every command a test runs would
		// take a second longer. A race found is reported all the same.
		vars = append(vars, "GORACE=atexit_sleep_ms=0")
	}
	return &Env{t: t, Dir: dir, URL: url, Vars: vars}
}

func (e *Env) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, Binary(e.t), args...)
	cmd.Dir = e.Dir
	cmd.Env = append(os.Environ(), e.Vars...)
	return cmd
}

// Result is how a one-off command ended.
type Result struct {
	Code           int
	Stdout, Stderr string
}

// Run runs a command to its end, with stdin as its input.
func (e *Env) Run(stdin string, args ...string) Result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	cmd := e.command(ctx, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := Result{Stdout: out.String(), Stderr: errb.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.Code = exit.ExitCode()
	case err != nil:
		e.t.Fatalf("symphony %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// MustRun runs a command that must exit 0.
func (e *Env) MustRun(stdin string, args ...string) Result {
	e.t.Helper()
	r := e.Run(stdin, args...)
	if r.Code != 0 {
		e.t.Fatalf("symphony %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.Code, r.Stdout, r.Stderr)
	}
	return r
}

// Event is one JSON log line of a daemon.
type Event map[string]any

// Str returns an attribute as text.
func (ev Event) Str(key string) string {
	switch v := ev[key].(type) {
	case nil:
		return ""
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	default:
		b, _ := json.Marshal(v)
		return string(b)
	}
}

// Daemon is a running `symphony run`.
type Daemon struct {
	t    testing.TB
	cmd  *exec.Cmd
	done chan struct{}
	err  error

	mu      sync.Mutex
	events  []Event
	lines   []string
	changed chan struct{}
}

// Start starts `symphony run` with JSON logs at debug level and waits until
// it consumes.
func (e *Env) Start(args ...string) *Daemon {
	e.t.Helper()
	d := e.StartNoWait(args...)
	d.WaitFor("consuming", nil)
	return d
}

// StartNoWait starts `symphony run` without waiting for it to consume.
func (e *Env) StartNoWait(args ...string) *Daemon {
	e.t.Helper()
	all := append([]string{"run", "--log-format", "json", "--log-level", "debug"}, args...)
	cmd := e.command(context.Background(), all...)
	// Worker processes share the daemon's standard error; if one outlives
	// a killed daemon, do not wait for it forever.
	cmd.WaitDelay = 10 * time.Second
	stderr, err := cmd.StderrPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	d := &Daemon{t: e.t, cmd: cmd, done: make(chan struct{}), changed: make(chan struct{})}
	go d.read(stderr)
	e.t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			cmd.Process.Kill()
			<-d.done
		}
		if e.t.Failed() {
			e.t.Logf("daemon log:\n%s", d.Log())
		}
	})
	return d
}

func (d *Daemon) read(r interface{ Read([]byte) (int, error) }) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		var ev Event
		_ = json.Unmarshal([]byte(line), &ev)
		d.mu.Lock()
		d.lines = append(d.lines, line)
		if ev != nil {
			d.events = append(d.events, ev)
		}
		close(d.changed)
		d.changed = make(chan struct{})
		d.mu.Unlock()
	}
	d.err = d.cmd.Wait()
	close(d.done)
	d.mu.Lock()
	close(d.changed)
	d.changed = make(chan struct{})
	d.mu.Unlock()
}

// Log is everything the daemon wrote to standard error so far.
func (d *Daemon) Log() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.Join(d.lines, "\n")
}

// WaitFor waits for the first log event with message msg whose attributes
// include want, and returns it.
func (d *Daemon) WaitFor(msg string, want map[string]string) Event {
	d.t.Helper()
	return d.WaitForNth(1, msg, want)
}

// WaitForNth waits for the n-th such event.
func (d *Daemon) WaitForNth(n int, msg string, want map[string]string) Event {
	d.t.Helper()
	deadline := time.After(Wait)
	for {
		d.mu.Lock()
		seen := 0
		var found Event
		for _, ev := range d.events {
			if ev.Str("msg") != msg || !matches(ev, want) {
				continue
			}
			if seen++; seen == n {
				found = ev
				break
			}
		}
		changed := d.changed
		d.mu.Unlock()
		if found != nil {
			return found
		}
		select {
		case <-changed:
		case <-d.done:
			d.t.Fatalf("daemon exited (%v) before %d× %q %v", d.err, n, msg, want)
		case <-deadline:
			d.t.Fatalf("no %d× %q %v within %s", n, msg, want, Wait)
		}
	}
}

// EventsAll are all the events logged so far, in order.
func (d *Daemon) EventsAll() []Event {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]Event(nil), d.events...)
}

// EventsFrom are the events logged after the first i, so that a test
// reading a long log as it grows need not read it again from the start.
func (d *Daemon) EventsFrom(i int) []Event {
	d.mu.Lock()
	defer d.mu.Unlock()
	if i >= len(d.events) {
		return nil
	}
	return append([]Event(nil), d.events[i:]...)
}

// Changed is closed when the daemon next logs a line or exits.
func (d *Daemon) Changed() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.changed
}

// Events are the events with message msg logged so far.
func (d *Daemon) Events(msg string) []Event {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []Event
	for _, ev := range d.events {
		if ev.Str("msg") == msg {
			out = append(out, ev)
		}
	}
	return out
}

// Until waits until cond holds, checking it again whenever one of the
// daemons logs something.
func Until(t testing.TB, what string, cond func() bool, daemons ...*Daemon) {
	t.Helper()
	deadline := time.After(Wait)
	for {
		var changed []chan struct{}
		for _, d := range daemons {
			d.mu.Lock()
			changed = append(changed, d.changed)
			d.mu.Unlock()
		}
		if cond() {
			return
		}
		cases := make([]reflect.SelectCase, 0, len(changed)+1)
		for _, c := range changed {
			cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(c)})
		}
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(deadline)})
		if i, _, _ := reflect.Select(cases); i == len(changed) {
			t.Fatalf("waited %s for %s", Wait, what)
		}
	}
}

// Count is how many events with message msg whose attributes include want
// the daemon has logged so far.
func (d *Daemon) Count(msg string, want map[string]string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, ev := range d.events {
		if ev.Str("msg") == msg && matches(ev, want) {
			n++
		}
	}
	return n
}

func matches(ev Event, want map[string]string) bool {
	for k, v := range want {
		if ev.Str(k) != v {
			return false
		}
	}
	return true
}

// Pid is the daemon's process id.
func (d *Daemon) Pid() int { return d.cmd.Process.Pid }

// Signal sends sig to the daemon.
func (d *Daemon) Signal(sig syscall.Signal) {
	d.t.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		d.t.Fatal(err)
	}
}

// SignalIfRunning sends sig to the daemon unless it has exited.
func (d *Daemon) SignalIfRunning(sig syscall.Signal) {
	select {
	case <-d.done:
	default:
		_ = d.cmd.Process.Signal(sig)
	}
}

// Exit waits for the daemon to end and returns its exit code.
func (d *Daemon) Exit() int {
	d.t.Helper()
	select {
	case <-d.done:
	case <-time.After(Wait):
		d.t.Fatalf("daemon did not exit within %s", Wait)
	}
	var exit *exec.ExitError
	if errors.As(d.err, &exit) {
		return exit.ExitCode()
	}
	if d.err != nil {
		d.t.Fatal(d.err)
	}
	return 0
}

// Stop sends TERM and requires a clean exit.
func (d *Daemon) Stop() {
	d.t.Helper()
	d.Signal(syscall.SIGTERM)
	if code := d.Exit(); code != 0 {
		d.t.Fatalf("daemon exited %d after TERM", code)
	}
}

// WriteTasks writes files (name → source) into a new tasks directory and
// returns its path.
func WriteTasks(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tasks")
	for name, src := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// UseBroker points every later command of the environment at url.
func (e *Env) UseBroker(url string) {
	e.URL = url
	e.Vars = append(e.Vars, "SYMPHONY_BROKER="+url)
}

// AdminAddr is where the daemon's admin server listens.
func (d *Daemon) AdminAddr() string {
	d.t.Helper()
	return d.WaitFor("admin server listening", nil).Str("addr")
}

// Ready asks the daemon's /readyz and returns its status code and body.
func (d *Daemon) Ready() (int, string) {
	d.t.Helper()
	resp, err := http.Get("http://" + d.AdminAddr() + "/readyz")
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// WaitReady asks /readyz until it answers code (every 20ms: readiness is
// a question, not an event) and returns the body of that answer.
func (d *Daemon) WaitReady(code int) string {
	d.t.Helper()
	deadline := time.Now().Add(Wait)
	for {
		got, body := d.Ready()
		if got == code {
			return body
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("/readyz answered %d %q for %s, never %d", got, body, Wait, code)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
