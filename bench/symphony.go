package main

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	_ "modernc.org/sqlite" // database/sql driver "sqlite", for the final count
)

// symphonyRun is one pass of symphony through the embedded broker.
type symphonyRun struct {
	publish time.Duration // `symphony publish --file`, wall clock of the command
	// publishSelf is the rate the publish command printed: its own clock,
	// from the broker open to the last commit.
	publishSelf float64
	// drainStart: from starting `symphony run` until every message was
	// acked; drainReady: from /readyz answering 200.
	drainStart, drainReady time.Duration
	// cpu is the daemon's CPU time from ready to the last ack.
	cpu time.Duration
}

// symphonySetup is one configuration of the daemon to measure.
type symphonySetup struct {
	n, workers, prefetch int
	binary               string
	dir                  string // fresh, holds tasks, database and logs
	profile              string // CPU profile of the draining daemon; binary must honour it
	// brokerURL is the daemon's --broker; empty means a fresh sqlite:
	// database in dir.
	brokerURL string
	// args go after `run` on every daemon's command line (flags beat
	// the environment's warn level and JSON format).
	args []string
	// task, when set, replaces noopTask: the same format (min_workers,
	// max_workers, prefetch) and the same name and pattern.
	task string
	// files are written into the tasks directory beside the task
	// (symphony.star, for one).
	files map[string]string
}

// noopTask is the trivial task: every message acked at once, by a pool of a
// fixed size (min_workers = max_workers), like River's MaxWorkers: the
// longlived autoscaler does not grow a pool whose backlog is draining.
const noopTask = `def work(payload, meta):
    return True

task(
    name = "noop",
    subscribe_to = ["noop.#"],
    work = work,
    min_workers = %d,
    max_workers = %d,
    prefetch = %d,
)
`

// payload is one message; the i-th gets its index so that no two are
// equal.
const payloadFormat = `{"id": %d, "name": "a small json payload"}`

func (s symphonySetup) broker() string {
	if s.brokerURL != "" {
		return s.brokerURL
	}
	return "sqlite:" + filepath.Join(s.dir, "symphony.db")
}

func (s symphonySetup) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, s.binary, args...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(),
		// The daemon's copies of the task files (for worker processes)
		// go in the run's directory, removed with it even when the
		// daemon is killed.
		"TMPDIR="+s.dir,
		"SYMPHONY_BROKER="+s.broker(),
		"SYMPHONY_LOG_FORMAT=json",
		"SYMPHONY_LOG_LEVEL=warn",
	)
	return cmd
}

// runSymphony declares the queue with a first daemon, publishes n messages
// with `symphony publish --file` while no daemon runs, then starts the
// daemon again and times it until every message is acked.
func runSymphony(ctx context.Context, s symphonySetup) (symphonyRun, error) {
	var r symphonyRun
	src := noopTask
	if s.task != "" {
		src = s.task
	}
	tasksDir, err := writeTask(s.dir, "noop", fmt.Sprintf(src, s.workers, s.workers, s.prefetch))
	if err != nil {
		return r, err
	}
	for name, body := range s.files {
		if err := os.WriteFile(filepath.Join(tasksDir, name), []byte(body), 0o644); err != nil {
			return r, err
		}
	}
	lines := filepath.Join(s.dir, "lines.jsonl")
	var buf bytes.Buffer
	for i := range s.n {
		fmt.Fprintf(&buf, payloadFormat+"\n", i)
	}
	if err := os.WriteFile(lines, buf.Bytes(), 0o644); err != nil {
		return r, err
	}

	// 1. Declare the queue: a daemon that starts, becomes ready and stops.
	if _, err := declareWithDaemon(ctx, s, tasksDir); err != nil {
		return r, err
	}

	// 2. Publish.
	pub := s.command(ctx, "publish", "--file", lines, "noop.job")
	var out bytes.Buffer
	pub.Stdout, pub.Stderr = &out, &out
	t := time.Now()
	if err := pub.Run(); err != nil {
		return r, fmt.Errorf("symphony publish --file: %v\n%s", err, out.String())
	}
	r.publish = time.Since(t)
	r.publishSelf, err = publishedRate(out.String(), s.n)
	if err != nil {
		return r, err
	}
	if depth, err := countRows(ctx, s, "messages"); err != nil {
		return r, err
	} else if depth != s.n {
		return r, fmt.Errorf("after publishing %d messages the queue holds %d", s.n, depth)
	}

	// 3. Drain, counting acks in /status.
	dr, d, err := drainWithDaemon(ctx, s, tasksDir, func(d *daemon) ackCounter { return d.statusCounter("noop") }, 0)
	if err != nil {
		return r, err
	}
	r.drainStart, r.drainReady, r.cpu = dr.start, dr.ready, dr.cpu
	// Every message was handled once and is gone from the database.
	for _, table := range []string{"messages", "bodies", "dead"} {
		left, err := countRows(ctx, s, table)
		if err != nil {
			return r, err
		}
		if left != 0 {
			return r, fmt.Errorf("after draining, table %s of the broker still holds %d rows", table, left)
		}
	}
	if logged := d.warnings(); logged != "" {
		return r, fmt.Errorf("the daemon logged warnings or errors during the run:\n%s", logged)
	}
	return r, nil
}

