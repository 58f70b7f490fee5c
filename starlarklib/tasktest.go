package starlarklib

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.starlark.net/starlark"

	"github.com/symphony-go/symphony/tasks"
)

// TestOptions configure RunTests.
type TestOptions struct {
	// LookupEnv backs env(); nil means os.LookupEnv.
	LookupEnv func(string) (string, bool)
	// Databases are the names config(databases = ...) gave, which
	// task(databases = ...) may list.
	Databases []string
	// Run, if set, runs only the test functions whose name it matches.
	Run *regexp.Regexp
	// Report is told the result of each test as it ends.
	Report func(TestResult)
}

// TestResult is how one test function ended. A test file that does not
// load is one failed result without a Name.
type TestResult struct {
	// File is the test file, as positions show it.
	File string
	// Name is the test function's name.
	Name   string
	Passed bool
	Took   time.Duration
	// Failure says what failed and where (file:line:col), then what the
	// last run_task of the test did and the task's backtrace: several
	// lines.
	Failure string
}

// TestSummary counts the tests of a RunTests.
type TestSummary struct {
	Passed, Failed int
}

// ErrNoTests is RunTests' error when the paths hold no test to run.
var ErrNoTests = errors.New("no tests to run")

// testPrefix starts the name of every test function.
const testPrefix = "test_"

// testFileSuffix ends the name of every test file.
const testFileSuffix = "_test.star"

// RunTests runs the task tests under paths (SPEC §8): every test_*
// function of every *_test.star file, one at a time, each reported to
// opts.Report. A path is a tasks root (a directory: its tests and its
// tasks) or one test file (its directory is then the root). The tasks
// under the roots load as Load loads them, from disk, every time; their
// capabilities answer from the stubs each run_task gives, and no broker
// is opened.
//
// The error is about the paths or the tasks (a root that does not exist,
// a task file that does not load, no tests at all), not about a test: a
// failed test, and a test file that does not load, are failed results.
func RunTests(paths []string, opts TestOptions) (TestSummary, error) {
	var sum TestSummary
	roots, files, err := testPaths(paths)
	if err != nil {
		return sum, err
	}
	s := newTestSession()
	env := newEnvironment(Options{
		Logger:    slog.New(s.logHandler()),
		LookupEnv: opts.LookupEnv,
		World:     s.world,
		Databases: opts.Databases,
	})
	s.environ = env
	l := newLoader(env)
	s.pos = l.pos
	ts, err := l.tasks(roots)
	if err != nil {
		return sum, err
	}
	s.tasks = ts
	for _, r := range roots {
		s.roots = append(s.roots, l.root(r).given)
	}
	report := func(r TestResult) {
		if r.Passed {
			sum.Passed++
		} else {
			sum.Failed++
		}
		if opts.Report != nil {
			opts.Report(r)
		}
	}
	ran := false
	for _, f := range files {
		tf, err := s.loadTestFile(l, f.root, f.rel)
		if err != nil {
			report(TestResult{File: f.shown, Failure: err.Error()})
			ran = true
			continue
		}
		for _, fn := range tf.tests {
			if opts.Run != nil && !opts.Run.MatchString(fn.Name()) {
				continue
			}
			ran = true
			report(tf.run(fn))
		}
	}
	if !ran {
		where := strings.Join(paths, ", ")
		if len(files) == 0 {
			return sum, fmt.Errorf("%w: no *%s files under %s (a test file is named like its task, hello%s, and defines test_* functions)",
				ErrNoTests, testFileSuffix, where, testFileSuffix)
		}
		if opts.Run != nil {
			return sum, fmt.Errorf("%w: no test function under %s matches %q", ErrNoTests, where, opts.Run)
		}
		return sum, fmt.Errorf("%w: the *%s files under %s define no test_* functions", ErrNoTests, testFileSuffix, where)
	}
	return sum, nil
}

// testFileRef is a test file found under a root.
type testFileRef struct {
	root  string // the tasks root as given
	rel   string // relative to the root
	shown string // as paths show it
}

// testPaths splits the paths of symphony test into tasks roots and the
// test files to run, in a stable order, each once.
func testPaths(paths []string) (roots []string, files []testFileRef, err error) {
	seen := map[string]bool{}
	add := func(root, rel string) {
		abs, err := filepath.Abs(filepath.Join(root, rel))
		if err == nil {
			if r, err := filepath.EvalSymlinks(abs); err == nil {
				abs = r
			}
		}
		if seen[abs] {
			return
		}
		seen[abs] = true
		files = append(files, testFileRef{root: root, rel: rel, shown: filepath.Join(filepath.Clean(root), rel)})
	}
	for _, p := range paths {
		info, err := os.Stat(p)
		if err != nil {
			return nil, nil, fmt.Errorf("read tests: %w", err)
		}
		if !info.IsDir() {
			base := filepath.Base(p)
			if !strings.HasSuffix(base, testFileSuffix) {
				return nil, nil, fmt.Errorf("%s is not a test file: give a tasks directory, or a file whose name ends in %s", p, testFileSuffix)
			}
			dir := filepath.Dir(p)
			if !slices.Contains(roots, dir) {
				roots = append(roots, dir)
			}
			add(dir, base)
			continue
		}
		if !slices.Contains(roots, p) {
			roots = append(roots, p)
		}
		var found []string
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			name := d.Name()
			if path != p && strings.HasPrefix(name, ".") {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if !d.IsDir() && strings.HasSuffix(name, testFileSuffix) {
				rel, err := filepath.Rel(p, path)
				if err != nil {
					return err
				}
				found = append(found, rel)
			}
			return nil
		})
		if err != nil {
			return nil, nil, fmt.Errorf("read tests under %s: %w", p, err)
		}
		for _, rel := range found {
			add(p, rel)
		}
	}
	return roots, files, nil
}

