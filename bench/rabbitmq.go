package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"time"
)

// The rabbitmq benchmark: messages per second drained from a preloaded
// RabbitMQ queue by symphony, by a plain amqp091-go consumer doing the same
// work, and by a Watermill router on watermill-amqp.
func init() {
	register(benchmark{
		name:  "rabbitmq",
		about: "symphony on RabbitMQ vs plain amqp091-go and Watermill (watermill-amqp) consumers, JSON decode per message",
		run:   benchRabbitMQ,
	})
}

// rabbitTarget is what the issue asks of symphony: this fraction of the
// plain consumer's rate.
const rabbitTarget = 0.8

// The topology every system consumes from, each in a virtual host of its
// own: symphony's default exchange, a queue named after the task, bound to
// the task's pattern.
const (
	rabbitExchange = "symphony"
	rabbitQueue    = "bench"
	rabbitPattern  = "bench.#"
	rabbitKey      = "bench.job"
)

// rabbitTask is symphony's task: decode the JSON payload (symphony does
// that before calling work), read one field, ack. %s is the prefetch line,
// empty for the default.
const rabbitTask = `def work(payload, meta):
    return payload["id"] >= 0

task(
    name = "bench",
    subscribe_to = ["bench.#"],
    work = work,
    min_workers = %d,
    max_workers = %d,%s
)
`

type rabbitSystem int

const (
	sysSymphony rabbitSystem = iota
	sysPlain
	sysWatermill
)

// rabbitConfig is one row of the comparison.
type rabbitConfig struct {
	label  string
	system rabbitSystem
	// consumers: symphony's max_workers, the plain consumer's channels,
	// Watermill's handlers.
	consumers int
}

func rabbitConfigs(workers int) []rabbitConfig {
	cs := []rabbitConfig{
		{label: "symphony", system: sysSymphony, consumers: workers},
		{label: "plain amqp091-go", system: sysPlain, consumers: workers},
		{label: fmt.Sprintf("Watermill, %d handlers", workers), system: sysWatermill, consumers: workers},
	}
	if workers != 1 {
		// What the "about half" refers to: one watermill-amqp
		// subscription, one message at a time.
		cs = append(cs, rabbitConfig{label: "Watermill, 1 handler", system: sysWatermill, consumers: 1})
	}
	return cs
}

// rabbitSamples are the measures of one configuration over the runs.
type rabbitSamples struct {
	cfg rabbitConfig
	// ready: from the consumer being ready (symphony's /readyz, the
	// plain consumers registered, the router running); start: from
	// process start, or from dialling.
	ready, start rates
	// preload is the plain publisher's rate filling the queue.
	preload rates
	// cpu and brokerCPU: CPU time per message of the consumer's process
	// and of RabbitMQ's, from ready to done, in µs.
	cpu, brokerCPU []float64
}

type rabbitReport struct {
	machine          machine
	rabbitVersion    string
	n, workers, runs int
	prefetch         int
	profiled         bool
	samples          []*rabbitSamples
	loadBefore       string
	loadAfter        string
	brokerPID        int
}

func benchRabbitMQ(ctx context.Context, e *env) (_ report, err error) {
	o := e.opts
	version, err := rabbitVersion(o.amqp)
	if err != nil {
		return nil, err
	}
	binary, err := e.symphony(ctx)
	if err != nil {
		return nil, err
	}
	if o.cpuprofile != "" {
		if binary, err = e.symphonyProfiled(ctx); err != nil {
			return nil, err
		}
	}
	rep := &rabbitReport{machine: e.machine, rabbitVersion: version, n: o.n, workers: o.workers, runs: o.runs,
		prefetch: o.prefetch, profiled: o.cpuprofile != "", loadBefore: loadAvg(), brokerPID: rabbitPID()}
	for _, c := range rabbitConfigs(o.workers) {
		rep.samples = append(rep.samples, &rabbitSamples{cfg: c})
	}
	created := map[string]bool{}
	defer func() {
		// Nothing of ours may be left in RabbitMQ, whatever happened.
		left, lerr := leftVhosts(context.Background())
		if lerr != nil {
			e.logf("cannot check for virtual hosts left behind: %v", lerr)
		}
		var ours []string
		for _, name := range left {
			if created[name] {
				ours = append(ours, name)
			}
		}
		if len(ours) > 0 && err == nil {
			err = fmt.Errorf("virtual hosts left behind (rabbitmqctl delete_vhost NAME): %s", strings.Join(ours, " "))
		}
	}()
	for run := range o.runs {
		for k := range rep.samples {
			s := rep.samples[(k+run)%len(rep.samples)]
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if !strings.Contains(s.cfg.label, o.only) {
				continue
			}
			profile := ""
			if o.cpuprofile != "" && run == 0 {
				profile, err = filepath.Abs(filepath.Join(o.cpuprofile, "rabbitmq-"+slug(s.cfg.label)+".pprof"))
				if err != nil {
					return nil, err
				}
			}
			v, err := newVhost(ctx, o.amqp)
			if err != nil {
				return nil, err
			}
			created[v.name] = true
			r, err := e.drainRabbit(ctx, s.cfg, v, binary, profile, run, rep.brokerPID)
			if derr := v.drop(); derr != nil && err == nil {
				err = derr
			}
			if err != nil {
				return nil, fmt.Errorf("run %d, %s: %w", run+1, s.cfg.label, err)
			}
			s.ready = append(s.ready, rateOf(o.n, r.ready))
			s.start = append(s.start, rateOf(o.n, r.start))
			s.preload = append(s.preload, rateOf(o.n, r.preload))
			perMsg := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(o.n) }
			s.cpu = append(s.cpu, perMsg(r.cpu))
			s.brokerCPU = append(s.brokerCPU, perMsg(r.brokerCPU))
			if o.verbose {
				e.logf("run %d %-26s preload %s/s  drain %s/s from ready, %s/s from start; CPU/msg %.0f µs consumer, %.0f µs RabbitMQ",
					run+1, s.cfg.label, human(rateOf(o.n, r.preload)), human(rateOf(o.n, r.ready)), human(rateOf(o.n, r.start)),
					perMsg(r.cpu), perMsg(r.brokerCPU))
			}
		}
	}
	rep.loadAfter = loadAvg()
	if o.cpuprofile != "" {
		e.logf("CPU profiles of the first run are in %s", o.cpuprofile)
	}
	return rep, nil
}

