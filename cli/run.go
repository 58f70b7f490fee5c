package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/urfave/cli/v2"

	"github.com/symphony-go/symphony/admin"
	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/engine"
	"github.com/symphony-go/symphony/starlarklib"
	"github.com/symphony-go/symphony/tasks"
)

func runCommand() *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "the daemon: load tasks, declare their queues, consume until stopped",
		ArgsUsage: "PATH...",
		Flags:     globalFlags(),
		Action:    run,
	}
}

// newLoader reads symphony.star under the command's paths, resolves the
// settings and returns the loader that run's reloads and check share, so
// that check validates exactly what run would load.
func newLoader(c *cli.Context) (*loader, error) {
	roots := c.Args().Slice()
	if len(roots) == 0 {
		return nil, usagef("%s needs a tasks directory, as in 'symphony %s tasks/'", c.Command.Name, c.Command.Name)
	}
	for _, r := range roots {
		if _, err := os.Stat(r); err != nil {
			return nil, fmt.Errorf("read tasks: %w", err)
		}
	}
	file, err := starlarklib.LoadConfig(roots)
	if err != nil {
		return nil, err
	}
	s, err := resolve(c, file)
	if err != nil {
		return nil, err
	}
	level := new(slog.LevelVar)
	level.Set(s.LogLevel)
	world := starlarklib.NewWorld(starlarklib.WorldConfig{SecretsDir: s.SecretsDir})
	dbs := starlarklib.NewDatabasePools(world.Redactor)
	world.SQL = dbs
	return &loader{c: c, roots: roots, initial: s, level: level, world: world, databases: dbs,
		log: newLogger(s, level, c.App.ErrWriter, world.Redactor)}, nil
}

// forcedExit bounds a forced shutdown: the second signal ends the process
// within it, whatever handlers, workers or the broker do (SPEC §6).
const forcedExit = 10 * time.Second

// errNoTasks is what run and check say of roots that hold no task.
func errNoTasks(roots []string) error {
	return fmt.Errorf("no tasks found under %s: a task file calls task(...)", strings.Join(roots, ", "))
}

// selectTasks keeps the named tasks, or all when names is empty.
func selectTasks(ts []tasks.Task, names []string) ([]tasks.Task, error) {
	if len(names) == 0 {
		return ts, nil
	}
	var out []tasks.Task
	for _, n := range names {
		i := slices.IndexFunc(ts, func(t tasks.Task) bool { return t.Spec.Name == n })
		if i < 0 {
			var all []string
			for _, t := range ts {
				all = append(all, t.Spec.Name)
			}
			sort.Strings(all)
			return nil, fmt.Errorf("--task %s: no such task; the tasks are: %s", n, strings.Join(all, ", "))
		}
		out = append(out, ts[i])
	}
	return out, nil
}

