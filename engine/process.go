package engine

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sync/atomic"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/tasks"
)

// A worker process reports to the daemon over a pipe, one JSON object a
// line: "ready" once subscribed, "start" when a message starts, "done" with
// what became of it, "call" for each capability call its task makes. The daemon keeps the process's metrics and status
// from them, as it does for its own workers.
type event struct {
	Event     string  `json:"event"`
	MessageID string  `json:"message_id,omitempty"`
	Action    string  `json:"action,omitempty"`
	Reason    string  `json:"reason,omitempty"`
	Error     string  `json:"error,omitempty"`
	Took      float64 `json:"took,omitempty"`
	TimedOut  bool    `json:"timed_out,omitempty"`
	// A capability call ("call"): its module and result.
	Module string `json:"module,omitempty"`
	Result string `json:"result,omitempty"`
}

// Spawner builds the command that runs one worker process for a task: the
// daemon's own binary with the worker subcommand. oneshot asks the process
// to handle one message and exit. The engine adds the event pipe (as file
// descriptor 3) and the process group.
type Spawner func(spec tasks.Spec, oneshot bool) (*exec.Cmd, error)

// ErrDeclined is RunWorker's error when a oneshot worker's message was not
// acked: the process exits with ExitDeclined, and the daemon's throttle
// rises.
var ErrDeclined = errors.New("the message was not acked")

// ExitDeclined is the exit status of a oneshot worker process whose message
// was not acked.
const ExitDeclined = 4

// processWorker is a worker that is a child process.
type processWorker struct {
	*activity
	pool    *pool
	cmd     *exec.Cmd
	started time.Time
	termed  atomic.Bool // asked to stop
	killed  atomic.Bool // for going over max_memory
	// waiting: it holds a message that waits for the rate limit.
	waiting atomic.Bool
}

// stop asks the process to stop gracefully.
func (w *processWorker) stop() { w.signal(syscall.SIGTERM) }

// force tells it to cancel what it runs: a second signal, as for the
// daemon. It is INT, not TERM again, because two pending TERMs merge into
// one and the process would see a single, graceful, stop.
func (w *processWorker) force() { w.signal(syscall.SIGINT) }

func (w *processWorker) signal(sig syscall.Signal) {
	w.termed.Store(true)
	if w.cmd.Process != nil {
		_ = w.cmd.Process.Signal(sig)
	}
}

// startProcess starts a worker process; its exit reaches the pool's exits
// channel.
func (p *pool) startProcess(ctx context.Context, cancel context.CancelFunc, hard context.Context, id int) (worker, error) {
	spec := p.task.Spec
	cmd, err := p.eng.cfg.Spawn(spec, spec.WorkModel == tasks.Oneshot)
	if err != nil {
		return nil, fmt.Errorf("build worker process command: %w", err)
	}
	events, write, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("make worker process pipe: %w", err)
	}
	cmd.ExtraFiles = []*os.File{write}
	if err := prepareProcess(cmd); err != nil {
		events.Close()
		write.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		events.Close()
		write.Close()
		return nil, fmt.Errorf("start worker process: %w", err)
	}
	write.Close()
	w := &processWorker{activity: newActivity(), pool: p, cmd: cmd, started: time.Now().UTC()}
	log := p.log.With("worker", id, "pid", cmd.Process.Pid)
	log.Debug("worker process started")
	read := make(chan struct{})
	go func() {
		defer close(read)
		w.read(events, log)
	}()
	go func() {
		// Intake stops: ask the process to stop. Handlers are cancelled
		// (shutdown timeout, or a forced stop): signal again, which forces
		// it, and kill it if it does not go.
		select {
		case <-ctx.Done():
			w.stop()
		case <-read:
			return
		}
		select {
		case <-hard.Done():
			w.force()
			select {
			case <-read:
			case <-time.After(forcedWait):
				log.Warn("worker process did not stop: killing it")
				w.signal(syscall.SIGKILL)
			}
		case <-read:
		}
	}()
	go func() {
		<-read // the pipe closes when the process and anything it started are gone
		err := cmd.Wait()
		events.Close()
		if w.waiting.Swap(false) {
			p.throttled.Add(-1)
		}
		cancel()
		if w.killed.Load() {
			err = fmt.Errorf("worker process killed: its memory went over max_memory (%d bytes)", spec.MaxMemory)
		} else {
			err = exitError(err, w.termed.Load())
		}
		p.exits <- exit{id: id, err: err}
	}()
	return w, nil
}