// rabbitRun is one drain, with what it cost.
type rabbitRun struct {
	preload   time.Duration
	ready     time.Duration
	start     time.Duration
	cpu       time.Duration // the consumer's process, ready to done
	brokerCPU time.Duration // RabbitMQ's, ready to done
}

// drainRabbit declares the queue as the system under test would, preloads
// it, drains it and checks that nothing is left, in vhost v.
func (e *env) drainRabbit(ctx context.Context, c rabbitConfig, v *vhost, binary, profile string, run, brokerPID int) (rabbitRun, error) {
	o := e.opts
	var r rabbitRun
	switch c.system {
	case sysSymphony:
		dir, err := e.dir(fmt.Sprintf("run%d-rabbitmq-%s", run+1, slug(c.label)))
		if err != nil {
			return r, err
		}
		defer e.drop(dir)
		prefetch := ""
		if o.prefetch != defaultPrefetch {
			prefetch = fmt.Sprintf("\n    prefetch = %d,", o.prefetch)
		}
		s := symphonySetup{n: o.n, workers: c.consumers, prefetch: o.prefetch, binary: binary, dir: dir, profile: profile, brokerURL: v.url}
		tasksDir, err := writeTask(dir, "bench", fmt.Sprintf(rabbitTask, c.consumers, c.consumers, prefetch))
		if err != nil {
			return r, err
		}
		status, err := declareWithDaemon(ctx, s, tasksDir)
		if err != nil {
			return r, err
		}
		if err := checkTaskStatus(status, c.consumers, o.prefetch); err != nil {
			return r, err
		}
		if r.preload, err = preload(v.url, rabbitKey, rabbitQueue, o.n); err != nil {
			return r, err
		}
		dr, d, err := drainWithDaemon(ctx, s, tasksDir, func(d *daemon) ackCounter { return d.metricsCounter("bench") }, brokerPID)
		if err != nil {
			return r, err
		}
		r.ready, r.start, r.cpu, r.brokerCPU = dr.ready, dr.start, dr.cpu, dr.brokerCPU
		if err := checkEmpty(v.url, rabbitQueue, rabbitQueue+".dead"); err != nil {
			return r, err
		}
		if logged := d.warnings(); logged != "" {
			return r, fmt.Errorf("the daemon logged warnings or errors during the run:\n%s", logged)
		}
		return r, nil
	case sysPlain:
		if err := declareTopology(v.url, rabbitExchange, rabbitQueue, rabbitPattern); err != nil {
			return r, err
		}
	case sysWatermill:
		if err := declareWatermill(v.url, rabbitExchange, rabbitQueue, rabbitPattern, o.prefetch); err != nil {
			return r, err
		}
	}
	var err error
	if r.preload, err = preload(v.url, rabbitKey, rabbitQueue, o.n); err != nil {
		return r, err
	}
	stop, err := profileInProcess(profile)
	if err != nil {
		return r, err
	}
	var cr consumeRun
	if c.system == sysPlain {
		cr, err = runPlain(ctx, v.url, rabbitQueue, o.n, c.consumers, o.prefetch, brokerPID)
	} else {
		cr, err = runWatermill(ctx, v.url, rabbitExchange, rabbitQueue, rabbitPattern, o.n, c.consumers, o.prefetch, brokerPID)
	}
	stop()
	if err != nil {
		return r, err
	}
	r.ready, r.start, r.cpu, r.brokerCPU = cr.ready, cr.start, cr.cpu, cr.brokerCPU
	return r, checkEmpty(v.url, rabbitQueue)
}

