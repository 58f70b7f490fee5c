package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The reload benchmark: how long after a task file is saved the new
// version handles its first message, and how much throughput a reload
// costs while the daemon works a backlog.
func init() {
	register(benchmark{
		name:  "reload",
		about: "live reload: file write → first message handled by the new version; throughput dip around reloads",
		run:   benchReload,
	})
}

// versionedTaskSrc is the task whose versions the benchmark writes: each
// message handled logs the version, the message's number and the time.
// %[1]s is the version, %[2]s a line run before logging (a sleep, or
// nothing), %[3]d the pool's size (min_workers = max_workers: a pool that
// scaled would restart at min_workers after every reload).
const versionedTaskSrc = `def work(payload, meta):
%[2]s    log.info("handled", version = "%[1]s", seq = payload["id"], at = time.now().unix_nano)
    return True

task(
    name = "versioned",
    subscribe_to = ["reload.#"],
    work = work,
    min_workers = %[3]d,
    max_workers = %[3]d,
)
`

// reloadFailed is what the daemon logs when a reload fails: the running
// version stays. The benchmark counts these and reports their errors.
const reloadFailed = "reload failed: the running tasks stay"

const (
	reloadTask  = "versioned"
	reloadKey   = "reload.job"
	reloadQueue = "versioned" // the task's queue on RabbitMQ
	// reloadRate is the steady stream of the latency measure, published
	// every reloadTick.
	reloadRate = 200.0
	reloadTick = 5 * time.Millisecond
	// reloadGap is how long the new version runs before the next edit,
	// plus up to reloadJitter, so that edits do not fall in step with the
	// daemon's timers.
	reloadGap    = 300 * time.Millisecond
	reloadJitter = 100 * time.Millisecond
)

// The throughput measure: windows of dipWindow; dipBaseline of steady
// work (after dipWarmup) before the first of dipReloads reloads, one every
// dipEvery.
const (
	dipWindow   = 100 * time.Millisecond
	dipWarmup   = time.Second
	dipBaseline = 3 * time.Second
	dipReloads  = 8
	dipEvery    = 1500 * time.Millisecond
	dipAround   = 5
)

// dipConfig is one handler the throughput dip is measured with.
type dipConfig struct {
	label string
	// body is the line the handler runs before logging.
	body string
	// n is the backlog preloaded when -n is not given: enough to last
	// the measure at the rate this handler reaches here, on SQLite and on
	// RabbitMQ (0: not measured there).
	n, rabbitN int
}

var dipConfigs = []dipConfig{
	{label: "no-op handler (logs only)", n: 600000, rabbitN: 450000},
	{label: "handler sleeping 5 ms", body: "    sleep(0.005)\n", n: 15000},
}

// reloadBackend is the broker a measure runs on.
type reloadBackend struct {
	name string
	// url is the daemon's --broker; empty: a fresh SQLite file in the run's
	// directory.
	url string
}

type reloadReport struct {
	machine               machine
	runs, workers, edits  int
	loadBefore, loadAfter string
	rabbitVersion         string
	rabbitSkipped         string // why RabbitMQ was not measured
	latency               []*latencySamples
	dips                  []*dipSamples
}

// latencySamples are the edits of one backend.
type latencySamples struct {
	backend string
	// total: write → first message of the new version; reloaded: write
	// → the daemon's "reloaded" log line.
	total, reloaded []time.Duration
	// stragglers: messages handled by an older version after the new one
	// handled its first, summed over the edits; handled is every message;
	// twice and warned as in tally.
	stragglers, handled, twice, warned int
	// failed are the errors of the edits whose reload failed.
	failed []string
}

// dipSamples are the windows of one handler on one backend, over the runs.
type dipSamples struct {
	label, backend string
	n              int
	// steady: median window rate of each run's baseline; baseLow: its
	// lowest window.
	steady, baseLow rates
	// per reload, over all runs: the lowest window from the write to the
	// next reload, as a rate and as a share of its run's steady rate; lost
	// is the work not done in that time, in ms of the steady rate.
	low, share, lost []float64
	// local is, per reload, the rate of the dipAround windows after the
	// write's own window over that of the dipAround windows before it.
	local []float64
	// baseLost is lost measured over baseline stretches of the same
	// length, where no reload happened: the noise floor.
	baseLost []float64
	// latency of the reloads under this load.
	latency []time.Duration
	// per run: handlings beyond a message's first, broker warnings.
	twice, warned []int
	// failed are the errors of the reloads that failed; stalls describe
	// the runs in which the daemon stopped consuming.
	failed, stalls []string
}

