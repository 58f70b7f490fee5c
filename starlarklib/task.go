package starlarklib

import (
	"fmt"
	"math"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"go.starlark.net/starlark"

	"github.com/symphony-go/symphony/schedule"
	"github.com/symphony-go/symphony/tasks"
)

// taskDef is one task() call: the spec and the code it runs.
type taskDef struct {
	spec tasks.Spec
	mod  *module
	// work is the handler, or nil when routes are given.
	work   starlark.Callable
	routes []route
	// scaler is the work model of a Scaled task.
	scaler *scalerValue
}

// route is one entry of routes = {pattern: function}.
type route struct {
	pattern string
	fn      starlark.Callable
}

// freeze makes the task's functions safe to share between threads.
func (d *taskDef) freeze() {
	if d.work != nil {
		d.work.Freeze()
	}
	for _, r := range d.routes {
		r.fn.Freeze()
	}
	if d.scaler != nil {
		d.scaler.Freeze()
	}
}

// taskParams are task()'s arguments, in SPEC §2's order.
func taskParams() []string {
	return []string{
		"name", "subscribe_to", "work", "routes", "queue", "work_model",
		"min_workers", "max_workers", "prefetch", "timeout", "timeout_action",
		"max_attempts", "retry_delay", "max_retry_delay", "acknowledge",
		"persistent", "isolation", "idle_timeout", "max_steps", "max_memory",
		"allow", "allow_hosts", "allow_commands", "file_root", "databases", "schedule", "max_priority", "queue_type",
		"rate_limit",
	}
}

// taskBuiltin is task(...): it registers a task of the file whose top
// level is running. At load time argument errors are recorded, not raised,
// so that one Load reports every mistake in every task() call.
func taskBuiltin(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	st := stateOf(th)
	switch {
	case st.phase == phaseConfig:
		return nil, fmt.Errorf("%s: not allowed in symphony.star, which only configures the daemon with config(...): put tasks in their own .star files", b.Name())
	case st.phase == phaseRun:
		return nil, fmt.Errorf("%s: tasks are registered when files load, not while a message is handled: call task() at the top level of the file", b.Name())
	case st.phase == phaseScale:
		return nil, fmt.Errorf("%s: tasks are registered when files load, not while a scaler decides: call task() at the top level of the file", b.Name())
	case st.mod == nil:
		return nil, fmt.Errorf("%s: no task file is loading", b.Name())
	}
	pos := callPos(th, st.mod)
	if th.CallStackDepth() > 2 {
		msg := fmt.Sprintf("%s: call task() at the top level of the file, not inside a function (here inside %s)",
			b.Name(), th.CallFrame(1).Name)
		if st.phase == phaseExec {
			return nil, fmt.Errorf("%s", msg)
		}
		st.mod.registered = append(st.mod.registered, pos)
		st.mod.errs = append(st.mod.errs, Error{Pos: pos, Msg: msg})
		return starlark.None, nil
	}
	def, errs := parseTask(st.mod, pos, st.env.databases, st.env.queueType, args, kwargs)
	if st.phase == phaseExec {
		if len(errs) > 0 {
			return nil, errs
		}
		st.rerun = append(st.rerun, def)
		return starlark.None, nil
	}
	st.mod.registered = append(st.mod.registered, pos)
	if len(errs) > 0 {
		st.mod.errs = append(st.mod.errs, errs...)
	} else {
		st.mod.tasks = append(st.mod.tasks, def)
	}
	return starlark.None, nil
}

