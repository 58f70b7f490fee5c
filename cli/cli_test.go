package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/broker/sqlite"
	"github.com/symphony-go/symphony/internal/symphonytest"
	"github.com/symphony-go/symphony/tasks"
)

func TestMain(m *testing.M) { symphonytest.Main(m) }

// writeTasks writes task files into a new tasks root and returns it.
func writeTasks(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tasks")
	for name, src := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const echoTask = `
def work(payload, meta):
    log.info("got", kind = type(payload), size = len(payload) if type(payload) in ("bytes", "string", "dict", "list") else -1,
             headers = json.encode(meta.headers), content_type = meta.content_type, redelivered = meta.redelivered)
    return True

task(name = "echo", subscribe_to = ["echo.#"], work = work)
`

func TestPublishUnroutableExits3(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	env.Start(writeTasks(t, map[string]string{"echo.star": echoTask})).Stop()
	r := env.Run("", "publish", "nobody.listens", `{"a": 1}`)
	if r.Code != 3 || !strings.Contains(r.Stderr, `"nobody.listens"`) || !strings.Contains(r.Stderr, "no queue is bound") {
		t.Errorf("exit %d, stderr %q; want 3 naming the key", r.Code, r.Stderr)
	}
}

func TestPublishRefusesInvalidJSON(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	tasksDir := writeTasks(t, map[string]string{"echo.star": echoTask})
	d := env.Start(tasksDir)
	r := env.Run("", "publish", "echo.x", `{"a": `)
	if r.Code != 2 || !strings.Contains(r.Stderr, "not valid JSON") {
		t.Errorf("exit %d, stderr %q; want 2 and a clear reason", r.Code, r.Stderr)
	}
	lines := filepath.Join(t.TempDir(), "lines.jsonl")
	os.WriteFile(lines, []byte("{\"n\": 1}\n\n{\"n\": 2\n{\"n\": 3}\n"), 0o644)
	r = env.Run("", "publish", "--file", lines, "echo.x")
	if r.Code != 2 || !strings.Contains(r.Stderr, "line 3") || !strings.Contains(r.Stderr, "nothing was published") {
		t.Errorf("--file with a bad line: exit %d, stderr %q", r.Code, r.Stderr)
	}
	// Nothing went out: by the time the task has seen the next message,
	// it has seen everything published before it (one worker, in order),
	// and that is nothing.
	id := published(t, env.MustRun("", "publish", "echo.x", `{"n": 9}`))
	d.WaitFor("got", map[string]string{"message_id": id})
	if n := d.Count("got", nil); n != 1 {
		t.Errorf("the task saw %d messages, want only the valid one", n)
	}
	d.Stop()
}

func TestPublishFileStdinAndHeaders(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	d := env.Start(writeTasks(t, map[string]string{"echo.star": echoTask}))

	var lines strings.Builder
	for i := range 2500 {
		fmt.Fprintf(&lines, "{\"n\": %d}\n", i)
	}
	file := filepath.Join(t.TempDir(), "lines.jsonl")
	os.WriteFile(file, []byte(lines.String()), 0o644)
	r := env.MustRun("", "publish", "--file", file, "echo.file")
	if !strings.Contains(r.Stderr, "published 2500 messages to echo.file") {
		t.Errorf("publish --file: %q", r.Stderr)
	}
	env.MustRun("{\"n\": 1}\n{\"n\": 2}\n", "publish", "--file", "-", "echo.stdin")
	d.WaitForNth(2502, "got", nil)

	env.MustRun(`{"x": 1}`, "publish", "--header", "tenant=acme", "--header", "accept=a,b", "echo.headers")
	got := d.WaitFor("got", map[string]string{"content_type": "application/json", "headers": `{"accept":"a,b","tenant":"acme"}`})
	if got.Str("kind") != "dict" {
		t.Errorf("a JSON payload arrived as %s", got.Str("kind"))
	}
	d.Stop()
}

func TestBigAndBinaryPayloads(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	d := env.Start(writeTasks(t, map[string]string{"echo.star": echoTask}))
	big := bytes.Repeat([]byte("0123456789"), 1<<20) // 10 MiB
	env.MustRun(string(big), "publish", "--content-type", "application/octet-stream", "echo.big")
	d.WaitFor("got", map[string]string{"kind": "bytes", "size": fmt.Sprint(len(big))})

	binary := make([]byte, 256)
	for i := range binary {
		binary[i] = byte(i)
	}
	env.MustRun(string(binary), "publish", "--content-type", "image/png", "echo.bin")
	d.WaitFor("got", map[string]string{"kind": "bytes", "size": "256", "content_type": "image/png"})
	d.Stop()
}

func TestInvalidJSONFromAnotherClientIsDeadLettered(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	d := env.Start(writeTasks(t, map[string]string{"echo.star": echoTask}))

	// Another program writes to the same database while the daemon runs.
	db := strings.TrimPrefix(env.Vars[0], "SYMPHONY_BROKER=sqlite:")
	b, err := sqlite.Open(context.Background(), db, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	msg, _ := broker.NewMessage(tasks.Publication{RoutingKey: "echo.bad", Body: []byte(`{"a": tru`), ContentType: "application/json; charset=utf-8"})
	if err := b.Publish("echo.bad", msg); err != nil {
		t.Fatal(err)
	}
	dead := d.WaitFor("message dead-lettered", map[string]string{"message_id": msg.UUID})
	if dead.Str("reason") != "decode" || !strings.Contains(dead.Str("error"), "application/json") {
		t.Errorf("invalid JSON: %v", dead)
	}
	show := env.MustRun("", "dead", "list", "echo")
	if !strings.Contains(show.Stdout, "decode") {
		t.Errorf("dead list:\n%s", show.Stdout)
	}
	d.Stop()
}

func TestBadTaskFiles(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	dir := writeTasks(t, map[string]string{
		"a.star": "task(name = \"a\", subscribe_to = [\"a..b\"], work = lambda p, m: True)\n",
		"b.star": "def work(p, m):\n    return True\n\ntask(name = \"b\", subscribe_to = [\"b\"], work = work, nmae = 1)\n",
	})
	for _, cmd := range []string{"check", "run"} {
		r := env.Run("", cmd, dir)
		if r.Code != 1 {
			t.Errorf("%s: exit %d, want 1", cmd, r.Code)
		}
		for _, want := range []string{"a.star:1:1:", "empty word", "b.star:4:1:", "nmae"} {
			if !strings.Contains(r.Stderr, want) {
				t.Errorf("%s: stderr lacks %q:\n%s", cmd, want, r.Stderr)
			}
		}
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	for _, args := range [][]string{
		{"run"},
		{"run", "--no-such-flag", "x"},
		{"publish"},
		{"publish", "--header", "novalue", "k", "{}"},
		{"dead", "purge"},
		{"run", "--log-format", "xml", "."},
		{"run", "--shutdown-timeout", "soon", "."},
		{"version", "extra"},
		{"bogus"},
		{"dead", "bogus"},
	} {
		if r := env.Run("", args...); r.Code != 2 {
			t.Errorf("symphony %s: exit %d, want 2; stderr %q", strings.Join(args, " "), r.Code, r.Stderr)
		}
	}
	// Asked for, help goes to standard output; a command line that names
	// no command gets it on standard error, as a usage error.
	for _, args := range [][]string{{"help"}, {"--help"}, {"dead", "help"}, {"run", "--help"}} {
		if r := env.Run("", args...); r.Code != 0 || !strings.Contains(r.Stdout, "USAGE") {
			t.Errorf("symphony %s: exit %d, stdout %q; want its help", strings.Join(args, " "), r.Code, r.Stdout)
		}
	}
	for _, args := range [][]string{{}, {"dead"}} {
		if r := env.Run("", args...); r.Code != 2 || !strings.Contains(r.Stderr, "USAGE") || r.Stdout != "" {
			t.Errorf("symphony %s: exit %d, stdout %q, stderr %q; want its help on stderr and 2",
				strings.Join(args, " "), r.Code, r.Stdout, r.Stderr)
		}
	}
}

// A command's help lists its own flags, then the global ones.
func TestHelpListsTheCommandsFlagsFirst(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	out := env.MustRun("", "publish", "--help").Stdout
	own, global := strings.Index(out, "--content-type"), strings.Index(out, "GLOBAL OPTIONS")
	if own < 0 || global < own || strings.Index(out, "--broker") < global {
		t.Errorf("publish --help:\n%s", out)
	}
}

// Flags may follow the arguments, for every command (SPEC §4); "--" still
// ends the flags.
func TestFlagsAfterArguments(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	dir := writeTasks(t, map[string]string{"echo.star": echoTask})
	r := env.MustRun("", "check", dir, "--exchange", "late", "--task", "echo")
	if !strings.Contains(r.Stdout, "echo\t") {
		t.Errorf("check DIR --task echo: %q", r.Stdout)
	}
	d := env.Start(dir, "--exchange", "late", "--admin-addr", "127.0.0.1:0")
	if ev := d.WaitFor("starting", nil); ev.Str("exchange") != "late" {
		t.Errorf("run DIR --exchange late: exchange %q", ev.Str("exchange"))
	}
	env.MustRun("", "publish", "echo.x", `{}`, "--header", "a=b", "--exchange", "late")
	d.WaitFor("got", map[string]string{"headers": `{"a":"b"}`})
	// On the default exchange nothing is bound: the flag was not ignored.
	if r := env.Run("", "publish", "echo.x", `{}`); r.Code != 3 {
		t.Errorf("publish to the default exchange: exit %d %q", r.Code, r.Stderr)
	}
	// After "--", a word that looks like a flag is the payload.
	r = env.Run("", "publish", "--content-type", "application/octet-stream", "--exchange", "late", "echo.x", "--", "--header")
	id := published(t, r)
	d.WaitFor("got", map[string]string{"message_id": id, "kind": "bytes", "size": "8"})
	addr := d.WaitFor("admin server listening", nil).Str("addr")
	var st map[string]any
	if err := json.Unmarshal([]byte(env.MustRun("", "status", "--json", "--admin-addr", addr).Stdout), &st); err != nil {
		t.Errorf("status --json --admin-addr: %v", err)
	}
	env.MustRun("", "dead", "list", "echo", "--json", "--limit", "1", "--exchange", "late")
	d.Stop()
}

// check fails on a directory without tasks, as run does.
func TestNoTasks(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	dir := writeTasks(t, map[string]string{"lib.star": "def f():\n    return 1\n"})
	for _, cmd := range []string{"check", "run"} {
		if r := env.Run("", cmd, dir); r.Code != 1 || !strings.Contains(r.Stderr, "no tasks found under "+dir) {
			t.Errorf("%s on a directory with no task: exit %d %q", cmd, r.Code, r.Stderr)
		}
	}
}

func TestBrokerPathErrors(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	dir := writeTasks(t, map[string]string{"echo.star": echoTask})
	file := filepath.Join(t.TempDir(), "plain")
	os.WriteFile(file, nil, 0o644)
	for _, url := range []string{
		"sqlite:" + filepath.Join(t.TempDir(), "missing", "x.db"),
		"sqlite:" + filepath.Join(file, "x.db"),
	} {
		r := env.Run("", "run", "--broker", url, dir)
		if r.Code != 1 || !strings.Contains(r.Stderr, url) {
			t.Errorf("--broker %s: exit %d, stderr %q; want 1 naming the path", url, r.Code, r.Stderr)
		}
	}
}

func TestSettingsPrecedence(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	dir := writeTasks(t, map[string]string{
		"echo.star":     echoTask,
		"symphony.star": "config(exchange = \"from-file\", shutdown_timeout = 5)\n",
	})
	start := func(extra ...string) symphonytest.Event {
		d := env.Start(append(extra, dir)...)
		ev := d.WaitFor("starting", nil)
		d.Stop()
		return ev
	}
	if ev := start(); ev.Str("exchange") != "from-file" {
		t.Errorf("symphony.star: exchange %q", ev.Str("exchange"))
	}
	env.Vars = append(env.Vars, "SYMPHONY_EXCHANGE=from-env")
	if ev := start(); ev.Str("exchange") != "from-env" {
		t.Errorf("environment over symphony.star: exchange %q", ev.Str("exchange"))
	}
	if ev := start("--exchange", "from-flag"); ev.Str("exchange") != "from-flag" {
		t.Errorf("flag over environment: exchange %q", ev.Str("exchange"))
	}
}

func TestTaskSelection(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	dir := writeTasks(t, map[string]string{
		"echo.star":  echoTask,
		"other.star": "task(name = \"other\", subscribe_to = [\"other\"], work = lambda p, m: True)\n",
	})
	r := env.MustRun("", "check", "--task", "other", dir)
	if strings.Contains(r.Stdout, "echo") || !strings.Contains(r.Stdout, "other\t") {
		t.Errorf("check --task other:\n%s", r.Stdout)
	}
	r = env.MustRun("", "check", "--task", "other,echo", dir)
	if !strings.Contains(r.Stdout, "echo\t") || !strings.Contains(r.Stdout, "other\t") {
		t.Errorf("check --task other,echo:\n%s", r.Stdout)
	}
	r = env.Run("", "check", "--task", "nope", dir)
	if r.Code != 1 || !strings.Contains(r.Stderr, "no such task; the tasks are: echo, other") {
		t.Errorf("unknown --task: exit %d %q", r.Code, r.Stderr)
	}
}

const slowTask = `
def work(payload, meta):
    if meta.redelivered:
        log.info("back again")
        return True
    log.info("started")
    sleep(payload["seconds"])
    log.info("finished")
    return True

task(name = "slow", subscribe_to = ["slow"], work = work)
`

func TestSignals(t *testing.T) {
	t.Parallel()
	t.Run("graceful stop lets the message finish", func(t *testing.T) {
		t.Parallel()
		env := symphonytest.NewEnv(t)
		d := env.Start(writeTasks(t, map[string]string{"slow.star": slowTask}))
		id := published(t, env.MustRun("", "publish", "slow", `{"seconds": 1}`))
		d.WaitFor("started", map[string]string{"message_id": id})
		d.Signal(syscall.SIGQUIT)
		d.WaitFor("graceful shutdown: send the signal again to force", nil)
		if code := d.Exit(); code != 0 {
			t.Fatalf("exit %d after one QUIT", code)
		}
		d.WaitFor("finished", map[string]string{"message_id": id})
		d.WaitFor("message acked", map[string]string{"message_id": id})
	})
	t.Run("a second signal forces exit 255 and returns the message", func(t *testing.T) {
		t.Parallel()
		env := symphonytest.NewEnv(t)
		dir := writeTasks(t, map[string]string{"slow.star": slowTask})
		d := env.Start(dir)
		id := published(t, env.MustRun("", "publish", "slow", `{"seconds": 3600}`))
		d.WaitFor("started", map[string]string{"message_id": id})
		d.Signal(syscall.SIGINT)
		d.WaitFor("graceful shutdown: send the signal again to force", nil)
		d.Signal(syscall.SIGTERM)
		if code := d.Exit(); code != 255 {
			t.Fatalf("exit %d after a second signal, want 255", code)
		}
		if n := d.Count("message acked", nil) + d.Count("message dead-lettered", nil); n != 0 {
			t.Fatalf("the interrupted message was settled (%d)", n)
		}
		again := env.Start(dir)
		again.WaitFor("back again", map[string]string{"message_id": id})
		again.Stop()
	})
}

func TestVersion(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	r := env.MustRun("", "version")
	if !strings.HasPrefix(r.Stdout, "symphony ") || !strings.Contains(r.Stdout, "go1.") {
		t.Errorf("version: %q", r.Stdout)
	}
}

func published(t *testing.T, r symphonytest.Result) string {
	t.Helper()
	_, rest, ok := strings.Cut(r.Stderr, "published message ")
	if !ok {
		t.Fatalf("publish printed no message id: %q", r.Stderr)
	}
	id, _, _ := strings.Cut(rest, " ")
	return id
}

// The embedded broker lists its own queues: dead-letter commands run no
// task file, so broken ones neither stop them nor warn.
func TestDeadLettersRunNoTaskFileOnTheEmbeddedBroker(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	env.Start(writeTasks(t, map[string]string{"echo.star": echoTask})).Stop()
	dir := writeTasks(t, map[string]string{"a.star": "task(name = \"a\", subscribe_to = [\"a\"], work = lambda p, m: True)\nfail(\"ran\")\n"})
	for _, args := range [][]string{{"dead", "list"}, {"dead", "purge", "--all"}} {
		r := env.MustRun("", append(args, "--tasks", dir)...)
		if strings.Contains(r.Stderr, "task files") {
			t.Errorf("symphony %s ran the task files: %s", strings.Join(args, " "), r.Stderr)
		}
	}
}

// status reads the daemon's /status.
func status(t *testing.T, d *symphonytest.Daemon) map[string]any {
	t.Helper()
	addr := d.WaitFor("admin server listening", nil).Str("addr")
	resp, err := http.Get("http://" + addr + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var st map[string]any
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("/status: %v\n%s", err, b)
	}
	return st
}

// taskStatus is one task's part of /status, as JSON.
func taskStatus(t *testing.T, d *symphonytest.Daemon, name string) map[string]any {
	t.Helper()
	for _, task := range status(t, d)["tasks"].([]any) {
		if m := task.(map[string]any); m["name"] == name {
			return m
		}
	}
	t.Fatalf("/status has no task %s", name)
	return nil
}

// A broker password never shows, even in a URL that does not parse.
func TestBrokerPasswordsStaySecret(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	dir := writeTasks(t, map[string]string{"echo.star": echoTask})
	for _, password := range []string{"p%a#s/s?w d", "pa ss", "p#ss", "p?ss", "p/ss", "p%zz"} {
		url := "amqp://user:" + password + "@127.0.0.1:1/"
		for _, args := range [][]string{
			{"run", dir, "--broker", url},
			{"publish", "echo.x", "{}", "--broker", url},
			{"dead", "list", "echo", "--broker", url},
		} {
			r := env.Run("", args...)
			if r.Code != 1 || !strings.Contains(r.Stderr, "amqp://user:xxxxx@127.0.0.1:1/") {
				t.Errorf("symphony %s with password %q: exit %d, stderr %q", args[0], password, r.Code, r.Stderr)
			}
			for _, piece := range []string{password, password[1:], ":" + password[:1]} {
				if strings.Contains(r.Stderr+r.Stdout, piece) {
					t.Errorf("symphony %s shows %q of the password %q: %s", args[0], piece, password, r.Stderr)
				}
			}
		}
	}
}

// Commands other than run never create an embedded broker's database:
// pointed at one that does not exist, they say so (SPEC §4).
func TestNoSilentNewDatabase(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	db := strings.TrimPrefix(env.URL, "sqlite:")
	for _, args := range [][]string{
		{"dead", "list"},
		{"dead", "list", "echo"},
		{"dead", "show", "x"},
		{"dead", "replay", "--all"},
		{"dead", "purge", "echo"},
		{"publish", "echo.x", "{}"},
	} {
		r := env.Run("", args...)
		if r.Code != 1 || !strings.Contains(r.Stderr, db+": the database does not exist") || !strings.Contains(r.Stderr, "--broker") {
			t.Errorf("symphony %s: exit %d, stderr %q", strings.Join(args, " "), r.Code, r.Stderr)
		}
	}
	// The default, relative to the working directory, in an empty one.
	env.Vars = slices.DeleteFunc(env.Vars, func(kv string) bool { return strings.HasPrefix(kv, "SYMPHONY_BROKER=") })
	if r := env.Run("", "dead", "list"); r.Code != 1 || !strings.Contains(r.Stderr, "sqlite:symphony.db") {
		t.Errorf("dead list in an empty directory: exit %d, stderr %q", r.Code, r.Stderr)
	}
	if r := env.Run("", "status"); r.Code != 1 || !strings.Contains(r.Stderr, "no daemon has run with sqlite:symphony.db") {
		t.Errorf("status in an empty directory: exit %d, stderr %q", r.Code, r.Stderr)
	}
	entries, _ := os.ReadDir(env.Dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "symphony.db") {
			t.Errorf("a command created %s", e.Name())
		}
	}
}

// A relative sqlite: path in symphony.star is relative to that file's
// directory, wherever the commands run.
func TestRelativeBrokerPathInSymphonyStar(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	env.Vars = slices.DeleteFunc(env.Vars, func(kv string) bool { return strings.HasPrefix(kv, "SYMPHONY_BROKER=") })
	dir := writeTasks(t, map[string]string{
		"echo.star":     echoTask,
		"symphony.star": "config(broker = \"sqlite:data/queue.db\")\n",
		"data/.keep":    "",
	})
	d := env.Start(dir)
	id := published(t, env.MustRun("", "publish", "echo.x", "{}", "--tasks", dir))
	d.WaitFor("got", map[string]string{"message_id": id})
	d.Stop()
	if _, err := os.Stat(filepath.Join(dir, "data", "queue.db")); err != nil {
		t.Errorf("the database is not beside symphony.star: %v", err)
	}
	if _, err := os.Stat(filepath.Join(env.Dir, "data")); err == nil {
		t.Errorf("a data directory appeared in the working directory")
	}
}

// dead list shows a failure's message, not the backtrace's header, and the
// backtrace names a builtin once.
func TestDeadListShowsTheErrorMessage(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	d := env.Start(writeTasks(t, map[string]string{"neg.star": `
def work(payload, meta):
    if payload["n"] < 0:
        fail("negative")
    return True

task(name = "neg", subscribe_to = ["neg"], work = work)
`}))
	id := published(t, env.MustRun("", "publish", "neg", `{"n": -1}`))
	d.WaitFor("message dead-lettered", map[string]string{"message_id": id})
	d.Stop()
	list := env.MustRun("", "dead", "list").Stdout
	if !strings.Contains(list, "fail: negative") || strings.Contains(list, "Traceback") {
		t.Errorf("dead list:\n%s", list)
	}
	var letter map[string]any
	if err := json.Unmarshal([]byte(env.MustRun("", "dead", "list", "--json").Stdout), &letter); err != nil {
		t.Fatal(err)
	}
	if letter["message"] != "fail: negative" {
		t.Errorf("dead list --json: message %q", letter["message"])
	}
	show := env.MustRun("", "dead", "show", fmt.Sprint(letter["id"])).Stdout
	if !strings.Contains(show, "neg.star:4:13: in work") || !strings.Contains(show, "Error: fail: negative") || strings.Contains(show, "fail: fail:") {
		t.Errorf("dead show:\n%s", show)
	}
}

// A task's run is bounded by default (SPEC §2): 10 minutes unless the task
// says otherwise; timeout = None turns it off.
func TestDefaultTimeout(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	dir := writeTasks(t, map[string]string{"t.star": `
def spin(payload, meta):
    while True:
        pass

task(name = "bounded", subscribe_to = ["a"], work = spin)
task(name = "short", subscribe_to = ["b"], work = spin, timeout = "1m30s")
task(name = "unbounded", subscribe_to = ["c"], work = spin, timeout = None)
`})
	out := env.MustRun("", "check", dir).Stdout
	for _, want := range []string{"bounded\t.*\ttimeout=10m0s\t", "short\t.*\ttimeout=1m30s\t", "unbounded\t.*\ttimeout=none\t"} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("check lacks %q:\n%s", want, out)
		}
	}
}

