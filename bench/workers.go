package main

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// The workers benchmark: how fast a longlived pool grows to max_workers
// under a growing backlog and shrinks back to min_workers once it is gone;
// what a thread worker and a worker process cost in memory; and how many
// messages per second a oneshot task works with process isolation, beside
// thread isolation.
func init() {
	register(benchmark{
		name:  "workers",
		about: "autoscaler timing (backlog → max_workers → min_workers), memory per worker, oneshot with process isolation",
		run:   benchWorkers,
	})
}

// The scaling scenario: a pool of 1 to 8 workers whose handler sleeps 50 ms
// (one worker works 20 messages/s, eight 160/s), fed 200 messages/s from
// another process, so the backlog grows whatever the pool's size.
const (
	scaleMin     = 1
	scaleMax     = 8
	scaleSleep   = 50 * time.Millisecond
	scaleIdle    = 2 * time.Second
	scaleRate    = 200.0
	scaleKey     = "scale.job"
	scaleTaskSrc = `def work(payload, meta):
    sleep(%g)
    return True

task(
    name = "scale",
    subscribe_to = ["scale.#"],
    work = work,
    min_workers = %d,
    max_workers = %d,
    idle_timeout = "%s",
)
`
)

// scaleCase is one way the backlog meets the pool: with a
// --scaling-interval, and either as soon as the pool is up (it decides
// nothing for its first 10 samples, and its window of 100 is not full) or
// after the pool idled for a full window and a second.
type scaleCase struct {
	interval time.Duration
	warm     bool
}

func (c scaleCase) label() string {
	if c.warm {
		return fmt.Sprintf("scale, interval %s, idle for a window", c.interval)
	}
	return fmt.Sprintf("scale, interval %s, fresh pool", c.interval)
}

// scaleCases: the default interval, then a smaller one, which shrinks the
// window.
var scaleCases = []scaleCase{
	{100 * time.Millisecond, false},
	{100 * time.Millisecond, true},
	{20 * time.Millisecond, false},
	{20 * time.Millisecond, true},
}

// The memory scenario: a trivial task with a pool of a fixed size.
const (
	memMessages = 2000
	memSettle   = 2 * time.Second
	memKey      = "mem.job"
	memTaskSrc  = `def work(payload, meta):
    return payload["id"] >= 0

task(
    name = "mem",
    subscribe_to = ["mem.#"],
    work = work,
    min_workers = %d,
    max_workers = %d,
    isolation = "%s",
)
`
)

// memThreadSizes are the thread pools compared: per worker is the
// difference over the difference in workers.
var memThreadSizes = [2]int{1, 50}

// oneshotTaskSrc is the trivial task run oneshot. It logs every message
// it handles, with its number and the time, so that every message can be
// accounted for (a duplicate, a late redelivery) and the drain timed from
// the daemon's log.
const oneshotTaskSrc = `def work(payload, meta):
    log.info("handled", seq = payload["id"], redelivered = meta.redelivered, at = time.now().unix_nano)
    return True

task(
    name = "oneshot",
    subscribe_to = ["oneshot.#"],
    work = work,
    work_model = "oneshot",
    isolation = "%s",
    max_workers = %d,
)
`

// oneshotInterval is the smaller --scaling-interval a oneshot row with
// process isolation is also measured with: a finished worker process is
// replaced at once, so the interval should not matter (it did when the
// replacement waited for the next scaling tick).
const oneshotInterval = 20 * time.Millisecond

// oneshotDefaultN is N for the oneshot drains when -n is not given: a
// process per message.
const oneshotDefaultN = 500

// oneshotPart is the share of N the "first part" rate is measured on:
// the drain before any message whose lease was lost comes back.
const oneshotPart = 0.95

// scaleRun is one pass of the scaling scenario.
type scaleRun struct {
	// grow[k] is the time from the first message published to the pool
	// first showing min+1+k workers.
	grow []time.Duration
	// drain: from max_workers reached (the publisher stops then) to every
	// published message acked; down: from then to min_workers.
	// downFirst is the first time the pool was back at min_workers, down
	// when it got there for good; regrown counts the workers started
	// after the backlog cleared.
	drain, downFirst, down time.Duration
	regrown                int
	published              int
	peakDepth              int64
	// timeline is every change of the pool's size /status showed, from
	// the first message published.
	timeline []string
}