// writeTask writes one task file, NAME.star, into DIR/tasks and returns
// that directory.
func writeTask(dir, name, src string) (string, error) {
	tasksDir := filepath.Join(dir, "tasks")
	if err := os.MkdirAll(tasksDir, 0o755); err != nil {
		return "", err
	}
	return tasksDir, os.WriteFile(filepath.Join(tasksDir, name+".star"), []byte(src), 0o644)
}

// declareWithDaemon starts `symphony run`, waits until it is ready (its
// queues declared and bound), reads its /status and stops it with
// SIGTERM.
func declareWithDaemon(ctx context.Context, s symphonySetup, tasksDir string) ([]byte, error) {
	d, err := startDaemon(ctx, s, tasksDir, "declare", "")
	if err != nil {
		return nil, err
	}
	if _, err := d.waitReady(ctx); err != nil {
		d.proc.kill()
		return nil, fmt.Errorf("first daemon: %w\n%s", err, d.logTail())
	}
	code, status, err := get(ctx, d.admin+"/status")
	if err != nil || code != http.StatusOK {
		d.proc.kill()
		return nil, fmt.Errorf("first daemon: GET /status: %d %v", code, err)
	}
	if err := d.proc.stop(30 * time.Second); err != nil {
		return nil, fmt.Errorf("first daemon: %w\n%s", err, d.logTail())
	}
	return status, nil
}

// drained is how long a daemon took to settle every message: from
// starting the process and from /readyz first answering 200.
type drained struct {
	start, ready time.Duration
	// cpu is the daemon's CPU time from ready to done, brokerCPU that of
	// the process brokerPID (when not 0).
	cpu, brokerCPU time.Duration
}

// drainWithDaemon starts `symphony run` (profiled when s.profile is set),
// times it until counts shows s.n acks and nothing else (waitAcked checks
// that) and stops it with SIGTERM. The stopped daemon is returned for its
// log.
func drainWithDaemon(ctx context.Context, s symphonySetup, tasksDir string, counter func(*daemon) ackCounter, brokerPID int) (drained, *daemon, error) {
	var r drained
	started := time.Now()
	d, err := startDaemon(ctx, s, tasksDir, "drain", s.profile)
	if err != nil {
		return r, nil, err
	}
	defer d.proc.kill()
	ready, err := d.waitReady(ctx)
	if err != nil {
		return r, d, fmt.Errorf("daemon: %w\n%s", err, d.logTail())
	}
	cpu := startCPU(d.proc.cmd.Process.Pid, brokerPID)
	done, err := d.waitAcked(ctx, s.n, counter(d))
	if err != nil {
		return r, d, fmt.Errorf("daemon: %w\n%s", err, d.logTail())
	}
	r.cpu, r.brokerCPU = cpu.stop()
	r.start, r.ready = done.Sub(started), done.Sub(ready)
	if err := d.proc.stop(30 * time.Second); err != nil {
		return r, d, fmt.Errorf("daemon: %w\n%s", err, d.logTail())
	}
	return r, d, nil
}

