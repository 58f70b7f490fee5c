package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/riverqueue/river"
)

// The sqlite benchmark: messages per second through symphony's embedded
// broker with a trivial Starlark task, against River on its SQLite driver
// working as many no-op jobs with as many workers.
func init() {
	register(benchmark{
		name:  "sqlite",
		about: "symphony on its embedded SQLite broker vs River (riversqlite), no-op work",
		run:   benchSQLite,
	})
}

// target is what the issue asks of symphony: this many times River's rate.
const target = 10.0

// sqliteConfig is one row of the comparison.
type sqliteConfig struct {
	label string
	// symphony: prefetch > 0; River otherwise.
	prefetch int
	// River's knobs; zero leaves River's (or SQLite's) default.
	synchronous   string
	fetchCooldown time.Duration
	// once: measured in the first run only, with -river-default-n
	// messages: River's defaults are too slow for N.
	once bool
	// baseline: a River row the target is judged against (the fastest
	// of them).
	baseline bool
}

// With its defaults River fetches at most MaxWorkers jobs per fetch and
// fetches at most once per FetchCooldown (100ms), so W workers cap it at
// 10·W jobs/s whatever the database does. The rows the target is judged
// on take that cap away with River's smallest cooldown (1ms), at the same
// worker count; the all-defaults row shows the cap.
var sqliteConfigs = []sqliteConfig{
	{label: "symphony, prefetch 10 (default)", prefetch: 10},
	{label: "symphony, prefetch 100", prefetch: 100},
	{label: "River, FetchCooldown 1ms", fetchCooldown: river.FetchCooldownMin, baseline: true},
	{label: "River, FetchCooldown 1ms, synchronous=NORMAL", fetchCooldown: river.FetchCooldownMin, synchronous: "NORMAL", baseline: true},
	{label: "River, all defaults (FetchCooldown 100ms)", once: true},
}

// sqliteSamples are the rates of one configuration over the runs.
type sqliteSamples struct {
	cfg sqliteConfig
	// enqueue: symphony publish --file, or River's InsertMany; work: from
	// ready (daemon's /readyz, River's Start returning) and from start
	// (process start, River's Start call).
	enqueue, workReady, workStart rates
	// publishSelf is the rate `symphony publish` printed itself.
	publishSelf rates
	// n is how many messages each sample moved.
	n int
}

type sqliteReport struct {
	machine    machine
	n, workers int
	runs       int
	profiled   bool
	samples    []*sqliteSamples
	// load is the load average before and after.
	loadBefore, loadAfter string
}

func benchSQLite(ctx context.Context, e *env) (report, error) {
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
	rep := &sqliteReport{machine: e.machine, n: o.n, workers: o.workers, runs: o.runs, profiled: o.cpuprofile != "", loadBefore: loadAvg()}
	for _, c := range sqliteConfigs {
		rep.samples = append(rep.samples, &sqliteSamples{cfg: c})
	}
	for run := range o.runs {
		// The order turns with each run, so that none always goes first.
		for k := range rep.samples {
			s := rep.samples[(k+run)%len(rep.samples)]
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if !strings.Contains(s.cfg.label, o.only) {
				continue
			}
			n := o.n
			if s.cfg.once {
				if run > 0 || o.riverDefaultN == 0 {
					continue
				}
				n = o.riverDefaultN
			}
			s.n = n
			dir, err := e.dir(fmt.Sprintf("run%d-%s", run+1, slug(s.cfg.label)))
			if err != nil {
				return nil, err
			}
			profile := ""
			if o.cpuprofile != "" && run == 0 {
				profile, err = filepath.Abs(filepath.Join(o.cpuprofile, slug(s.cfg.label)+".pprof"))
				if err != nil {
					return nil, err
				}
			}
			if s.cfg.prefetch > 0 {
				r, err := runSymphony(ctx, symphonySetup{n: n, workers: o.workers, prefetch: s.cfg.prefetch, binary: binary, dir: dir, profile: profile})
				e.drop(dir)
				if err != nil {
					return nil, fmt.Errorf("run %d, %s: %w", run+1, s.cfg.label, err)
				}
				s.enqueue = append(s.enqueue, rateOf(n, r.publish))
				s.publishSelf = append(s.publishSelf, r.publishSelf)
				s.workReady = append(s.workReady, rateOf(n, r.drainReady))
				s.workStart = append(s.workStart, rateOf(n, r.drainStart))
				if o.verbose {
					e.logf("run %d %-46s publish %s/s (own clock %s/s)  drain %s/s from ready, %s/s from start",
						run+1, s.cfg.label, human(rateOf(n, r.publish)), human(r.publishSelf), human(rateOf(n, r.drainReady)), human(rateOf(n, r.drainStart)))
				}
			} else {
				r, err := runRiver(ctx, riverSetup{n: n, workers: o.workers, dir: dir, synchronous: s.cfg.synchronous,
					fetchCooldown: s.cfg.fetchCooldown, profile: profile})
				e.drop(dir)
				if err != nil {
					return nil, fmt.Errorf("run %d, %s: %w", run+1, s.cfg.label, err)
				}
				s.enqueue = append(s.enqueue, rateOf(n, r.insert))
				s.workReady = append(s.workReady, rateOf(n, r.workReady))
				s.workStart = append(s.workStart, rateOf(n, r.workStart))
				if o.verbose {
					e.logf("run %d %-46s insert %s/s  work %s/s from ready, %s/s from start",
						run+1, s.cfg.label, human(rateOf(n, r.insert)), human(rateOf(n, r.workReady)), human(rateOf(n, r.workStart)))
				}
			}
		}
	}
	rep.loadAfter = loadAvg()
	if o.cpuprofile != "" {
		e.logf("CPU profiles of the first run are in %s", o.cpuprofile)
	}
	return rep, nil
}