func benchReload(ctx context.Context, e *env) (_ report, err error) {
	o := e.opts
	if o.cpuprofile != "" {
		return nil, fmt.Errorf("-cpuprofile: the reload benchmark is not profiled")
	}
	binary, err := e.symphony(ctx)
	if err != nil {
		return nil, err
	}
	rep := &reloadReport{machine: e.machine, runs: o.runs, workers: o.workers, edits: o.edits, loadBefore: loadAvg()}
	backends := []reloadBackend{{name: "SQLite"}}
	if v, verr := rabbitVersion(o.amqp); verr != nil {
		rep.rabbitSkipped = verr.Error()
		e.logf("reload: RabbitMQ not measured: %v", verr)
	} else {
		rep.rabbitVersion = v
		backends = append(backends, reloadBackend{name: "RabbitMQ", url: o.amqp})
	}
	created := map[string]bool{}
	defer func() {
		if rep.rabbitVersion == "" {
			return
		}
		left, lerr := leftVhosts(context.Background())
		if lerr != nil {
			e.logf("cannot check for virtual hosts left behind: %v", lerr)
		}
		for _, name := range left {
			if created[name] && err == nil {
				err = fmt.Errorf("virtual host left behind (rabbitmqctl delete_vhost %s)", name)
			}
		}
	}()
	// withBackend runs fn on a fresh broker: a directory, and on RabbitMQ
	// a virtual host of its own.
	withBackend := func(b reloadBackend, label string, fn func(dir, url string) error) error {
		dir, err := e.dir(label)
		if err != nil {
			return err
		}
		defer e.drop(dir)
		if b.url == "" {
			return fn(dir, "")
		}
		v, err := newVhost(ctx, b.url)
		if err != nil {
			return err
		}
		created[v.name] = true
		err = fn(dir, v.url)
		if derr := v.drop(); derr != nil && err == nil {
			err = derr
		}
		return err
	}
	only := func(label string) bool { return strings.Contains(label, o.only) }

	for _, b := range backends {
		label := "latency, " + b.name
		if !only(label) {
			continue
		}
		ls := &latencySamples{backend: b.name}
		rep.latency = append(rep.latency, ls)
		if err := withBackend(b, slug(label), func(dir, url string) error {
			return runLatency(ctx, e, binary, dir, url, ls)
		}); err != nil {
			return nil, fmt.Errorf("%s: %w", label, err)
		}
		if o.verbose {
			e.logf("%s: %d edits, write → new version median %s, worst %s", label, len(ls.total),
				ms(median(ls.total)), ms(slices.Max(ls.total)))
		}
	}
	for _, b := range backends {
		for _, c := range dipConfigs {
			n := c.n
			if b.url != "" {
				n = c.rabbitN
			}
			if n == 0 {
				continue
			}
			label := fmt.Sprintf("dip, %s, %s", b.name, c.label)
			if !only(label) {
				continue
			}
			ds := &dipSamples{label: c.label, backend: b.name, n: n}
			if o.nSet {
				ds.n = o.n
			}
			rep.dips = append(rep.dips, ds)
			for run := range o.runs {
				if err := withBackend(b, fmt.Sprintf("run%d-%s", run+1, slug(label)), func(dir, url string) error {
					return runDip(ctx, e, binary, dir, url, c, ds)
				}); err != nil {
					return nil, fmt.Errorf("run %d, %s: %w", run+1, label, err)
				}
				if o.verbose {
					e.logf("run %d %s: steady %s msgs/s (lowest baseline window %s); lowest window around a reload %s",
						run+1, label, human(ds.steady[len(ds.steady)-1]), human(ds.baseLow[len(ds.baseLow)-1]),
						human(slices.Min(ds.low[len(ds.low)-dipReloads:])))
				}
			}
		}
	}
	rep.loadAfter = loadAvg()
	return rep, nil
}

// versioned is one task directory whose task file the benchmark edits.
type versioned struct {
	dir, file string
	version   int
	body      string
	workers   int
}

func newVersioned(dir, body string, workers int) (*versioned, error) {
	v := &versioned{dir: filepath.Join(dir, "tasks"), body: body, workers: workers}
	v.file = filepath.Join(v.dir, reloadTask+".star")
	if err := os.MkdirAll(v.dir, 0o755); err != nil {
		return nil, err
	}
	_, err := v.next()
	return v, err
}

