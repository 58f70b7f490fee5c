package starlarklib

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	"go.starlark.net/starlark"

	"github.com/symphony-go/symphony/tasks"
)

// World is the Go side of everything a task can do outside itself: the
// one value through which the capability modules (http, exec, file, sql)
// and secret() reach the network, programs, files, databases and the
// secret store. The modules parse arguments, check grants, convert values
// and redact secrets; the World only does the I/O. The daemon passes the
// real one (NewWorld); task tests pass one whose fields answer from stubs
// and record what the task asked for. See the package doc, "The World".
type World struct {
	HTTP    HTTPClient
	Exec    Runner
	Files   FileSystem
	SQL     Databases
	Secrets SecretStore
	// Calls, if set, sees every capability call (metrics, tracing).
	Calls tasks.CallObserver
	// Redactor collects every secret value a task read, and the database
	// passwords, and scrubs them from text: errors, dead letters, logs,
	// published messages. Every World needs one; NewWorld makes it.
	Redactor *Redactor
}

// WorldConfig configures NewWorld.
type WorldConfig struct {
	// SecretsDir is --secrets-dir: one file per secret.
	SecretsDir string
	// LookupEnv reads secrets from the environment; nil: os.LookupEnv.
	LookupEnv func(string) (string, bool)
	// RootCAs are the certificate authorities https trusts; nil: the
	// system's (SSL_CERT_FILE and SSL_CERT_DIR apply).
	RootCAs *x509.CertPool
	// Resolver resolves host names for http; nil: the system's.
	Resolver *net.Resolver
}

// NewWorld returns the real World: the network, programs, files,
// databases and secrets of this process.
func NewWorld(cfg WorldConfig) *World {
	r := NewRedactor()
	return &World{
		HTTP:     newHTTPClient(cfg.RootCAs, cfg.Resolver),
		Exec:     processRunner{},
		Files:    rootFiles{},
		SQL:      NewDatabasePools(r),
		Secrets:  SecretFiles{Dir: cfg.SecretsDir, LookupEnv: cfg.LookupEnv},
		Redactor: r,
	}
}

// HTTPClient makes the requests of the http module.
type HTTPClient interface {
	Do(ctx context.Context, req *HTTPRequest) (*HTTPResponse, error)
}

// HTTPRequest is one request of a task. The module has checked the
// scheme and the host name against AllowHosts; the client must check
// every address it dials and every redirect against the same rules.
type HTTPRequest struct {
	Task   string
	Method string
	URL    string
	Header map[string][]string
	Body   []byte
	// Timeout bounds this request besides the run's context; zero: none.
	Timeout time.Duration
	// MaxBytes bounds the response body; a larger one is an error.
	MaxBytes int64
	// AllowHosts is the task's allow_hosts; empty: any public host.
	AllowHosts []string
}

// HTTPResponse is what came back. A status of any value is a response.
type HTTPResponse struct {
	Status int
	Header map[string][]string
	Body   []byte
	// URL is the URL of the final response, after redirects.
	URL string
}

// Runner finds and runs the programs of the exec module.
type Runner interface {
	// LookPath finds a program allowed by allow_commands: a name is
	// looked up in PATH, a path must exist. The error says which.
	LookPath(program string) (string, error)
	Run(ctx context.Context, req *ExecRequest) (*ExecResult, error)
}

// ExecRequest is one program run. The module has checked Argv[0] against
// allow_commands and resolved it to Path with the Runner's LookPath.
type ExecRequest struct {
	Task  string
	Path  string
	Argv  []string
	Stdin []byte
	// Env is the whole environment of the program, as "K=V".
	Env []string
	// Dir is the working directory; empty: the daemon's.
	Dir string
	// MaxOutput bounds stdout and stderr each; more is an error, and the
	// program is killed.
	MaxOutput int64
}

// ExecResult is how a program ended: its exit code (-N when killed by
// signal N, as Python reports it) and its output.
type ExecResult struct {
	Code           int
	Stdout, Stderr []byte
}

// FileSystem opens the directories of the file module.
type FileSystem interface {
	// Open returns the directory root, confined: no name may lead out of
	// it (.., absolute paths, symlinks).
	Open(root string) (Dir, error)
}

// Dir is a directory a task's file calls are confined to; names are
// slash-separated and relative to it.
type Dir interface {
	ReadFile(name string, maxBytes int64) ([]byte, error)
	WriteFile(name string, data []byte) error
	AppendFile(name string, data []byte) error
	Stat(name string) (FileInfo, error)
	// List returns the names in a directory, sorted.
	List(name string) ([]string, error)
	Remove(name string) error
	MkdirAll(name string) error
	Close() error
}

