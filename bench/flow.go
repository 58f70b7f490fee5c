package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// The flow benchmark: how exact symphony's time and flow features are on
// each broker. Schedule ticks and delayed messages: how late their
// handlers start. Rate limits: how close 1, 2 and 4 daemons sharing a
// limit keep to it. Priorities: what a priority queue costs in drain rate.

func init() {
	register(benchmark{
		name:  "flow",
		about: "time and flow: tick and delayed-message lateness, rate-limit accuracy with 1, 2 and 4 daemons, drain rate with and without max_priority; both brokers",
		run:   benchFlow,
	})
}

// flowTimeSrc ticks every second; each tick publishes a message delayed
// by 1.5 s, carrying when it is due by the handler's clock.
const flowTimeSrc = `def tick(payload, meta):
    now = time.now().unix_nano
    log.info("tick", scheduled = payload["scheduled_at"], at = now)
    publish("flow.delayed", {"due": now + 1500000000}, delay = "1500ms")
    return True

task(name = "ticks", schedule = "every 1s", work = tick)

def delayed(payload, meta):
    log.info("delayed", due = payload["due"], at = time.now().unix_nano)
    return True

task(name = "delayed", subscribe_to = ["flow.delayed"], work = delayed)
`

// flowLimitedSrc starts at most 50 messages a second across daemons.
const flowLimitedSrc = `def work(payload, meta):
    log.info("started", at = time.now().unix_nano)
    return True

task(name = "%[1]s", subscribe_to = ["%[1]s.#"], work = work, rate_limit = "%[2]d/s")
`

// flowDrainSrc is the no-op task of a fixed pool, with or without
// max_priority.
const flowDrainSrc = `def work(payload, meta):
    return True

task(name = "%[1]s", subscribe_to = ["%[1]s.#"], work = work, min_workers = %[2]d, max_workers = %[2]d%[3]s)
`

const (
	flowTicks     = 20 // measured, after the first two
	flowLimit     = 50 // starts per second
	flowWarmUp    = 3 * time.Second
	flowSteady    = 10 * time.Second
	flowPriority  = 5 // max_priority of the priority queue
	flowDrainN    = 20000
	flowDelayedBy = 1500 * time.Millisecond
)

// flowEvent is what the flow tasks log.
type flowEvent struct {
	Msg       string `json:"msg"`
	Level     string `json:"level"`
	Scheduled string `json:"scheduled"`
	At        int64  `json:"at"`
	Due       int64  `json:"due"`
}

type lateness struct {
	n             int
	p50, p99, max time.Duration
}

func latenessOf(ds []time.Duration) lateness {
	if len(ds) == 0 {
		return lateness{}
	}
	s := slices.Sorted(slices.Values(ds))
	at := func(q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))] }
	return lateness{n: len(s), p50: at(0.5), p99: at(0.99), max: s[len(s)-1]}
}

type flowTimeResult struct {
	backend        string
	ticks, delayed lateness
	err            error
}

type flowLimitResult struct {
	backend  string
	daemons  int
	starts   int
	rate     float64 // over the steady window
	busiest1 int     // most starts in any 1 s of it
	err      error
}

type flowDrainResult struct {
	backend     string
	plain, prio rates
	err         error
}

type flowReport struct {
	machine               machine
	rabbitVersion         string
	loadBefore, loadAfter string
	workers, runs         int
	times                 []flowTimeResult
	limits                []flowLimitResult
	drains                []flowDrainResult
}

