package starlarklib

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"go.starlark.net/starlark"
	"go.starlark.net/syntax"

	"github.com/symphony-go/symphony/tasks"
)

// Options configure Load.
type Options struct {
	// Logger is the base logger of log.*() and print(); nil discards.
	Logger *slog.Logger
	// LookupEnv backs env(); nil means os.LookupEnv.
	LookupEnv func(string) (string, bool)
	// MaxLoadSteps bounds the top level of each file, so that a file that
	// loops forever fails the load instead of hanging it; zero means
	// DefaultMaxLoadSteps.
	MaxLoadSteps uint64
	// Sources, if set, is told every file Load read: the tasks root as
	// given, the file's path relative to it (as the walk found it, or as a
	// load() statement named it) and its source. Writing them out under a
	// new root gives a copy that loads to the same tasks, hashes included.
	Sources func(root, rel string, src []byte)
	// Shown renames tasks roots in positions and errors: a root given as a
	// key is shown as its value.
	Shown map[string]string
	// World is what tasks' capability calls and secret() reach; nil means
	// a real one with the environment's secrets and no databases
	// (NewWorld(WorldConfig{})).
	World *World
	// Databases are the names config(databases = ...) gave, which
	// task(databases = ...) may list.
	Databases []string
	// QueueType is the queue_type of tasks that set none; empty means
	// classic.
	QueueType tasks.QueueType
}

// DefaultMaxLoadSteps is the step budget of one file's top level: far more
// than declaring tasks needs (a second or so of computation).
const DefaultMaxLoadSteps = 100_000_000

// configFile is the name of the configuration file at a tasks root.
const configFile = "symphony.star"

// dialect is the Starlark dialect of every symphony file, chosen once:
//   - Set: set() is useful for de-duplicating and costs nothing.
//   - While: handlers may loop; every run is bounded by its context and
//     max_steps, and every load by MaxLoadSteps.
//   - TopLevelControl: if/for at the top level let a file register tasks
//     conditionally (if env("FEATURE"): task(...)) or in a loop.
//   - GlobalReassign off: a global is assigned once, so a typo that
//     rebinds a name is an error rather than a surprise.
//   - Recursion off: Starlark's default; loops say what they bound.
func dialect() *syntax.FileOptions {
	return &syntax.FileOptions{
		Set:             true,
		While:           true,
		TopLevelControl: true,
		GlobalReassign:  false,
		Recursion:       false,
	}
}

// root is a tasks root: the directory that load() paths are relative to.
type root struct {
	given string // as the user wrote it, cleaned; positions start with it
	abs   string // absolute, with symlinks resolved
}

// moduleState tracks a module's single execution.
type moduleState int

const (
	fresh moduleState = iota
	executing
	done
)

// module is one .star file: compiled once, executed once per Load.
type module struct {
	root   *root
	rel    string // slash-separated path relative to the root
	name   string // root.given joined with rel: the file name in positions
	walked bool   // found by the walk (a task file), not only load()ed
	src    []byte

	state   moduleState
	prog    *starlark.Program
	calls   map[[2]int32]syntax.Position // call '(' → start of the call
	globals starlark.StringDict
	err     error  // compile or top-level failure: what importers see
	errs    Errors // every problem found in this file

	// loads are the modules this one load()s, in order; loadNames maps the
	// names in its load statements to them.
	loads     []*module
	loadNames map[string]*module
	// registered holds the position of every task() call, valid or not;
	// tasks the valid ones.
	registered []string
	tasks      []*taskDef
	hash       string
	// predeclared are the names the file sees; nil: the environment's
	// (a task test sees more).
	predeclared starlark.StringDict
}

// environment is what every thread of one Load shares: the predeclared
// names and the options. It is immutable once built.
type environment struct {
	logger       *slog.Logger
	lookupEnv    func(string) (string, bool)
	predeclared  starlark.StringDict
	maxLoadSteps uint64
	sources      func(root, rel string, src []byte)
	shown        map[string]string
	world        *World
	databases    []string
	queueType    tasks.QueueType
}

