package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/symphony-go/symphony/tasks"
)

// The calls benchmark: what a capability call costs beyond the work it
// asks for. On the embedded broker with W workers, three rates per
// resource:
//
//   - a: the resource alone, driven by a plain Go pool of W goroutines
//     (net/http with keep-alive), its limit;
//   - b: the same messages drained by a no-op task, the broker's limit;
//   - c: a task that does one call per message.
//
// Were the two costs simply added, c would be 1/(1/a + 1/b); the target
// is c ≥ 0.8 of that: the module adds next to nothing beyond the call.
func init() {
	register(benchmark{
		name:  "calls",
		about: "capability calls: an http task vs a plain Go pool of POSTs, an sql task vs a plain pgx pool of INSERTs, and a no-op drain",
		run:   benchCalls,
	})
}

// callsTarget is the target for c against 1/(1/a + 1/b).
const callsTarget = 0.8

// httpTask POSTs each message as JSON to the harness's server and acks
// when it answered 204.
const httpTask = `URL = %q

def work(payload, meta):
    r = http.post(URL, json = payload)
    if r.status != 204:
        fail("status " + str(r.status))
    return True

task(
    name = "noop",
    subscribe_to = ["noop.#"],
    work = work,
    min_workers = %%d,
    max_workers = %%d,
    prefetch = %%d,
    allow = ["http"],
    allow_hosts = ["127.0.0.1"],
)
`

// sqlTask inserts each message into PostgreSQL through the sql module.
const sqlTask = `def work(payload, meta):
    sql.exec("bench", "INSERT INTO ` + pgTable + ` (id, name) VALUES ($1, $2)", args = [payload["id"], payload["name"]])
    return True

task(
    name = "noop",
    subscribe_to = ["noop.#"],
    work = work,
    min_workers = %d,
    max_workers = %d,
    prefetch = %d,
    allow = ["sql"],
    databases = ["bench"],
)
`

// pgTable is the table both the plain pool and the sql task insert
// into, emptied before each of them runs.
const pgTable = "symphony_bench_calls"

// pgURL is the PostgreSQL of the sql row: SYMPHONY_TEST_POSTGRES_URL, as
// for symphony's tests, else the local one they default to.
func pgURL() string {
	if u := os.Getenv("SYMPHONY_TEST_POSTGRES_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/test"
}

// pgSink is the table and a pool to set it up and check it with.
type pgSink struct {
	url  string
	pool *pgxpool.Pool
}

func openPG(ctx context.Context, url string) (*pgSink, error) {
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := pool.Exec(cctx, `CREATE TABLE IF NOT EXISTS `+pgTable+` (id integer PRIMARY KEY, name text NOT NULL)`); err != nil {
		pool.Close()
		return nil, err
	}
	return &pgSink{url: url, pool: pool}, nil
}

func (p *pgSink) reset(ctx context.Context) error {
	_, err := p.pool.Exec(ctx, `TRUNCATE `+pgTable)
	return err
}

// check says whether the table holds ids 0..n-1, each once (the primary
// key refuses a second), and nothing else.
func (p *pgSink) check(ctx context.Context, n int) error {
	var count, lo, hi int
	if err := p.pool.QueryRow(ctx, `SELECT count(*), coalesce(min(id), -1), coalesce(max(id), -1) FROM `+pgTable).Scan(&count, &lo, &hi); err != nil {
		return err
	}
	if count != n || lo != 0 || hi != n-1 {
		return fmt.Errorf("table %s holds %d rows, ids %d to %d, not the %d ids 0 to %d", pgTable, count, lo, hi, n, n-1)
	}
	return nil
}

func (p *pgSink) close(ctx context.Context) {
	_, _ = p.pool.Exec(ctx, `DROP TABLE IF EXISTS `+pgTable)
	p.pool.Close()
}

// plainInserts is the PostgreSQL limit: W goroutines INSERT n rows through
// one pgx pool of W connections, as a Go program with no queue would.
func plainInserts(ctx context.Context, url string, n, workers int) (time.Duration, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return 0, err
	}
	cfg.MaxConns = int32(workers)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return 0, err
	}
	defer pool.Close()
	// Connected before the clock starts, as the daemon's pool is by its
	// first messages' time, give or take.
	conns := make([]*pgxpool.Conn, 0, workers)
	for range workers {
		c, err := pool.Acquire(ctx)
		if err != nil {
			return 0, err
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		c.Release()
	}
	var next atomic.Int64
	errs := make(chan error, workers)
	start := time.Now()
	for range workers {
		go func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					errs <- nil
					return
				}
				if _, err := pool.Exec(ctx, `INSERT INTO `+pgTable+` (id, name) VALUES ($1, $2)`, i, "a small json payload"); err != nil {
					errs <- fmt.Errorf("INSERT %d: %w", i, err)
					return
				}
			}
		}()
	}
	var first error
	for range workers {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return time.Since(start), first
}

