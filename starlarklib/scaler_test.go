package starlarklib

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/symphony-go/symphony/tasks"
)

// loadScaled loads src as t.star in a fresh root and returns the Scaler
// of its task t, and the root (to strip from positions).
func loadScaled(t *testing.T, src string, opts Options) (tasks.Scaler, string) {
	t.Helper()
	root := writeTree(t, map[string]string{"t.star": src})
	if opts.LookupEnv == nil {
		opts.LookupEnv = noEnv
	}
	got, err := Load([]string{root}, opts)
	if err != nil {
		t.Fatalf("Load() = %v", err)
	}
	for _, tk := range got {
		if tk.Spec.Name == "t" {
			if tk.Spec.WorkModel != tasks.Scaled || tk.Spec.Scaler == nil {
				t.Fatalf("task t: work model %q, scaler %v", tk.Spec.WorkModel, tk.Spec.Scaler)
			}
			return tk.Spec.Scaler, root
		}
	}
	t.Fatalf("no task t among %d", len(got))
	return nil, ""
}

// scaled is a task file whose task t is scaled by decide, defined in body.
func scaled(body string) string {
	return body + "\ntask(subscribe_to = [\"#\"], work = lambda p, m: True, work_model = scaler(decide = decide))\n"
}

func TestScalerSpec(t *testing.T) {
	t.Parallel()
	root := writeTree(t, map[string]string{"a.star": work + `
def decide(stats):
    return stats.workers
def lenient(stats, extra = 1, *rest, **kw):
    return 1
S = scaler(decide = decide, interval = 30)
task(name = "a", subscribe_to = ["a"], work = work, work_model = S, max_workers = 4)
task(name = "b", subscribe_to = ["b"], work = work, work_model = scaler(lenient, "1m"), max_steps = 500)
task(name = "c", subscribe_to = ["c"], work = work, work_model = scaler(decide = str, interval = None))
task(name = "d", subscribe_to = ["d"], work = work, work_model = S)
task(name = "e", subscribe_to = ["e"], work = work, work_model = "longlived")
task(name = "f", subscribe_to = ["f"], work = work, work_model = scaler(decide = lambda s: 2, interval = 2.5))
`})
	got, err := Load([]string{root}, Options{LookupEnv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	specs := map[string]tasks.Spec{}
	for _, tk := range got {
		specs[tk.Spec.Name] = tk.Spec
	}
	intervals := map[string]time.Duration{"a": 30 * time.Second, "b": time.Minute, "c": 0, "d": 30 * time.Second, "f": 2500 * time.Millisecond}
	for name, interval := range intervals {
		s := specs[name]
		if s.WorkModel != tasks.Scaled || s.Scaler == nil || s.ScaleInterval != interval {
			t.Errorf("task %s: work model %q, scaler %v, interval %s; want scaler, interval %s",
				name, s.WorkModel, s.Scaler, s.ScaleInterval, interval)
		}
	}
	// Apart from the scaler, the spec is as usual.
	a := specs["a"]
	want := tasks.NewSpec("a")
	want.File, want.Pos, want.Patterns, want.Hash = "a.star", filepath.Join(root, "a.star")+":9:1", []string{"a"}, a.Hash
	want.WorkModel, want.ScaleInterval, want.MaxWorkers = tasks.Scaled, 30*time.Second, 4
	a.Scaler = nil
	if !specEqual(a, want) {
		t.Errorf("spec a =\n %+v\nwant\n %+v", a, want)
	}
	if e := specs["e"]; e.WorkModel != tasks.Longlived || e.Scaler != nil || e.ScaleInterval != 0 {
		t.Errorf("a longlived task: %+v", e)
	}
	// Tasks sharing one scaler() value get a Scaler each, with their own
	// name and limits.
	if specs["a"].Scaler == specs["d"].Scaler {
		t.Error("tasks a and d share one Scaler")
	}
	if s := specs["b"].Scaler.(*scaler); s.task != "b" || s.maxSteps != 500 {
		t.Errorf("scaler of b: task %q, max steps %d", s.task, s.maxSteps)
	}
	// Every decide works.
	stats := tasks.Stats{Workers: 3, Min: 1, Max: 4}
	for name, want := range map[string]int{"a": 3, "b": 1, "d": 3, "f": 2} {
		if n, err := specs[name].Scaler.Decide(context.Background(), stats); n != want || err != nil {
			t.Errorf("task %s: Decide() = %d, %v; want %d", name, n, err, want)
		}
	}
	if _, err := specs["c"].Scaler.Decide(context.Background(), stats); err == nil || !strings.HasPrefix(err.Error(), "decide returned string ") {
		t.Errorf("decide = str: Decide() error = %v", err)
	}
}

func TestScalerStats(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)
	sc, _ := loadScaled(t, scaled(fmt.Sprintf(`
WANT = {
    "fields": ["busy", "idle", "idle_timeout", "max", "min", "samples", "workers"],
    "types": ["list", "struct", "time.time", "int", "list", "float", "float"],
    "sample": ["at", "ready"],
    "ready": [3, 5, 8],
    "at": [%d, %d, %d],
    "window": 10.0,
    "ints": [2, 1, 6, 1],
    "idle": [0.0, 1.5],
    "idle_timeout": 10.0,
}
def decide(stats):
    got = {
        "fields": dir(stats),
        "types": [type(stats.samples), type(stats.samples[0]), type(stats.samples[0].at), type(stats.samples[0].ready),
                  type(stats.idle), type(stats.idle[1]), type(stats.idle_timeout)],
        "sample": dir(stats.samples[0]),
        "ready": [s.ready for s in stats.samples],
        "at": [s.at.unix for s in stats.samples],
        "window": (stats.samples[-1].at - stats.samples[0].at).seconds,
        "ints": [stats.workers, stats.min, stats.max, stats.busy],
        "idle": stats.idle,
        "idle_timeout": stats.idle_timeout,
    }
    if got != WANT:
        fail("stats:", got)
    return stats.workers + stats.samples[-1].ready
`, at.Unix(), at.Unix()+5, at.Unix()+10)), Options{})

	n, err := sc.Decide(context.Background(), tasks.Stats{
		Samples:     []tasks.Sample{{At: at, Ready: 3}, {At: at.Add(5 * time.Second), Ready: 5}, {At: at.Add(10 * time.Second), Ready: 8}},
		Workers:     2,
		Min:         1,
		Max:         6,
		Busy:        1,
		Idle:        []time.Duration{0, 1500 * time.Millisecond},
		IdleTimeout: 10 * time.Second,
	})
	if n != 10 || err != nil {
		t.Errorf("Decide() = %d, %v; want 10", n, err)
	}

	// No samples yet, no workers: empty lists, zeros.
	empty, _ := loadScaled(t, scaled(`
def decide(stats):
    if stats.samples != [] or stats.idle != [] or stats.workers or stats.idle_timeout != 0.0:
        fail("not empty:", stats)
    return 1
`), Options{})
	if n, err := empty.Decide(context.Background(), tasks.Stats{}); n != 1 || err != nil {
		t.Errorf("Decide(empty stats) = %d, %v; want 1", n, err)
	}
}

func TestScalerReturns(t *testing.T) {
	t.Parallel()
	cases := []struct {
		ret  string
		want int
		err  string
	}{
		{"3", 3, ""},
		{"0", 0, ""},
		{"-2", -2, ""}, // the pool clamps
		{"stats.max * 2", 8, ""},
		{"None", 0, "decide returned NoneType None, want an int (the number of workers): is a return statement missing?"},
		{"2.5", 0, "decide returned float 2.5, want an int (the number of workers): round it with int(...)"},
		{`"3"`, 0, `decide returned string "3", want an int (the number of workers)`},
		{"True", 0, "decide returned bool True, want an int (the number of workers)"},
		{"[1]", 0, "decide returned list [1], want an int (the number of workers)"},
		{"1 << 70", 0, "decide returned 1180591620717411303424, which is out of range for a number of workers"},
	}
	for _, c := range cases {
		t.Run(c.ret, func(t *testing.T) {
			t.Parallel()
			sc, _ := loadScaled(t, scaled("def decide(stats):\n    return "+c.ret+"\n"), Options{})
			n, err := sc.Decide(context.Background(), tasks.Stats{Workers: 1, Min: 1, Max: 4})
			switch {
			case c.err == "" && (err != nil || n != c.want):
				t.Errorf("Decide() = %d, %v; want %d", n, err, c.want)
			case c.err != "" && (err == nil || err.Error() != c.err):
				t.Errorf("Decide() = %d, %v; want the error\n%s", n, err, c.err)
			}
		})
	}

	t.Run("no return statement", func(t *testing.T) {
		t.Parallel()
		sc, _ := loadScaled(t, scaled("def decide(stats):\n    pass\n"), Options{})
		if _, err := sc.Decide(context.Background(), tasks.Stats{}); err == nil || !strings.HasSuffix(err.Error(), "is a return statement missing?") {
			t.Errorf("Decide() error = %v", err)
		}
	})
}

func TestScalerErrors(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, body, want string }{
		{"fail in a helper", `
def check(stats):
    if stats.busy > 0:
        fail("too busy:", stats.busy)
def decide(stats):
    check(stats)
    return 1
`, "decide: fail: too busy: 1\nTraceback (most recent call last):\n  t.star:6:10: in decide\n  t.star:4:13: in check"},
		{"a runtime error", "def decide(stats):\n    return stats.nope\n",
			"decide: \"stats\" struct has no .nope attribute\nTraceback (most recent call last):\n  t.star:2:17: in decide"},
		{"mutating a frozen global", "SEEN = []\ndef decide(stats):\n    SEEN.append(1)\n    return 1\n",
			"decide: append: cannot append to frozen list\nTraceback (most recent call last):\n  t.star:3:16: in decide"},
		{"publish", "def decide(stats):\n    publish(\"a\", 1)\n",
			"decide: publish: not available in a scaler's decide function: it works only while a task handles a message\nTraceback (most recent call last):\n  t.star:2:12: in decide"},
		{"sleep", "def decide(stats):\n    sleep(1)\n",
			"decide: sleep: not available in a scaler's decide function: it works only while a task handles a message\nTraceback"},
		{"task", "def decide(stats):\n    task(subscribe_to = [\"x\"], work = lambda p, m: True)\n",
			"decide: task: tasks are registered when files load, not while a scaler decides: call task() at the top level of the file\nTraceback"},
		{"scaler", "def decide(stats):\n    scaler(decide = decide)\n",
			"decide: scaler: work models are chosen when files load, not while tasks run: call scaler() at the top level of the file, as in task(work_model = scaler(decide = fn))\nTraceback"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			sc, root := loadScaled(t, scaled(c.body), Options{})
			_, err := sc.Decide(context.Background(), tasks.Stats{Busy: 1})
			if err == nil {
				t.Fatal("Decide() succeeded")
			}
			got := strings.ReplaceAll(err.Error(), root+string(filepath.Separator), "")
			if !strings.HasPrefix(got, c.want) {
				t.Errorf("Decide() error =\n%s\nwant it to start\n%s", got, c.want)
			}
		})
	}
}