func newEnvironment(opts Options) *environment {
	env := &environment{
		logger:       opts.Logger,
		lookupEnv:    opts.LookupEnv,
		maxLoadSteps: opts.MaxLoadSteps,
		sources:      opts.Sources,
		shown:        opts.Shown,
		world:        opts.World,
		databases:    opts.Databases,
		queueType:    opts.QueueType,
	}
	if env.world == nil {
		env.world = NewWorld(WorldConfig{LookupEnv: opts.LookupEnv})
	}
	if env.world.Redactor == nil {
		w := *env.world
		w.Redactor = NewRedactor()
		env.world = &w
	}
	if env.logger == nil {
		env.logger = slog.New(slog.DiscardHandler)
	}
	if env.lookupEnv == nil {
		env.lookupEnv = os.LookupEnv
	}
	if env.maxLoadSteps == 0 {
		env.maxLoadSteps = DefaultMaxLoadSteps
	}
	env.predeclared = predeclared()
	return env
}

// loader runs one Load: it owns the module cache and the errors found.
type loader struct {
	env     *environment
	roots   map[string]*root   // by absolute directory
	modules map[string]*module // by resolved absolute path
	names   map[string]*module // by name in positions
	walked  []*module          // task files, in walk order
	stack   []*module          // modules executing, for cycle detection
	errs    Errors
}

func newLoader(env *environment) *loader {
	return &loader{
		env:     env,
		roots:   map[string]*root{},
		modules: map[string]*module{},
		names:   map[string]*module{},
	}
}

// pos renders a position in a loaded file, mapping a call's '(' to the
// start of the call.
func (l *loader) pos(p syntax.Position) string {
	if m := l.names[p.Filename()]; m != nil {
		if start, ok := m.calls[[2]int32{p.Line, p.Col}]; ok {
			return start.String()
		}
	}
	return p.String()
}

// Load loads and validates every task file under the roots. A root is a
// directory, or a single .star file whose directory is then the root. It
// returns every problem found, as Errors, and no tasks if there is any.
//
// Every *.star file under a root is a task file, except *_test.star (task
// tests), symphony.star at the root (configuration, see LoadConfig) and
// anything in a directory or file whose name starts with a dot. Symlinked
// directories are not followed.
func Load(roots []string, opts Options) ([]tasks.Task, error) {
	return newLoader(newEnvironment(opts)).tasks(roots)
}

// tasks is Load with l's environment; l keeps the modules it executed,
// which task tests load() from.
func (l *loader) tasks(roots []string) ([]tasks.Task, error) {
	l.discover(roots)
	for _, m := range l.walked {
		if m.state == fresh {
			l.exec(m)
		}
		l.errs = append(l.errs, m.errs...)
	}

	byName := map[string]*taskDef{}
	byQueue := map[string]*taskDef{}
	var defs []*taskDef
	for _, m := range l.walked {
		for _, d := range m.tasks {
			s := d.spec
			if prev := byName[s.Name]; prev != nil {
				l.errs = append(l.errs, Error{Pos: s.Pos, Msg: fmt.Sprintf(
					"task: name %q is already used by the task at %s; task names are unique across the tasks roots: pass another name = \"...\"",
					s.Name, prev.spec.Pos)})
				continue
			}
			if prev := byQueue[s.Queue]; prev != nil {
				l.errs = append(l.errs, Error{Pos: s.Pos, Msg: fmt.Sprintf(
					"task: queue %q is already consumed by task %q at %s; each task needs its own queue: pass another queue = \"...\"",
					s.Queue, prev.spec.Name, prev.spec.Pos)})
				continue
			}
			byName[s.Name], byQueue[s.Queue] = d, d
			defs = append(defs, d)
		}
	}
	if len(l.errs) > 0 {
		l.errs.sort()
		return nil, l.errs
	}

	out := make([]tasks.Task, 0, len(defs))
	for _, d := range defs {
		d.spec.Hash = l.hash(d.mod)
		out = append(out, tasks.Task{Spec: d.spec, Handler: newHandler(l.env, d)})
	}
	return out, nil
}

