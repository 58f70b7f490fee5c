package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
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
}

// symphonySetup is one configuration of the daemon to measure.
type symphonySetup struct {
	n, workers, prefetch int
	binary               string
	dir                  string // fresh, holds tasks, database and logs
	profile              string // CPU profile of the draining daemon; binary must honour it
}

// task is the trivial task: every message acked at once.
const noopTask = `def work(payload, meta):
    return True

task(
    name = "noop",
    subscribe_to = ["noop.#"],
    work = work,
    max_workers = %d,
    prefetch = %d,
)
`

// payload is one message; the i-th gets its index so that no two are
// equal.
const payloadFormat = `{"id": %d, "name": "a small json payload"}`

func (s symphonySetup) broker() string { return "sqlite:" + filepath.Join(s.dir, "symphony.db") }

func (s symphonySetup) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, s.binary, args...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(),
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
	tasksDir := filepath.Join(s.dir, "tasks")
	if err := os.MkdirAll(tasksDir, 0o755); err != nil {
		return r, err
	}
	if err := os.WriteFile(filepath.Join(tasksDir, "noop.star"), fmt.Appendf(nil, noopTask, s.workers, s.prefetch), 0o644); err != nil {
		return r, err
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
	d, err := startDaemon(ctx, s, tasksDir, "declare", "")
	if err != nil {
		return r, err
	}
	if _, err := d.waitReady(ctx); err != nil {
		d.proc.kill()
		return r, fmt.Errorf("first daemon: %w\n%s", err, d.logTail())
	}
	if err := d.proc.stop(30 * time.Second); err != nil {
		return r, fmt.Errorf("first daemon: %w\n%s", err, d.logTail())
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

	// 3. Drain.
	started := time.Now()
	d, err = startDaemon(ctx, s, tasksDir, "drain", s.profile)
	if err != nil {
		return r, err
	}
	defer d.proc.kill()
	ready, err := d.waitReady(ctx)
	if err != nil {
		return r, fmt.Errorf("daemon: %w\n%s", err, d.logTail())
	}
	done, counts, err := d.waitAcked(ctx, s.n)
	if err != nil {
		return r, fmt.Errorf("daemon: %w\n%s", err, d.logTail())
	}
	r.drainStart, r.drainReady = done.Sub(started), done.Sub(ready)
	if err := d.proc.stop(30 * time.Second); err != nil {
		return r, fmt.Errorf("daemon: %w\n%s", err, d.logTail())
	}
	if counts["retry"] != 0 || counts["dead"] != 0 {
		return r, fmt.Errorf("the noop task retried %d and dead-lettered %d messages; it must ack all\n%s", counts["retry"], counts["dead"], d.logTail())
	}
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
	cmd := s.command(ctx, "run", "--admin-addr", port, tasksDir)
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

var client = &http.Client{Timeout: 5 * time.Second}

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

// waitAcked polls /status until the noop task has acked n messages, and
// returns when it saw that and the counts by outcome.
func (d *daemon) waitAcked(ctx context.Context, n int) (time.Time, map[string]int, error) {
	last := map[string]int{}
	progress := time.Now()
	for {
		if err := ctx.Err(); err != nil {
			return time.Time{}, nil, err
		}
		select {
		case <-d.proc.done:
			return time.Time{}, nil, fmt.Errorf("exited while draining (%v): counts %v", d.proc.err, last)
		default:
		}
		code, body, err := get(ctx, d.admin+"/status")
		if err != nil || code != http.StatusOK {
			return time.Time{}, nil, fmt.Errorf("GET /status: %d %v", code, err)
		}
		var st struct {
			Tasks []struct {
				Name     string         `json:"name"`
				Messages map[string]int `json:"messages"`
			} `json:"tasks"`
		}
		if err := json.Unmarshal(body, &st); err != nil {
			return time.Time{}, nil, fmt.Errorf("read /status: %v", err)
		}
		if len(st.Tasks) != 1 || st.Tasks[0].Name != "noop" {
			return time.Time{}, nil, fmt.Errorf("/status does not show the one task noop: %s", body)
		}
		m := st.Tasks[0].Messages
		settled := m["ack"] + m["retry"] + m["dead"]
		if settled >= n {
			if settled > n || m["ack"] != n {
				return time.Time{}, m, fmt.Errorf("%d messages published, outcomes %v", n, m)
			}
			return time.Now(), m, nil
		}
		if settled != last["ack"]+last["retry"]+last["dead"] {
			progress = time.Now()
		}
		if time.Since(progress) > 30*time.Second {
			return time.Time{}, m, fmt.Errorf("no progress for 30s: outcomes %v of %d", m, n)
		}
		last = m
		time.Sleep(pollEvery)
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