// FileInfo is what file.stat tells.
type FileInfo struct {
	Name    string
	Size    int64
	IsDir   bool
	Mode    uint32
	ModTime time.Time
}

// Databases holds the pools of the sql module, by name.
type Databases interface {
	// DB returns the named database, or an error naming the databases
	// there are.
	DB(name string) (SQLDB, error)
}

// SQLQuerier runs statements; args are Go values (nil, bool, int64,
// float64, string, []byte, time.Time).
type SQLQuerier interface {
	// Query returns at most maxRows rows; more is an error.
	Query(ctx context.Context, query string, args []any, maxRows int) (*SQLRows, error)
	// Exec returns the number of rows affected.
	Exec(ctx context.Context, query string, args []any) (int64, error)
}

// SQLDB is one database's pool.
type SQLDB interface {
	SQLQuerier
	Begin(ctx context.Context) (SQLTx, error)
}

// SQLTx is a transaction.
type SQLTx interface {
	SQLQuerier
	Commit() error
	Rollback() error
}

// SQLRows are a query's result. Values are nil, bool, int64, *big.Int
// (beyond int64), float64, string, []byte or time.Time.
type SQLRows struct {
	Columns []string
	Rows    [][]any
}

// SecretStore looks secrets up by name.
type SecretStore interface {
	// Secret returns the value of the named secret, or an error that says
	// where it was looked for.
	Secret(name string) (string, error)
}

// refusedError is a call its task was not allowed to make: counted with
// result "refused" wherever it is wrapped.
type refusedError struct{ msg string }

func (e *refusedError) Error() string { return e.msg }

func refusedf(format string, args ...any) error {
	return &refusedError{msg: fmt.Sprintf(format, args...)}
}

func isRefused(err error) bool {
	var r *refusedError
	return errors.As(err, &r)
}

// call is one capability call in progress: the single place where every
// call is observed (metrics, the debug log line, a tracer's span).
type call struct {
	st    *state
	c     tasks.Call
	attrs []any
	ctx   context.Context
}

// observe begins a call of module.function on target, for the task whose
// run st is.
func (st *state) observe(module, function, target string) *call {
	c := &call{st: st, c: tasks.Call{Module: module, Function: function, Target: target, Start: time.Now()}}
	if st.task != nil {
		c.c.Task = st.task.spec.Name
	}
	c.ctx = st.context()
	if w := st.env.world; w.Calls != nil {
		c.ctx = w.Calls.StartCall(c.ctx, &c.c)
	}
	return c
}

// attr adds attributes to the call's debug line.
func (c *call) attr(kv ...any) { c.attrs = append(c.attrs, kv...) }

// end finishes the call with its error (nil for success) and returns err,
// its secrets redacted.
func (c *call) end(err error) error {
	c.c.Took = time.Since(c.c.Start)
	switch {
	case err == nil:
		c.c.Result = tasks.CallOK
	case isRefused(err):
		c.c.Result = tasks.CallRefused
	default:
		c.c.Result = tasks.CallError
	}
	if err != nil {
		err = errors.New(c.st.env.world.Redactor.Redact(err.Error()))
		c.c.Err = err
	}
	if w := c.st.env.world; w.Calls != nil {
		w.Calls.EndCall(c.ctx, &c.c)
	}
	if c.st.logs(c.ctx, slog.LevelDebug) {
		attrs := append([]any{"module", c.c.Module, "function", c.c.Function, "target", c.c.Target}, c.attrs...)
		attrs = append(attrs, "result", c.c.Result, "took", c.c.Took.String())
		if err != nil {
			attrs = append(attrs, "err", err.Error())
		}
		c.st.log().DebugContext(c.ctx, "call", attrs...)
	}
	return err
}

// begin starts a capability call of builtin b (module.function) on
// target: it checks that a delivery is being handled (capability calls
// are made by handlers only) and that the running task was granted
// module. A refusal is observed like any call, with result "refused".
func (st *state) begin(b *starlark.Builtin, module, target string) (*call, error) {
	if msg := notDuringLoad(b.Name(), st); msg != "" {
		return nil, errors.New(msg)
	}
	if st.task == nil {
		return nil, fmt.Errorf("%s: no task is running", b.Name())
	}
	_, function, _ := strings.Cut(b.Name(), ".")
	c := st.observe(module, function, target)
	if !slices.Contains(st.task.spec.Allow, module) {
		return nil, c.end(refusedf("%s: task %s is not allowed to use %s: add allow = [%q] to its task() at %s",
			b.Name(), st.task.spec.Name, module, module, st.task.spec.Pos))
	}
	return c, nil
}