// scaler() is chosen at load time: a handler calling it fails.
func TestScalerWhileHandling(t *testing.T) {
	t.Parallel()
	tk := loadTask(t, "def work(payload, meta):\n    scaler(decide = lambda s: 1)\ntask(subscribe_to = [\"#\"], work = work)\n", Options{})
	r := handle(tk, "", nil)
	if r.Verdict != tasks.Failed || !strings.HasPrefix(r.Err.Error(), "scaler: work models are chosen when files load, not while tasks run") {
		t.Errorf("Handle() = %s %v", r.Verdict, r.Err)
	}
}

func TestScalerCancellation(t *testing.T) {
	t.Parallel()
	errDeadline := errors.New("decide deadline")
	// A step budget no test reaches: only the context can stop this.
	sc, _ := loadScaled(t, `
def decide(stats):
    while True:
        pass
task(subscribe_to = ["#"], work = lambda p, m: True, work_model = scaler(decide = decide), max_steps = 1 << 62)
`, Options{})

	// On a loaded machine the deadline may pass before decide starts
	// ("not started"); then try again with a longer one.
	var err error
	for timeout := 20 * time.Millisecond; ; timeout *= 2 {
		ctx, cancel := context.WithTimeoutCause(context.Background(), timeout, errDeadline)
		done := make(chan error, 1)
		go func() {
			_, err := sc.Decide(ctx, tasks.Stats{})
			done <- err
		}()
		select {
		case err = <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("Decide() did not return after its context ended")
		}
		cancel()
		if err == nil || !strings.Contains(err.Error(), "not started") || timeout > 5*time.Second {
			break
		}
	}
	if !errors.Is(err, errDeadline) || errors.Is(err, tasks.ErrStepLimit) ||
		!strings.HasPrefix(err.Error(), "decide: Starlark computation cancelled: decide deadline\nTraceback") {
		t.Errorf("Decide() error = %v, want cancelled by the context", err)
	}

	// A context already done: decide does not run.
	logs := &logBuffer{}
	noisy, _ := loadScaled(t, scaled("def decide(stats):\n    log.info(\"ran\")\n    return 1\n"), Options{Logger: logs.logger()})
	done2, stop := context.WithCancelCause(context.Background())
	stop(errDeadline)
	if _, err := noisy.Decide(done2, tasks.Stats{}); !errors.Is(err, errDeadline) || err.Error() != "decide: not started: decide deadline" {
		t.Errorf("Decide(done context) error = %v", err)
	}
	if strings.Contains(logs.String(), "ran") {
		t.Error("decide ran with a done context")
	}
}