// parseTask validates one task() call's arguments into a taskDef.
// databases are the names config(databases = ...) gave; queueType is the
// daemon's default queue_type.
func parseTask(m *module, pos string, databases []string, queueType tasks.QueueType, args starlark.Tuple, kwargs []starlark.Tuple) (*taskDef, Errors) {
	a := newArgSet("task", pos, taskParams(), args, kwargs)

	stem := strings.TrimSuffix(path.Base(m.rel), ".star")
	spec := tasks.NewSpec(stem)
	spec.File, spec.Pos = m.rel, pos
	def := &taskDef{mod: m}

	if a.str("name", &spec.Name) {
		if err := tasks.ValidateName(spec.Name); err != nil {
			a.errorf("name: %v", err)
		}
	} else if !a.has("name") {
		if err := tasks.ValidateName(stem); err != nil {
			a.errorf("the task is named after its file, %q, which is not a valid name (use lower-case letters, digits, '_', '.' and '-'): pass name = %q",
				stem, suggestName(stem))
		}
	}
	spec.Queue = spec.Name
	if a.str("queue", &spec.Queue) {
		if err := tasks.ValidateName(spec.Queue); err != nil {
			a.errorf("queue: %v", err)
		}
	}

	// What runs, and what the queue is bound to.
	switch {
	case a.has("work") && a.has("routes"):
		a.errorf("give either work or routes, not both")
	case a.has("work"):
		def.work = a.handlerFunc("work", a.vals["work"])
	case a.has("routes"):
		def.routes = a.routes()
	default:
		a.errorf("missing work: pass work = a function taking (payload, meta), or routes = {pattern: function}")
	}
	var subs []string
	if a.str("schedule", &spec.Schedule) {
		if _, err := schedule.Parse(spec.Schedule); err != nil {
			a.errorf("schedule: %v", err)
		}
	}
	if a.strings("subscribe_to", &subs) {
		if len(subs) == 0 {
			a.errorf("subscribe_to is empty: list at least one routing pattern, such as \"user.created\" or \"user.#\"")
		}
		for i, p := range subs {
			if err := tasks.ValidatePattern(p); err != nil {
				a.errorf("subscribe_to[%d]: %v", i, err)
			}
		}
	} else if !a.has("subscribe_to") && !a.has("routes") && !a.has("schedule") && a.has("work") {
		a.errorf("missing subscribe_to: list the routing patterns the task consumes, such as subscribe_to = [\"user.created\"], or give a schedule")
	}
	// The routes' patterns come first, then any subscribe_to pattern that
	// is not already one of them.
	for _, r := range def.routes {
		spec.Patterns = append(spec.Patterns, r.pattern)
	}
	if spec.Schedule != "" {
		// The task's ticks, whatever it subscribes to.
		subs = append(subs, tasks.TickKey(spec.Name))
	}
	for _, p := range subs {
		if !slices.Contains(spec.Patterns, p) {
			spec.Patterns = append(spec.Patterns, p)
		}
	}

	// How it runs.
	var s string
	def.scaler = a.workModel(&spec.WorkModel)
	if def.scaler != nil {
		spec.ScaleInterval = def.scaler.interval
	}
	if a.oneOf("isolation", &s, string(tasks.Thread), string(tasks.Process)) {
		spec.Isolation = tasks.Isolation(s)
	}
	if a.oneOf("timeout_action", &s, string(tasks.TimeoutReject), string(tasks.TimeoutRetry)) {
		spec.TimeoutAction = tasks.TimeoutAction(s)
	}
	minOK := a.integer("min_workers", &spec.MinWorkers, 1, " (a pool needs a worker to notice its first message)")
	maxOK := a.integer("max_workers", &spec.MaxWorkers, 1, " (a pool of no workers would never consume its queue)")
	if (minOK || maxOK) && spec.MinWorkers > spec.MaxWorkers {
		if minOK && !a.has("max_workers") {
			a.errorf("min_workers (%d) is greater than max_workers (default %d): raise max_workers too", spec.MinWorkers, spec.MaxWorkers)
		} else {
			a.errorf("min_workers (%d) is greater than max_workers (%d)", spec.MinWorkers, spec.MaxWorkers)
		}
	}
	a.integer("prefetch", &spec.Prefetch, 1, "")
	a.integer("max_attempts", &spec.MaxAttempts, 1, " (1 means no retries)")
	if a.nones["timeout"] {
		spec.Timeout = 0 // None turns the default timeout off
	} else {
		a.duration("timeout", &spec.Timeout)
	}
	a.duration("idle_timeout", &spec.IdleTimeout)
	retryOK := a.duration("retry_delay", &spec.RetryDelay)
	maxRetryOK := a.duration("max_retry_delay", &spec.MaxRetryDelay)
	if retryOK && spec.RetryDelay == 0 {
		a.errorf("retry_delay must be positive: a retry is a delayed redelivery, not a hot requeue")
	}
	if maxRetryOK && spec.MaxRetryDelay == 0 {
		a.errorf("max_retry_delay must be positive")
	}
	if (retryOK || maxRetryOK) && spec.RetryDelay > spec.MaxRetryDelay && spec.MaxRetryDelay > 0 {
		a.errorf("retry_delay (%s) is longer than max_retry_delay (%s)", spec.RetryDelay, spec.MaxRetryDelay)
	}
	if a.integer("max_priority", &spec.MaxPriority, 1, " (leave it out for a queue without priorities)") && spec.MaxPriority > tasks.PriorityLimit {
		a.errorf("max_priority must be at most %d, got %d (RabbitMQ advises few levels: each costs it memory and CPU)", tasks.PriorityLimit, spec.MaxPriority)
	}
	var rate string
	if a.str("rate_limit", &rate) {
		r, err := tasks.ParseRate(rate)
		if err != nil {
			a.errorf("rate_limit: %v", err)
		}
		spec.RateLimit = r
	}
	a.boolean("acknowledge", &spec.Acknowledge)
	a.boolean("persistent", &spec.Persistent)
	if queueType != "" {
		spec.QueueType = queueType
	}
	if a.oneOf("queue_type", &s, string(tasks.Classic), string(tasks.Quorum)) {
		spec.QueueType = tasks.QueueType(s)
	}
	if spec.QueueType == tasks.Quorum {
		// Whether quorum came from this task or from the daemon's
		// default, say which to change.
		from := "queue_type = \"quorum\""
		if !a.has("queue_type") {
			from = "the daemon's queue_type (quorum)"
		}
		if a.has("persistent") && !spec.Persistent {
			a.errorf("persistent = False: a quorum queue is always durable (%s); drop persistent or set queue_type = \"classic\"", from)
		}
		if spec.MaxPriority > 0 {
			a.errorf("max_priority: RabbitMQ's quorum queues take no priorities (%s); set queue_type = \"classic\" on this task", from)
		}
	}
	if v, ok := a.vals["max_steps"]; ok {
		n, isInt := v.(starlark.Int)
		i, fits := n.Int64()
		switch {
		case !isInt:
			a.wrongType("max_steps", "an int", v)
		case !fits || i < 0:
			a.errorf("max_steps must be a non-negative int (0 means no limit), got %s", v)
		default:
			spec.MaxSteps = uint64(i)
		}
	}
	if v, ok := a.vals["max_memory"]; ok {
		n, err := parseBytes(v)
		switch {
		case err != nil:
			a.errorf("max_memory: %v", err)
		case spec.Isolation != tasks.Process:
			a.errorf("max_memory limits a worker process: it needs isolation = \"process\"")
		default:
			spec.MaxMemory = n
		}
	}

	a.capabilities(&spec, m.root, databases)

	if def.scaler != nil {
		spec.Scaler = newScaler(*def.scaler, &spec)
	}
	def.spec = spec
	if len(a.errs) > 0 {
		return nil, a.errs
	}
	return def, nil
}