// track notes a change of the pool's size.
func (r *scaleRun) track(t0 time.Time, last *int, t taskStatus) {
	if t.Workers.Now != *last {
		r.timeline = append(r.timeline, fmt.Sprintf("%.2fs:%d", time.Since(t0).Seconds(), t.Workers.Now))
		*last = t.Workers.Now
	}
}

type memRun struct {
	// daemon: the daemon's memory idle after start and after memMessages.
	idle, after memory
	// kids: each worker process's, same moments.
	kidsIdle, kidsAfter []memory
}

type workersReport struct {
	machine               machine
	runs                  int
	loadBefore, loadAfter string
	// scale[i] are the runs of scaleCases[i].
	scale [][]scaleRun
	// threads[k] are the runs of memThreadSizes[k] thread workers; procs
	// those of o.workers worker processes.
	threads    [2][]memRun
	procs      []memRun
	procWorker int
	oneshot    []*oneshotSamples
	oneshotN   int
}

type oneshotSamples struct {
	label     string
	isolation string
	workers   int
	// interval is the daemon's --scaling-interval; 0 leaves the default.
	interval time.Duration
	// part: msgs/s from ready until oneshotPart of the messages were
	// handled; all: until every one was.
	part, all rates
	// cpu is the CPU time per message of the daemon and its worker
	// processes, from ready to the oneshotPart mark, in ms.
	cpu []float64
	// Per run: messages first handled as a redelivery (delivered before
	// to a worker that did not handle them), handled more than once, and
	// the broker warnings of sqliteWarnings.
	late, twice, warned []int
}

func benchWorkers(ctx context.Context, e *env) (report, error) {
	o := e.opts
	if o.cpuprofile != "" {
		return nil, fmt.Errorf("-cpuprofile: the workers benchmark is not profiled")
	}
	binary, err := e.symphony(ctx)
	if err != nil {
		return nil, err
	}
	rep := &workersReport{machine: e.machine, runs: o.runs, loadBefore: loadAvg(), procWorker: o.workers,
		scale: make([][]scaleRun, len(scaleCases)), oneshotN: oneshotDefaultN}
	if o.nSet {
		rep.oneshotN = o.n
	}
	for _, c := range []struct {
		iso      string
		interval time.Duration
	}{{"process", 0}, {"process", oneshotInterval}, {"thread", 0}} {
		label := fmt.Sprintf("oneshot, isolation = %q, max_workers = %d", c.iso, o.workers)
		if c.interval != 0 {
			label += fmt.Sprintf(", --scaling-interval %s", c.interval)
		}
		rep.oneshot = append(rep.oneshot, &oneshotSamples{label: label, isolation: c.iso, workers: o.workers, interval: c.interval})
	}
	only := func(label string) bool { return strings.Contains(label, o.only) }
	for run := range o.runs {
		for i, c := range scaleCases {
			label := c.label()
			if !only(label) {
				continue
			}
			r, err := runScale(ctx, e, binary, c, run)
			if err != nil {
				return nil, fmt.Errorf("run %d, %s: %w", run+1, label, err)
			}
			rep.scale[i] = append(rep.scale[i], r)
			if o.verbose {
				e.logf("run %d %s: first worker added after %s, max after %s; backlog (peak %d, %d published) cleared %s later; min %s after that (for good: %s, %d workers started meanwhile)\n  pool size from the first message: %s",
					run+1, label, secs(r.grow[0]), secs(r.grow[len(r.grow)-1]), r.peakDepth, r.published, secs(r.drain), secs(r.downFirst),
					secs(r.down), r.regrown, strings.Join(r.timeline, " "))
			}
		}
		for k, w := range memThreadSizes {
			label := fmt.Sprintf("memory, %d thread workers", w)
			if !only(label) {
				continue
			}
			r, err := runMemory(ctx, e, binary, w, "thread", run)
			if err != nil {
				return nil, fmt.Errorf("run %d, %s: %w", run+1, label, err)
			}
			rep.threads[k] = append(rep.threads[k], r)
			if o.verbose {
				e.logf("run %d %s: daemon RSS %s idle, %s after %d messages", run+1, label, mib(float64(r.idle.rss)), mib(float64(r.after.rss)), memMessages)
			}
		}
		if label := fmt.Sprintf("memory, %d worker processes", o.workers); only(label) {
			r, err := runMemory(ctx, e, binary, o.workers, "process", run)
			if err != nil {
				return nil, fmt.Errorf("run %d, %s: %w", run+1, label, err)
			}
			rep.procs = append(rep.procs, r)
			if o.verbose {
				e.logf("run %d %s: daemon RSS %s idle; one worker process RSS %s, PSS %s idle", run+1, label,
					mib(float64(r.idle.rss)), mib(medianOf(r.kidsIdle, rssOf)), mib(medianOf(r.kidsIdle, pssOf)))
			}
		}
		for k := range rep.oneshot {
			s := rep.oneshot[(k+run)%len(rep.oneshot)]
			if !only(s.label) {
				continue
			}
			r, err := runOneshot(ctx, e, binary, s.isolation, s.workers, s.interval, rep.oneshotN, run)
			if err != nil {
				return nil, fmt.Errorf("run %d, %s: %w", run+1, s.label, err)
			}
			s.part = append(s.part, rateOf(int(oneshotPart*float64(rep.oneshotN)), r.part))
			s.all = append(s.all, rateOf(rep.oneshotN, r.all))
			s.cpu = append(s.cpu, float64(r.cpu.Microseconds())/1000/(oneshotPart*float64(rep.oneshotN)))
			s.late = append(s.late, r.late)
			s.twice = append(s.twice, r.twice)
			s.warned = append(s.warned, r.warned)
			if o.verbose {
				e.logf("run %d %s: %s msgs/s from ready for the first %.0f%%, %s for all; %.2f ms CPU per message (daemon and workers); %d first handled as a redelivery, %d handled twice, %d broker warnings",
					run+1, s.label, human(s.part[len(s.part)-1]), 100*oneshotPart, human(s.all[len(s.all)-1]), s.cpu[len(s.cpu)-1], r.late, r.twice, r.warned)
			}
		}
	}
	rep.loadAfter = loadAvg()
	return rep, nil
}