func (v *versioned) name(k int) string { return "v" + strconv.Itoa(k) }

// next writes the next version as an editor saves: a new file renamed
// over the old one. It returns the time the rename returned.
func (v *versioned) next() (time.Time, error) {
	v.version++
	tmp := filepath.Join(v.dir, "."+reloadTask+".star.new")
	src := fmt.Sprintf(versionedTaskSrc, v.name(v.version), v.body, v.workers)
	if err := os.WriteFile(tmp, []byte(src), 0o644); err != nil {
		return time.Time{}, err
	}
	if err := os.Rename(tmp, v.file); err != nil {
		return time.Time{}, err
	}
	return time.Now(), nil
}

// versionOf reads "vN".
func versionOf(s string) int {
	k, err := strconv.Atoi(strings.TrimPrefix(s, "v"))
	if err != nil {
		return -1
	}
	return k
}

// tally follows the handled lines of a daemon's log: every message must
// be handled, and the log must hold nothing at warn level or above but the
// embedded broker's warnings of lost acks and leases, which are counted
// (with the messages handled more than once they cause).
type tally struct {
	seen    []int
	handled int
	// twice counts handlings beyond a message's first; warned the broker
	// warnings of sqliteWarnings, firstWarn the first of them.
	twice, warned int
	firstWarn     string
	// first is when each version handled its first message (unix ns, the
	// handler's clock), latest the newest version seen.
	first  map[int]int64
	latest int
	// stragglers are messages handled by an older version after a newer
	// one had handled its first.
	stragglers int
	// reloaded is when each generation's "reloaded" line was logged;
	// failed the errors of the reloads that failed.
	reloaded []time.Time
	failed   []string
	// at is the time of every handling, in log order.
	at       []int64
	problems []string
}

func newTally() *tally { return &tally{first: map[int]int64{}} }

func (t *tally) read(ev logEvent) error {
	switch {
	case ev.Msg == "handled":
		if ev.Seq == nil || *ev.Seq < 0 {
			return fmt.Errorf("a handled line without a seq: %s", ev.raw)
		}
		k := versionOf(ev.Version)
		if k < 1 {
			return fmt.Errorf("a handled line without a version: %s", ev.raw)
		}
		for len(t.seen) <= *ev.Seq {
			t.seen = append(t.seen, 0)
		}
		t.seen[*ev.Seq]++
		if t.seen[*ev.Seq] > 1 {
			t.twice++
		}
		t.handled++
		t.at = append(t.at, ev.At)
		if _, ok := t.first[k]; !ok {
			t.first[k] = ev.At
		}
		if k > t.latest {
			t.latest = k
		} else if k < t.latest && ev.At > t.first[t.latest] {
			t.stragglers++
		}
	case ev.Msg == "reloaded":
		t.reloaded = append(t.reloaded, ev.Time)
	case ev.Msg == reloadFailed:
		var e struct {
			Err string `json:"err"`
		}
		_ = json.Unmarshal(ev.raw, &e)
		t.failed = append(t.failed, e.Err)
	case ev.Level == "WARN" && slices.Contains(sqliteWarnings, ev.Msg):
		t.warned++
		if t.firstWarn == "" {
			var e struct {
				Err string `json:"err"`
			}
			_ = json.Unmarshal(ev.raw, &e)
			t.firstWarn = fmt.Sprintf("%s %s: %s", ev.Time.Format("15:04:05.000"), ev.Msg, e.Err)
		}
	case ev.Level == "WARN" || ev.Level == "ERROR":
		t.problems = append(t.problems, string(ev.raw))
	}
	return nil
}

// complete reports whether messages 0..n-1 were each handled.
func (t *tally) complete(n int) (bool, error) {
	if len(t.seen) < n {
		return false, nil
	}
	if slices.Contains(t.seen[:n], 0) {
		return false, nil
	}
	if len(t.seen) > n {
		return false, fmt.Errorf("%d messages published, but message %d was handled", n, len(t.seen)-1)
	}
	return true, nil
}

// reloadDaemon starts `symphony run` at info level (the handled lines) on
// a versioned task and follows its log.
type reloadDaemon struct {
	*daemon
	s     symphonySetup
	v     *versioned
	fl    *follower
	tally *tally
}