// workModel reads work_model: "longlived", "oneshot" or scaler(...), which
// it returns.
func (a *argSet) workModel(dst *tasks.WorkModel) *scalerValue {
	v, ok := a.vals["work_model"]
	if !ok {
		return nil
	}
	const choices = `"longlived", "oneshot" or scaler(decide = fn)`
	switch x := v.(type) {
	case scalerValue:
		*dst = tasks.Scaled
		return &x
	case starlark.String:
		switch m := tasks.WorkModel(x); m {
		case tasks.Longlived, tasks.Oneshot:
			*dst = m
		case tasks.Scaled:
			a.errorf("work_model %s needs a function that decides the pool size: write work_model = scaler(decide = fn)", x)
		default:
			a.errorf("unknown work_model %s: use %s", x, choices)
		}
	default:
		a.wrongType("work_model", choices, v)
	}
	return nil
}

// handlerFunc checks that v can be called as f(payload, meta).
func (a *argSet) handlerFunc(what string, v starlark.Value) starlark.Callable {
	fn, problem := callableWith(what, v, "payload", "meta")
	if problem != "" {
		a.errorf("%s", problem)
		return nil
	}
	return fn
}

// callableWith checks that v can be called with one positional argument
// per name in params, and otherwise says what is wrong, starting with what.
func callableWith(what string, v starlark.Value, params ...string) (starlark.Callable, string) {
	list := strings.Join(params, ", ")
	fn, ok := v.(starlark.Callable)
	if !ok {
		return nil, fmt.Sprintf("%s must be a function taking (%s), got %s", what, list, describe(v))
	}
	f, ok := fn.(*starlark.Function)
	if !ok {
		return fn, "" // a builtin: nothing to check before calling it
	}
	positional := f.NumParams() - f.NumKwonlyParams()
	if f.HasVarargs() {
		positional--
	}
	if f.HasKwargs() {
		positional--
	}
	required := 0
	for i := range positional {
		if f.ParamDefault(i) == nil {
			required++
		}
	}
	n := len(params)
	shape := fmt.Sprintf("def %s(%s)", f.Name(), list)
	if f.Name() == "lambda" {
		shape = fmt.Sprintf("lambda %s: ...", list)
	}
	switch {
	case positional < n && !f.HasVarargs():
		return nil, fmt.Sprintf("%s: function %s takes %d parameter%s; it must take %s: %s",
			what, f.Name(), positional, plural(positional), numberWord(n), shape)
	case required > n:
		return nil, fmt.Sprintf("%s: function %s requires %d parameters; it must take %s: %s",
			what, f.Name(), required, numberWord(n), shape)
	case requiredKwonly(f) != "":
		return nil, fmt.Sprintf("%s: function %s has a required keyword-only parameter %s; give it a default",
			what, f.Name(), requiredKwonly(f))
	}
	return fn, ""
}