// Payloads decode by content type as SPEC §3 says, and publish refuses
// what the daemon's decoder would (its limits included).
func TestContentTypes(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	d := env.Start(writeTasks(t, map[string]string{"echo.star": echoTask}))
	for _, c := range []struct{ contentType, body, kind string }{
		{"text/plain; charset=utf-8", "hello", "string"},
		{"text/csv", "a,b\n1,2\n", "string"},
		{"application/vnd.api+json", `{"data": []}`, "dict"},
		{"application/ld+json", `[1]`, "list"},
		{"application/yaml", "a: 1\n", "dict"},
		{"text/yaml", "- 1\n", "list"},
		{"application/msgpack", "\x81\xa1a\x01", "dict"},
		{"application/x-msgpack", "\x92\x01\x02", "list"},
		{"application/xml", "<a/>", "bytes"},
	} {
		id := published(t, env.MustRun(c.body, "publish", "echo.x", "--content-type", c.contentType))
		if got := d.WaitFor("got", map[string]string{"message_id": id}).Str("kind"); got != c.kind {
			t.Errorf("%s arrived as %s, want %s", c.contentType, got, c.kind)
		}
	}
	deep := strings.Repeat("[", 5000) + strings.Repeat("]", 5000)
	for _, c := range []struct{ contentType, body, want string }{
		{"application/json", deep, "nested more than"},
		{"application/problem+json", "{", "not valid JSON"},
		{"application/yaml", "a: [", "not valid application/yaml"},
		{"application/msgpack", "\xc1", "not valid application/msgpack"},
	} {
		if r := env.Run(c.body, "publish", "echo.x", "--content-type", c.contentType); r.Code != 2 || !strings.Contains(r.Stderr, c.want) {
			t.Errorf("publish of a bad %s: exit %d, stderr %q", c.contentType, r.Code, r.Stderr)
		}
	}
	// Nothing bad went out: the next message is the next the task sees.
	id := published(t, env.MustRun("", "publish", "echo.x", "{}"))
	d.WaitFor("got", map[string]string{"message_id": id})
	if n := d.Count("got", nil); n != 10 {
		t.Errorf("the task saw %d messages, want the 10 good ones", n)
	}
	d.Stop()
}