// runScale starts a pool of scaleMin workers, publishes scaleRate
// messages per second until /status shows scaleMax workers (at once, or
// after the pool idled for a full window), then waits for every message
// to be acked and for the pool to be back at scaleMin.
func runScale(ctx context.Context, e *env, binary string, c scaleCase, run int) (scaleRun, error) {
	var r scaleRun
	interval := c.interval
	dir, err := e.dir(fmt.Sprintf("run%d-%s", run+1, slug(c.label())))
	if err != nil {
		return r, err
	}
	defer e.drop(dir)
	s := symphonySetup{binary: binary, dir: dir, args: []string{"--scaling-interval", interval.String()}}
	tasksDir, err := writeTask(dir, "scale", fmt.Sprintf(scaleTaskSrc, scaleSleep.Seconds(), scaleMin, scaleMax, scaleIdle))
	if err != nil {
		return r, err
	}
	d, err := startDaemon(ctx, s, tasksDir, "scale", "")
	if err != nil {
		return r, err
	}
	defer d.proc.kill()
	fail := func(err error) (scaleRun, error) { return r, fmt.Errorf("%w\n%s", err, d.logTail()) }
	if _, err := d.waitReady(ctx); err != nil {
		return fail(err)
	}
	st, err := d.status(ctx)
	if err != nil {
		return fail(err)
	}
	if got := time.Duration(st.Settings.ScalingInterval * float64(time.Second)); got != interval {
		return fail(fmt.Errorf("/status shows a scaling interval of %s, want %s", got, interval))
	}
	if _, _, err := d.waitTask(ctx, "scale", 10*time.Second, "pool at min_workers", func(t taskStatus) bool {
		return t.Workers.Now == scaleMin && t.Workers.Min == scaleMin && t.Workers.Max == scaleMax
	}); err != nil {
		return fail(err)
	}

	if c.warm {
		if err := sleepCtx(ctx, 100*interval+time.Second); err != nil {
			return r, err
		}
	}
	f, err := openSQLiteFeeder(ctx, filepath.Join(dir, "symphony.db"), scaleKey)
	if err != nil {
		return fail(err)
	}
	defer f.close()
	pubCtx, stopPub := context.WithCancel(ctx)
	defer stopPub()
	pub := startStream(pubCtx, f, scaleRate, 10*time.Millisecond)
	var t0 time.Time
	select {
	case t0 = <-pub.first:
	case <-pub.done:
		return fail(fmt.Errorf("publisher: %v", pub.err))
	}

	// Grow: from the first message stored to max_workers: no decision in
	// the first 10 intervals; then a worker per interval at most.
	r.grow = make([]time.Duration, scaleMax-scaleMin)
	limit := 100*interval + time.Duration(scaleMax)*interval + 30*time.Second
	size := scaleMin
	_, tMax, err := d.waitTask(ctx, "scale", limit, "pool at max_workers", func(t taskStatus) bool {
		r.track(t0, &size, t)
		now := time.Since(t0)
		for k := range r.grow {
			if t.Workers.Now >= scaleMin+1+k && r.grow[k] == 0 {
				r.grow[k] = now
			}
		}
		r.peakDepth = max(r.peakDepth, t.QueueDepth)
		select {
		case <-pub.done:
			return true // the publisher failed: stop waiting
		default:
		}
		return t.Workers.Now == scaleMax
	})
	stopPub()
	if perr := pub.wait(); perr != nil {
		return fail(fmt.Errorf("publisher: %v", perr))
	}
	if err != nil {
		return fail(err)
	}
	r.published = f.sent()

	// Clear: every published message acked, nothing retried or
	// dead-lettered.
	_, tClear, err := d.waitTask(ctx, "scale", time.Duration(r.published)*scaleSleep+30*time.Second, "backlog cleared", func(t taskStatus) bool {
		r.track(t0, &size, t)
		r.peakDepth = max(r.peakDepth, t.QueueDepth)
		return t.Messages["ack"]+t.Messages["retry"]+t.Messages["dead"] >= r.published
	})
	if err != nil {
		return fail(err)
	}
	r.drain = tClear.Sub(tMax)
	t, err := d.task(ctx, "scale")
	if err != nil {
		return fail(err)
	}
	if t.Messages["ack"] != r.published || t.Messages["retry"] != 0 || t.Messages["dead"] != 0 {
		return fail(fmt.Errorf("%d messages published, outcomes %v", r.published, t.Messages))
	}

	// Shrink: idle_timeout, then a worker per interval at most. It is
	// followed until no sample of the backlog can be left in the window (a
	// full window, idle_timeout and the steps down after the clear), to
	// catch a pool that grows again meanwhile.
	hold := tClear.Add(100*interval + scaleIdle + time.Duration(scaleMax)*interval + 2*time.Second)
	var firstMin, lastMin time.Time
	for time.Now().Before(hold) {
		t, err := d.task(ctx, "scale")
		if err != nil {
			return fail(err)
		}
		now := time.Now()
		if t.Workers.Now > size {
			r.regrown += t.Workers.Now - size
		}
		r.track(t0, &size, t)
		switch {
		case t.Workers.Now != scaleMin:
			lastMin = time.Time{}
		case lastMin.IsZero():
			lastMin = now
			if firstMin.IsZero() {
				firstMin = now
			}
		}
		if t.Messages["ack"] != r.published || t.QueueDepth != 0 {
			return fail(fmt.Errorf("with the publisher stopped and every message acked, /status shows %+v", t))
		}
		if err := sleepCtx(ctx, pollEvery); err != nil {
			return r, err
		}
	}
	if lastMin.IsZero() {
		return fail(fmt.Errorf("%s after the backlog cleared the pool is not at min_workers; sizes: %s",
			hold.Sub(tClear), strings.Join(r.timeline, " ")))
	}
	r.downFirst, r.down = firstMin.Sub(tClear), lastMin.Sub(tClear)
	if err := d.proc.stop(30 * time.Second); err != nil {
		return fail(err)
	}
	if logged := d.warnings(); logged != "" {
		return r, fmt.Errorf("the daemon logged warnings or errors:\n%s", logged)
	}
	return r, checkTablesEmpty(ctx, s)
}