// numberWord spells the small counts of parameters.
func numberWord(n int) string {
	if words := []string{"none", "one", "two", "three"}; n < len(words) {
		return words[n]
	}
	return strconv.Itoa(n)
}

// requiredKwonly names f's first keyword-only parameter without a default.
// Parameters are ordered positional, keyword-only, *args, **kwargs.
func requiredKwonly(f *starlark.Function) string {
	first := f.NumParams() - f.NumKwonlyParams()
	if f.HasKwargs() {
		first--
	}
	if f.HasVarargs() {
		first--
	}
	for i := first; i < first+f.NumKwonlyParams(); i++ {
		if f.ParamDefault(i) == nil {
			name, _ := f.Param(i)
			return name
		}
	}
	return ""
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// routes reads routes = {pattern: function}, keeping its order.
func (a *argSet) routes() []route {
	v := a.vals["routes"]
	d, ok := v.(*starlark.Dict)
	if !ok {
		a.wrongType("routes", "a dict of pattern: function", v)
		return nil
	}
	if d.Len() == 0 {
		a.errorf("routes is empty: map at least one routing pattern to a function, such as {\"user.created\": on_created}")
		return nil
	}
	var out []route
	for _, kv := range d.Items() {
		p, ok := kv[0].(starlark.String)
		if !ok {
			a.errorf("routes key %s must be a string pattern, got %s", kv[0], kv[0].Type())
			continue
		}
		if err := tasks.ValidatePattern(string(p)); err != nil {
			a.errorf("routes[%s]: %v", p, err)
			continue
		}
		if fn := a.handlerFunc(fmt.Sprintf("routes[%s]", p), kv[1]); fn != nil {
			out = append(out, route{pattern: string(p), fn: fn})
		}
	}
	return out
}

// parseBytes reads a size: an int of bytes, or a string such as "256MiB"
// or "1GB" (KB, MB, GB, TB are powers of 1000; KiB, MiB, GiB, TiB of 1024).
func parseBytes(v starlark.Value) (int64, error) {
	switch x := v.(type) {
	case starlark.Int:
		n, ok := x.Int64()
		if !ok || n <= 0 {
			return 0, fmt.Errorf("%s bytes is not a positive size", x)
		}
		return n, nil
	case starlark.String:
		s := strings.TrimSpace(string(x))
		i := strings.IndexFunc(s, func(r rune) bool { return !unicode.IsDigit(r) && r != '.' })
		if i <= 0 {
			return 0, fmt.Errorf("%s is not a size: write a number and a unit, such as \"256MiB\"", x)
		}
		num, err := strconv.ParseFloat(s[:i], 64)
		if err != nil {
			return 0, fmt.Errorf("%s is not a size: write a number and a unit, such as \"256MiB\"", x)
		}
		units := map[string]float64{
			"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
			"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
		}
		unit, ok := units[strings.ToLower(strings.TrimSpace(s[i:]))]
		if !ok {
			return 0, fmt.Errorf("%s has an unknown unit %q: use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB", x, strings.TrimSpace(s[i:]))
		}
		n := num * unit
		if n < 1 || n > math.MaxInt64/2 {
			return 0, fmt.Errorf("%s is not a usable size", x)
		}
		return int64(n), nil
	}
	return 0, fmt.Errorf("got %s, want bytes (an int) or a size string such as \"256MiB\"", describe(v))
}

// suggestName turns a file stem into a valid task name.
func suggestName(stem string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(stem) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_', r == '.', r == '-':
			b.WriteRune(r)
		default:
			b.WriteRune('_')
		}
	}
	if b.Len() == 0 {
		return "my_task"
	}
	return b.String()
}