// deepTask builds a list nested payload["depth"] deep and calls str() on
// it: one builtin call that runs for long seconds and does not notice its
// thread's cancellation.
const deepTask = `
def work(payload, meta):
    x = []
    for i in range(payload["depth"]):
        x = [x]
    log.info("built")
    s = str(x)
    log.info("stringified", n = len(s))
    return True

task(name = "deep", subscribe_to = ["deep"], work = work, timeout = %s)
`

// A run past its timeout is abandoned and its message settled, even when
// a builtin keeps its goroutine busy (SPEC §3).
func TestTimeoutOfARunStuckInABuiltin(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	d := env.Start(writeTasks(t, map[string]string{"deep.star": fmt.Sprintf(deepTask, `"1s"`)}))
	id := published(t, env.MustRun("", "publish", "deep", `{"depth": 100000}`))
	dead := d.WaitFor("message dead-lettered", map[string]string{"message_id": id, "reason": "timeout"})
	// str() of that list runs for over 10s here (without the race
	// detector); the run was settled at its timeout plus the second a
	// cancelled run is given, not when str() returned.
	took, err := time.ParseDuration(dead.Str("took"))
	if err != nil || took > 8*time.Second {
		t.Errorf("the run was settled after %s (%v), want about 2s", dead.Str("took"), err)
	}
	d.Stop()
}

