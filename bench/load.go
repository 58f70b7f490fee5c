package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/broker/sqlite"
	"github.com/symphony-go/symphony/tasks"
)

// The load and soak benchmarks: publishers in processes of their own and
// one daemon, at the same time, at a steady rate below what the daemon can
// drain. load measures how long a message waits between its publication
// and the start of its handler; soak pushes a million messages through
// and samples the daemon's memory all the while.

func init() {
	register(benchmark{
		name:  "load",
		about: "steady load: publisher processes and the daemon together at 50% and 90% of its drain rate; publish→start latency",
		run:   benchLoad,
	})
	register(benchmark{
		name:  "soak",
		about: "a million messages through each broker at 50% of the drain rate, the daemon's RSS sampled every second, plotted with gnuplot",
		run:   benchSoak,
	})
}

// loadTaskSrc logs, for every message, when it was published (the
// publisher's clock, in the payload) and when its handler started (the
// handler's first statement): the same machine, the same clock.
const loadTaskSrc = `def work(payload, meta):
    log.info("started", seq = payload["i"], sent = payload["t"], at = time.now().unix_nano)
    return True

task(
    name = "load",
    subscribe_to = ["load.#"],
    work = work,
    min_workers = %[1]d,
    max_workers = %[1]d,
)
`

const (
	loadKey = "load.job"
	// loadPublishers is how many publisher processes share the rate.
	loadPublishers = 4
	// loadTick is how often a publisher publishes what is due: each
	// tick's messages go in one transaction (SQLite) or are confirmed
	// together (RabbitMQ).
	loadTick = 5 * time.Millisecond
	// loadDrainN is the backlog whose drain gives the drain rate.
	loadDrainN = 40000
)

// loadBackend is one broker under load.
type loadBackend struct {
	name string
	url  string // the daemon's --broker and the publishers'
	drop func()
}

func loadBackends(ctx context.Context, e *env, dir string) ([]loadBackend, string, error) {
	backends := []loadBackend{{name: "embedded (SQLite)", url: "sqlite:" + filepath.Join(dir, "symphony.db"), drop: func() {}}}
	version, err := rabbitVersion(e.opts.amqp)
	if err != nil {
		return nil, "", fmt.Errorf("RabbitMQ at %s: %w", tasks.RedactURL(e.opts.amqp), err)
	}
	v, err := newVhost(ctx, e.opts.amqp)
	if err != nil {
		return nil, "", err
	}
	backends = append(backends, loadBackend{name: "RabbitMQ", url: v.url, drop: func() { _ = v.drop() }})
	return backends, version, nil
}

// loadDaemon is a running daemon of the load task and what its log said.
type loadDaemon struct {
	*daemon
	fl *follower

	mu      sync.Mutex
	handled int
	// latency of every message started (ns), by the publisher's seq
	// range of the phase in progress.
	latencies []int64
	firstAt   int64
	lastAt    int64
	problems  []string
}

func startLoadDaemon(ctx context.Context, binary, dir, url string, workers, backlog int) (*loadDaemon, error) {
	tasksDir, err := writeTask(dir, "load", fmt.Sprintf(loadTaskSrc, workers))
	if err != nil {
		return nil, err
	}
	s := symphonySetup{binary: binary, dir: dir, brokerURL: url, args: []string{"--log-level", "info"}}
	if _, err := declareWithDaemon(ctx, s, tasksDir); err != nil {
		return nil, err
	}
	// The backlog goes in while no daemon consumes, so that all of it is
	// there to be drained.
	if err := preloadBacklog(ctx, url, backlog); err != nil {
		return nil, fmt.Errorf("publish the backlog: %w", err)
	}
	d, err := startDaemon(ctx, s, tasksDir, "load", "")
	if err != nil {
		return nil, err
	}
	ld := &loadDaemon{daemon: d}
	if ld.fl, err = follow(d.log); err != nil {
		d.proc.kill()
		return nil, err
	}
	if _, err := d.waitReady(ctx); err != nil {
		ld.stop()
		return nil, fmt.Errorf("%w\n%s", err, d.logTail())
	}
	return ld, nil
}