func run(c *cli.Context) error {
	l, err := newLoader(c)
	if err != nil {
		return err
	}
	roots, s, log := l.roots, l.initial, l.log
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	dropped := prometheus.NewCounter(prometheus.CounterOpts{Name: "symphony_spans_dropped_total",
		Help: "Delivery spans the OTLP endpoint did not take (down, slow or refusing), or that found the export queue full."})
	reg.MustRegister(dropped)
	tr, err := newTracing(s.OTLPEndpoint, versionString(), dropped, log)
	if err != nil {
		return usageError{err}
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tr.Shutdown(ctx)
	}()
	calls, err := engine.NewCallMetrics(reg)
	if err != nil {
		return err
	}
	l.world.Calls = callObservers(calls, s.OTLPEndpoint, tr)
	// The watcher takes its first look before the files load: a change
	// in between then reloads rather than going unseen.
	var w *watcher
	if !s.NoWatch {
		w = newWatcher(roots, log)
		w.start()
	}
	if l.copies, err = newSnapshots(roots); err != nil {
		return err
	}
	defer l.copies.remove()
	gen, err := l.load(context.Background())
	if err != nil {
		return err
	}
	if len(gen.Tasks) == 0 {
		return errNoTasks(roots)
	}
	// The pools open lazily: a database that is down fails its calls
	// until it is back, and stops nothing.
	gen.Commit()
	defer l.databases.Close()
	// The admin address is taken before anything else starts: a busy one
	// stops the daemon at once, saying so.
	var adminLn net.Listener
	if s.AdminAddr != "" {
		if adminLn, err = net.Listen("tcp", s.AdminAddr); err != nil {
			return fmt.Errorf("start admin server on %s: %w (another daemon may be using it: set --admin-addr, or empty to disable)", s.AdminAddr, err)
		}
		defer adminLn.Close()
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	b, err := openBroker(ctx, s.Broker, s.Exchange, s.QueueType, log, nil, false)
	if err != nil {
		return err
	}
	defer b.Close()

	eng, err := engine.New(engine.Config{
		Broker:          b,
		BrokerURL:       s.Broker,
		Exchange:        s.Exchange,
		Logger:          log,
		Registry:        reg,
		ShutdownTimeout: s.ShutdownTimeout,
		ScalingInterval: s.ScalingInterval,
		ThrottleMax:     s.ThrottleMax,
		ThrottleFactor:  s.ThrottleFactor,
		Version:         versionString(),
		Tracer:          tr.Tracer(),
		Spawn:           spawner(roots, s, l.copies, l.databases),
		Load:            l.load,
		Location:        s.Timezone,
		Calls:           calls,
	}, gen.Tasks)
	if err != nil {
		return err
	}
	for _, t := range gen.Tasks {
		log.Info("task loaded", "task", t.Spec.Name, "queue", t.Spec.Queue, "patterns", t.Spec.Patterns,
			"work_model", string(t.Spec.WorkModel), "workers", t.Spec.MaxWorkers, "file", t.Spec.File)
	}
	log.Info("starting", "broker", broker.Redact(s.Broker), "exchange", s.Exchange, "version", versionString())

	// Signals are handled here and nowhere else. The first INT, TERM or
	// QUIT stops intake and lets in-flight messages finish; the second
	// cancels them and hands them back. HUP reloads, as a change to the
	// task files does; USR1 logs a status summary.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, daemonSignals()...)
	defer signal.Stop(sigs)
	triggers := make(chan string, 1)
	notify := newNotifier()
	go func() {
		graceful := true
		for sig := range sigs {
			switch {
			case isReload(sig):
				select {
				case triggers <- "SIGHUP":
				default: // a reload is due already; it reads the newest files
				}
			case isStatus(sig):
				eng.LogStatus()
			default:
				if graceful {
					log.Info("graceful shutdown: send the signal again to force", "signal", sig.String())
					if err := notify.stopping(); err != nil {
						log.Warn("tell the service manager the daemon stops", "err", err)
					}
					stop()
					graceful = false
					continue
				}
				log.Warn("forced shutdown", "signal", sig.String())
				eng.Force()
				// The engine returns within seconds whatever handlers do;
				// this is the guarantee if anything else (a broker that
				// does not close) holds the process.
				time.AfterFunc(forcedExit, func() {
					log.Error("forced shutdown took too long: exiting now", "after", forcedExit.String())
					os.Exit(exitForced)
				})
			}
		}
	}()
	if w != nil {
		go w.run(ctx, triggers)
	}
	go reloads(ctx, eng, triggers, notify, log)
	go func() {
		select {
		case <-eng.Ready():
			if err := notify.ready(fmt.Sprintf("consuming: %d tasks", len(gen.Tasks))); err != nil {
				log.Warn("tell the service manager the daemon is ready", "err", err)
			}
		case <-ctx.Done():
		}
	}()
	if adminLn != nil {
		srv := admin.New(adminLn, admin.Config{
			Daemon: eng, Gatherer: reg, Token: s.AdminToken, Logger: log, CheckPayload: starlarklib.CheckPayload,
			Keep: s.AdminHistory,
		})
		if !srv.Loopback() && s.AdminToken == "" {
			log.Warn("the admin server listens beyond this machine without a token: anyone who reaches it sees the status and dead letters; set --admin-token to guard them and to allow actions",
				"addr", srv.Addr())
		}
		log.Info("admin server listening", "addr", srv.Addr(), "actions", s.AdminToken != "")
		// It outlives the engine's stop by nothing: it goes when Run
		// returns, which is after every message is settled.
		adminCtx, stopAdmin := context.WithCancel(context.Background())
		adminDone := make(chan struct{})
		go func() {
			defer close(adminDone)
			if err := srv.Run(adminCtx); err != nil {
				log.Error("admin server stopped", "err", err)
			}
		}()
		defer func() { stopAdmin(); <-adminDone }()
	}
	err = eng.Run(ctx)
	// Close the broker (its last acks and releases are writes) while the
	// signal handler still runs: a late signal of a burst must not kill
	// the process with the default action halfway through.
	b.Close()
	return err
}

func checkCommand() *cli.Command {
	return &cli.Command{
		Name:      "check",
		Usage:     "load and validate task files as run would; print one line per task",
		ArgsUsage: "PATH...",
		Flags:     globalFlags(),
		Action: func(c *cli.Context) error {
			l, err := newLoader(c)
			if err != nil {
				return err
			}
			gen, err := l.load(context.Background())
			if err != nil {
				return err
			}
			if len(gen.Tasks) == 0 {
				return errNoTasks(l.roots)
			}
			w := c.App.Writer
			for _, t := range gen.Tasks {
				s := t.Spec
				workers := fmt.Sprintf("%d", s.MaxWorkers)
				if s.MinWorkers != s.MaxWorkers {
					workers = fmt.Sprintf("%d..%d", s.MinWorkers, s.MaxWorkers)
				}
				extra := ""
				if s.Schedule != "" {
					extra += fmt.Sprintf("\tschedule=%q", s.Schedule)
				}
				if s.MaxPriority > 0 {
					extra += fmt.Sprintf("\tmax_priority=%d", s.MaxPriority)
				}
				if !s.RateLimit.IsZero() {
					extra += "\trate_limit=" + s.RateLimit.String()
				}
				timeout := "none"
				if s.Timeout > 0 {
					timeout = s.Timeout.String()
				}
				fmt.Fprintf(w, "%s\tqueue=%s\tpatterns=%s\twork_model=%s\tworkers=%s\ttimeout=%s\tfile=%s%s\n",
					s.Name, s.Queue, strings.Join(s.Patterns, ","), s.WorkModel, workers, timeout, s.File, extra)
			}
			fmt.Fprintf(c.App.ErrWriter, "%d tasks OK\n", len(gen.Tasks))
			return nil
		},
	}
}