// discover finds the task files under the roots, in a stable order.
func (l *loader) discover(roots []string) {
	for _, given := range roots {
		info, err := os.Stat(given)
		if err != nil {
			l.errs = append(l.errs, Error{Msg: fmt.Sprintf("read tasks root: %v", err)})
			continue
		}
		if !info.IsDir() {
			base := filepath.Base(given)
			if msg := notTaskFile(base); msg != "" {
				l.errs = append(l.errs, Error{Msg: fmt.Sprintf("%s is not a task file: %s", given, msg)})
				continue
			}
			if rt := l.root(filepath.Dir(given)); rt != nil {
				l.addFile(rt, base)
			}
			continue
		}
		rt := l.root(given)
		if rt == nil {
			continue
		}
		var files []string
		err = filepath.WalkDir(rt.abs, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			name := d.Name()
			if p != rt.abs && strings.HasPrefix(name, ".") {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if d.IsDir() || !strings.HasSuffix(name, ".star") || strings.HasSuffix(name, "_test.star") {
				return nil
			}
			rel, err := filepath.Rel(rt.abs, p)
			if err != nil {
				return err
			}
			files = append(files, rel)
			return nil
		})
		if err != nil {
			l.errs = append(l.errs, Error{Msg: fmt.Sprintf("read tasks root %s: %v", given, err)})
			continue
		}
		for _, rel := range files {
			if rel == configFile {
				continue // LoadConfig reads it
			}
			if filepath.Base(rel) == configFile {
				l.errs = append(l.errs, Error{Pos: filepath.Join(rt.given, rel), Msg: fmt.Sprintf(
					"symphony.star is only read at the tasks root: move it to %s or rename it",
					filepath.Join(rt.given, configFile))})
				continue
			}
			l.addFile(rt, rel)
		}
	}
}

// notTaskFile says why a file given as a root is not a task file, or "".
func notTaskFile(base string) string {
	switch {
	case !strings.HasSuffix(base, ".star"):
		return "task files end in .star"
	case strings.HasSuffix(base, "_test.star"):
		return "files ending in _test.star are task tests, not tasks"
	case base == configFile:
		return "symphony.star configures the daemon; give its directory instead"
	}
	return ""
}

// root registers the tasks root at dir.
func (l *loader) root(dir string) *root {
	abs, err := filepath.Abs(dir)
	if err == nil {
		abs, err = filepath.EvalSymlinks(abs)
	}
	if err != nil {
		l.errs = append(l.errs, Error{Msg: fmt.Sprintf("read tasks root: %v", err)})
		return nil
	}
	if rt := l.roots[abs]; rt != nil {
		return rt
	}
	rt := &root{given: filepath.Clean(dir), abs: abs}
	if shown, ok := l.env.shown[rt.given]; ok {
		rt.given = shown
	}
	l.roots[abs] = rt
	return rt
}

// read tells Options.Sources of a file read under rt as rel.
func (l *loader) read(rt *root, rel string, m *module) {
	if l.env.sources != nil && m.err == nil {
		l.env.sources(rt.given, filepath.ToSlash(rel), m.src)
	}
}

// addFile adds the task file at rel under rt, once even when several roots
// or symlinks reach it.
func (l *loader) addFile(rt *root, rel string) {
	m, err := l.module(rt, filepath.Join(rt.abs, rel))
	if err != nil {
		l.errs = append(l.errs, Error{Pos: filepath.Join(rt.given, rel), Msg: err.Error()})
		return
	}
	l.read(rt, rel, m)
	if m.walked {
		return
	}
	m.walked = true
	l.walked = append(l.walked, m)
}