// defaultPrefetch is symphony's prefetch when a task does not set one
// (tasks.DefaultPrefetch); checked against /status.
const defaultPrefetch = 10

// checkTaskStatus checks in the /status of the first daemon that the task
// runs the workers and prefetch it is compared with.
func checkTaskStatus(status []byte, workers, prefetch int) error {
	var st daemonStatus
	if err := json.Unmarshal(status, &st); err != nil {
		return fmt.Errorf("read /status: %v", err)
	}
	if len(st.Tasks) != 1 || st.Tasks[0].Prefetch != prefetch || st.Tasks[0].Workers.Max != workers {
		return fmt.Errorf("/status shows %s, want one task with max %d workers and prefetch %d", status, workers, prefetch)
	}
	return nil
}

// profileInProcess CPU-profiles this process into path until stop is
// called; an empty path profiles nothing.
func profileInProcess(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

func (r *rabbitReport) measured() []*rabbitSamples {
	var out []*rabbitSamples
	for _, s := range r.samples {
		if len(s.ready) > 0 {
			out = append(out, s)
		}
	}
	return out
}

func (r *rabbitReport) plain() *rabbitSamples {
	for _, s := range r.measured() {
		if s.cfg.system == sysPlain {
			return s
		}
	}
	return nil
}

var rabbitHeader = []string{"system", "drain msgs/s from ready", "drain msgs/s from start", "÷ plain, from ready", "÷ plain, from start", "CPU µs/msg: consumer", "CPU µs/msg: RabbitMQ"}

func (r *rabbitReport) rows() [][]string {
	p := r.plain()
	var rows [][]string
	for _, s := range r.measured() {
		ready, start := "–", "–"
		if p != nil {
			ready = fmt.Sprintf("%.2f", s.ready.median()/p.ready.median())
			start = fmt.Sprintf("%.2f", s.start.median()/p.start.median())
		}
		broker := "–"
		if r.brokerPID != 0 {
			broker = micros(s.brokerCPU)
		}
		rows = append(rows, []string{s.cfg.label, s.ready.cell(), s.start.cell(), ready, start, micros(s.cpu), broker})
	}
	return rows
}

// micros is the median of CPU times per message, in µs.
func micros(v []float64) string {
	if len(v) == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f", rates(v).median())
}

func (r *rabbitReport) verdict() string {
	p := r.plain()
	var sym *rabbitSamples
	for _, s := range r.measured() {
		if s.cfg.system == sysSymphony {
			sym = s
		}
	}
	if p == nil || sym == nil {
		return "symphony and the plain consumer were not both measured: no verdict"
	}
	x := sym.ready.median() / p.ready.median()
	met := "met"
	if x < rabbitTarget {
		met = "NOT met"
	}
	var others []string
	for _, s := range r.measured() {
		if s.cfg.system == sysWatermill {
			others = append(others, fmt.Sprintf("%s: %.2f×", s.cfg.label, s.ready.median()/p.ready.median()))
		}
	}
	also := ""
	if len(others) > 0 {
		also = " " + strings.Join(others, "; ") + "."
	}
	return fmt.Sprintf("Target symphony ≥ %.1f× the plain amqp091-go consumer: %s. symphony drains at %.2f× its rate from ready (%.2f× from process start).%s",
		rabbitTarget, met, x, sym.start.median()/p.start.median(), also)
}

func (r *rabbitReport) preloadCell() string {
	var all rates
	for _, s := range r.measured() {
		all = append(all, s.preload...)
	}
	return all.cell()
}

func (r *rabbitReport) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "rabbitmq: RabbitMQ %s, N=%d messages, W=%d consumers, prefetch %d, %d runs: median (min–max); load average %s before, %s after\n",
		r.rabbitVersion, r.n, r.workers, r.prefetch, r.runs, r.loadBefore, r.loadAfter)
	if r.profiled {
		b.WriteString("(profiled run: symphony is the profiling build, the in-process consumers run under the CPU profiler)\n")
	}
	b.WriteString(table(rabbitHeader, r.rows(), false))
	fmt.Fprintf(&b, "preload (plain publisher, confirms): %s msgs/s\n", r.preloadCell())
	b.WriteString(r.verdict() + "\n")
	return b.String()
}

func (r *rabbitReport) markdown() string {
	var b strings.Builder
	b.WriteString(r.machine.header("RabbitMQ "+r.rabbitVersion+" on the same machine", r.loadBefore, r.loadAfter))
	fmt.Fprintf(&b, "N = %d messages, W = %d consumers (workers, channels, handlers), prefetch %d, %d runs; rates are the median and, in brackets, the lowest and highest run; ratios are of the medians; CPU times (from ready to the end of the drain, per message) are medians over the runs. The preload (plain publisher, confirms, persistent) ran at %s msgs/s.\n\n",
		r.n, r.workers, r.prefetch, r.runs, r.preloadCell())
	b.WriteString(table(rabbitHeader, r.rows(), true))
	b.WriteString("\n**" + r.verdict() + "**\n")
	return b.String()
}
