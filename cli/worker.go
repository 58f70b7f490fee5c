package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/symphony-go/symphony/engine"
	"github.com/symphony-go/symphony/starlarklib"
	"github.com/symphony-go/symphony/tasks"
)

// The daemon runs a task with isolation = "process" as child processes of
// its own binary: `symphony worker --task NAME PATH...`, with the settings
// in its environment but the broker URL on its standard input (so that a
// broker password is neither on a command line nor in an environment that
// task code or /proc/PID/environ could read), and its events on file
// descriptor 3.

func workerCommand() *cli.Command {
	return &cli.Command{
		Name:      "worker",
		Usage:     "one worker process of a task (the daemon starts these)",
		ArgsUsage: "PATH...",
		Hidden:    true,
		Flags: append(globalFlags(),
			&cli.StringFlag{Name: "task-name", Required: true, Usage: "the task to run"},
			&cli.StringFlag{Name: "hash", Usage: "the task's code hash the daemon loaded"},
			&cli.BoolFlag{Name: "oneshot", Usage: "handle one message and exit"},
			&cli.StringSliceFlag{Name: "shown", Usage: "COPY=ROOT: show the tasks root COPY as ROOT in positions"},
		),
		Action: runWorker,
	}
}

// spawner returns how the daemon starts worker processes: the binary it
// runs from (/proc/self/exe, so a binary replaced on disk meanwhile does
// not mix versions) with the daemon's settings, loading the copy of the
// task files of the generation that loaded the task.
func spawner(roots []string, s settings, copies *snapshots, databases *starlarklib.DatabasePools) engine.Spawner {
	// The broker URL (and the admin token, which a worker has no use
	// for) stay out of the child's environment.
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, envName("broker")+"=") || strings.HasPrefix(kv, envName("admin-token")+"=")
	})
	env = append(env,
		envName("exchange")+"="+s.Exchange,
		envName("log-format")+"="+s.LogFormat,
		envName("log-level")+"="+s.LogLevel.String(),
		envName("shutdown-timeout")+"="+s.ShutdownTimeout.String(),
		envName("admin-addr")+"=",
		envName("secrets-dir")+"="+s.SecretsDir,
		envName("otlp-endpoint")+"="+s.OTLPEndpoint,
	)
	return func(spec tasks.Spec, oneshot bool) (*exec.Cmd, error) {
		args := []string{"worker", "--task-name", spec.Name, "--hash", spec.Hash}
		if oneshot {
			args = append(args, "--oneshot")
		}
		paths := roots
		if snap, ok := copies.of(spec.Hash); ok {
			paths = snap.roots
			for copyRoot, root := range snap.shown {
				args = append(args, "--shown", copyRoot+"="+root)
			}
		}
		cmd := exec.Command("/proc/self/exe", append(args, paths...)...)
		cmd.Args[0] = os.Args[0]
		// The task's own queue type, which its retries follow.
		cmd.Env = append(env[:len(env):len(env)], envName("queue-type")+"="+string(spec.QueueType))
		if spec.MaxMemory > 0 {
			cmd.Env = append(cmd.Env, envMaxMemory+"="+strconv.FormatInt(spec.MaxMemory, 10))
		}
		// The broker's URL on the first line, then the databases, one
		// "name=URL" a line: passwords stay out of the environment, and
		// a relative sqlite: path is already beside the daemon's
		// symphony.star, not beside the snapshot the process loads.
		cmd.Stdin = strings.NewReader(strings.Join(append([]string{s.Broker}, databases.URLs()...), "\n"))
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		return cmd, nil
	}
}

// envMaxMemory carries a task's max_memory to its worker processes.
const envMaxMemory = "SYMPHONY_WORKER_MAX_MEMORY"