func benchFlow(ctx context.Context, e *env) (report, error) {
	r := &flowReport{machine: e.machine, workers: e.opts.workers, runs: e.opts.runs, loadBefore: loadAvg()}
	binary, err := e.symphony(ctx)
	if err != nil {
		return nil, err
	}
	r.machine = e.machine
	dir, err := e.dir("flow-")
	if err != nil {
		return nil, err
	}
	defer e.drop(dir)
	backends, version, err := loadBackends(ctx, e, dir)
	if err != nil {
		return nil, err
	}
	r.rabbitVersion = version
	defer func() {
		for _, b := range backends {
			b.drop()
		}
	}()
	// Each part on its own database (a fresh file, or fresh names in the
	// run's virtual host).
	setup := func(b loadBackend, name string) (symphonySetup, error) {
		sub, err := os.MkdirTemp(dir, name+"-")
		if err != nil {
			return symphonySetup{}, err
		}
		url := b.url
		if strings.HasPrefix(url, "sqlite:") {
			url = "sqlite:" + filepath.Join(sub, "symphony.db")
		}
		return symphonySetup{binary: binary, dir: sub, brokerURL: url, args: []string{"--log-level", "info"}}, nil
	}
	for _, b := range backends {
		s, err := setup(b, "time")
		res := flowTimeResult{backend: b.name, err: err}
		if err == nil {
			res.ticks, res.delayed, res.err = flowTime(ctx, s)
		}
		e.logf("%s: ticks %+v delayed %+v err %v", b.name, res.ticks, res.delayed, res.err)
		r.times = append(r.times, res)
		if errors.Is(res.err, context.Canceled) {
			return nil, res.err
		}
	}
	for _, b := range backends {
		for _, n := range []int{1, 2, 4} {
			s, err := setup(b, fmt.Sprintf("limit%d", n))
			res := flowLimitResult{backend: b.name, daemons: n, err: err}
			if err == nil {
				res = flowRate(ctx, s, b.name, n)
			}
			e.logf("%s, %d daemons: %+v", b.name, n, res)
			r.limits = append(r.limits, res)
			if errors.Is(res.err, context.Canceled) {
				return nil, res.err
			}
		}
	}
	for _, b := range backends {
		res := flowDrainResult{backend: b.name}
		for run := range e.opts.runs {
			// The order turns with each run.
			for _, prio := range []bool{run%2 == 0, run%2 == 1} {
				s, err := setup(b, "drain")
				var rate float64
				if err == nil {
					rate, err = flowDrain(ctx, s, e.opts.workers, prio)
				}
				if err != nil {
					res.err = err
					break
				}
				if prio {
					res.prio = append(res.prio, rate)
				} else {
					res.plain = append(res.plain, rate)
				}
			}
			if res.err != nil {
				break
			}
		}
		e.logf("%s drain: %+v", b.name, res)
		r.drains = append(r.drains, res)
		if errors.Is(res.err, context.Canceled) {
			return nil, res.err
		}
	}
	r.loadAfter = loadAvg()
	return r, nil
}

// flowTime runs one daemon of the ticking task until flowTicks ticks past
// the first two, and the delayed messages they published, were handled.
func flowTime(ctx context.Context, s symphonySetup) (ticks, delayed lateness, err error) {
	tasksDir, err := writeTask(s.dir, "flow", flowTimeSrc)
	if err != nil {
		return ticks, delayed, err
	}
	d, err := startDaemon(ctx, s, tasksDir, "time", "")
	if err != nil {
		return ticks, delayed, err
	}
	defer d.proc.kill()
	fl, err := follow(d.log)
	if err != nil {
		return ticks, delayed, err
	}
	defer fl.close()
	var tickLate, delayLate []time.Duration
	var problems []string
	skipped := 0
	deadline := time.Now().Add(time.Duration(flowTicks+10) * time.Second)
	for len(tickLate) < flowTicks || len(delayLate) < flowTicks {
		err := fl.poll(func(ev logEvent) error {
			var fe flowEvent
			if err := json.Unmarshal(ev.raw, &fe); err != nil {
				return err
			}
			switch {
			case fe.Msg == "tick":
				// The first ticks come as the daemon starts: its
				// start, not its timing, makes them late.
				if skipped < 2 {
					skipped++
					return nil
				}
				at, err := time.Parse(time.RFC3339, fe.Scheduled)
				if err != nil {
					return fmt.Errorf("scheduled_at %q: %w", fe.Scheduled, err)
				}
				if len(tickLate) < flowTicks {
					tickLate = append(tickLate, time.Duration(fe.At-at.UnixNano()))
				}
			case fe.Msg == "delayed":
				if len(delayLate) < flowTicks && skipped >= 2 {
					delayLate = append(delayLate, time.Duration(fe.At-fe.Due))
				}
			case fe.Level == "WARN" || fe.Level == "ERROR":
				problems = append(problems, string(ev.raw))
			}
			return nil
		})
		if err != nil {
			return ticks, delayed, err
		}
		if len(problems) > 0 {
			return ticks, delayed, fmt.Errorf("the daemon logged:\n%s", strings.Join(problems, "\n"))
		}
		if time.Now().After(deadline) {
			return ticks, delayed, fmt.Errorf("%d ticks and %d delayed messages handled in %s\n%s", len(tickLate), len(delayLate),
				time.Duration(flowTicks+10)*time.Second, d.logTail())
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return ticks, delayed, err
		}
	}
	return latenessOf(tickLate), latenessOf(delayLate), d.proc.stop(30 * time.Second)
}

// publishBacklog declares the task with a first daemon and publishes n
// messages to key while no daemon runs.
func publishBacklog(ctx context.Context, s symphonySetup, tasksDir, key string, n int, extra ...string) error {
	if _, err := declareWithDaemon(ctx, s, tasksDir); err != nil {
		return err
	}
	return publishLines(ctx, s, key, 0, n, extra...)
}