// publishedRate reads "published N messages to KEY in D (R/s)" and checks
// N.
func publishedRate(out string, n int) (float64, error) {
	i := strings.LastIndex(out, "published ")
	if i < 0 {
		return 0, fmt.Errorf("symphony publish did not say what it published:\n%s", out)
	}
	var sent int
	var key, took, rate string
	if _, err := fmt.Sscanf(out[i:], "published %d messages to %s in %s %s", &sent, &key, &took, &rate); err != nil {
		return 0, fmt.Errorf("read %q: %v", out[i:], err)
	}
	if sent != n {
		return 0, fmt.Errorf("symphony publish sent %d messages, not %d", sent, n)
	}
	v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimPrefix(rate, "("), "/s)"), 64)
	if err != nil {
		return 0, fmt.Errorf("read rate in %q: %v", out[i:], err)
	}
	return v, nil
}

// countRows counts a table of the broker's database, read-only, while no
// daemon runs.
func countRows(ctx context.Context, s symphonySetup, table string) (int, error) {
	db, err := sql.Open("sqlite", "file:"+filepath.Join(s.dir, "symphony.db")+"?mode=ro")
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var n int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		return 0, fmt.Errorf("count rows of %s: %w", table, err)
	}
	return n, nil
}

// daemon is a running `symphony run`.
type daemon struct {
	proc  *process
	admin string
	log   string // its standard error
}

func startDaemon(ctx context.Context, s symphonySetup, tasksDir, name, profile string) (*daemon, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	d := &daemon{admin: "http://" + port, log: filepath.Join(s.dir, name+".log")}
	logf, err := os.Create(d.log)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	args := append([]string{"run", "--admin-addr", port}, s.args...)
	cmd := s.command(ctx, append(args, tasksDir)...)
	if profile != "" {
		cmd.Env = append(cmd.Env, "SYMPHONY_BENCH_CPUPROFILE="+profile)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if d.proc, err = start(ctx, cmd); err != nil {
		return nil, fmt.Errorf("start symphony run: %w", err)
	}
	return d, nil
}

// freePort is a loopback address nothing listens on now.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// client asks for uncompressed answers: gzipping every /metrics scrape
// would cost the daemon more CPU than serving it.
var client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableCompression: true}}

func get(ctx context.Context, url string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// waitReady polls /readyz every millisecond and returns when it first
// answered 200.
func (d *daemon) waitReady(ctx context.Context) (time.Time, error) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if err := ctx.Err(); err != nil {
			return time.Time{}, err
		}
		select {
		case <-d.proc.done:
			return time.Time{}, fmt.Errorf("exited before it was ready: %v", d.proc.err)
		default:
		}
		if code, _, err := get(ctx, d.admin+"/readyz"); err == nil && code == http.StatusOK {
			return time.Now(), nil
		}
		time.Sleep(time.Millisecond)
	}
	return time.Time{}, fmt.Errorf("not ready after 30s")
}

// pollEvery is how often the harness asks for the ack count: often enough
// that the last poll adds little to a drain of a second or less, rarely
// enough that the daemon does not notice.
const pollEvery = 10 * time.Millisecond

// countsFunc reads how many messages the daemon's one task settled, by
// outcome (ack, retry, dead).
type countsFunc func(ctx context.Context) (map[string]int, error)

// statusCounts reads the counts of /status, which must show the one task.
func (d *daemon) statusCounts(task string) countsFunc {
	return func(ctx context.Context) (map[string]int, error) {
		t, err := d.task(ctx, task)
		return t.Messages, err
	}
}

// metricsCounts reads the counter symphony_messages_total{task, outcome}
// of /metrics; an outcome not counted yet is 0.
func (d *daemon) metricsCounts(task string) countsFunc {
	return func(ctx context.Context) (map[string]int, error) {
		code, body, err := get(ctx, d.admin+"/metrics")
		if err != nil || code != http.StatusOK {
			return nil, fmt.Errorf("GET /metrics: %d %v", code, err)
		}
		return messageCounts(string(body), task)
	}
}

