package tasks

import (
	"context"
	"time"
)

// Capability modules a task may be granted with allow (SPEC §2.1).
const (
	CapHTTP = "http"
	CapExec = "exec"
	CapFile = "file"
	CapSQL  = "sql"
)

// Capabilities lists every capability allow may grant, in SPEC order.
func Capabilities() []string { return []string{CapHTTP, CapExec, CapFile, CapSQL} }

// Results of a capability call, the result label of symphony_calls_total.
const (
	// CallOK: the call returned a value (an HTTP response of any status,
	// a program that exited with any code).
	CallOK = "ok"
	// CallError: the call failed (a network error, a timeout, a database
	// error, a file that does not exist).
	CallError = "error"
	// CallRefused: the task was not allowed to make it (no grant, a host
	// outside allow_hosts, a private address, a path outside file_root).
	CallRefused = "refused"
)

// Call is one call a task made to a capability: what the metrics count,
// the debug log shows and a tracer spans. No field ever holds a secret.
type Call struct {
	Task     string
	Module   string // http, exec, file, sql
	Function string // get, run, write, query, ...
	// Target is what was called: a host, a program, a path in file_root,
	// a database name.
	Target string
	// Result is CallOK, CallError or CallRefused, set when the call ends.
	Result string
	Start  time.Time
	Took   time.Duration
	// Err is the error of a call that did not return CallOK.
	Err error
}

// CallObserver sees every capability call a task makes, in one place:
// StartCall before the call (the context it returns is the one the call
// runs with, so that a tracer can put a span in it), EndCall after it.
// Implementations must be safe for concurrent use.
type CallObserver interface {
	StartCall(ctx context.Context, c *Call) context.Context
	EndCall(ctx context.Context, c *Call)
}