// checkTablesEmpty checks, with no daemon running, that the broker's
// database holds no message and no dead letter.
func checkTablesEmpty(ctx context.Context, s symphonySetup) error {
	for _, table := range []string{"messages", "bodies", "dead"} {
		left, err := countRows(ctx, s, table)
		if err != nil {
			return err
		}
		if left != 0 {
			return fmt.Errorf("at the end, table %s of the broker holds %d rows", table, left)
		}
	}
	return nil
}

// runMemory starts a pool of a fixed size (min_workers = max_workers =
// workers), measures the daemon (and its worker processes) once the pool
// is up and has idled memSettle, then again after it handled memMessages
// and idled memSettle.
func runMemory(ctx context.Context, e *env, binary string, workers int, isolation string, run int) (memRun, error) {
	var r memRun
	dir, err := e.dir(fmt.Sprintf("run%d-memory-%d-%s", run+1, workers, isolation))
	if err != nil {
		return r, err
	}
	defer e.drop(dir)
	s := symphonySetup{binary: binary, dir: dir}
	tasksDir, err := writeTask(dir, "mem", fmt.Sprintf(memTaskSrc, workers, workers, isolation))
	if err != nil {
		return r, err
	}
	d, err := startDaemon(ctx, s, tasksDir, "memory", "")
	if err != nil {
		return r, err
	}
	defer d.proc.kill()
	fail := func(err error) (memRun, error) { return r, fmt.Errorf("%w\n%s", err, d.logTail()) }
	if _, err := d.waitReady(ctx); err != nil {
		return fail(err)
	}
	if _, _, err := d.waitTask(ctx, "mem", 30*time.Second, fmt.Sprintf("pool of %d workers", workers), func(t taskStatus) bool {
		return t.Workers.Now == workers && t.Isolation == isolation
	}); err != nil {
		return fail(err)
	}
	// The worker processes: the daemon's children running `symphony
	// worker`.
	var kids []int
	measure := func() (memory, []memory, error) {
		if err := sleepCtx(ctx, memSettle); err != nil {
			return memory{}, nil, err
		}
		var km []memory
		if isolation == "process" {
			now := children(d.pid())
			if len(now) != workers {
				return memory{}, nil, fmt.Errorf("the daemon has %d child processes (%v), want %d worker processes", len(now), now, workers)
			}
			for _, pid := range now {
				if c := cmdline(pid); !strings.Contains(c, " worker ") {
					return memory{}, nil, fmt.Errorf("child %d of the daemon is not a worker process: %s", pid, c)
				}
				m, err := memOf(pid)
				if err != nil {
					return memory{}, nil, err
				}
				km = append(km, m)
				if !slices.Contains(kids, pid) {
					kids = append(kids, pid)
				}
			}
		}
		m, err := memOf(d.pid())
		return m, km, err
	}
	if r.idle, r.kidsIdle, err = measure(); err != nil {
		return fail(err)
	}
	f, err := openSQLiteFeeder(ctx, filepath.Join(dir, "symphony.db"), memKey)
	if err != nil {
		return fail(err)
	}
	_, err = preloadFeeder(f, memMessages)
	f.close()
	if err != nil {
		return fail(err)
	}
	if _, _, err := d.waitTask(ctx, "mem", time.Minute, fmt.Sprintf("%d messages acked", memMessages), func(t taskStatus) bool {
		return t.Messages["ack"]+t.Messages["retry"]+t.Messages["dead"] >= memMessages
	}); err != nil {
		return fail(err)
	}
	t, err := d.task(ctx, "mem")
	if err != nil {
		return fail(err)
	}
	if t.Messages["ack"] != memMessages || t.Workers.Now != workers {
		return fail(fmt.Errorf("%d messages published, outcomes %v, %d workers", memMessages, t.Messages, t.Workers.Now))
	}
	if r.after, r.kidsAfter, err = measure(); err != nil {
		return fail(err)
	}
	if err := d.proc.stop(30 * time.Second); err != nil {
		return fail(err)
	}
	// The daemon stopped its worker processes before it exited.
	for _, pid := range kids {
		if alive(pid) && strings.Contains(cmdline(pid), " worker ") {
			return r, fmt.Errorf("worker process %d outlived the daemon", pid)
		}
	}
	if logged := d.warnings(); logged != "" {
		return r, fmt.Errorf("the daemon logged warnings or errors:\n%s", logged)
	}
	return r, checkTablesEmpty(ctx, s)
}