// A second signal ends the daemon (exit 255) whatever its handlers do,
// also a handler stuck in a builtin (SPEC §6).
func TestASecondSignalEndsADaemonStuckInABuiltin(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	d := env.Start(writeTasks(t, map[string]string{"deep.star": fmt.Sprintf(deepTask, "None")}))
	id := published(t, env.MustRun("", "publish", "deep", `{"depth": 100000}`))
	d.WaitFor("built", map[string]string{"message_id": id})
	d.Signal(syscall.SIGTERM)
	d.WaitFor("graceful shutdown: send the signal again to force", nil)
	d.Signal(syscall.SIGTERM)
	if code := d.Exit(); code != 255 {
		t.Fatalf("exit %d after a second TERM, want 255", code)
	}
	if n := d.Count("message acked", nil) + d.Count("message dead-lettered", nil); n != 0 {
		t.Errorf("the interrupted message was settled (%d)", n)
	}
}

// A message whose daemon is killed while it runs counts the lost delivery
// as an attempt: killed max_attempts times, it is dead-lettered with
// reason worker-lost instead of running again on the next start.
func TestAMessageThatKillsTheDaemonStopsComingBack(t *testing.T) {
	t.Parallel()
	symphonytest.OnEachBroker(t, func(t *testing.T, env *symphonytest.Env) {
		dir := writeTasks(t, map[string]string{"k.star": `
def work(payload, meta):
    log.info("running", attempt = meta.attempt)
    sleep(3600)
    return True

task(name = "k", subscribe_to = ["k"], work = work, max_attempts = 3, prefetch = 1)
`})
		d := env.Start(dir)
		id := published(t, env.MustRun("", "publish", "k", "{}"))
		for attempt := 1; attempt <= 3; attempt++ {
			d.WaitFor("running", map[string]string{"message_id": id, "attempt": fmt.Sprint(attempt)})
			d.Signal(syscall.SIGKILL)
			d.Exit()
			d = env.Start(dir)
		}
		dead := d.WaitFor("message dead-lettered", map[string]string{"message_id": id})
		if dead.Str("reason") != "worker-lost" || dead.Str("attempt") != "4" {
			t.Errorf("after 3 kills: %v", dead)
		}
		if n := d.Count("running", nil); n != 0 {
			t.Errorf("the message ran again after max_attempts lost deliveries")
		}
		d.Stop()
		list := env.MustRun("", "dead", "list", "k").Stdout
		if !strings.Contains(list, "worker-lost") {
			t.Errorf("dead list:\n%s", list)
		}
	})
}