// capabilities reads allow and the settings of each capability: a grant
// without what it needs (exec without allow_commands, file without
// file_root, sql without databases) is as much an error as a setting
// without its grant.
func (a *argSet) capabilities(spec *tasks.Spec, rt *root, databases []string) {
	caps := tasks.Capabilities()
	if a.strings("allow", &spec.Allow) {
		for _, c := range spec.Allow {
			if !slices.Contains(caps, c) {
				a.errorf("allow: unknown capability %q: use %s", c, quoteList(caps))
			}
		}
	}
	granted := func(c string) bool { return slices.Contains(spec.Allow, c) }
	if a.strings("allow_hosts", &spec.AllowHosts) {
		if !granted(tasks.CapHTTP) {
			a.errorf("allow_hosts limits http: it needs \"http\" in allow")
		}
		for _, h := range spec.AllowHosts {
			if err := validHostPattern(h); err != nil {
				a.errorf("allow_hosts: %v", err)
			}
		}
	}
	if a.strings("allow_commands", &spec.AllowCommands) {
		if !granted(tasks.CapExec) {
			a.errorf("allow_commands limits exec: it needs \"exec\" in allow")
		}
		for _, c := range spec.AllowCommands {
			if c == "" || strings.ContainsRune(c, 0) {
				a.errorf("allow_commands: %q is not a program: give names such as \"convert\" (found in PATH) or paths such as \"/usr/bin/convert\"", c)
			}
		}
	} else if granted(tasks.CapExec) {
		a.errorf("allow = [\"exec\"] needs allow_commands: list the programs the task may run, such as allow_commands = [\"convert\"]")
	}
	if a.str("file_root", &spec.FileRoot) {
		switch {
		case !granted(tasks.CapFile):
			a.errorf("file_root confines file: it needs \"file\" in allow")
		case spec.FileRoot == "":
			a.errorf("file_root is empty: give a directory (relative paths are relative to the tasks root)")
		case !filepath.IsAbs(spec.FileRoot):
			spec.FileRoot = filepath.Join(rt.abs, spec.FileRoot)
		}
	} else if granted(tasks.CapFile) {
		a.errorf("allow = [\"file\"] needs file_root: give the directory the task may read and write, such as file_root = \"data\"")
	}
	if a.strings("databases", &spec.Databases) {
		if !granted(tasks.CapSQL) {
			a.errorf("databases limits sql: it needs \"sql\" in allow")
		}
		for _, d := range spec.Databases {
			if !slices.Contains(databases, d) {
				if len(databases) == 0 {
					a.errorf("databases: no database %q: name it in symphony.star with config(databases = {%q: \"postgres://...\"})", d, d)
				} else {
					a.errorf("databases: no database %q in config(databases = ...); the databases are %s", d, strings.Join(databases, ", "))
				}
			}
		}
	} else if granted(tasks.CapSQL) {
		a.errorf("allow = [\"sql\"] needs databases: list the databases of config(databases = ...) the task may use, such as databases = [\"main\"]")
	}
}