// oneshotRun is one drain of a oneshot task.
type oneshotRun struct {
	// part: from ready to the first handling of oneshotPart·n distinct
	// messages; all: of every one.
	part, all time.Duration
	cpu       time.Duration // daemon and reaped workers, ready to part
	late      int           // messages first handled as redeliveries
	twice     int           // handlings beyond the first
	warned    int           // broker warnings of sqliteWarnings
}

// sqliteWarnings are what the embedded broker logs when a write of a
// process fails, as when a stopping consumer leaves its connection inside
// a transaction (see bench/README.md, workers and reload): acks and leases
// are then lost, and their messages come back when the lease ends. A
// drain counts and reports them; any other warning fails it.
var sqliteWarnings = []string{
	"ack after the lease was lost; another consumer may have the message",
	"write acks failed; the messages will be redelivered",
	"write acks failed; will retry",
	"return messages to the queue failed; they come back when their lease expires",
	"take messages failed; retrying",
	"renew leases failed; will retry",
}

// runOneshot preloads n messages, starts the daemon on a oneshot task and
// follows its log until every message was handled and the broker's
// messages table is empty (a message whose lease was lost comes back when
// the lease ends, 30 s later).
func runOneshot(ctx context.Context, e *env, binary, isolation string, workers int, interval time.Duration, n, run int) (oneshotRun, error) {
	var r oneshotRun
	dir, err := e.dir(fmt.Sprintf("run%d-oneshot-%s-%s", run+1, isolation, interval))
	if err != nil {
		return r, err
	}
	defer e.drop(dir)
	s := symphonySetup{binary: binary, dir: dir, args: []string{"--log-level", "info"}}
	if interval != 0 {
		s.args = append(s.args, "--scaling-interval", interval.String())
	}
	tasksDir, err := writeTask(dir, "oneshot", fmt.Sprintf(oneshotTaskSrc, isolation, workers))
	if err != nil {
		return r, err
	}
	if _, err := declareWithDaemon(ctx, s, tasksDir); err != nil {
		return r, err
	}
	f, err := openSQLiteFeeder(ctx, filepath.Join(dir, "symphony.db"), "oneshot.job")
	if err != nil {
		return r, err
	}
	_, err = preloadFeeder(f, n)
	f.close()
	if err != nil {
		return r, err
	}
	if depth, err := countRows(ctx, s, "messages"); err != nil {
		return r, err
	} else if depth != n {
		return r, fmt.Errorf("after publishing %d messages the queue holds %d", n, depth)
	}

	d, err := startDaemon(ctx, s, tasksDir, "oneshot", "")
	if err != nil {
		return r, err
	}
	defer d.proc.kill()
	fail := func(err error) (oneshotRun, error) { return r, fmt.Errorf("%w\n%s", err, d.logTail()) }
	ready, err := d.waitReady(ctx)
	if err != nil {
		return fail(err)
	}
	cpu0 := procCPUTree(d.pid())
	fl, err := follow(d.log)
	if err != nil {
		return fail(err)
	}
	defer fl.close()
	seen := make([]int, n)
	distinct, handled := 0, 0
	partN := int(oneshotPart * float64(n))
	var other []string
	read := func(ev logEvent) error {
		switch {
		case ev.Msg == "handled":
			if ev.Seq == nil || *ev.Seq < 0 || *ev.Seq >= n {
				return fmt.Errorf("a handled line without a known seq: %s", ev.raw)
			}
			handled++
			seen[*ev.Seq]++
			if seen[*ev.Seq] > 1 {
				r.twice++
				return nil
			}
			distinct++
			if strings.Contains(string(ev.raw), `"redelivered":true`) {
				r.late++
			}
			at := time.Unix(0, ev.At).Sub(ready)
			if distinct == partN {
				r.part = at
				r.cpu = procCPUTree(d.pid()) - cpu0
			}
			if distinct == n {
				r.all = at
			}
		case ev.Level == "WARN" || ev.Level == "ERROR":
			if slices.Contains(sqliteWarnings, ev.Msg) {
				r.warned++
			} else {
				other = append(other, string(ev.raw))
			}
		}
		return nil
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if err := fl.poll(read); err != nil {
			return fail(err)
		}
		if len(other) > 0 {
			return fail(fmt.Errorf("the daemon logged:\n%s", strings.Join(other, "\n")))
		}
		if distinct == n {
			left, err := countRows(ctx, s, "messages")
			if err != nil {
				return fail(err)
			}
			t, err := d.task(ctx, "oneshot")
			if err != nil {
				return fail(err)
			}
			if left == 0 && t.Messages["ack"] == handled {
				if t.Messages["retry"] != 0 || t.Messages["dead"] != 0 {
					return fail(fmt.Errorf("outcomes %v", t.Messages))
				}
				break
			}
		}
		select {
		case <-d.proc.done:
			return fail(fmt.Errorf("the daemon exited: %v", d.proc.err))
		default:
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("after 2 minutes %d of %d messages handled (%d handlings)", distinct, n, handled))
		}
		if err := sleepCtx(ctx, pollEvery); err != nil {
			return r, err
		}
	}
	if err := d.proc.stop(30 * time.Second); err != nil {
		return fail(err)
	}
	if err := fl.poll(read); err != nil {
		return fail(err)
	}
	if len(other) > 0 {
		return fail(fmt.Errorf("the daemon logged:\n%s", strings.Join(other, "\n")))
	}
	return r, checkTablesEmpty(ctx, s)
}