// publishLines publishes n one-line payloads, from first on, with
// `symphony publish --file`.
func publishLines(ctx context.Context, s symphonySetup, key string, first, n int, extra ...string) error {
	lines := filepath.Join(s.dir, fmt.Sprintf("lines-%d.jsonl", first))
	var buf bytes.Buffer
	for i := range n {
		fmt.Fprintf(&buf, payloadFormat+"\n", first+i)
	}
	if err := os.WriteFile(lines, buf.Bytes(), 0o644); err != nil {
		return err
	}
	args := append([]string{"publish", "--file", lines}, extra...)
	pub := s.command(ctx, append(args, key)...)
	var out bytes.Buffer
	pub.Stdout, pub.Stderr = &out, &out
	if err := pub.Run(); err != nil {
		return fmt.Errorf("symphony publish --file: %v\n%s", err, out.String())
	}
	return nil
}

// flowRate runs n daemons sharing a limit over a backlog: from when the
// last is ready, flowWarmUp, then flowSteady measured.
func flowRate(ctx context.Context, s symphonySetup, backend string, n int) flowLimitResult {
	res := flowLimitResult{backend: backend, daemons: n}
	name := fmt.Sprintf("limited%d", n)
	tasksDir, err := writeTask(s.dir, name, fmt.Sprintf(flowLimitedSrc, name, flowLimit))
	if err != nil {
		res.err = err
		return res
	}
	// Enough for the start-up, the warm-up and the measure, with room.
	backlog := int(flowLimit * (flowWarmUp + flowSteady + 15*time.Second).Seconds())
	if res.err = publishBacklog(ctx, s, tasksDir, name+".job", backlog); res.err != nil {
		return res
	}
	var daemons []*daemon
	defer func() {
		for _, d := range daemons {
			d.proc.kill()
		}
	}()
	for i := range n {
		d, err := startDaemon(ctx, s, tasksDir, fmt.Sprintf("limited-%d", i), "")
		if err != nil {
			res.err = err
			return res
		}
		daemons = append(daemons, d)
	}
	var ready time.Time
	for _, d := range daemons {
		at, err := d.waitReady(ctx)
		if err != nil {
			res.err = fmt.Errorf("%w\n%s", err, d.logTail())
			return res
		}
		if at.After(ready) {
			ready = at
		}
	}
	from := ready.Add(flowWarmUp)
	to := from.Add(flowSteady)
	if res.err = sleepCtx(ctx, time.Until(to)+500*time.Millisecond); res.err != nil {
		return res
	}
	var times []int64
	var problems []string
	for _, d := range daemons {
		d.proc.kill()
		fl, err := follow(d.log)
		if err != nil {
			res.err = err
			return res
		}
		err = fl.poll(func(ev logEvent) error {
			switch {
			case ev.Msg == "started":
				times = append(times, ev.At)
			case ev.Level == "WARN" || ev.Level == "ERROR":
				problems = append(problems, string(ev.raw))
			}
			return nil
		})
		fl.close()
		if err != nil {
			res.err = err
			return res
		}
	}
	if len(problems) > 0 {
		res.err = fmt.Errorf("the daemons logged:\n%s", strings.Join(problems, "\n"))
		return res
	}
	slices.Sort(times)
	var in []int64
	for _, t := range times {
		if t >= from.UnixNano() && t < to.UnixNano() {
			in = append(in, t)
		}
	}
	if len(times) == 0 || times[len(times)-1] < to.UnixNano() {
		res.err = fmt.Errorf("the backlog of %d ran out before the measure ended", backlog)
		return res
	}
	res.starts = len(in)
	res.rate = float64(len(in)) / flowSteady.Seconds()
	for i, t := range in {
		j, _ := slices.BinarySearch(in, t+int64(time.Second))
		res.busiest1 = max(res.busiest1, j-i)
	}
	return res
}