func TestScalerSteps(t *testing.T) {
	t.Parallel()
	sc, _ := loadScaled(t, `
def decide(stats):
    n = 0
    for s in stats.samples:
        n += s.ready
    return n
task(subscribe_to = ["#"], work = lambda p, m: True, work_model = scaler(decide = decide), max_steps = 1000)
`, Options{})
	few := tasks.Stats{Samples: make([]tasks.Sample, 10)}
	for range 3 { // each call has its own budget
		if _, err := sc.Decide(context.Background(), few); err != nil {
			t.Fatalf("a small decide: %v", err)
		}
	}
	_, err := sc.Decide(context.Background(), tasks.Stats{Samples: make([]tasks.Sample, 100_000)})
	if !errors.Is(err, tasks.ErrStepLimit) || !strings.HasPrefix(err.Error(), "decide: Starlark computation cancelled: step limit exceeded (max_steps = 1000)\nTraceback") {
		t.Errorf("Decide() error = %v, want the task's step limit", err)
	}

	// Without max_steps, DefaultDecideSteps bounds an endless decide even
	// with a context that never ends.
	loop, _ := loadScaled(t, scaled("def decide(stats):\n    while True:\n        pass\n"), Options{})
	_, err = loop.Decide(context.Background(), tasks.Stats{})
	want := fmt.Sprintf("decide: Starlark computation cancelled: step limit exceeded (decide may run %d steps)", DefaultDecideSteps)
	if !errors.Is(err, tasks.ErrStepLimit) || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Decide() error = %v, want %s", err, want)
	}
}