func startReloadDaemon(ctx context.Context, binary, dir, url, body string, workers int, declared bool) (*reloadDaemon, error) {
	s := symphonySetup{binary: binary, dir: dir, brokerURL: url, args: []string{"--log-level", "info"}}
	v, err := newVersioned(dir, body, workers)
	if err != nil {
		return nil, err
	}
	if declared {
		// The queue must exist before a preload: a daemon that starts and
		// stops declares it.
		if _, err := declareWithDaemon(ctx, s, v.dir); err != nil {
			return nil, err
		}
	}
	r := &reloadDaemon{s: s, v: v, tally: newTally()}
	return r, nil
}

// start starts the daemon and waits until it is ready; stop ends it. A
// daemon that fails to start is stopped before start returns, so that it
// does not hold the cores through the benchmarks after.
func (r *reloadDaemon) start(ctx context.Context) (err error) {
	d, err := startDaemon(ctx, r.s, r.v.dir, "reload", "")
	if err != nil {
		return err
	}
	r.daemon = d
	defer func() {
		if err != nil {
			r.stop()
		}
	}()
	if r.fl, err = follow(d.log); err != nil {
		return err
	}
	if _, err := d.waitReady(ctx); err != nil {
		return fmt.Errorf("%w\n%s", err, d.logTail())
	}
	return nil
}

func (r *reloadDaemon) stop() {
	r.proc.kill()
	if r.fl != nil {
		r.fl.close()
	}
}

// poll reads what the daemon logged since the last poll.
func (r *reloadDaemon) poll() error {
	if err := r.fl.poll(r.tally.read); err != nil {
		return err
	}
	if len(r.tally.problems) > 0 {
		return fmt.Errorf("the daemon logged:\n%s", strings.Join(r.tally.problems, "\n"))
	}
	select {
	case <-r.proc.done:
		return fmt.Errorf("the daemon exited: %v\n%s", r.proc.err, r.logTail())
	default:
	}
	return nil
}

// until polls every 5 ms until ok holds, for at most limit.
func (r *reloadDaemon) until(ctx context.Context, limit time.Duration, what string, ok func() bool) error {
	deadline := time.Now().Add(limit)
	for {
		if err := r.poll(); err != nil {
			return err
		}
		if ok() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no %s after %s\n%s", what, limit, r.logTail())
		}
		if err := sleepCtx(ctx, 5*time.Millisecond); err != nil {
			return err
		}
	}
}

// finish waits until every one of n messages was handled, the task acked
// every handling and (on SQLite) no message is left in the broker, a
// message whose ack was lost included: it comes back when its lease ends.
// Then it stops the daemon and checks that the broker holds nothing.
func (r *reloadDaemon) finish(ctx context.Context, n int, limit time.Duration) error {
	var cerr error
	var t taskStatus
	handled, progress := r.tally.handled, time.Now()
	if err := r.until(ctx, limit, fmt.Sprintf("handling of all %d messages", n), func() bool {
		if r.tally.handled != handled {
			handled, progress = r.tally.handled, time.Now()
		} else if time.Since(progress) > stallAfter {
			// Nothing handled for longer than a lost lease takes to come
			// back, with messages ready: the daemon stopped consuming.
			t, cerr = r.task(ctx, reloadTask)
			if cerr == nil && t.QueueDepth > 0 {
				cerr = &stalled{since: progress, ready: t.QueueDepth}
			}
			if cerr != nil {
				return true
			}
		}
		var done bool
		if done, cerr = r.tally.complete(n); !done || cerr != nil {
			return cerr != nil
		}
		if t, cerr = r.task(ctx, reloadTask); cerr != nil || t.Messages["ack"] != r.tally.handled {
			return cerr != nil
		}
		if r.s.brokerURL != "" {
			return true
		}
		left, err := countRows(ctx, r.s, "messages")
		cerr = err
		return err != nil || left == 0
	}); err != nil {
		return err
	}
	if cerr != nil {
		return cerr
	}
	if t.Messages["retry"] != 0 || t.Messages["dead"] != 0 {
		return fmt.Errorf("%d messages published and handled, /status shows outcomes %v", n, t.Messages)
	}
	if err := r.proc.stop(30 * time.Second); err != nil {
		return fmt.Errorf("%w\n%s", err, r.logTail())
	}
	if err := r.poll(); err != nil && !strings.Contains(err.Error(), "the daemon exited") {
		return err
	}
	if r.s.brokerURL != "" {
		return checkEmpty(r.s.brokerURL, reloadQueue, reloadQueue+".dead")
	}
	return checkTablesEmpty(ctx, r.s)
}