// flowDrain times one daemon draining flowDrainN messages, from ready to
// the last ack; with prio the queue has a max_priority and half the
// messages a priority.
func flowDrain(ctx context.Context, s symphonySetup, workers int, prio bool) (float64, error) {
	name, opt := "plain", ""
	if prio {
		name, opt = "prio", fmt.Sprintf(", max_priority = %d", flowPriority)
	}
	tasksDir, err := writeTask(s.dir, name, fmt.Sprintf(flowDrainSrc, name, workers, opt))
	if err != nil {
		return 0, err
	}
	if err := publishBacklog(ctx, s, tasksDir, name+".job", flowDrainN/2); err != nil {
		return 0, err
	}
	var extra []string
	if prio {
		extra = []string{"--priority", "3"}
	}
	if err := publishLines(ctx, s, name+".job", flowDrainN/2, flowDrainN/2, extra...); err != nil {
		return 0, err
	}
	s.n = flowDrainN
	// At warn level, as the sqlite and rabbitmq benchmarks drain: any
	// line logged is a problem.
	s.args = nil
	dr, d, err := drainWithDaemon(ctx, s, tasksDir, func(d *daemon) ackCounter { return d.statusCounter(name) }, 0)
	if err != nil {
		return 0, err
	}
	if logged := d.warnings(); logged != "" {
		return 0, fmt.Errorf("the daemon logged warnings or errors:\n%s", logged)
	}
	return rateOf(flowDrainN, dr.ready), nil
}

func (r *flowReport) failure() string {
	var out []string
	for _, t := range r.times {
		if t.err != nil {
			out = append(out, t.backend+" lateness: "+t.err.Error())
		}
	}
	for _, l := range r.limits {
		if l.err != nil {
			out = append(out, fmt.Sprintf("%s rate limit, %d daemons: %v", l.backend, l.daemons, l.err))
		}
	}
	for _, d := range r.drains {
		if d.err != nil {
			out = append(out, d.backend+" drain: "+d.err.Error())
		}
	}
	return strings.Join(out, "; ")
}

var (
	flowTimeHeader  = []string{"broker", "ticks", "tick lateness p50", "p99", "max", "delayed messages", "delay lateness p50", "p99", "max"}
	flowLimitHeader = []string{"broker", "daemons", "limit", "starts in 10 s", "rate", "error", "busiest 1 s"}
	flowDrainHeader = []string{"broker", "plain queue msgs/s", "max_priority = 5 msgs/s", "priority ÷ plain"}
)

func failed(err error) string { return "failed: " + strings.SplitN(err.Error(), "\n", 2)[0] }

func (r *flowReport) tables(markdown bool) string {
	var rows [][]string
	for _, t := range r.times {
		if t.err != nil {
			rows = append(rows, []string{t.backend, failed(t.err), "", "", "", "", "", "", ""})
			continue
		}
		rows = append(rows, []string{t.backend, fmt.Sprint(t.ticks.n), msPrecise(t.ticks.p50), msPrecise(t.ticks.p99), msPrecise(t.ticks.max),
			fmt.Sprint(t.delayed.n), msPrecise(t.delayed.p50), msPrecise(t.delayed.p99), msPrecise(t.delayed.max)})
	}
	out := table(flowTimeHeader, rows, markdown) + "\n"
	rows = nil
	for _, l := range r.limits {
		if l.err != nil {
			rows = append(rows, []string{l.backend, fmt.Sprint(l.daemons), failed(l.err), "", "", "", ""})
			continue
		}
		rows = append(rows, []string{l.backend, fmt.Sprint(l.daemons), fmt.Sprintf("%d/s", flowLimit), fmt.Sprint(l.starts),
			fmt.Sprintf("%.1f/s", l.rate), fmt.Sprintf("%+.1f %%", 100*(l.rate-flowLimit)/flowLimit), fmt.Sprint(l.busiest1)})
	}
	out += table(flowLimitHeader, rows, markdown) + "\n"
	rows = nil
	for _, d := range r.drains {
		if d.err != nil {
			rows = append(rows, []string{d.backend, failed(d.err), "", ""})
			continue
		}
		rows = append(rows, []string{d.backend, d.plain.cell(), d.prio.cell(), fmt.Sprintf("%.2f", d.prio.median()/d.plain.median())})
	}
	return out + table(flowDrainHeader, rows, markdown)
}

func (r *flowReport) text() string { return r.tables(false) }

func (r *flowReport) markdown() string {
	var b strings.Builder
	b.WriteString(r.machine.header("databases on "+r.machine.FS+"; RabbitMQ "+r.rabbitVersion+" on the same machine", r.loadBefore, r.loadAfter))
	fmt.Fprintf(&b, "Lateness: one daemon, a schedule of every 1s, %d ticks after the first two, each publishing a message delayed %s. "+
		"Rate limit %d/s over a backlog, %s measured after %s of warm-up from the last daemon's readiness. "+
		"Drain: %d messages, W = %d workers, %d runs (median and spread).\n\n",
		flowTicks, flowDelayedBy, flowLimit, flowSteady, flowWarmUp, flowDrainN, r.workers, r.runs)
	b.WriteString(r.tables(true))
	return b.String()
}
