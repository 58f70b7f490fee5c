package starlarklib

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.starlark.net/starlark"

	"github.com/symphony-go/symphony/tasks"
)

// Config is what config(...) in symphony.star set, by flag name with
// dashes ("log-format", "task"). Keys that were not set are absent.
type Config map[string]Setting

// Setting is one config() argument as the flag parser reads it: a list
// (task = [...]) gives several values; numbers, durations and bools are
// formatted as strings ("30s", "16", "true").
type Setting struct {
	Values []string
	// Pos is the config() call, file:line:col.
	Pos string
	// Dir is the directory of the symphony.star that set it, against
	// which a relative path in it is read.
	Dir string
}

// configCall collects the one config() call of a symphony.star.
type configCall struct {
	pos      string
	settings Config
	errs     Errors
}

// configKind is how a config() argument is checked and formatted.
type configKind int

const (
	kindString configKind = iota
	kindDuration
	kindInt
	kindNumber
	kindBool
	kindNames
	kindDatabases
)

// configParams are config()'s arguments and their kinds.
func configParams() map[string]configKind {
	return map[string]configKind{
		"broker":           kindString,
		"exchange":         kindString,
		"admin_addr":       kindString,
		"log_format":       kindString,
		"log_level":        kindString,
		"shutdown_timeout": kindDuration,
		"scaling_interval": kindDuration,
		"throttle_max":     kindInt,
		"throttle_factor":  kindNumber,
		"task":             kindNames,
		"no_watch":         kindBool,
		"secrets_dir":      kindString,
		"timezone":         kindString,
		"queue_type":       kindString,
		"databases":        kindDatabases,
	}
}

// LoadConfig executes symphony.star at each root, if there is one, and
// returns what its config(...) call set. env() reads the process
// environment; use LoadConfigOptions to choose.
func LoadConfig(roots []string) (Config, error) {
	return LoadConfigOptions(roots, Options{})
}

// LoadConfigOptions is LoadConfig with the environment and logger of opts.
// When two roots set the same key, that is an error naming both.
func LoadConfigOptions(roots []string, opts Options) (Config, error) {
	env := newEnvironment(opts)
	out := Config{}
	var errs Errors
	seen := map[string]bool{}
	for _, given := range roots {
		dir := given
		if info, err := os.Stat(given); err != nil {
			errs = append(errs, Error{Msg: fmt.Sprintf("read tasks root: %v", err)})
			continue
		} else if !info.IsDir() {
			dir = filepath.Dir(given)
		}
		l := newLoader(env)
		rt := l.root(dir)
		if rt == nil {
			errs = append(errs, l.errs...)
			continue
		}
		if seen[rt.abs] {
			continue
		}
		seen[rt.abs] = true
		cfg, cerrs := l.config(rt)
		errs = append(errs, cerrs...)
		for k, s := range cfg {
			if prev, ok := out[k]; ok {
				errs = append(errs, Error{Pos: s.Pos, Msg: fmt.Sprintf(
					"config: %s is also set at %s; set each option in one symphony.star only",
					strings.ReplaceAll(k, "-", "_"), prev.Pos)})
				continue
			}
			out[k] = s
		}
	}
	if len(errs) > 0 {
		errs.sort()
		return nil, errs
	}
	return out, nil
}

// config executes rt's symphony.star, if any.
func (l *loader) config(rt *root) (Config, Errors) {
	p := filepath.Join(rt.abs, configFile)
	if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	m, err := l.module(rt, p)
	if err != nil {
		return nil, Errors{{Pos: filepath.Join(rt.given, configFile), Msg: err.Error()}}
	}
	if m.err != nil {
		return nil, m.errs
	}
	prog, calls, _, err := compile(m.name, m.src, l.env.predeclared)
	if err != nil {
		return nil, errorsOf(err, l.pos)
	}
	m.prog, m.calls, m.state = prog, calls, executing
	l.stack = append(l.stack, m)
	call := &configCall{}
	th := l.env.thread(m.name, &state{phase: phaseConfig, mod: m, config: call, logger: l.env.logger.With("file", m.name)})
	th.Load = l.load
	limit := l.env.maxLoadSteps
	th.SetMaxExecutionSteps(limit)
	th.OnMaxSteps = func(th *starlark.Thread) {
		th.Cancel(fmt.Sprintf("symphony.star ran more than %d steps", limit))
	}
	_, err = prog.Init(th, l.env.predeclared)
	for k, v := range call.settings {
		v.Dir = rt.abs
		call.settings[k] = v
	}
	errs := call.errs
	if err != nil {
		errs = append(errs, errorsOf(err, l.pos)...)
	}
	return call.settings, errs
}

