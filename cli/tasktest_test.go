package cli_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/symphony-go/symphony/internal/symphonytest"
)

func TestTestCommand(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	// symphony test uses no broker: one that cannot be reached changes
	// nothing, and no embedded database appears.
	env.UseBroker("amqp://guest:guest@127.0.0.1:1/")
	dir := writeTasks(t, map[string]string{
		"echo.star": echoTask,
		"echo_test.star": `
def test_acks():
    assert.eq(run_task("echo", {"a": 1}, routing_key = "echo.x").outcome, "ack")

def test_fails():
    r = run_task("echo", None, routing_key = "echo.x")
    assert.eq(r.outcome, "dead", "with no payload")
`,
		"more_test.star": "def test_more():\n    pass\n",
	})

	r := untimed(env.Run("", "test", dir))
	want := "PASS " + dir + "/echo_test.star test_acks (T)\n" +
		"FAIL " + dir + "/echo_test.star test_fails (T)\n" +
		"    " + dir + "/echo_test.star:7:5: assert.eq: with no payload: got \"ack\", want \"dead\"\n" +
		"    last run_task(\"echo\", routing_key = \"echo.x\"): ack\n"
	if r.Code != 1 || !strings.HasPrefix(r.Stdout, want) || !strings.HasSuffix(r.Stdout, "PASS "+dir+"/more_test.star test_more (T)\n2 passed, 1 failed\n") {
		t.Errorf("exit %d, want 1; stdout:\n%s\nwant it to start with:\n%s", r.Code, r.Stdout, want)
	}

	r = untimed(env.Run("", "test", "--run", "acks|more", dir))
	if r.Code != 0 || !strings.HasSuffix(r.Stdout, "2 passed, 0 failed\n") {
		t.Errorf("--run: exit %d, stdout:\n%s", r.Code, r.Stdout)
	}
	r = untimed(env.Run("", "test", filepath.Join(dir, "more_test.star")))
	if r.Code != 0 || r.Stdout != "PASS "+dir+"/more_test.star test_more (T)\n1 passed, 0 failed\n" {
		t.Errorf("one file: exit %d, stdout:\n%s", r.Code, r.Stdout)
	}
	if _, err := os.Stat(filepath.Join(env.Dir, "symphony.db")); err == nil {
		t.Error("symphony test created symphony.db")
	}
}

// took is how long a test took, as symphony test shows it.
var took = regexp.MustCompile(`\(\d+\.\d\ds\)`)

// untimed replaces the durations in r's output with (T).
func untimed(r symphonytest.Result) symphonytest.Result {
	r.Stdout = took.ReplaceAllString(r.Stdout, "(T)")
	return r
}

func TestTestCommandErrors(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	broken := writeTasks(t, map[string]string{
		"echo.star":        echoTask,
		"broken_test.star": "def test_x():\n    run_task(\"echo\", {}\n",
		"ok_test.star":     "def test_y():\n    pass\n",
	})
	badTask := writeTasks(t, map[string]string{"echo.star": "task(name = \"echo\")\n", "echo_test.star": "def test_x():\n    pass\n"})
	none := writeTasks(t, map[string]string{"echo.star": echoTask})
	for _, c := range []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"a test file with a syntax error", []string{"test", broken}, 1,
			"FAIL " + broken + "/broken_test.star (the file does not load)\n    " + broken + "/broken_test.star:3:1: got outdent, want ','\n" +
				"PASS " + broken + "/ok_test.star test_y (T)\n1 passed, 1 failed\n", ""},
		{"tasks that do not load", []string{"test", badTask}, 1, "", badTask + "/echo.star:1:1: task: "},
		{"no tests", []string{"test", none}, 1, "", "symphony: no tests to run: no *_test.star files under " + none},
		{"no path", []string{"test"}, 2, "", "test needs a tasks directory"},
		{"a bad --run", []string{"test", "--run", "(", none}, 2, "", "--run: error parsing regexp"},
	} {
		r := untimed(env.Run("", c.args...))
		if r.Code != c.code || r.Stdout != c.stdout && c.stdout != "" || !strings.Contains(r.Stderr, c.stderr) {
			t.Errorf("%s: exit %d (want %d)\nstdout:\n%s\nstderr:\n%s", c.name, r.Code, c.code, r.Stdout, r.Stderr)
		}
	}
}

func TestInit(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	r := env.MustRun("", "init")
	dir := filepath.Join(env.Dir, "tasks")
	if !strings.HasPrefix(r.Stdout, "wrote tasks/symphony.star, tasks/welcome.star, tasks/welcome_test.star\n") ||
		!strings.Contains(r.Stdout, "symphony test tasks ") {
		t.Errorf("init said:\n%s", r.Stdout)
	}
	files := map[string]string{}
	for _, name := range []string{"symphony.star", "welcome.star", "welcome_test.star"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		files[name] = string(b)
	}

	// check, test and run take it as it is.
	if r := env.MustRun("", "check", "tasks"); !strings.HasPrefix(r.Stdout, "welcome\tqueue=welcome\tpatterns=user.created\t") {
		t.Errorf("check:\n%s", r.Stdout)
	}
	if r := env.MustRun("", "test", "tasks"); !strings.HasSuffix(r.Stdout, "2 passed, 0 failed\n") {
		t.Errorf("test:\n%s", r.Stdout)
	}
	d := env.Start("tasks")
	id := published(t, env.MustRun("", "publish", "user.created", `{"name": "Ada", "email": "ada@example.com"}`))
	d.WaitFor("welcome", map[string]string{"message_id": id, "email": "ada@example.com", "name": "Ada"})
	id = published(t, env.MustRun("", "publish", "user.created", `{"name": "Ada"}`))
	d.WaitFor("message dead-lettered", map[string]string{"message_id": id})
	d.Stop()

	// It overwrites nothing, not even one file of three.
	r = env.Run("", "init")
	if r.Code != 1 || !strings.Contains(r.Stderr, "tasks/symphony.star, tasks/welcome.star, tasks/welcome_test.star already exist; init overwrites nothing") {
		t.Errorf("init again: exit %d, stderr %q", r.Code, r.Stderr)
	}
	for name, src := range files {
		if b, _ := os.ReadFile(filepath.Join(dir, name)); string(b) != src {
			t.Errorf("%s changed", name)
		}
	}
	other := filepath.Join(env.Dir, "other")
	if err := os.MkdirAll(other, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(other, "welcome_test.star"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = env.Run("", "init", "other")
	if r.Code != 1 || !strings.Contains(r.Stderr, "other/welcome_test.star already exists") {
		t.Errorf("init into a directory with one of the files: exit %d, stderr %q", r.Code, r.Stderr)
	}
	entries, _ := os.ReadDir(other)
	if len(entries) != 1 {
		t.Errorf("init wrote files beside the existing one: %v", entries)
	}

	// Into a new nested directory, named in what it writes.
	r = env.MustRun("", "init", "deep/new")
	if !strings.Contains(r.Stdout, "symphony run deep/new ") {
		t.Errorf("init deep/new said:\n%s", r.Stdout)
	}
	if b, _ := os.ReadFile(filepath.Join(env.Dir, "deep/new/welcome.star")); !strings.Contains(string(b), "symphony run deep/new\n") {
		t.Errorf("welcome.star does not name its directory:\n%s", b)
	}
	if r := env.Run("", "init", "a", "b"); r.Code != 2 {
		t.Errorf("init a b: exit %d, want 2", r.Code)
	}
}