// stallAfter is how long finish waits for progress while messages are
// ready before it calls the daemon stalled: longer than the embedded
// broker's lease (30 s), after which a lost lease's message comes back.
const stallAfter = 40 * time.Second

// stalled is finish's error when the daemon stopped consuming.
type stalled struct {
	since time.Time // when the daemon last handled a message
	ready int64     // messages ready in its queue meanwhile
}

func (s *stalled) Error() string {
	return fmt.Sprintf("the daemon stopped consuming: nothing handled since %s while %d messages were ready",
		s.since.Format("15:04:05.000"), s.ready)
}

// accountLeft checks, once the daemon is gone, that every message of n it
// did not handle is still in the SQLite broker, and returns how many are.
func (r *reloadDaemon) accountLeft(ctx context.Context, n int) (int, error) {
	db, err := sql.Open("sqlite", "file:"+filepath.Join(r.s.dir, "symphony.db")+"?mode=ro")
	if err != nil {
		return 0, err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, "SELECT b.payload FROM messages m JOIN bodies b ON b.id = m.id")
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	stored := map[int]bool{}
	for rows.Next() {
		var payload []byte
		if err := rows.Scan(&payload); err != nil {
			return 0, err
		}
		var p struct {
			ID int `json:"id"`
		}
		if err := json.Unmarshal(payload, &p); err != nil {
			return 0, fmt.Errorf("a stored payload: %v", err)
		}
		stored[p.ID] = true
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	for i := range n {
		if (i >= len(r.tally.seen) || r.tally.seen[i] == 0) && !stored[i] {
			return 0, fmt.Errorf("message %d was neither handled nor is it in the broker", i)
		}
	}
	return len(stored), nil
}

func (r *reloadDaemon) openFeeder(ctx context.Context) (feeder, error) {
	if r.s.brokerURL != "" {
		return openAMQPFeeder(r.s.brokerURL, reloadKey)
	}
	return openSQLiteFeeder(ctx, filepath.Join(r.s.dir, "symphony.db"), reloadKey)
}

// runLatency: a steady stream of messages, and e.opts.edits edits of the
// task file, each once the previous version handled a message.
func runLatency(ctx context.Context, e *env, binary, dir, url string, ls *latencySamples) error {
	r, err := startReloadDaemon(ctx, binary, dir, url, "", e.opts.workers, false)
	if err != nil {
		return err
	}
	if err := r.start(ctx); err != nil {
		return err
	}
	defer r.stop()
	f, err := r.openFeeder(ctx)
	if err != nil {
		return err
	}
	defer f.close()
	pubCtx, stopPub := context.WithCancel(ctx)
	defer stopPub()
	pub := startStream(pubCtx, f, reloadRate, reloadTick)
	streaming := func() error {
		select {
		case <-pub.done:
			return fmt.Errorf("publisher: %v", pub.err)
		default:
			return nil
		}
	}
	if err := r.until(ctx, 30*time.Second, "message handled by v1", func() bool { _, ok := r.tally.first[1]; return ok }); err != nil {
		return err
	}
	for range e.opts.edits {
		if err := sleepCtx(ctx, reloadGap+rand.N(reloadJitter)); err != nil {
			return err
		}
		if err := streaming(); err != nil {
			return err
		}
		reloads, failed := len(r.tally.reloaded), len(r.tally.failed)
		wrote, err := r.v.next()
		if err != nil {
			return err
		}
		k := r.v.version
		if err := r.until(ctx, 30*time.Second, fmt.Sprintf("message handled by %s", r.v.name(k)), func() bool {
			_, ok := r.tally.first[k]
			return ok && len(r.tally.reloaded) > reloads || len(r.tally.failed) > failed
		}); err != nil {
			return err
		}
		if len(r.tally.failed) > failed {
			// The running version stays; the next edit is measured.
			ls.failed = append(ls.failed, r.tally.failed[failed:]...)
			continue
		}
		if len(r.tally.reloaded) != reloads+1 {
			return fmt.Errorf("edit %d: the daemon reloaded %d times", k-1, len(r.tally.reloaded)-reloads)
		}
		first := time.Unix(0, r.tally.first[k])
		if first.Before(wrote) {
			return fmt.Errorf("%s handled a message before it was written", r.v.name(k))
		}
		ls.total = append(ls.total, first.Sub(wrote))
		ls.reloaded = append(ls.reloaded, r.tally.reloaded[reloads].Sub(wrote))
	}
	stopPub()
	if err := pub.wait(); err != nil {
		return fmt.Errorf("publisher: %v", err)
	}
	n := f.sent()
	if err := r.finish(ctx, n, 60*time.Second); err != nil {
		return err
	}
	ls.stragglers += r.tally.stragglers
	ls.handled += r.tally.handled
	ls.twice += r.tally.twice
	ls.warned += r.tally.warned
	return nil
}

// runDip preloads a backlog, starts the daemon, and after dipBaseline of
// steady work reloads it dipReloads times, one every dipEvery; then it
// counts the messages handled in every window of dipWindow.
func runDip(ctx context.Context, e *env, binary, dir, url string, c dipConfig, ds *dipSamples) error {
	r, err := startReloadDaemon(ctx, binary, dir, url, c.body, e.opts.workers, true)
	if err != nil {
		return err
	}
	f, err := r.openFeeder(ctx)
	if err != nil {
		return err
	}
	_, err = preloadFeeder(f, ds.n)
	f.close()
	if err != nil {
		return err
	}
	if err := r.start(ctx); err != nil {
		return err
	}
	defer r.stop()
	if err := r.until(ctx, 30*time.Second, "first message handled", func() bool { return r.tally.handled > 0 }); err != nil {
		return err
	}
	t0 := time.Unix(0, r.tally.at[0])
	writes := make([]time.Time, 0, dipReloads)
	next := t0.Add(dipWarmup + dipBaseline)
	for range dipReloads {
		if err := r.until(ctx, time.Until(next)+time.Second, "time", func() bool { return !time.Now().Before(next) }); err != nil {
			return err
		}
		w, err := r.v.next()
		if err != nil {
			return err
		}
		writes = append(writes, w)
		next = w.Add(dipEvery)
	}
	end := next
	if err := r.until(ctx, time.Until(end)+time.Second, "time", func() bool { return !time.Now().Before(end) }); err != nil {
		return err
	}
	t, err := r.task(ctx, reloadTask)
	if err != nil {
		return err
	}
	if t.QueueDepth == 0 {
		return fmt.Errorf("the backlog of %d messages ran out before the measure ended: give a larger -n", ds.n)
	}
	if r.tally.latest != r.v.version && len(r.tally.failed) == 0 && time.Since(time.Unix(0, r.tally.at[len(r.tally.at)-1])) < time.Second {
		return fmt.Errorf("%s written, the last version that handled a message is v%d", r.v.name(r.v.version), r.tally.latest)
	}
	ds.failed = append(ds.failed, r.tally.failed...)
	for k := 2; k <= r.v.version; k++ {
		if first, ok := r.tally.first[k]; ok {
			ds.latency = append(ds.latency, time.Unix(0, first).Sub(writes[k-2]))
		}
	}

	// Windows from the first message handled to the end of the measure.
	counts := make([]int, int(end.Sub(t0)/dipWindow))
	for _, at := range r.tally.at {
		if i := int(time.Unix(0, at).Sub(t0) / dipWindow); i >= 0 && i < len(counts) {
			counts[i]++
		}
	}
	rate := func(i int) float64 { return float64(counts[i]) / dipWindow.Seconds() }
	index := func(t time.Time) int { return int(t.Sub(t0) / dipWindow) }
	var base rates
	for i := index(t0.Add(dipWarmup)); i < index(writes[0]); i++ {
		base = append(base, rate(i))
	}
	steady := base.median()
	ds.steady = append(ds.steady, steady)
	ds.baseLow = append(ds.baseLow, base.min())
	// The same deficit over stretches of the baseline as long as the
	// spans after a reload: what the broker's own unevenness costs with
	// no reload at all, so that a reload's cost can be told from it.
	per := int(dipEvery / dipWindow)
	for i := 0; i+per <= len(base); i += per {
		lost := 0.0
		for _, r := range base[i : i+per] {
			lost += max(0, steady-r) * dipWindow.Seconds()
		}
		ds.baseLost = append(ds.baseLost, lost/steady*1000)
	}
	for k, w := range writes {
		stop := end
		if k+1 < len(writes) {
			stop = writes[k+1]
		}
		low, lost := -1.0, 0.0
		for i := index(w); i < index(stop) && i < len(counts); i++ {
			if low < 0 || rate(i) < low {
				low = rate(i)
			}
			lost += max(0, steady-rate(i)) * dipWindow.Seconds()
		}
		// The rate just after the write against just before it: a
		// handover's dip, told apart from the broker's slower drift.
		var before, after float64
		for i := range dipAround {
			if j := index(w) - 1 - i; j >= 0 {
				before += rate(j)
			}
			if j := index(w) + 1 + i; j < len(counts) {
				after += rate(j)
			}
		}
		if before > 0 {
			ds.local = append(ds.local, after/before)
		}
		ds.low = append(ds.low, low)
		ds.share = append(ds.share, low/steady)
		ds.lost = append(ds.lost, lost/steady*1000)
	}
	err = r.finish(ctx, ds.n, 5*time.Minute)
	ds.twice = append(ds.twice, r.tally.twice)
	ds.warned = append(ds.warned, r.tally.warned)
	var st *stalled
	if errors.As(err, &st) && r.s.brokerURL == "" {
		// Recorded, not hidden: where the daemon stopped, and that every
		// message it did not handle is still in the broker.
		r.proc.kill()
		if perr := r.poll(); perr != nil && !strings.Contains(perr.Error(), "the daemon exited") {
			return perr
		}
		left, aerr := r.accountLeft(ctx, ds.n)
		if aerr != nil {
			return fmt.Errorf("%v; accounting for the messages: %v", err, aerr)
		}
		after := 0
		for _, w := range writes {
			if w.Before(st.since) {
				after++
			}
		}
		distinct := 0
		for _, c := range r.tally.seen {
			if c > 0 {
				distinct++
			}
		}
		ds.stalls = append(ds.stalls, fmt.Sprintf("run %d: nothing handled from %.1f s after the first message (after reload %d of %d) while %d messages were ready; "+
			"killed %s later with %d of %d messages handled and %d in the broker's tables; %d broker warnings, the first at %s",
			len(ds.steady), st.since.Sub(t0).Seconds(), after, len(writes), st.ready, stallAfter, distinct, ds.n, left,
			r.tally.warned, r.tally.firstWarn))
		return nil
	}
	return err
}

func median(ds []time.Duration) time.Duration {
	s := slices.Sorted(slices.Values(ds))
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// quantile is the q-quantile of ds, nearest rank.
func quantile(ds []time.Duration, q float64) time.Duration {
	s := slices.Sorted(slices.Values(ds))
	if len(s) == 0 {
		return 0
	}
	i := int(q*float64(len(s))+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// ints lists counts, one per run.
func ints(v []int) string {
	var parts []string
	for _, x := range v {
		parts = append(parts, strconv.Itoa(x))
	}
	return strings.Join(parts, ", ")
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000) }

var latencyHeader = []string{"broker", "edits", "write → first message of the new version: median", "p90", "worst",
	"write → `reloaded` logged: median", "worst", "old-version messages after the new one's first", "handled twice", "broker warnings",
	"reloads failed"}

func (r *reloadReport) latencyRows() [][]string {
	var rows [][]string
	for _, l := range r.latency {
		if len(l.total) == 0 {
			continue
		}
		rows = append(rows, []string{l.backend, strconv.Itoa(len(l.total)), ms(median(l.total)), ms(quantile(l.total, 0.9)),
			ms(slices.Max(l.total)), ms(median(l.reloaded)), ms(slices.Max(l.reloaded)),
			fmt.Sprintf("%d of %d", l.stragglers, l.handled), strconv.Itoa(l.twice), strconv.Itoa(l.warned), strconv.Itoa(len(l.failed))})
	}
	return rows
}

var dipHeader = []string{"broker, handler", "backlog", "steady msgs/s (median window)", "lowest baseline window",
	"lowest window around a reload: median", "worst", "÷ steady: median", "worst", "work lost per reload: median", "worst", "same measure with no reload: median", "0.5 s after the write ÷ 0.5 s before: median", "worst",
	"write → new version under load: median", "worst", "handled twice (per run)", "broker warnings (per run)", "reloads failed",
	"runs in which the daemon stopped consuming"}

func (r *reloadReport) dipRows() [][]string {
	var rows [][]string
	for _, d := range r.dips {
		if len(d.steady) == 0 {
			continue
		}
		rows = append(rows, []string{d.backend + ", " + d.label, strconv.Itoa(d.n), d.steady.cell(), d.baseLow.cell(),
			human(rates(d.low).median()), human(slices.Min(d.low)),
			fmt.Sprintf("%.2f", rates(d.share).median()), fmt.Sprintf("%.2f", slices.Min(d.share)),
			fmt.Sprintf("%.0f ms", rates(d.lost).median()), fmt.Sprintf("%.0f ms", slices.Max(d.lost)),
			fmt.Sprintf("%.0f ms", rates(d.baseLost).median()),
			fmt.Sprintf("%.2f", rates(d.local).median()), fmt.Sprintf("%.2f", slices.Min(d.local)),
			ms(median(d.latency)), ms(slices.Max(d.latency)), ints(d.twice), ints(d.warned), fmt.Sprintf("%d of %d", len(d.failed), dipReloads*len(d.steady)),
			fmt.Sprintf("%d of %d", len(d.stalls), len(d.steady))})
	}
	return rows
}

// failures lists, once each, the errors of the reloads that failed.
func (r *reloadReport) failures() string {
	count := map[string]int{}
	var order []string
	add := func(errs []string) {
		for _, e := range errs {
			if count[e] == 0 {
				order = append(order, e)
			}
			count[e]++
		}
	}
	for _, l := range r.latency {
		add(l.failed)
	}
	for _, d := range r.dips {
		add(d.failed)
	}
	var b strings.Builder
	if len(order) > 0 {
		b.WriteString("Reloads that failed (the daemon kept the running version), by error:\n\n")
		for _, e := range order {
			fmt.Fprintf(&b, "- %d × `%s`\n", count[e], e)
		}
	}
	for _, d := range r.dips {
		if len(d.stalls) == 0 {
			continue
		}
		if b.Len() > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "**The daemon stopped consuming** (%s, %s; its windows are in the figures above):\n\n", d.backend, d.label)
		for _, st := range d.stalls {
			fmt.Fprintf(&b, "- %s\n", st)
		}
	}
	return b.String()
}

// failure is set when a daemon stopped consuming in a run.
func (r *reloadReport) failure() string {
	n := 0
	for _, d := range r.dips {
		n += len(d.stalls)
	}
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("the daemon stopped consuming in %d run(s); recorded in the report", n)
}

func (r *reloadReport) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "reload: %d edits, W=%d workers, %d runs of the throughput measure; load average %s before, %s after\n",
		r.edits, r.workers, r.runs, r.loadBefore, r.loadAfter)
	if r.rabbitSkipped != "" {
		fmt.Fprintf(&b, "RabbitMQ not measured: %s\n", r.rabbitSkipped)
	}
	b.WriteString(table(latencyHeader, r.latencyRows(), false))
	b.WriteString("\n")
	b.WriteString(table(dipHeader, r.dipRows(), false))
	if f := r.failures(); f != "" {
		b.WriteString("\n" + f)
	}
	return b.String()
}