// module returns the module of the file at p, reading it the first time.
// The file must be inside rt once symlinks are resolved.
func (l *loader) module(rt *root, p string) (*module, error) {
	resolved, err := filepath.EvalSymlinks(p)
	if err != nil {
		return nil, err
	}
	rel, err := filepath.Rel(rt.abs, resolved)
	if err != nil || !filepath.IsLocal(rel) {
		shown := p
		if r, err := filepath.Rel(rt.abs, p); err == nil {
			shown = filepath.Join(rt.given, r)
		}
		return nil, fmt.Errorf("%s is a symlink to %s, outside the tasks root %s; files outside the root are refused",
			shown, resolved, rt.given)
	}
	if m := l.modules[resolved]; m != nil {
		return m, nil
	}
	info, err := os.Stat(resolved)
	if err != nil {
		return nil, err
	}
	if info.IsDir() {
		return nil, fmt.Errorf("%s is a directory", filepath.Join(rt.given, rel))
	}
	m := &module{
		root: rt,
		rel:  filepath.ToSlash(rel),
		name: filepath.Join(rt.given, rel),
	}
	m.src, err = os.ReadFile(resolved)
	if err != nil {
		m.state = done
		m.err = fmt.Errorf("read %s: %w", m.name, err)
		m.errs = Errors{{Pos: m.name, Msg: m.err.Error()}}
	}
	l.modules[resolved] = m
	l.names[m.name] = m
	return m, nil
}

// compile parses and resolves one file in the symphony dialect. It also
// maps every call's '(' to the start of the call, so that errors point at
// "task" in `task(`, as people read it, not at the parenthesis.
//
// It also checks members of predeclared modules and collects what each
// top-level statement refers to (see check.go).
func compile(name string, src []byte, predeclared starlark.StringDict) (*starlark.Program, map[[2]int32]syntax.Position, *fileRefs, error) {
	f, err := dialect().Parse(name, src, 0)
	if err != nil {
		return nil, nil, nil, err
	}
	calls := map[[2]int32]syntax.Position{}
	syntax.Walk(f, func(n syntax.Node) bool {
		if c, ok := n.(*syntax.CallExpr); ok {
			calls[[2]int32{c.Lparen.Line, c.Lparen.Col}] = syntax.Start(c)
		}
		return true
	})
	prog, err := starlark.FileProgram(f, predeclared.Has)
	if err != nil {
		return nil, nil, nil, err
	}
	refs, errs := analyze(f, predeclared)
	if len(errs) > 0 {
		return nil, nil, nil, errs
	}
	return prog, calls, refs, nil
}

// callPos is the position of the call that the frame at depth 1 (the
// caller of the running builtin) is making, as file:line:col.
func callPos(th *starlark.Thread, m *module) string {
	pos := th.CallFrame(1).Pos
	if m != nil {
		if start, ok := m.calls[[2]int32{pos.Line, pos.Col}]; ok {
			return start.String()
		}
	}
	return pos.String()
}

// exec compiles and executes m's top level once, then freezes what it made.
func (l *loader) exec(m *module) {
	m.state = executing
	l.stack = append(l.stack, m)
	defer func() {
		l.stack = l.stack[:len(l.stack)-1]
		m.state = done
	}()

	predeclared := l.env.predeclared
	if m.predeclared != nil {
		predeclared = m.predeclared
	}
	prog, calls, refs, err := compile(m.name, m.src, predeclared)
	if err != nil {
		m.err = err
		m.errs = append(m.errs, errorsOf(err, l.pos)...)
		return
	}
	m.prog, m.calls = prog, calls

	th := l.env.thread(m.name, &state{phase: phaseLoad, mod: m, logger: l.env.logger.With("file", m.name)})
	th.Load = l.load
	limit := l.env.maxLoadSteps
	th.SetMaxExecutionSteps(limit)
	th.OnMaxSteps = func(th *starlark.Thread) {
		th.Cancel(fmt.Sprintf("the top level ran more than %d steps; move long computations into the work function", limit))
	}
	g, err := prog.Init(th, predeclared)
	g.Freeze()
	for _, d := range m.tasks {
		d.freeze()
		m.errs = append(m.errs, d.checkGrants(refs, l.pos)...)
	}
	m.globals = g
	if err != nil {
		m.err = err
		m.errs = append(m.errs, errorsOf(err, l.pos)...)
	}
}