func rssOf(m memory) float64 { return float64(m.rss) }
func pssOf(m memory) float64 { return float64(m.pss) }

// medianOf is the median of get over ms.
func medianOf(ms []memory, get func(memory) float64) float64 {
	var v rates
	for _, m := range ms {
		v = append(v, get(m))
	}
	return v.median()
}

// secs writes a duration in seconds, two decimals.
func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

// durations are the samples of one duration over the runs.
type durations []time.Duration

// cell is "median (min–max)" in seconds.
func (ds durations) cell() string {
	if len(ds) == 0 {
		return "–"
	}
	var v rates
	for _, d := range ds {
		v = append(v, d.Seconds())
	}
	if len(v) == 1 {
		return fmt.Sprintf("%.2f s", v[0])
	}
	return fmt.Sprintf("%.2f s (%.2f–%.2f)", v.median(), v.min(), v.max())
}

// memCell is "median (min–max)" of one memory figure over the runs.
func memCell(v rates) string {
	if len(v) == 0 {
		return "–"
	}
	if len(v) == 1 {
		return mib(v[0])
	}
	return fmt.Sprintf("%s (%.1f–%.1f)", mib(v.median()), v.min()/(1<<20), v.max()/(1<<20))
}

var scaleHeader = []string{"--scaling-interval", "when the backlog appears", "backlog → first worker added", "backlog → max_workers (8)",
	"max_workers → backlog cleared", "backlog cleared → min_workers (1), first", "backlog cleared → min_workers for good",
	"workers started after the backlog cleared", "peak backlog"}