// sinkMode is the first argument that makes this program the calls
// benchmark's HTTP server. It runs as a process of its own, so that the
// plain pool and the task both reach it across processes: in the
// harness's own process the plain pool would skip the scheduler's
// wake-ups that every request from the daemon pays.
const sinkMode = "calls-sink"

// runSink serves POST /in (a JSON object with an id, answered 204),
// GET /stats (what came) and POST /reset. It prints its address on its
// first line.
func runSink(stdout, stderr io.Writer) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	var (
		mu   sync.Mutex
		seen = map[int]int{}
		bad  int
	)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /in", func(w http.ResponseWriter, r *http.Request) {
		var m struct {
			ID *int `json:"id"`
		}
		err := json.NewDecoder(r.Body).Decode(&m)
		mu.Lock()
		defer mu.Unlock()
		if err != nil || m.ID == nil {
			bad++
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		seen[*m.ID]++
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		ids := make([]int, 0, len(seen))
		for id := range seen {
			ids = append(ids, id)
		}
		json.NewEncoder(w).Encode(sinkStats{IDs: ids, Bad: bad})
	})
	mux.HandleFunc("POST /reset", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		seen, bad = map[int]int{}, 0
	})
	fmt.Fprintf(stdout, "http://%s\n", ln.Addr())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}

type sinkStats struct {
	IDs []int `json:"ids"`
	Bad int   `json:"bad"`
}

// sink is the running sink process.
type sink struct {
	proc *process
	base string
	url  string // where POSTs go
}

func startSink(ctx context.Context) (*sink, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, self, sinkMode)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	p, err := start(ctx, cmd)
	if err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		p.kill()
		return nil, fmt.Errorf("the sink process said no address: %v", err)
	}
	base := strings.TrimSpace(line)
	return &sink{proc: p, base: base, url: base + "/in"}, nil
}

// reset forgets what was POSTed, for the next row.
func (s *sink) reset(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.base+"/reset", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// check says whether ids 0..n-1 each came, and nothing else.
func (s *sink) check(ctx context.Context, n int) error {
	code, body, err := get(ctx, s.base+"/stats")
	if err != nil || code != http.StatusOK {
		return fmt.Errorf("GET /stats of the sink: %d %v", code, err)
	}
	var st sinkStats
	if err := json.Unmarshal(body, &st); err != nil {
		return err
	}
	if st.Bad > 0 {
		return fmt.Errorf("the server got %d requests that were not a JSON object with an id", st.Bad)
	}
	got := make([]bool, n)
	for _, id := range st.IDs {
		if id < 0 || id >= n {
			return fmt.Errorf("the server got id %d, not one of the %d published", id, n)
		}
		got[id] = true
	}
	for i, ok := range got {
		if !ok {
			return fmt.Errorf("the server never got id %d (%d distinct ids of %d)", i, len(st.IDs), n)
		}
	}
	return nil
}

func (s *sink) close() { s.proc.kill() }

// plainPOSTs is the HTTP limit: W goroutines POST n JSON objects with one
// keep-alive client, as a Go program with no queue would.
func plainPOSTs(ctx context.Context, url string, n, workers int) (time.Duration, error) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers, DisableCompression: true}}
	defer client.CloseIdleConnections()
	var next atomic.Int64
	errs := make(chan error, workers)
	start := time.Now()
	for range workers {
		go func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					errs <- nil
					return
				}
				body := fmt.Sprintf(payloadFormat, i)
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
				if err != nil {
					errs <- err
					return
				}
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					errs <- err
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusNoContent {
					errs <- fmt.Errorf("POST %d: status %d", i, resp.StatusCode)
					return
				}
			}
		}()
	}
	var first error
	for range workers {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return time.Since(start), first
}

// callsRow is one resource's three rates over the runs.
type callsRow struct {
	resource string
	plain    string // what drove the resource alone
	task     string // what the task did
	a, b, c  rates
	// aCPU: the harness's CPU time per call in a; bCPU, cCPU: the
	// daemon's per message in b and c; in microseconds.
	aCPU, bCPU, cCPU rates
}

// expected is 1/(1/a + 1/b) of the medians.
func (r *callsRow) expected() float64 {
	a, b := r.a.median(), r.b.median()
	if a == 0 || b == 0 {
		return 0
	}
	return 1 / (1/a + 1/b)
}

type callsReport struct {
	machine               machine
	loadBefore, loadAfter string
	n, workers, runs      int
	rows                  []*callsRow
	skipped               []string
}

