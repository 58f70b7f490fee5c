// Package starlarklib owns everything Starlark: it loads task files into
// tasks.Task values (a validated tasks.Spec plus a tasks.Handler), runs
// deliveries through them, reads symphony.star's config(...), and provides
// the builtins scripts see (one file each, in the shape of starlark-go's
// lib/ packages).
//
// # Files
//
// Every *.star file under a tasks root is a task file, except *_test.star
// (task tests) and symphony.star at the root (configuration, read by
// LoadConfig; config() is allowed there and nowhere else, task() is not).
// Dot-files and dot-directories are skipped; symlinked directories are not
// followed. A file that registers no task is a library: other files use it
// with load("lib/money.star", "cents"), the path relative to the tasks
// root. Loads that leave the root (.., absolute paths, symlinks pointing
// out) are refused, and so are load cycles and loading a file that
// registers tasks.
//
// Each file is compiled and its top level executed once per Load; its
// globals are then frozen and shared by every run. A library is executed
// once however many files load it. The dialect (see dialect) allows set(),
// while loops and if/for at the top level; it forbids reassigning a global
// and recursion. A top level that runs more than Options.MaxLoadSteps
// steps fails the load.
//
// Load validates every task() argument (SPEC §2) and reports every
// problem it finds, in every file, sorted by position; a task() call with
// mistakes reports them all at once. Positions in errors and in Spec.Pos
// start with the root as given ("tasks/thumbs.star:12:1") and point at the
// start of a call; Spec.File is the path relative to the root. Spec.Hash
// covers the task file and, transitively, every library it loads.
//
// Choices where SPEC §2 is silent: an argument set to None takes its
// default, but timeout = None (or 0) turns the 10-minute default timeout
// off; min_workers must be at least 1;
// retry_delay must be positive and not above max_retry_delay; routes and
// subscribe_to may both be given, and the queue is then bound to the
// routes' patterns followed by subscribe_to's others (a message that only
// those match runs no route and is acked); a relative file_root is
// relative to the tasks root; durations are seconds (int or float), a
// duration string ("1m30s") or a time.duration.
//
// # Runs
//
// Every delivery runs on a fresh starlark.Thread, bounded by the context
// (its end cancels the thread, even in a `while True: pass`) and by
// max_steps. The payload is decoded by content type (parameters such as
// "; charset=utf-8" ignored): application/json and text/javascript as
// JSON, application/x-msgpack as msgpack, application/x-yaml and
// text/x-yaml as YAML (the first document), anything else as bytes. An
// empty body of a structured type is None. Object keys keep their order;
// integers of any size stay exact.
//
// The handler's return value decides the verdict: None or a truthy value
// succeeds; retry(...) asks for a retry; any other falsy value (False, 0,
// "", [], {}) declines, which retries with backoff; an error (fail(), a
// runtime error, the step limit, cancellation) fails, with the error and
// its Starlark backtrace. With routes = {pattern: function}, every
// function whose pattern matches the routing key runs in insertion order,
// stopping at the first that does not succeed; a message no route matches
// succeeds. A oneshot task executes its file anew for every delivery: fresh,
// unfrozen globals, nothing carried over (libraries are shared frozen); its
// top level then counts towards max_steps and is cancelled with the run.
//
// # Builtins
//
// Besides Starlark's universe (len, str, fail, print, ...), scripts see:
//
//	task(name, subscribe_to, work, routes, queue, work_model, min_workers,
//	     max_workers, prefetch, timeout, timeout_action, max_attempts,
//	     retry_delay, max_retry_delay, acknowledge, persistent, isolation,
//	     idle_timeout, max_steps, max_memory, allow, allow_hosts,
//	     allow_commands, file_root, databases)
//	                        register a task; keyword arguments only; at the
//	                        top level of a task file only (SPEC §2)
//	scaler(decide, interval = None)
//	                        a work model for task(work_model = ...): the
//	                        pool size is decide(stats); interval (seconds
//	                        or "30s", positive) is how often it is asked,
//	                        by default the daemon's scaling_interval; while
//	                        files load only (see Scalers)
//	config(broker, exchange, admin_addr, log_format, log_level,
//	       shutdown_timeout, scaling_interval, throttle_max,
//	       throttle_factor, task, no_watch)
//	                        daemon settings; in symphony.star only, once
//	json.encode/encode_indent/decode/indent   go.starlark.net/lib/json
//	time                    go.starlark.net/lib/time (now, parse_time,
//	                        parse_duration, from_timestamp, time, units)
//	math                    go.starlark.net/lib/math
//	struct(**fields)        go.starlark.net/starlarkstruct
//	log.debug/info/warn/error(msg, **attrs)
//	                        a structured log line carrying task,
//	                        message_id and attempt (at load time: file)
//	print(*args)            Starlark's own, written to the log at info
//	publish(routing_key, payload, headers = {}, content_type = None,
//	        delay = None)   buffer a message, sent only if the run
//	                        succeeds; bytes are sent raw (default type
//	                        application/octet-stream); other values are
//	                        encoded by content_type, default
//	                        application/json; msgpack and YAML too; a str
//	                        under any other type is sent as its text.
//	                        delay: seconds or a duration string
//	retry(after = None, reason = "")
//	                        return it to retry the message after a delay
//	                        (seconds or "1m30s"), or the task's backoff
//	sleep(seconds)          pause; ends early with an error when the run's
//	                        context ends (timeout, shutdown)
//	env(name, default = None)
//	                        an environment variable, or default
//	fail(msg)               Starlark's own: fail the run
//	secret(name)            a secret (see The World)
//	re, base64, hex, hash, uuid, url, template
//	                        pure helpers, no grant needed
//	http, exec, file, sql   capabilities, each granted by allow (see
//	                        The World)
//
// docs/tasks.md is the reference of every builtin, argument, default and
// error; reference_test.go fails when it misses a predeclared name, a
// member of a module, a field of meta or of a value a builtin returns, or
// a task() or config() argument, or names one that does not exist.
//
// publish and sleep need a delivery: at the top level of a file and in a
// scaler's decide they are errors. The handler receives meta, a struct
// with routing_key, exchange, queue, task, message_id, correlation_id,
// content_type, headers (a dict; numbers are ints or floats; x-death is a
// list of dicts), timestamp (a time value, or None), redelivered and
// attempt (1 on first delivery).
//
// # Scalers
//
// work_model = scaler(decide = fn) makes the task tasks.Scaled, with
// Spec.Scaler calling fn and Spec.ScaleInterval the interval (zero if not
// given). decide must be callable with one argument, stats, a struct:
//
//	samples       list of structs, oldest first: at (a time) and ready (an
//	              int, the queue's ready count then)
//	workers       int: workers the pool runs now
//	min, max      ints: min_workers and max_workers
//	busy          int: workers handling a message
//	idle          list of floats: seconds each worker has been idle (0 if busy)
//	idle_timeout  float: the task's idle_timeout in seconds
//
// It returns the number of workers wanted, an int; the pool clamps it to
// [min, max] and moves towards it one worker per interval. Each call runs
// on a fresh thread, bounded by the caller's context and by the task's
// max_steps or, without one, DefaultDecideSteps; log.* and print carry the
// task's name. An error (fail(), a runtime error, cancellation, the step
// limit, a result that is not an int) comes back with the Starlark
// backtrace in its text, and the pool keeps its size. scaler()'s own
// argument errors stop the file's top level like any runtime error, at
// the scaler() call's position.
//
// # The World
//
// Everything a task does outside itself goes through one injected value,
// the World (Options.World): its HTTPClient, Runner (programs),
// FileSystem, Databases and SecretStore do the I/O; its CallObserver sees
// every call; its Redactor knows every secret value read. The modules
// (http.go, exec.go, file.go, sql.go, secret.go) stay on this side of the
// seam: they parse arguments, check the task's grants (allow,
// allow_hosts, allow_commands, file_root, databases), convert values and
// scrub secrets, then hand the World a plain Go request. So a task test
// (symphony test) swaps the World's fields for stubs that answer from a
// table and record each request, and what it checks is exactly what the
// daemon would have checked. NewWorld is the real one: a guarded HTTP
// client (every dialled address is checked after DNS, every redirect
// again), programs in process groups of their own, os.Root directories,
// database pools kept across reloads, secrets from --secrets-dir and the
// environment.
//
// Every capability call passes through one function (state.begin and
// call.end in world.go): the grant check, the CallObserver's StartCall
// and EndCall (symphony_calls_total and symphony_call_duration_seconds;
// a tracer's span) and the call's debug log line. A refusal (no grant, a
// host or program not listed, a private address, a path out of
// file_root) is a call with result "refused".
//
// Grants are checked twice: when files load, a capability module named
// in a task's work function, its routes, or a function of the same file
// they call, without the grant in allow, is an error at the name's
// position; when a task runs, every call checks again, so a use the
// syntax hides (a library function) fails then, naming the task, the
// module and the allow it needs. A member of a predeclared module that
// does not exist (hash.sha265) fails the load as an undefined name does.
//
// # Task tests
//
// RunTests (symphony test) runs the test_* functions of *_test.star
// files. It loads the tasks as Load does, with a World whose every part
// answers from the stubs of the run_task call running now (teststub.go,
// testfiles.go, testsql.go) and records each call through the World's
// CallObserver, so a task under test passes the same grant checks as in
// the daemon and reaches nothing real; its log lines are kept instead of
// written. run_task decides the outcome with tasks.Decide and routes what
// the run published through the loaded tasks' patterns, as a broker
// bound to them would. Test files see the predeclared names of task
// files but task, config and scaler, plus run_task and assert.
//
// Secrets: secret(name) returns a value that the capabilities and
// hash.hmac use as its text and that everything else (str, print, log,
// json.encode, publish, errors) shows as <secret NAME>; secret + str
// stays a secret. Besides, every value read is added to the Redactor,
// which scrubs it (if at least 4 bytes long) from a failed run's error
// and backtrace, a retry's reason, published bodies and headers and,
// through Redactor.Handler, every log line: a value that comes back from
// the world (a server echoing it) does not leak either.
package starlarklib