func (r *workersReport) scaleRows() [][]string {
	var rows [][]string
	for i, c := range scaleCases {
		runs := r.scale[i]
		if len(runs) == 0 {
			continue
		}
		var first, full, drain, downFirst, down durations
		var peak, regrown rates
		for _, s := range runs {
			first = append(first, s.grow[0])
			full = append(full, s.grow[len(s.grow)-1])
			drain = append(drain, s.drain)
			downFirst = append(downFirst, s.downFirst)
			down = append(down, s.down)
			peak = append(peak, float64(s.peakDepth))
			regrown = append(regrown, float64(s.regrown))
		}
		name := c.interval.String()
		if c.interval == 100*time.Millisecond {
			name += " (default)"
		}
		when := fmt.Sprintf("pool just started (no decision in its first 10 samples = %s)", secs(10*c.interval))
		if c.warm {
			when = fmt.Sprintf("pool idle for %s (window full)", secs(100*c.interval+time.Second))
		}
		rows = append(rows, []string{name, when, first.cell(), full.cell(), drain.cell(), downFirst.cell(), down.cell(), regrown.cell(), peak.cell()})
	}
	return rows
}

var memHeader = []string{"what", "RSS idle after start", "RSS after 2000 messages", "PSS idle after start", "PSS after 2000 messages"}