func (r *reloadReport) markdown() string {
	var b strings.Builder
	rabbit := "RabbitMQ not measured: " + r.rabbitSkipped
	if r.rabbitSkipped == "" {
		rabbit = "RabbitMQ " + r.rabbitVersion + " on the same machine"
	}
	b.WriteString(r.machine.header("databases on "+r.machine.FS+"; "+rabbit, r.loadBefore, r.loadAfter))
	fmt.Fprintf(&b, "W = %d workers (min_workers = max_workers), prefetch 10 (the default).\n\n", r.workers)
	fmt.Fprintf(&b, "**Latency**: %d edits, one daemon per broker, %.0f msgs/s published throughout:\n\n", r.edits, reloadRate)
	b.WriteString(table(latencyHeader, r.latencyRows(), true))
	fmt.Fprintf(&b, "\n**Throughput around reloads**: windows of %s, %d reloads %s apart after %s of baseline, %d runs; median and worst over the %d reloads of all runs (steady rate and lowest baseline window: median and spread of the runs):\n\n",
		dipWindow, dipReloads, dipEvery, dipBaseline, r.runs, dipReloads*r.runs)
	b.WriteString(table(dipHeader, r.dipRows(), true))
	if f := r.failures(); f != "" {
		b.WriteString("\n" + f)
	}
	return b.String()
}