// read follows the process's events until it exits.
func (w *processWorker) read(r io.Reader, log *slog.Logger) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var ev event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			log.Warn("worker process sent a line that is not an event", "line", sc.Text())
			continue
		}
		switch ev.Event {
		case "ready":
			w.pool.workerSubscribed()
		case "wait":
			if !w.waiting.Swap(true) {
				w.pool.throttled.Add(1)
			}
		case "start":
			if w.waiting.Swap(false) {
				w.pool.throttled.Add(-1)
			}
			w.begin()
		case "done":
			w.pool.observe(handled{
				delivery: &tasks.Delivery{MessageID: ev.MessageID},
				outcome:  tasks.Outcome{Action: parseAction(ev.Action), Reason: ev.Reason, Error: ev.Error, TimedOut: ev.TimedOut},
				took:     time.Duration(ev.Took * float64(time.Second)),
			})
			w.end()
		case "call":
			if m := w.pool.eng.cfg.Calls; m != nil {
				m.record(w.pool.task.Spec.Name, ev.Module, ev.Result, time.Duration(ev.Took*float64(time.Second)))
			}
		}
	}
}

func parseAction(s string) tasks.Action {
	for _, a := range []tasks.Action{tasks.Ack, tasks.Retry, tasks.Dead, tasks.Release} {
		if a.String() == s {
			return a
		}
	}
	return tasks.Release
}

// exitError says why a worker process ended; nil for a clean exit, and for
// the end of one the daemon stopped.
func exitError(err error, stopped bool) error {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return err
	}
	if st, ok := ee.Sys().(syscall.WaitStatus); ok && st.Signaled() {
		if stopped && (st.Signal() == syscall.SIGTERM || st.Signal() == syscall.SIGINT || st.Signal() == syscall.SIGKILL) {
			return nil
		}
		return fmt.Errorf("worker process killed by signal %s", st.Signal())
	}
	if ee.ExitCode() == ExitDeclined {
		return fmt.Errorf("worker process exited with status %d: its message was not acked", ExitDeclined)
	}
	return fmt.Errorf("worker process exited with status %d", ee.ExitCode())
}

// WorkerConfig is what a worker process needs.
type WorkerConfig struct {
	Broker broker.Broker
	Logger *slog.Logger
	Task   tasks.Task
	// Events receives the process's events for the daemon; nil for none.
	Events io.Writer
	// Oneshot: handle one message and return.
	Oneshot bool
	// Tracer makes each delivery's span, as Config.Tracer.
	Tracer trace.Tracer
}

// RunWorker is the body of a worker process: one subscription to the
// task's queue, handled as the daemon handles it, until ctx stops intake.
// Cancelling hard cancels the run in progress and hands its message back.
// A oneshot worker returns after one message, with ErrDeclined when the
// message was not acked.
func RunWorker(ctx, hard context.Context, cfg WorkerConfig) error {
	spec := cfg.Task.Spec
	log := cfg.Logger.With("task", spec.Name)
	sub, err := cfg.Broker.Subscriber(consumeOptions(spec))
	if err != nil {
		return fmt.Errorf("subscribe to queue %s: %w", spec.Queue, err)
	}
	defer sub.Close()
	intake, stop := context.WithCancel(ctx)
	defer stop()
	msgs, err := sub.Subscribe(intake, spec.Queue)
	if err != nil {
		if intake.Err() != nil {
			return nil // asked to stop while subscribing, as a thread worker may be
		}
		return fmt.Errorf("subscribe to queue %s: %w", spec.Queue, err)
	}
	report := func(ev event) {
		if cfg.Events == nil {
			return
		}
		b, _ := json.Marshal(ev)
		if _, err := cfg.Events.Write(append(b, '\n')); err != nil {
			log.Warn("report to the daemon", "err", err)
		}
	}
	report(event{Event: "ready"})
	run := &runner{task: cfg.Task, broker: cfg.Broker, log: log, tracer: cfg.Tracer}
	var result error
	var c caller
	defer c.stop()
	for msg := range msgs {
		if intake.Err() != nil {
			msg.Nack() // handed out as intake stopped: for the next worker
			continue
		}
		if !spec.RateLimit.IsZero() {
			report(event{Event: "wait"})
			var waiting atomic.Int64
			if !awaitStart(intake, cfg.Broker, spec, log, &waiting) {
				msg.Nack() // intake stopped while it waited: for the next worker
				continue
			}
		}
		report(event{Event: "start"})
		h := run.handle(hard, msg, &c)
		report(event{Event: "done", MessageID: h.delivery.MessageID, Action: h.outcome.Action.String(),
			Reason: h.outcome.Reason, Error: h.outcome.Error, Took: h.took.Seconds(), TimedOut: h.outcome.TimedOut})
		run.logOutcome(h)
		if h.abandoned && result == nil {
			// Its goroutine still runs (a builtin in one long call) and
			// holds a core, or memory, that nothing else can take back
			// in this process: the process ends, and the daemon starts
			// another in its place.
			result = fmt.Errorf("a run of message %s did not stop when cancelled: the worker process exits to end it", h.delivery.MessageID)
			stop()
		}
		if cfg.Oneshot {
			if h.outcome.Action != tasks.Ack {
				result = ErrDeclined
			}
			stop()
		}
	}
	return result
}