func benchCalls(ctx context.Context, e *env) (report, error) {
	o := e.opts
	binary, err := e.symphony(ctx)
	if err != nil {
		return nil, err
	}
	if o.cpuprofile != "" {
		if binary, err = e.symphonyProfiled(ctx); err != nil {
			return nil, err
		}
	}
	n := o.n
	if !o.nSet {
		n = 5000
	}
	rep := &callsReport{machine: e.machine, n: n, workers: o.workers, runs: o.runs, loadBefore: loadAvg()}

	srv, err := startSink(ctx)
	if err != nil {
		return nil, err
	}
	defer srv.close()
	httpRow := &callsRow{resource: "http", plain: fmt.Sprintf("%d goroutines, net/http keep-alive POSTs", o.workers),
		task: "`http.post(URL, json = payload)`, acked on 204"}
	rep.rows = append(rep.rows, httpRow)

	var sqlRow *callsRow
	var pg *pgSink
	sqlFiles := map[string]string{"symphony.star": fmt.Sprintf("config(databases = {\"bench\": %q})\n", pgURL())}
	if err := checkTask(ctx, e, binary, sqlTask, sqlFiles); err != nil {
		rep.skipped = append(rep.skipped, fmt.Sprintf("**sql**: not measured: this symphony does not take the sql task: %v", err))
	} else if pg, err = openPG(ctx, pgURL()); err != nil {
		rep.skipped = append(rep.skipped, fmt.Sprintf("**sql**: not measured: PostgreSQL at %s: %v", tasks.RedactURL(pgURL()), err))
	} else {
		defer pg.close(context.WithoutCancel(ctx))
		sqlRow = &callsRow{resource: "sql (PostgreSQL)", plain: fmt.Sprintf("%d goroutines INSERTing through one pgx pool of %d connections", o.workers, o.workers),
			task: "`sql.exec(\"bench\", \"INSERT INTO t (id, name) VALUES ($1, $2)\", args = [...])`"}
		rep.rows = append(rep.rows, sqlRow)
	}

	// drain runs symphony through the embedded broker with task (noopTask
	// when empty) and returns its rate from ready and its CPU time per
	// message in microseconds.
	drain := func(run int, label, task string, files map[string]string) (float64, float64, error) {
		dir, err := e.dir(fmt.Sprintf("run%d-%s", run+1, label))
		if err != nil {
			return 0, 0, err
		}
		profile := ""
		if o.cpuprofile != "" && run == 0 {
			if profile, err = filepath.Abs(filepath.Join(o.cpuprofile, "calls-"+label+".pprof")); err != nil {
				return 0, 0, err
			}
		}
		r, err := runSymphony(ctx, symphonySetup{n: n, workers: o.workers, prefetch: defaultPrefetch, binary: binary, dir: dir, task: task, files: files, profile: profile})
		e.drop(dir)
		if err != nil {
			return 0, 0, fmt.Errorf("run %d, %s: %w", run+1, label, err)
		}
		return rateOf(n, r.drainReady), perMessage(r.cpu, n), nil
	}

	// The measures of one run, in the order of the first; the order turns
	// with each run, so that none always goes first.
	steps := []func(run int) error{
		func(run int) error {
			if err := srv.reset(ctx); err != nil {
				return fmt.Errorf("reset the sink: %w", err)
			}
			cpu := selfCPU()
			took, err := plainPOSTs(ctx, srv.url, n, o.workers)
			cpu = selfCPU() - cpu
			if err == nil {
				err = srv.check(ctx, n)
			}
			if err != nil {
				return fmt.Errorf("run %d, plain POSTs: %w", run+1, err)
			}
			httpRow.a, httpRow.aCPU = append(httpRow.a, rateOf(n, took)), append(httpRow.aCPU, perMessage(cpu, n))
			return nil
		},
		func(run int) error {
			v, cpu, err := drain(run, "noop", "", nil)
			if err != nil {
				return err
			}
			for _, row := range rep.rows {
				row.b, row.bCPU = append(row.b, v), append(row.bCPU, cpu)
			}
			return nil
		},
		func(run int) error {
			if err := srv.reset(ctx); err != nil {
				return fmt.Errorf("reset the sink: %w", err)
			}
			v, cpu, err := drain(run, "http-task", fmt.Sprintf(httpTask, srv.url), nil)
			if err == nil {
				err = srv.check(ctx, n)
			}
			if err != nil {
				return fmt.Errorf("run %d, http task: %w", run+1, err)
			}
			httpRow.c, httpRow.cCPU = append(httpRow.c, v), append(httpRow.cCPU, cpu)
			return nil
		},
	}
	if sqlRow != nil {
		steps = append(steps,
			func(run int) error {
				if err := pg.reset(ctx); err != nil {
					return fmt.Errorf("empty %s: %w", pgTable, err)
				}
				cpu := selfCPU()
				took, err := plainInserts(ctx, pg.url, n, o.workers)
				cpu = selfCPU() - cpu
				if err == nil {
					err = pg.check(ctx, n)
				}
				if err != nil {
					return fmt.Errorf("run %d, plain INSERTs: %w", run+1, err)
				}
				sqlRow.a, sqlRow.aCPU = append(sqlRow.a, rateOf(n, took)), append(sqlRow.aCPU, perMessage(cpu, n))
				return nil
			},
			func(run int) error {
				if err := pg.reset(ctx); err != nil {
					return fmt.Errorf("empty %s: %w", pgTable, err)
				}
				v, cpu, err := drain(run, "sql-task", sqlTask, sqlFiles)
				if err == nil {
					err = pg.check(ctx, n)
				}
				if err != nil {
					return fmt.Errorf("run %d, sql task: %w", run+1, err)
				}
				sqlRow.c, sqlRow.cCPU = append(sqlRow.c, v), append(sqlRow.cCPU, cpu)
				return nil
			})
	}
	for run := range o.runs {
		for k := range steps {
			if err := steps[(k+run)%len(steps)](run); err != nil {
				return nil, err
			}
		}
		if o.verbose {
			for _, row := range rep.rows {
				e.logf("run %d, %s: a %s, b %s, c %s", run+1, row.resource, row.a.cell(), row.b.cell(), row.c.cell())
			}
		}
	}
	rep.loadAfter = loadAvg()
	return rep, nil
}