func TestScalerLog(t *testing.T) {
	t.Parallel()
	logs := &logBuffer{}
	root := writeTree(t, map[string]string{"t.star": `
def decide(stats):
    log.info("deciding", workers = stats.workers)
    print("printed")
    return stats.workers
S = scaler(decide = decide)
task(subscribe_to = ["a"], work = lambda p, m: True, work_model = S)
task(name = "u", subscribe_to = ["b"], work = lambda p, m: True, work_model = S)
`})
	got, err := Load([]string{root}, Options{Logger: logs.logger(), LookupEnv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	for i, tk := range got {
		if n, err := tk.Spec.Scaler.Decide(context.Background(), tasks.Stats{Workers: i + 1}); n != i+1 || err != nil {
			t.Fatalf("task %s: Decide() = %d, %v", tk.Spec.Name, n, err)
		}
	}
	recs := logs.records(t)
	want := []struct {
		msg, task string
		workers   any
	}{{"deciding", "t", 1.0}, {"printed", "t", nil}, {"deciding", "u", 2.0}, {"printed", "u", nil}}
	if len(recs) != len(want) {
		t.Fatalf("%d log lines, want %d:\n%s", len(recs), len(want), logs)
	}
	for i, w := range want {
		if r := recs[i]; r["msg"] != w.msg || r["task"] != w.task || r["workers"] != w.workers || r["level"] != "INFO" {
			t.Errorf("line %d = %v, want %s from task %s", i, r, w.msg, w.task)
		}
	}
}

// A task file with a oneshot task runs anew for each delivery, scaler()
// call included.
func TestScalerBesideOneshot(t *testing.T) {
	t.Parallel()
	root := writeTree(t, map[string]string{"t.star": `
task(name = "scaled", subscribe_to = ["a"], work = lambda p, m: True, work_model = scaler(decide = lambda s: 2))
task(name = "once", subscribe_to = ["b"], work = lambda p, m: True, work_model = "oneshot")
`})
	got, err := Load([]string{root}, Options{LookupEnv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range got {
		if tk.Spec.Name == "once" {
			if r := handle(tk, "", nil); r.Verdict != tasks.Succeeded {
				t.Errorf("oneshot delivery: %s %v", r.Verdict, r.Err)
			}
		} else if n, err := tk.Spec.Scaler.Decide(context.Background(), tasks.Stats{}); n != 2 || err != nil {
			t.Errorf("Decide() = %d, %v", n, err)
		}
	}
}

func TestConcurrentDecide(t *testing.T) {
	t.Parallel()
	logs := &logBuffer{}
	sc, _ := loadScaled(t, scaled(`
WEIGHT = {"ready": 1, "workers": 1000}
def decide(stats):
    log.debug("deciding", workers = stats.workers)
    total = 0
    for s in stats.samples:
        total += s.ready
    return WEIGHT["workers"] * stats.workers + WEIGHT["ready"] * total + len(stats.idle)
`), Options{Logger: logs.logger()})
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for g := range 20 {
		wg.Go(func() {
			for i := range 25 {
				stats := tasks.Stats{Workers: g, Idle: make([]time.Duration, g)}
				for j := range i {
					stats.Samples = append(stats.Samples, tasks.Sample{At: time.Unix(int64(j), 0), Ready: j})
				}
				want := 1000*g + i*(i-1)/2 + g
				if n, err := sc.Decide(context.Background(), stats); n != want || err != nil {
					errs <- fmt.Errorf("goroutine %d call %d: Decide() = %d, %v; want %d", g, i, n, err, want)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := strings.Count(logs.String(), `"msg":"deciding"`); n != 500 {
		t.Errorf("%d log lines, want 500", n)
	}
}