func runWorker(c *cli.Context) error {
	roots := c.Args().Slice()
	file, err := starlarklib.LoadConfig(roots)
	if err != nil {
		return err
	}
	s, err := resolve(c, file)
	if err != nil {
		return err
	}
	world := starlarklib.NewWorld(starlarklib.WorldConfig{SecretsDir: s.SecretsDir})
	log := newLogger(s, nil, c.App.ErrWriter, world.Redactor).With("worker_pid", os.Getpid())
	// From here on a failure is a line of the daemon's log, in its format,
	// rather than a bare line on the shared standard error.
	if err := work(c, s, roots, log, world); err != nil {
		if errors.Is(err, engine.ErrDeclined) {
			return cli.Exit("", engine.ExitDeclined)
		}
		log.Error("worker process failed", "err", err)
		return cli.Exit("", 1)
	}
	return nil
}

func work(c *cli.Context, s settings, roots []string, log *slog.Logger, world *starlarklib.World) error {
	if err := limitMemory(); err != nil {
		return err
	}
	shown := map[string]string{}
	for _, kv := range c.StringSlice("shown") {
		if copyRoot, root, ok := strings.Cut(kv, "="); ok {
			shown[copyRoot] = root
		}
	}
	// The process exports its own spans; those it drops it logs.
	tr, err := newTracing(s.OTLPEndpoint, versionString(), nil, log)
	if err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tr.Shutdown(ctx)
	}()
	events := os.NewFile(3, "events")
	world.Calls = callObservers(engine.CallReporter(events), s.OTLPEndpoint, tr)
	in, err := io.ReadAll(c.App.Reader)
	if err != nil {
		return fmt.Errorf("read the broker URL from standard input: %w", err)
	}
	url, rest, _ := strings.Cut(string(in), "\n")
	dbs := map[string]starlarklib.DatabaseURL{}
	var names []string
	for _, line := range strings.Split(rest, "\n") {
		name, raw, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		if dbs[name], err = starlarklib.ParseDatabaseURL(raw, ""); err != nil {
			return fmt.Errorf("database %s: %w", name, err)
		}
		names = append(names, name)
	}
	pools := starlarklib.NewDatabasePools(world.Redactor)
	pools.Set(dbs)
	defer pools.Close()
	world.SQL = pools
	ts, err := starlarklib.Load(roots, starlarklib.Options{Logger: log, Shown: shown, World: world, QueueType: s.QueueType,
		Databases: names})
	if err != nil {
		return err
	}
	ts, err = selectTasks(ts, []string{c.String("task-name")})
	if err != nil {
		return err
	}
	task := ts[0]
	if want := c.String("hash"); want != "" && task.Spec.Hash != want {
		return fmt.Errorf("task %s: its files changed since the daemon loaded them; reload the daemon (SIGHUP) to run the new code", task.Spec.Name)
	}

	intake, stopIntake := context.WithCancel(context.Background())
	defer stopIntake()
	hard, stopHard := context.WithCancelCause(context.Background())
	defer stopHard(tasks.ErrShutdown)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	go func() {
		<-sigs
		stopIntake()
		<-sigs
		stopHard(tasks.ErrShutdown)
	}()

	if url == "" {
		return errors.New("no broker URL on standard input: worker processes are started by the daemon")
	}
	b, err := openBroker(intake, url, s.Exchange, s.QueueType, log, nil, false)
	if err != nil {
		if intake.Err() != nil {
			// Asked to stop while connecting: nothing was taken.
			return nil
		}
		return err
	}
	defer b.Close()
	return engine.RunWorker(intake, hard, engine.WorkerConfig{
		Broker: b, Logger: log, Task: task, Events: events, Oneshot: c.Bool("oneshot"), Tracer: tr.Tracer(),
	})
}

// limitMemory gives the collector a soft limit just under the task's
// max_memory, so that it works harder before the daemon, which watches
// the process's resident memory, kills it for going over.
func limitMemory() error {
	raw := os.Getenv(envMaxMemory)
	if raw == "" {
		return nil
	}
	n, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || n <= 0 {
		return fmt.Errorf("%s=%q is not a size in bytes", envMaxMemory, raw)
	}
	debug.SetMemoryLimit(n / 10 * 9)
	return nil
}