// testLocal is the thread-local of a test function's thread: its file.
const testLocal = "symphony.test"

// testFile is a loaded test file.
type testFile struct {
	s     *testSession
	mod   *module
	tests []*starlark.Function
	// last is the last run_task of the test that runs now.
	last *testRun
}

// loadTestFile compiles and executes a test file's top level, with
// load() from the tasks root as task files have it, and finds its tests.
func (s *testSession) loadTestFile(l *loader, rootDir, rel string) (*testFile, error) {
	rt := l.root(rootDir)
	if rt == nil {
		return nil, l.errs
	}
	m, err := l.module(rt, filepath.Join(rt.abs, rel))
	if err != nil {
		return nil, err
	}
	if m.state == fresh {
		m.predeclared = testPredeclared(l.env.predeclared)
		l.exec(m)
	}
	if len(m.errs) > 0 {
		return nil, m.errs
	}
	tf := &testFile{s: s, mod: m}
	for name, v := range m.globals {
		fn, ok := v.(*starlark.Function)
		if !ok || !strings.HasPrefix(name, testPrefix) {
			continue
		}
		tf.tests = append(tf.tests, fn)
	}
	slices.SortFunc(tf.tests, func(a, b *starlark.Function) int {
		return int(a.Position().Line) - int(b.Position().Line)
	})
	return tf, nil
}

// testPredeclared is what a test file sees: what task files see but
// task(), config() and scaler(), plus run_task and assert.
func testPredeclared(base starlark.StringDict) starlark.StringDict {
	d := starlark.StringDict{}
	for k, v := range base {
		switch k {
		case "task", "config", "scaler":
			continue
		}
		d[k] = v
	}
	d["run_task"] = starlark.NewBuiltin("run_task", runTaskBuiltin)
	d["assert"] = assertModule()
	d.Freeze()
	return d
}

// run runs one test function on a fresh thread.
func (tf *testFile) run(fn *starlark.Function) TestResult {
	res := TestResult{File: tf.mod.name, Name: fn.Name()}
	if fn.NumParams() > 0 {
		res.Failure = fmt.Sprintf("%s: %s takes parameters; a test function takes none", fn.Position(), fn.Name())
		return res
	}
	var printed []string
	th := &starlark.Thread{
		Name:  "test " + fn.Name(),
		Print: func(_ *starlark.Thread, msg string) { printed = append(printed, msg) },
	}
	st := &state{phase: phaseTest, mod: tf.mod, env: tf.s.env(), logger: slog.New(slog.DiscardHandler)}
	th.SetLocal(stateKey, st)
	th.SetLocal(testLocal, tf)
	th.SetMaxExecutionSteps(DefaultMaxLoadSteps)
	th.OnMaxSteps = func(th *starlark.Thread) {
		th.Cancel(fmt.Sprintf("the test ran more than %d steps", uint64(DefaultMaxLoadSteps)))
	}
	tf.last = nil
	start := time.Now()
	_, err := starlark.Call(th, fn, nil, nil)
	res.Took = time.Since(start)
	if err == nil {
		res.Passed = true
		return res
	}
	var lines []string
	lines = append(lines, tf.failure(err))
	if r := tf.last; r != nil {
		lines = append(lines, r.summary())
	}
	for _, p := range printed {
		lines = append(lines, "printed: "+p)
	}
	res.Failure = strings.Join(lines, "\n")
	return res
}

// failure is what a test's error says: an assertion's file:line:col and
// message; any other error's position and message, with the test's
// backtrace when it happened below the test function.
func (tf *testFile) failure(err error) string {
	var ae *assertError
	if errors.As(err, &ae) {
		return ae.pos + ": " + ae.msg
	}
	var eval *starlark.EvalError
	if !errors.As(err, &eval) {
		return err.Error()
	}
	pos := scriptPos(eval.CallStack, tf.s.pos)
	head := eval.Msg
	if pos != "" {
		head = pos + ": " + eval.Msg
	}
	frames := 0
	for _, f := range eval.CallStack {
		if f.Pos.Filename() != "<builtin>" {
			frames++
		}
	}
	if frames <= 1 {
		return head
	}
	return head + "\n" + eval.Backtrace()
}

// taskNames lists the loaded tasks' names, sorted.
func (s *testSession) taskNames() []string {
	names := make([]string, len(s.tasks))
	for i, t := range s.tasks {
		names[i] = t.Spec.Name
	}
	slices.Sort(names)
	return names
}

// task finds a loaded task by name.
func (s *testSession) task(name string) (tasks.Task, error) {
	for _, t := range s.tasks {
		if t.Spec.Name == name {
			return t, nil
		}
	}
	names := s.taskNames()
	where := strings.Join(s.roots, ", ")
	if len(names) == 0 {
		return tasks.Task{}, fmt.Errorf("no task named %q: there are no tasks under %s", name, where)
	}
	msg := fmt.Sprintf("no task named %q under %s (the tasks: %s)", name, where, strings.Join(names, ", "))
	if n := nearest(name, names); n != "" {
		msg += fmt.Sprintf("; did you mean %q?", n)
	}
	return tasks.Task{}, errors.New(msg)
}