// selfCPU is the harness's CPU time so far (getrusage: finer than the
// clock ticks of /proc).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// perMessage is a CPU time per message, in microseconds.
func perMessage(cpu time.Duration, n int) float64 { return float64(cpu.Microseconds()) / float64(n) }

// checkTask runs `symphony check` on a tasks directory holding task (its
// pool of one worker) and files.
func checkTask(ctx context.Context, e *env, binary, task string, files map[string]string) error {
	dir, err := e.dir("check")
	if err != nil {
		return err
	}
	defer e.drop(dir)
	tasksDir, err := writeTask(dir, "noop", fmt.Sprintf(task, 1, 1, defaultPrefetch))
	if err != nil {
		return err
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(tasksDir, name), []byte(body), 0o644); err != nil {
			return err
		}
	}
	out, err := exec.CommandContext(ctx, binary, "check", tasksDir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("symphony check: %v: %s", err, strings.ReplaceAll(strings.TrimSpace(string(out)), tasksDir+string(filepath.Separator), ""))
	}
	return nil
}

var callsHeader = []string{"resource", "a: the resource alone", "b: no-op drain", "1/(1/a+1/b)", "c: the task", "c ÷ 1/(1/a+1/b)", "target", "CPU per call: a (harness)", "b (daemon)", "c (daemon)"}

func (r *callsReport) tableRows() [][]string {
	var out [][]string
	for _, row := range r.rows {
		x := "–"
		met := "–"
		if exp := row.expected(); exp > 0 && len(row.c) > 0 {
			q := row.c.median() / exp
			x = fmt.Sprintf("%.2f", q)
			met = fmt.Sprintf("≥ %.1f: met", callsTarget)
			if q < callsTarget {
				met = fmt.Sprintf("≥ %.1f: NOT met", callsTarget)
			}
		}
		out = append(out, []string{row.resource, row.a.cell(), row.b.cell(), human(row.expected()), row.c.cell(), x, met,
			micros(row.aCPU) + " µs", micros(row.bCPU) + " µs", micros(row.cCPU) + " µs"})
	}
	return out
}

func (r *callsReport) legend() string {
	var b strings.Builder
	b.WriteString("- b is one no-op drain per run, shared by the rows. *CPU per call*: user and system time ÷ N, of the harness's process while its plain pool ran (a, `getrusage`), of the daemon from ready to the last ack (b, c, `/proc`).\n")
	for _, row := range r.rows {
		fmt.Fprintf(&b, "- **%s**: a is %s; c is a task doing %s.\n", row.resource, row.plain, row.task)
	}
	for _, s := range r.skipped {
		fmt.Fprintf(&b, "- %s\n", s)
	}
	return b.String()
}

func (r *callsReport) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "calls: N=%d messages, W=%d workers, %d runs: median (min–max) messages/s; load average %s before, %s after\n",
		r.n, r.workers, r.runs, r.loadBefore, r.loadAfter)
	b.WriteString(table(callsHeader, r.tableRows(), false))
	b.WriteString(r.legend())
	return b.String()
}

func (r *callsReport) markdown() string {
	var b strings.Builder
	b.WriteString(r.machine.header("databases on "+r.machine.FS, r.loadBefore, r.loadAfter))
	fmt.Fprintf(&b, "N = %d messages, W = %d workers (prefetch 10), %d runs; each cell is the median and, in brackets, the lowest and highest run, in messages per second.\n\n",
		r.n, r.workers, r.runs)
	b.WriteString(table(callsHeader, r.tableRows(), true))
	b.WriteString("\n" + r.legend())
	return b.String()
}
