package starlarklib

import (
	"context"
	"log/slog"
	"os"

	"go.starlark.net/starlark"

	"github.com/symphony-go/symphony/tasks"
)

// stateKey is the thread-local under which every thread keeps its *state.
const stateKey = "symphony.state"

// phase is what a thread is doing, which decides what builtins may do.
type phase int

const (
	// phaseLoad: the top level of a file during Load.
	phaseLoad phase = iota
	// phaseConfig: the top level of symphony.star during LoadConfig.
	phaseConfig
	// phaseExec: the top level of a oneshot task file, executed anew for
	// one delivery.
	phaseExec
	// phaseRun: a handler running for a delivery.
	phaseRun
	// phaseScale: a scaler's decide function choosing a pool size.
	phaseScale
	// phaseTest: a test_* function of a task test (symphony test).
	phaseTest
)

// state is the per-thread state the builtins read. A thread is never
// shared between goroutines, so neither is its state.
type state struct {
	phase phase
	ctx   context.Context
	// logger, with logWith added the first time log() is asked for it: most
	// runs never log, and a logger With attributes costs an allocation.
	logger  *slog.Logger
	logWith []any
	env     *environment

	// task is the task whose delivery runs (run phase): its grants.
	task *taskDef
	// mod is the file whose top level runs (load, config and exec phases).
	mod *module
	// rerun collects the tasks a oneshot file registers when it runs anew.
	rerun []*taskDef
	// config collects config() settings (config phase).
	config *configCall
	// publications are the run's buffered publish() calls (run phase).
	publications []tasks.Publication
}

// stateOf returns th's state. Threads made elsewhere (a test calling a
// builtin directly) get a load-phase state with no module.
func stateOf(th *starlark.Thread) *state {
	if st, ok := th.Local(stateKey).(*state); ok {
		return st
	}
	return &state{phase: phaseLoad, ctx: context.Background(), logger: slog.New(slog.DiscardHandler)}
}

// log is the logger of the thread's execution.
func (st *state) log() *slog.Logger {
	if st.logWith != nil {
		st.logger = st.logger.With(st.logWith...)
		st.logWith = nil
	}
	return st.logger
}

// logs says whether the execution's log takes lines of level, without
// adding logWith: a handler's attributes do not change what it takes.
func (st *state) logs(ctx context.Context, level slog.Level) bool {
	return st.logger.Enabled(ctx, level)
}

// context is the run's context, or Background outside a run.
func (st *state) context() context.Context {
	if st.ctx == nil {
		return context.Background()
	}
	return st.ctx
}

// thread makes a thread for one execution: print() goes to the log.
func (env *environment) thread(name string, st *state) *starlark.Thread {
	st.env = env
	if st.logger == nil {
		st.logger = env.logger
	}
	th := &starlark.Thread{
		Name: name,
		Print: func(th *starlark.Thread, msg string) {
			st := stateOf(th)
			st.log().InfoContext(st.context(), msg, "via", "print")
		},
	}
	th.SetLocal(stateKey, st)
	return th
}

// notDuringLoad is the error of a builtin that needs a delivery, called
// outside one.
func notDuringLoad(name string, st *state) string {
	switch st.phase {
	case phaseConfig:
		return name + ": not available in symphony.star; it works only while a task handles a message"
	case phaseRun:
		return ""
	case phaseScale:
		return name + ": not available in a scaler's decide function: it works only while a task handles a message"
	case phaseTest:
		return name + ": not available in a task test: it works only while a task handles a message; run the task with run_task(...)"
	}
	return name + ": not available at the top level of a file: it works only while a task handles a message (call it from the work function)"
}

// world is what capability calls and secret() reach.
func (st *state) world() *World {
	if st.env != nil {
		return st.env.world
	}
	return NewWorld(WorldConfig{})
}

// lookupEnv is what env() reads.
func (st *state) lookupEnv() func(string) (string, bool) {
	if st.env != nil {
		return st.env.lookupEnv
	}
	return os.LookupEnv
}