func slug(label string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(label) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
			dash = false
		} else if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	return strings.TrimSuffix(b.String(), "-")
}

// measured is the configurations that have samples.
func (r *sqliteReport) measured() []*sqliteSamples {
	var out []*sqliteSamples
	for _, s := range r.samples {
		if len(s.workReady) > 0 {
			out = append(out, s)
		}
	}
	return out
}

func (s *sqliteSamples) name(n int) string {
	if s.n != n || s.cfg.once {
		return fmt.Sprintf("%s [N=%d, %d run]", s.cfg.label, s.n, len(s.workReady))
	}
	return s.cfg.label
}

func (r *sqliteReport) rows() [][]string {
	var rows [][]string
	for _, s := range r.measured() {
		enq := s.enqueue.cell()
		if s.cfg.prefetch > 0 {
			enq += " [own clock " + s.publishSelf.cell() + "]"
		}
		rows = append(rows, []string{s.name(r.n), enq, s.workReady.cell(), s.workStart.cell()})
	}
	return rows
}

var sqliteHeader = []string{"system", "enqueue msgs/s", "work msgs/s from ready", "work msgs/s from start"}

// ratios compares each symphony configuration with each River one, by
// their medians.
func (r *sqliteReport) ratios() ([]string, [][]string) {
	var sym, riv []*sqliteSamples
	for _, s := range r.measured() {
		if s.cfg.prefetch > 0 {
			sym = append(sym, s)
		} else {
			riv = append(riv, s)
		}
	}
	header := []string{"symphony ÷ River"}
	var rows [][]string
	for _, rv := range riv {
		header = append(header, rv.cfg.label)
	}
	for _, s := range sym {
		for _, m := range []struct {
			what string
			get  func(*sqliteSamples) rates
		}{
			{"work from ready", func(x *sqliteSamples) rates { return x.workReady }},
			{"work from start", func(x *sqliteSamples) rates { return x.workStart }},
			{"enqueue", func(x *sqliteSamples) rates { return x.enqueue }},
		} {
			row := []string{s.cfg.label + ": " + m.what}
			for _, rv := range riv {
				row = append(row, ratio(m.get(s).median(), m.get(rv).median()))
			}
			rows = append(rows, row)
		}
	}
	return header, rows
}

// verdict judges the target against the fastest baseline River row, by
// the work rate from ready.
func (r *sqliteReport) verdict() string {
	var best *sqliteSamples
	for _, s := range r.measured() {
		if s.cfg.baseline && (best == nil || s.workReady.median() > best.workReady.median()) {
			best = s
		}
	}
	if best == nil {
		return "no River baseline was measured"
	}
	def, p100 := r.samples[0], r.samples[1]
	if len(def.workReady) == 0 || len(p100.workReady) == 0 {
		return "symphony was not measured in both setups: no verdict"
	}
	x := def.workReady.median() / best.workReady.median()
	met := "met"
	if x < target {
		met = "NOT met"
	}
	return fmt.Sprintf("Target ≥ %.0f× River: %s. symphony with the default prefetch works %s River's rate (%s, the fastest River row), %s with prefetch 100.",
		target, met, ratio(def.workReady.median(), best.workReady.median()), best.cfg.label, ratio(p100.workReady.median(), best.workReady.median()))
}

func (r *sqliteReport) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "sqlite: N=%d messages, W=%d workers, %d runs: median (min–max); load average %s before, %s after\n",
		r.n, r.workers, r.runs, r.loadBefore, r.loadAfter)
	if r.profiled {
		b.WriteString("(profiled run: symphony is the profiling build, River runs under the CPU profiler)\n")
	}
	b.WriteString(table(sqliteHeader, r.rows(), false))
	b.WriteString("\n")
	h, rows := r.ratios()
	b.WriteString(table(h, rows, false))
	b.WriteString("\n" + r.verdict() + "\n")
	return b.String()
}

func (r *sqliteReport) markdown() string {
	var b strings.Builder
	b.WriteString(r.machine.header("databases on "+r.machine.FS, r.loadBefore, r.loadAfter))
	fmt.Fprintf(&b, "N = %d messages (jobs), W = %d workers, %d runs; each cell is the median and, in brackets, the lowest and highest run.\n\n",
		r.n, r.workers, r.runs)
	b.WriteString(table(sqliteHeader, r.rows(), true))
	b.WriteString("\n")
	h, rows := r.ratios()
	b.WriteString(table(h, rows, true))
	b.WriteString("\n**" + r.verdict() + "**\n")
	return b.String()
}