func (r *workersReport) memRows() [][]string {
	var rows [][]string
	pick := func(runs []memRun, f func(memRun) float64) rates {
		var v rates
		for _, m := range runs {
			v = append(v, f(m))
		}
		return v
	}
	daemonRow := func(label string, runs []memRun) []string {
		return []string{label,
			memCell(pick(runs, func(m memRun) float64 { return rssOf(m.idle) })),
			memCell(pick(runs, func(m memRun) float64 { return rssOf(m.after) })),
			memCell(pick(runs, func(m memRun) float64 { return pssOf(m.idle) })),
			memCell(pick(runs, func(m memRun) float64 { return pssOf(m.after) }))}
	}
	one, many := r.threads[0], r.threads[1]
	if len(one) > 0 {
		rows = append(rows, daemonRow(fmt.Sprintf("daemon, %d thread worker", memThreadSizes[0]), one))
	}
	if len(many) > 0 {
		rows = append(rows, daemonRow(fmt.Sprintf("daemon, %d thread workers", memThreadSizes[1]), many))
	}
	if len(one) > 0 && len(many) > 0 {
		// Per worker: the difference of the medians over the difference
		// in workers.
		dw := float64(memThreadSizes[1] - memThreadSizes[0])
		per := func(f func(memRun) float64) string {
			d := (pick(many, f).median() - pick(one, f).median()) / dw
			return fmt.Sprintf("%.0f KiB", d/1024)
		}
		rows = append(rows, []string{fmt.Sprintf("per thread worker (difference ÷ %.0f)", dw),
			per(func(m memRun) float64 { return rssOf(m.idle) }), per(func(m memRun) float64 { return rssOf(m.after) }),
			per(func(m memRun) float64 { return pssOf(m.idle) }), per(func(m memRun) float64 { return pssOf(m.after) })})
	}
	if len(r.procs) > 0 {
		rows = append(rows, daemonRow(fmt.Sprintf("daemon, %d worker processes", r.procWorker), r.procs))
		kid := func(which func(memRun) []memory, get func(memory) float64) rates {
			var v rates
			for _, m := range r.procs {
				v = append(v, medianOf(which(m), get))
			}
			return v
		}
		idle := func(m memRun) []memory { return m.kidsIdle }
		after := func(m memRun) []memory { return m.kidsAfter }
		rows = append(rows, []string{"one worker process (median of the children)",
			memCell(kid(idle, rssOf)), memCell(kid(after, rssOf)), memCell(kid(idle, pssOf)), memCell(kid(after, pssOf))})
		sum := func(which func(memRun) []memory, get func(memory) float64) rates {
			var v rates
			for _, m := range r.procs {
				t := 0.0
				for _, k := range which(m) {
					t += get(k)
				}
				v = append(v, t)
			}
			return v
		}
		rows = append(rows, []string{fmt.Sprintf("the %d worker processes together", r.procWorker),
			memCell(sum(idle, rssOf)), memCell(sum(after, rssOf)), memCell(sum(idle, pssOf)), memCell(sum(after, pssOf))})
	}
	return rows
}

var oneshotHeader = []string{"task", fmt.Sprintf("msgs/s from ready, first %.0f%%", 100*oneshotPart), "msgs/s from ready, all",
	"CPU ms/msg (daemon + worker processes)", "first handled as a redelivery", "handled twice", "broker warnings in the log"}

func (r *workersReport) oneshotRows() [][]string {
	var rows [][]string
	for _, s := range r.oneshot {
		if len(s.part) == 0 {
			continue
		}
		rows = append(rows, []string{s.label, s.part.cell(), s.all.cell(), fmt.Sprintf("%.2f", rates(s.cpu).median()),
			ints(s.late), ints(s.twice), ints(s.warned)})
	}
	return rows
}

func (r *workersReport) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "workers: %d runs: median (min–max); load average %s before, %s after\n", r.runs, r.loadBefore, r.loadAfter)
	fmt.Fprintf(&b, "\nscaling: %d to %d workers, handler sleep(%g), idle_timeout %s, %.0f msgs/s published until max_workers\n",
		scaleMin, scaleMax, scaleSleep.Seconds(), scaleIdle, scaleRate)
	b.WriteString(table(scaleHeader, r.scaleRows(), false))
	b.WriteString("\nmemory:\n")
	b.WriteString(table(memHeader, r.memRows(), false))
	fmt.Fprintf(&b, "\noneshot, N=%d:\n", r.oneshotN)
	b.WriteString(table(oneshotHeader, r.oneshotRows(), false))
	return b.String()
}

func (r *workersReport) markdown() string {
	var b strings.Builder
	b.WriteString(r.machine.header("databases on "+r.machine.FS, r.loadBefore, r.loadAfter))
	fmt.Fprintf(&b, "%d runs of each; cells are the median and, in brackets, the lowest and highest run.\n\n", r.runs)
	fmt.Fprintf(&b, "**Scaling** (%d to %d workers, `sleep(%g)` per message, `idle_timeout = \"%s\"`, %.0f msgs/s published until the pool is at max_workers):\n\n",
		scaleMin, scaleMax, scaleSleep.Seconds(), scaleIdle, scaleRate)
	b.WriteString(table(scaleHeader, r.scaleRows(), true))
	fmt.Fprintf(&b, "\n**Memory** (a trivial task, min_workers = max_workers; idle %s before each measure; %d messages handled between the two):\n\n",
		memSettle, memMessages)
	b.WriteString(table(memHeader, r.memRows(), true))
	fmt.Fprintf(&b, "\n**oneshot** (a trivial task that logs each message, N = %d messages preloaded; the last three columns list every run):\n\n", r.oneshotN)
	b.WriteString(table(oneshotHeader, r.oneshotRows(), true))
	return b.String()
}