func (d *loadDaemon) stop() {
	d.proc.kill()
	d.fl.close()
}

// poll reads the log written since the last poll.
func (d *loadDaemon) poll() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	err := d.fl.poll(func(ev logEvent) error {
		switch {
		case ev.Msg == "started":
			d.handled++
			if ev.Sent > 0 {
				d.latencies = append(d.latencies, ev.At-ev.Sent)
			}
			if d.firstAt == 0 {
				d.firstAt = ev.At
			}
			d.lastAt = ev.At
		case ev.Level == "WARN" || ev.Level == "ERROR":
			d.problems = append(d.problems, string(ev.raw))
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(d.problems) > 0 {
		return fmt.Errorf("the daemon logged:\n%s", strings.Join(d.problems, "\n"))
	}
	select {
	case <-d.proc.done:
		return fmt.Errorf("the daemon exited: %v\n%s", d.proc.err, d.logTail())
	default:
	}
	return nil
}

// reset forgets what was counted, for the next phase.
func (d *loadDaemon) reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.handled, d.latencies, d.firstAt, d.lastAt = 0, nil, 0, 0
}

// await polls until n messages were started since the last reset, for at
// most limit.
func (d *loadDaemon) await(ctx context.Context, n int, limit time.Duration) error {
	return d.awaitSampling(ctx, n, limit, nil)
}

// awaitSampling is await that calls sample (when not nil) at each poll.
func (d *loadDaemon) awaitSampling(ctx context.Context, n int, limit time.Duration, sample func()) error {
	deadline := time.Now().Add(limit)
	for {
		if err := d.poll(); err != nil {
			return err
		}
		if sample != nil {
			sample()
		}
		d.mu.Lock()
		got := d.handled
		d.mu.Unlock()
		if got >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d messages started after %s", got, n, limit)
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

// preloadBacklog publishes n unstamped messages from this process.
func preloadBacklog(ctx context.Context, url string, n int) error {
	pub, err := openLoadPublisher(ctx, url)
	if err != nil {
		return err
	}
	defer pub.close()
	for i := 0; i < n; i += 1000 {
		if err := pub.publish(loadKey, loadBodies(0, i, min(1000, n-i), 0)); err != nil {
			return err
		}
	}
	return nil
}

// measureDrain times the daemon's drain of the backlog published before
// it started: the handlers' clock from the first start to the last.
func measureDrain(ctx context.Context, d *loadDaemon) (float64, error) {
	if err := d.await(ctx, loadDrainN, 5*time.Minute); err != nil {
		return 0, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.lastAt <= d.firstAt {
		return 0, fmt.Errorf("the backlog's %d messages all started within one clock tick", loadDrainN)
	}
	// The first start opens the interval: n−1 starts follow it.
	return float64(loadDrainN-1) / (float64(d.lastAt-d.firstAt) / 1e9), nil
}

// loadBodies are n payloads numbered from first, stamped with the time
// now unless stamp is 0 (a backlog's messages have no latency).
func loadBodies(publisher, first, n int, stamp int64) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = fmt.Appendf(nil, `{"p": %d, "i": %d, "t": %d}`, publisher, first+i, stamp)
	}
	return out
}

// loadPublisher publishes through symphony's embedded broker package (the
// code `symphony publish` runs) or a plain amqp091-go channel with
// confirms.
type loadPublisher interface {
	publish(key string, bodies [][]byte) error
	close()
}

type sqlitePublisher struct{ b *sqlite.Broker }

func (p sqlitePublisher) publish(key string, bodies [][]byte) error {
	msgs := make([]*message.Message, len(bodies))
	for i, body := range bodies {
		m, err := broker.NewMessage(tasks.Publication{RoutingKey: key, ContentType: "application/json", Body: body})
		if err != nil {
			return err
		}
		msgs[i] = m
	}
	return p.b.Publish(key, msgs...)
}

func (p sqlitePublisher) close() { p.b.Close() }

type amqpPublisher struct {
	conn *amqp.Connection
	ch   *amqp.Channel
}

func (p amqpPublisher) publish(key string, bodies [][]byte) error {
	ctx := context.Background()
	pending := make([]*amqp.DeferredConfirmation, 0, len(bodies))
	for _, body := range bodies {
		c, err := p.ch.PublishWithDeferredConfirmWithContext(ctx, rabbitExchange, key, true, false, amqp.Publishing{
			ContentType: "application/json", DeliveryMode: amqp.Persistent, Body: body,
		})
		if err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		pending = append(pending, c)
	}
	for _, c := range pending {
		ok, err := c.WaitContext(ctx)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("the broker nacked message %d", c.DeliveryTag)
		}
	}
	return nil
}

func (p amqpPublisher) close() { p.conn.Close() }

func openLoadPublisher(ctx context.Context, url string) (loadPublisher, error) {
	if path, ok := strings.CutPrefix(url, "sqlite:"); ok {
		b, err := sqlite.Open(ctx, path, sqlite.Options{})
		if err != nil {
			return nil, err
		}
		return sqlitePublisher{b}, nil
	}
	conn, err := amqp.Dial(url)
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err == nil {
		err = ch.Confirm(false)
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	return amqpPublisher{conn: conn, ch: ch}, nil
}

// publisherMode is the first argument that makes this program one of the
// load benchmark's publisher processes rather than the harness.
const publisherMode = "load-publisher"

// publisherResult is what a publisher process prints as it ends.
type publisherResult struct {
	Sent    int     `json:"sent"`
	Seconds float64 `json:"seconds"`
}

// runPublisher is the body of a publisher process: it publishes n
// messages at rate per second, what is due at each tick in one call, each
// stamped with the time just before that call.
func runPublisher(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(publisherMode, flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("broker", "", "broker URL")
	id := fs.Int("id", 0, "this publisher's number, in the payloads")
	rate := fs.Float64("rate", 0, "messages per second")
	n := fs.Int("n", 0, "messages to publish")
	if err := fs.Parse(args); err != nil || *url == "" || *rate <= 0 || *n <= 0 {
		fmt.Fprintln(stderr, "load-publisher: -broker, -rate and -n are required")
		return 2
	}
	ctx := context.Background()
	pub, err := openLoadPublisher(ctx, *url)
	if err != nil {
		fmt.Fprintf(stderr, "load-publisher: %v\n", err)
		return 1
	}
	defer pub.close()
	start := time.Now()
	tick := time.NewTicker(loadTick)
	defer tick.Stop()
	sent := 0
	for sent < *n {
		due := min(int(time.Since(start).Seconds()**rate)+1, *n) - sent
		if due > 0 {
			if err := pub.publish(loadKey, loadBodies(*id, sent, due, time.Now().UnixNano())); err != nil {
				fmt.Fprintf(stderr, "load-publisher: %v\n", err)
				return 1
			}
			sent += due
		}
		<-tick.C
	}
	b, _ := json.Marshal(publisherResult{Sent: sent, Seconds: time.Since(start).Seconds()})
	fmt.Fprintln(stdout, string(b))
	return 0
}

// loadPhase is one steady run: offered the rate, what was held, and the
// latencies.
type loadPhase struct {
	fraction float64
	offered  float64 // messages per second asked of the publishers
	// published: what the publishers achieved together; handled: the
	// daemon's rate from its first start to its last in the phase.
	published, handled float64
	n                  int
	p50, p99, max      time.Duration
}

// runPhase starts the publisher processes at rate in total for n
// messages and waits until the daemon started every one.
func runPhase(ctx context.Context, e *env, d *loadDaemon, url string, rate float64, n int, sample func()) (loadPhase, error) {
	ph := loadPhase{offered: rate, n: n}
	d.reset()
	self, err := os.Executable()
	if err != nil {
		return ph, err
	}
	type result struct {
		r   publisherResult
		err error
	}
	results := make(chan result, loadPublishers)
	for p := range loadPublishers {
		share := n / loadPublishers
		if p == 0 {
			share += n % loadPublishers
		}
		cmd := exec.CommandContext(ctx, self, publisherMode, "-broker", url, "-id", strconv.Itoa(p+1),
			"-rate", strconv.FormatFloat(rate/loadPublishers, 'f', 1, 64), "-n", strconv.Itoa(share))
		go func() {
			var errb strings.Builder
			cmd.Stderr = &errb
			out, err := cmd.Output()
			var r publisherResult
			if err == nil {
				err = json.Unmarshal(out, &r)
			}
			if err != nil {
				err = fmt.Errorf("publisher %d: %v: %s", p+1, err, errb.String())
			}
			results <- result{r, err}
		}()
	}
	var (
		errs     []error
		sent     int
		slowest  float64
		finished int
	)
	next := time.Now()
	for finished < loadPublishers {
		select {
		case r := <-results:
			finished++
			if r.err != nil {
				errs = append(errs, r.err)
			}
			sent += r.r.Sent
			slowest = max(slowest, r.r.Seconds)
		case <-time.After(50 * time.Millisecond):
		}
		if err := d.poll(); err != nil {
			return ph, err
		}
		if sample != nil && time.Now().After(next) {
			sample()
			next = next.Add(time.Second)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return ph, err
	}
	if sent != n {
		return ph, fmt.Errorf("the publishers sent %d of %d messages", sent, n)
	}
	// A backlog left when the publishers are done is sampled as it drains.
	var drainSample func()
	if sample != nil {
		drainSample = func() {
			if time.Now().After(next) {
				sample()
				next = next.Add(time.Second)
			}
		}
	}
	if err := d.awaitSampling(ctx, n, 5*time.Minute, drainSample); err != nil {
		return ph, err
	}
	if sample != nil {
		sample()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.handled != n {
		return ph, fmt.Errorf("the daemon started %d messages, %d were published (a message started twice?)", d.handled, n)
	}
	ph.published = float64(n) / slowest
	ph.handled = float64(n) / (float64(d.lastAt-d.firstAt) / 1e9)
	lat := slices.Clone(d.latencies)
	slices.Sort(lat)
	at := func(q float64) time.Duration { return time.Duration(lat[min(len(lat)-1, int(q*float64(len(lat))))]) }
	ph.p50, ph.p99, ph.max = at(0.5), at(0.99), time.Duration(lat[len(lat)-1])
	return ph, nil
}

// loadResult is one broker's figures.
type loadResult struct {
	backend string
	drain   float64
	phases  []loadPhase
	err     error
}

type loadReport struct {
	machine               machine
	rabbitVersion         string
	loadBefore, loadAfter string
	workers               int
	seconds               float64
	results               []loadResult
}

func benchLoad(ctx context.Context, e *env) (report, error) {
	r := &loadReport{machine: e.machine, workers: e.opts.workers, seconds: e.opts.loadSeconds, loadBefore: loadAvg()}
	binary, err := e.symphony(ctx)
	if err != nil {
		return nil, err
	}
	r.machine = e.machine
	dir, err := e.dir("load-")
	if err != nil {
		return nil, err
	}
	defer e.drop(dir)
	backends, version, err := loadBackends(ctx, e, dir)
	if err != nil {
		return nil, err
	}
	r.rabbitVersion = version
	for _, b := range backends {
		res := loadResult{backend: b.name}
		res.drain, res.phases, res.err = runLoad(ctx, e, binary, dir, b, func(d *loadDaemon, url string, drain float64) ([]loadPhase, error) {
			var phases []loadPhase
			for _, f := range []float64{0.5, 0.9} {
				rate := f * drain
				ph, err := runPhase(ctx, e, d, url, rate, int(rate*e.opts.loadSeconds), nil)
				if err != nil {
					return phases, fmt.Errorf("%.0f%% of the drain rate: %w", 100*f, err)
				}
				ph.fraction = f
				phases = append(phases, ph)
				e.logf("%s at %.0f%%: %+v", b.name, 100*f, ph)
			}
			return phases, nil
		})
		b.drop()
		if errors.Is(res.err, context.Canceled) {
			return nil, res.err
		}
		r.results = append(r.results, res)
	}
	r.loadAfter = loadAvg()
	return r, nil
}

// runLoad starts a daemon on backend b, measures its drain rate and runs
// the phases with it.
func runLoad[T any](ctx context.Context, e *env, binary, parent string, b loadBackend, phases func(d *loadDaemon, url string, drain float64) (T, error)) (float64, T, error) {
	var zero T
	dir, err := os.MkdirTemp(parent, "run-")
	if err != nil {
		return 0, zero, err
	}
	url := b.url
	if strings.HasPrefix(url, "sqlite:") {
		url = "sqlite:" + filepath.Join(dir, "symphony.db")
	}
	d, err := startLoadDaemon(ctx, binary, dir, url, e.opts.workers, loadDrainN)
	if err != nil {
		return 0, zero, err
	}
	defer d.stop()
	drain, err := measureDrain(ctx, d)
	if err != nil {
		return 0, zero, fmt.Errorf("drain rate: %w", err)
	}
	e.logf("%s: drain rate %.0f msgs/s", b.name, drain)
	out, err := phases(d, url, drain)
	return drain, out, err
}

var loadHeader = []string{"broker", "drain rate", "load", "offered msgs/s", "published msgs/s", "handled msgs/s", "messages", "p50", "p99", "max"}

func (r *loadReport) rows() [][]string {
	var rows [][]string
	for _, res := range r.results {
		if res.err != nil {
			rows = append(rows, []string{res.backend, perSecond(res.drain), "failed: " + res.err.Error(), "", "", "", "", "", "", ""})
		}
		for _, ph := range res.phases {
			rows = append(rows, []string{res.backend, perSecond(res.drain), fmt.Sprintf("%.0f%%", 100*ph.fraction),
				perSecond(ph.offered), perSecond(ph.published), perSecond(ph.handled), strconv.Itoa(ph.n),
				msPrecise(ph.p50), msPrecise(ph.p99), msPrecise(ph.max)})
		}
	}
	return rows
}

// perSecond writes a rate of messages per second.
func perSecond(v float64) string {
	if v >= 10000 {
		return fmt.Sprintf("%.1fk", v/1000)
	}
	return fmt.Sprintf("%.0f", v)
}

// msPrecise writes a latency in milliseconds with a tenth.
func msPrecise(d time.Duration) string {
	return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000)
}

func (r *loadReport) failure() string {
	var out []string
	for _, res := range r.results {
		if res.err != nil {
			out = append(out, res.backend+": "+res.err.Error())
		}
	}
	return strings.Join(out, "; ")
}

func (r *loadReport) verdicts() string {
	var b strings.Builder
	for _, res := range r.results {
		target := 30 * time.Millisecond
		if res.backend == "RabbitMQ" {
			target = 5 * time.Millisecond
		}
		for _, ph := range res.phases {
			if ph.fraction != 0.5 {
				continue
			}
			verdict := "met"
			if ph.p99 > target {
				verdict = "not met"
			}
			fmt.Fprintf(&b, "**%s, target p99 ≤ %s at 50%%: %s** (p99 %s).\n", res.backend, msPrecise(target), verdict, msPrecise(ph.p99))
		}
	}
	return b.String()
}

func (r *loadReport) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "load: W=%d workers, %d publisher processes, %.0f s per load; load average %s before, %s after\n",
		r.workers, loadPublishers, r.seconds, r.loadBefore, r.loadAfter)
	b.WriteString(table(loadHeader, r.rows(), false))
	b.WriteString(r.verdicts())
	return b.String()
}

func (r *loadReport) markdown() string {
	var b strings.Builder
	b.WriteString(r.machine.header("databases on "+r.machine.FS+"; RabbitMQ "+r.rabbitVersion+" on the same machine", r.loadBefore, r.loadAfter))
	fmt.Fprintf(&b, "W = %d workers (min_workers = max_workers), prefetch 10 (the default); %d publisher processes; %.0f s at each load.\n\n",
		r.workers, loadPublishers, r.seconds)
	b.WriteString(table(loadHeader, r.rows(), true))
	b.WriteString("\n" + r.verdicts())
	return b.String()
}

// soakReport is each broker's million messages and the daemon's memory.
type soakReport struct {
	machine               machine
	rabbitVersion         string
	loadBefore, loadAfter string
	workers, n            int
	results               []soakResult
	plot                  string // the PNG, relative to the README
}

type soakResult struct {
	backend string
	drain   float64
	phase   loadPhase
	samples []rssSample
	err     error
}

type rssSample struct {
	seconds float64
	rss     int64
	handled int
}

func benchSoak(ctx context.Context, e *env) (report, error) {
	r := &soakReport{workers: e.opts.workers, n: e.opts.soakN, loadBefore: loadAvg()}
	binary, err := e.symphony(ctx)
	if err != nil {
		return nil, err
	}
	r.machine = e.machine
	if _, err := exec.LookPath("gnuplot"); err != nil {
		return nil, errors.New("soak plots with gnuplot: apt-get install gnuplot-nox")
	}
	dir, err := e.dir("soak-")
	if err != nil {
		return nil, err
	}
	defer e.drop(dir)
	backends, version, err := loadBackends(ctx, e, dir)
	if err != nil {
		return nil, err
	}
	r.rabbitVersion = version
	for _, b := range backends {
		res := soakResult{backend: b.name}
		res.drain, res.samples, res.err = runLoad(ctx, e, binary, dir, b, func(d *loadDaemon, url string, drain float64) ([]rssSample, error) {
			var samples []rssSample
			start := time.Now()
			sample := func() {
				m, err := memOf(d.pid())
				if err != nil {
					return
				}
				d.mu.Lock()
				handled := d.handled
				d.mu.Unlock()
				samples = append(samples, rssSample{seconds: time.Since(start).Seconds(), rss: m.rss, handled: handled})
			}
			ph, err := runPhase(ctx, e, d, url, drain/2, e.opts.soakN, sample)
			ph.fraction = 0.5
			res.phase = ph
			return samples, err
		})
		b.drop()
		if errors.Is(res.err, context.Canceled) {
			return nil, res.err
		}
		r.results = append(r.results, res)
		e.logf("%s: soak %+v, %d samples", b.name, res.phase, len(res.samples))
	}
	r.loadAfter = loadAvg()
	// The README's plot is rewritten with its figures only; otherwise
	// the plot goes with the run's directory (kept by -keep).
	png := filepath.Join(dir, "soak.png")
	if e.opts.write {
		png = filepath.Join(e.benchDir, "soak.png")
	}
	if err := r.writePlot(dir, png); err != nil {
		return nil, err
	}
	r.plot = "soak.png"
	e.logf("plot: %s", png)
	return r, nil
}

// writePlot draws every broker's RSS over the number of messages handled
// with gnuplot into png.
func (r *soakReport) writePlot(dir, png string) error {
	var plots []string
	for i, res := range r.results {
		if len(res.samples) == 0 {
			continue
		}
		data := filepath.Join(dir, fmt.Sprintf("rss-%d.dat", i))
		f, err := os.Create(data)
		if err != nil {
			return err
		}
		w := bufio.NewWriter(f)
		for _, s := range res.samples {
			fmt.Fprintf(w, "%d %.2f %.1f\n", s.handled, float64(s.rss)/(1<<20), s.seconds)
		}
		if err := errors.Join(w.Flush(), f.Close()); err != nil {
			return err
		}
		plots = append(plots, fmt.Sprintf("%q using ($1/1000):2 with lines linewidth 2 title %q", data, res.backend+" (sampled every second)"))
	}
	if len(plots) == 0 {
		return errors.New("no samples to plot")
	}
	script := fmt.Sprintf(`set terminal pngcairo size 900,480 font "sans,11"
set output %q
set title "symphony's RSS during a soak of %d messages per broker (%d workers, 50%% of the drain rate)"
set xlabel "messages handled (thousands)"
set ylabel "daemon RSS (MiB)"
set yrange [0:*]
set grid
set key bottom right
plot %s
`, png, r.n, r.workers, strings.Join(plots, ", \\\n     "))
	cmd := exec.Command("gnuplot")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("gnuplot: %v\n%s", err, out)
	}
	return nil
}

var soakHeader = []string{"broker", "messages", "offered msgs/s", "handled msgs/s", "RSS first minute", "RSS last minute", "RSS min–max", "p50", "p99", "max"}

func (r *soakReport) rows() [][]string {
	var rows [][]string
	for _, res := range r.results {
		if res.err != nil {
			rows = append(rows, []string{res.backend, "failed: " + res.err.Error(), "", "", "", "", "", "", "", ""})
			continue
		}
		s := res.samples
		window := func(from, to float64) string {
			var v []float64
			for _, x := range s {
				if x.seconds >= from && x.seconds < to {
					v = append(v, float64(x.rss))
				}
			}
			if len(v) == 0 {
				return "–"
			}
			slices.Sort(v)
			return mib(v[len(v)/2])
		}
		end := s[len(s)-1].seconds
		lo, hi := s[0].rss, s[0].rss
		for _, x := range s {
			lo, hi = min(lo, x.rss), max(hi, x.rss)
		}
		ph := res.phase
		rows = append(rows, []string{res.backend, strconv.Itoa(ph.n), perSecond(ph.offered), perSecond(ph.handled),
			window(0, 60) + " (median)", window(end-60, end+1) + " (median)", mib(float64(lo)) + "–" + mib(float64(hi)),
			msPrecise(ph.p50), msPrecise(ph.p99), msPrecise(ph.max)})
	}
	return rows
}

func (r *soakReport) failure() string {
	var out []string
	for _, res := range r.results {
		if res.err != nil {
			out = append(out, res.backend+": "+res.err.Error())
		}
	}
	return strings.Join(out, "; ")
}

func (r *soakReport) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "soak: %d messages per broker, W=%d workers, %d publisher processes; load average %s before, %s after\n",
		r.n, r.workers, loadPublishers, r.loadBefore, r.loadAfter)
	b.WriteString(table(soakHeader, r.rows(), false))
	fmt.Fprintf(&b, "plot: %s\n", r.plot)
	return b.String()
}

func (r *soakReport) markdown() string {
	var b strings.Builder
	b.WriteString(r.machine.header("databases on "+r.machine.FS+"; RabbitMQ "+r.rabbitVersion+" on the same machine", r.loadBefore, r.loadAfter))
	fmt.Fprintf(&b, "W = %d workers, prefetch 10; %d publisher processes at 50%% of the drain rate measured first; the daemon's RSS (VmRSS) read every second.\n\n",
		r.workers, loadPublishers)
	b.WriteString(table(soakHeader, r.rows(), true))
	fmt.Fprintf(&b, "\n![The daemon's RSS over the soak, per broker](%s)\n", r.plot)
	return b.String()
}