// load implements load() during Load: paths are relative to the tasks
// root; each module runs once and its frozen globals are shared.
func (l *loader) load(th *starlark.Thread, name string) (starlark.StringDict, error) {
	from := stateOf(th).mod
	m, err := l.resolve(from.root, name)
	if err != nil {
		return nil, err
	}
	switch m.state {
	case executing:
		i := slices.Index(l.stack, m)
		chain := make([]string, 0, len(l.stack)-i+1)
		for _, s := range l.stack[i:] {
			chain = append(chain, s.rel)
		}
		chain = append(chain, m.rel)
		return nil, fmt.Errorf("load cycle: %s; move the code they share into a library that neither loads",
			strings.Join(chain, " loads "))
	case fresh:
		l.exec(m)
	}
	if m.err != nil {
		return nil, errors.New(errorsOf(m.err, l.pos)[0].Error())
	}
	if len(m.registered) > 0 {
		return nil, fmt.Errorf("%s registers tasks (task() at %s), and a file that is load()ed must not: move the code to share into a library file without task() calls",
			m.rel, m.registered[0])
	}
	if from.loadNames == nil {
		from.loadNames = map[string]*module{}
	}
	from.loadNames[name] = m
	from.loads = append(from.loads, m)
	return m.globals, nil
}

// resolve finds the module that load(name) means in rt, refusing paths
// that leave the root.
func (l *loader) resolve(rt *root, name string) (*module, error) {
	switch {
	case name == "":
		return nil, errors.New("empty file name: give a path relative to the tasks root, such as \"lib/money.star\"")
	case path.IsAbs(name) || filepath.IsAbs(name):
		return nil, fmt.Errorf("absolute path %q is refused: load paths are relative to the tasks root %s", name, rt.given)
	}
	clean := path.Clean(name)
	switch {
	case clean == ".." || strings.HasPrefix(clean, "../"):
		return nil, fmt.Errorf("%q is outside the tasks root %s; loads outside the root are refused (paths are relative to the root, not to the loading file)", name, rt.given)
	case !strings.HasSuffix(clean, ".star"):
		return nil, fmt.Errorf("%q is not a .star file", name)
	case clean == configFile:
		return nil, errors.New("symphony.star configures the daemon and cannot be loaded: put shared code in a library file")
	case strings.HasSuffix(clean, "_test.star"):
		return nil, fmt.Errorf("%q is a task test file and cannot be loaded", name)
	}
	p := filepath.Join(rt.abs, filepath.FromSlash(clean))
	m, err := l.module(rt, p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s does not exist (load paths are relative to the tasks root %s)",
			filepath.Join(rt.given, filepath.FromSlash(clean)), rt.given)
	}
	if err != nil {
		return nil, err
	}
	l.read(rt, clean, m)
	return m, nil
}

// hash covers m's source and, in load order, the hash of every module it
// loads: equal hashes mean the same code runs. The path is not in it: a
// copy of the files elsewhere (a worker process's snapshot, a Kubernetes
// ConfigMap's new directory) is the same code.
func (l *loader) hash(m *module) string {
	if m.hash != "" {
		return m.hash
	}
	m.hash = "-" // guards against a cycle; a load with a cycle fails anyway
	h := sha256.New()
	fmt.Fprintf(h, "symphony task file v2\x00%d\x00", len(m.src))
	h.Write(m.src)
	for _, dep := range m.loads {
		fmt.Fprintf(h, "\x00load\x00%s", l.hash(dep))
	}
	m.hash = hex.EncodeToString(h.Sum(nil))
	return m.hash
}