// messageCounts reads the samples of symphony_messages_total for task
// from a Prometheus text exposition.
func messageCounts(exposition, task string) (map[string]int, error) {
	const name = "symphony_messages_total{"
	out := map[string]int{"ack": 0, "retry": 0, "dead": 0}
	for line := range strings.SplitSeq(exposition, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok {
			return nil, fmt.Errorf("read /metrics line %q", line)
		}
		var t, outcome string
		for l := range strings.SplitSeq(labels, ",") {
			k, v, _ := strings.Cut(l, "=")
			v = strings.Trim(v, `"`)
			switch k {
			case "task":
				t = v
			case "outcome":
				outcome = v
			}
		}
		if t != task {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return nil, fmt.Errorf("read /metrics line %q: %v", line, err)
		}
		out[outcome] = int(f)
	}
	return out, nil
}

// ackCounter is how the harness follows a drain: where it reads the
// counts, and how often. Between polls it sleeps half the time the last
// rate says the rest of the drain will take, kept within [min, max]:
// few polls while far from the end, a fine one near it. min = max polls
// at a fixed interval.
type ackCounter struct {
	read     countsFunc
	min, max time.Duration
}

// statusCounter reads /status every pollEvery.
func (d *daemon) statusCounter(task string) ackCounter {
	return ackCounter{read: d.statusCounts(task), min: pollEvery, max: pollEvery}
}

// metricsCounter reads /metrics, which costs the daemon about a
// millisecond of CPU per scrape (the process collector reads /proc): at
// most every 2 ms near the end of the drain, at least every 100 ms.
func (d *daemon) metricsCounter(task string) ackCounter {
	return ackCounter{read: d.metricsCounts(task), min: 2 * time.Millisecond, max: 100 * time.Millisecond}
}

// next is the pause before the next poll, with settled of n messages done
// and rate the last rate seen (0 when unknown).
func (c ackCounter) next(settled, n int, rate float64) time.Duration {
	pause := pollEvery
	if rate > 0 {
		pause = time.Duration(float64(n-settled) / rate / 2 * float64(time.Second))
	}
	return min(max(pause, c.min), c.max)
}

// waitAcked polls c until the task has settled n messages, and returns
// when it saw that and the counts by outcome. Every one of the n must be
// an ack.
func (d *daemon) waitAcked(ctx context.Context, n int, c ackCounter) (time.Time, error) {
	last, lastAt := 0, time.Now()
	progress := time.Now()
	var lastCounts map[string]int
	for {
		if err := ctx.Err(); err != nil {
			return time.Time{}, err
		}
		select {
		case <-d.proc.done:
			return time.Time{}, fmt.Errorf("exited while draining (%v): counts %v", d.proc.err, lastCounts)
		default:
		}
		m, err := c.read(ctx)
		if err != nil {
			return time.Time{}, err
		}
		now := time.Now()
		settled := m["ack"] + m["retry"] + m["dead"]
		if settled >= n {
			if settled > n || m["ack"] != n {
				return time.Time{}, fmt.Errorf("%d messages published, outcomes %v", n, m)
			}
			return now, nil
		}
		rate := float64(settled-last) / now.Sub(lastAt).Seconds()
		if settled != last {
			progress = now
		}
		if now.Sub(progress) > 30*time.Second {
			return time.Time{}, fmt.Errorf("no progress for 30s: outcomes %v of %d", m, n)
		}
		last, lastAt, lastCounts = settled, now, m
		time.Sleep(c.next(settled, n, rate))
	}
}

func (d *daemon) logTail() string {
	b, _ := os.ReadFile(d.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return "daemon log (" + d.log + "):\n" + string(b)
}

// warnings is every line of the log at level warn or above; the daemon
// runs at --log-level warn, so that is every line but the profile note.
func (d *daemon) warnings() string {
	b, _ := os.ReadFile(d.log)
	var out []string
	for line := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
		if line != "" && !strings.HasPrefix(line, "cpu profile:") {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