// configBuiltin is config(...): symphony.star's daemon settings, the same
// as the command line flags (flags and environment override them).
func configBuiltin(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	st := stateOf(th)
	if st.phase != phaseConfig || st.config == nil {
		return nil, fmt.Errorf("%s: only allowed in symphony.star at the tasks root", b.Name())
	}
	if st.mod == nil || th.CallFrame(1).Pos.Filename() != st.mod.name {
		return nil, fmt.Errorf("%s: only allowed in symphony.star itself, not in a file it loads", b.Name())
	}
	pos := callPos(th, st.mod)
	call := st.config
	if call.pos != "" {
		call.errs = append(call.errs, Error{Pos: pos, Msg: fmt.Sprintf(
			"%s: called twice (first at %s): set every option in one config() call", b.Name(), call.pos)})
		return starlark.None, nil
	}
	call.pos = pos
	kinds := configParams()
	names := make([]string, 0, len(kinds))
	for k := range kinds {
		names = append(names, k)
	}
	slices.Sort(names)
	a := newArgSet(b.Name(), pos, names, args, kwargs)
	call.settings = Config{}
	for _, name := range names {
		v, ok := a.vals[name]
		if !ok {
			continue
		}
		values, ok := a.configValue(name, kinds[name], v)
		if ok {
			call.settings[strings.ReplaceAll(name, "_", "-")] = Setting{Values: values, Pos: pos}
		}
	}
	call.errs = append(call.errs, a.errs...)
	return starlark.None, nil
}

// configValue checks one config() argument and formats it for the flag
// parser.
func (a *argSet) configValue(name string, kind configKind, v starlark.Value) ([]string, bool) {
	switch kind {
	case kindString:
		var s string
		if !a.str(name, &s) {
			return nil, false
		}
		if name == "log_format" && s != "text" && s != "json" {
			a.errorf("unknown log_format %q: use \"text\" or \"json\"", s)
			return nil, false
		}
		return []string{s}, true
	case kindDuration:
		var d time.Duration
		if !a.duration(name, &d) {
			return nil, false
		}
		if s, ok := v.(starlark.String); ok {
			return []string{string(s)}, true
		}
		return []string{d.String()}, true
	case kindInt:
		var n int
		if !a.integer(name, &n, 1, "") {
			return nil, false
		}
		return []string{strconv.Itoa(n)}, true
	case kindNumber:
		f, ok := starlark.AsFloat(v)
		if _, isBool := v.(starlark.Bool); !ok || isBool {
			a.wrongType(name, "a number", v)
			return nil, false
		}
		if f < 0 {
			a.errorf("%s must not be negative, got %s", name, v)
			return nil, false
		}
		return []string{strconv.FormatFloat(f, 'g', -1, 64)}, true
	case kindBool:
		var b bool
		if !a.boolean(name, &b) {
			return nil, false
		}
		return []string{strconv.FormatBool(b)}, true
	case kindDatabases:
		return a.databases(name, v)
	case kindNames:
		var names []string
		if !a.strings(name, &names) {
			return nil, false
		}
		good := true
		for _, n := range names {
			if err := tasks.ValidateName(n); err != nil {
				a.errorf("%s: %v", name, err)
				good = false
			}
		}
		return names, good
	}
	return nil, false
}

// databases checks config(databases = {"main": "postgres://..."}) into
// "name=URL" values, sorted by name. Nothing is dialled.
func (a *argSet) databases(name string, v starlark.Value) ([]string, bool) {
	d, ok := v.(*starlark.Dict)
	if !ok {
		a.wrongType(name, `a dict of name: URL, as {"main": env("DATABASE_URL")}`, v)
		return nil, false
	}
	var out []string
	good := true
	for _, kv := range d.Items() {
		k, kok := kv[0].(starlark.String)
		u, uok := kv[1].(starlark.String)
		switch {
		case !kok:
			a.errorf("%s: a database name must be a str, got %s", name, describe(kv[0]))
			good = false
			continue
		case !uok:
			a.errorf("%s: the URL of %q must be a str, got %s (is its environment variable set?)", name, string(k), kv[1].Type())
			good = false
			continue
		}
		if err := tasks.ValidateName(string(k)); err != nil {
			a.errorf("%s: %v", name, err)
			good = false
			continue
		}
		if _, err := ParseDatabaseURL(string(u), ""); err != nil {
			a.errorf("%s: %s: %v", name, string(k), err)
			good = false
			continue
		}
		out = append(out, string(k)+"="+string(u))
	}
	slices.Sort(out)
	return out, good
}

// Databases returns the databases config(databases = ...) named, their
// relative sqlite: paths read against the directory of the symphony.star
// that names them.
func (c Config) Databases() (map[string]DatabaseURL, error) {
	s := c["databases"]
	out := map[string]DatabaseURL{}
	for _, v := range s.Values {
		name, raw, _ := strings.Cut(v, "=")
		d, err := ParseDatabaseURL(raw, s.Dir)
		if err != nil {
			return nil, fmt.Errorf("%s: config databases: %s: %w", s.Pos, name, err)
		}
		out[name] = d
	}
	return out, nil
}

// DatabaseNames returns the names config(databases = ...) gave, sorted.
func (c Config) DatabaseNames() []string {
	var names []string
	for _, v := range c["databases"].Values {
		name, _, _ := strings.Cut(v, "=")
		names = append(names, name)
	}
	return names
}
