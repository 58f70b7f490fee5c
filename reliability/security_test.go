package reliability_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/symphony-go/symphony/internal/symphonytest"
)

// leakTasks try every way a task has to show its secret: log, print,
// exec's environment, a publication, a failure; the same in a worker
// process. echo logs what reaches it.
const leakTasks = `
def work(payload, meta):
    tok = secret("api_token")
    log.info("using", token = tok, header = "Bearer " + tok)
    print("token:", tok, "Bearer " + tok)
    log.info("environment", env = exec.run(["env"]).stdout)
    if payload.get("fail"):
        fail("refused with " + tok)
    publish("echo.out", {"auth": "Bearer " + tok, "n": payload["n"]}, headers = {"x-auth": tok})
    return True

def echo(payload, meta):
    log.info("echoed", payload = payload, headers = meta.headers)
    return True

task(name = "leak", subscribe_to = ["leak"], work = work, max_attempts = 1,
     allow = ["exec"], allow_commands = ["env"])
task(name = "leakp", subscribe_to = ["leakp"], work = work, max_attempts = 1,
     allow = ["exec"], allow_commands = ["env"], isolation = "process")
task(name = "echo", subscribe_to = ["echo.#"], work = echo)
`

// One distinctive password is the RabbitMQ user's, the admin token and a
// task's secret at once. The test makes the daemon, its worker processes
// and every command use it (and fail with it), then looks for it in
// everything symphony wrote or answered: logs, /status, /metrics, the
// dashboard, the dead letters, commands' output and errors, the command
// lines and environments of worker processes. Each is first checked to
// hold what it should (so that the grep has something to miss).
func TestADistinctivePasswordShowsNowhere(t *testing.T) {
	t.Parallel()
	symphonytest.NeedsWorkerProcesses(t)
	env := symphonytest.NewRabbitEnv(t)
	password := symphonytest.UniqueName("Zebra-Pw") + "-x7"
	u, err := url.Parse(env.URL)
	if err != nil {
		t.Fatal(err)
	}
	vhost := strings.TrimPrefix(u.Path, "/")
	user := symphonytest.UniqueName("symphony-secret")
	rabbitmqctl(t, "add_user", user, password)
	t.Cleanup(func() { rabbitmqctl(t, "delete_user", user) })
	rabbitmqctl(t, "set_permissions", "-p", vhost, user, ".*", ".*", ".*")
	u.User = url.UserPassword(user, password)
	env.UseBroker(u.String())

	secrets := filepath.Join(env.Dir, "secrets")
	if err := os.MkdirAll(secrets, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(secrets, "api_token"), []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	inherited := symphonytest.UniqueName("only-the-daemons")
	env.Vars = append(env.Vars, "SYMPHONY_SECRETS_DIR="+secrets, "SYMPHONY_ADMIN_TOKEN="+password,
		"DAEMON_ONLY="+inherited)

	tasks := symphonytest.WriteTasks(t, map[string]string{"leak.star": leakTasks})
	d := env.Start(tasks)
	outputs := map[string]string{}
	for _, key := range []string{"leak", "leakp"} {
		outputs["publish "+key] = env.MustRun(`{"n": 1}`, "publish", key).Stderr
		d.WaitFor("echoed", map[string]string{"task": "echo"})
		r := env.MustRun(`{"n": 2, "fail": true}`, "publish", key)
		outputs["publish "+key+" (fails)"] = r.Stderr
		dead := d.WaitFor("message dead-lettered", map[string]string{"message_id": published(t, r)})
		// The whole message is a secret, as "text" + secret is one.
		if !strings.Contains(dead.Str("error"), "fail: <secret api_token>") {
			t.Errorf("the failure of %s: %v", key, dead)
		}
	}
	letters := env.MustRun("", "dead", "list", "--json", "--tasks", tasks).Stdout
	outputs["dead list --json"] = letters
	shown := 0
	for _, line := range strings.Split(strings.TrimSpace(letters), "\n") {
		var letter struct{ ID string }
		if err := json.Unmarshal([]byte(line), &letter); err != nil {
			t.Fatalf("dead list --json: %v: %q", err, line)
		}
		outputs["dead show "+letter.ID] = env.MustRun("", "dead", "show", "--tasks", tasks, letter.ID).Stdout
		shown++
	}
	if shown != 2 {
		t.Errorf("%d dead letters, want 2:\n%s", shown, letters)
	}
	symphonytest.Until(t, "both publications echoed", func() bool { return d.Count("echoed", nil) == 2 }, d)
	for _, ev := range d.Events("environment") {
		if env := ev.Str("env"); strings.Contains(env, "DAEMON_ONLY") || strings.Contains(env, inherited) || !strings.Contains(env, "PATH=") {
			t.Errorf("exec saw the daemon's environment (%s): %q", ev.Str("task"), env)
		}
	}
	if n := len(d.Events("environment")); n != 4 {
		t.Errorf("%d exec runs logged, want 4", n)
	}
	// What the task tried to show shows as the secret's placeholder, so
	// the task ran as the test means.
	if n := d.Count("using", map[string]string{"token": "<secret api_token>", "header": "<secret api_token>"}); n != 4 {
		t.Errorf("%d log lines show the secret's placeholder, want 4", n)
	}

	// The worker processes of leakp: their command lines and
	// environments (what ps and /proc show).
	pids := map[string]bool{}
	for _, ev := range d.Events("using") {
		if p := ev.Str("worker_pid"); p != "" {
			pids[p] = true
		}
	}
	if len(pids) == 0 {
		t.Error("no worker process logged")
	}
	for p := range pids {
		for _, what := range []string{"cmdline", "environ"} {
			b, err := os.ReadFile("/proc/" + p + "/" + what)
			if err != nil {
				t.Fatalf("worker process %s: %v", p, err)
			}
			outputs["worker process "+what] = string(b)
		}
	}

	// The admin server, as anyone on the machine asks it, and with the
	// token.
	addr := d.AdminAddr()
	for _, path := range []string{"/status", "/metrics", "/healthz", "/readyz", "/history", "/", "/app.js", "/dead", "/dead?queue=leak", "/events"} {
		outputs["GET "+path] = get(t, "http://"+addr+path, "")
		outputs["GET "+path+" (token)"] = get(t, "http://"+addr+path, password)
	}
	if !strings.Contains(outputs["GET /metrics"], "symphony_messages_total") || !strings.Contains(outputs["GET /status"], `"leakp"`) {
		t.Errorf("the admin server's answers are not what the test means to search:\n%s", outputs["GET /status"])
	}
	for _, ev := range d.Events("message dead-lettered") {
		outputs["GET /dead/ID (token)"] += get(t, "http://"+addr+"/dead/"+ev.Str("message_id"), password)
	}

	// Commands, working and failing.
	for _, args := range [][]string{
		{"status", "--admin-addr", addr},
		{"status", "--json", "--admin-addr", addr},
		{"dead", "list", "--tasks", tasks},
		{"dead", "list", "leak"},
		{"check", tasks},
	} {
		r := env.Run("", args...)
		outputs[strings.Join(args, " ")] = r.Stdout + r.Stderr
	}
	wrong := *u
	wrong.Host = "127.0.0.1:1"
	refused := env.Run("{}", "publish", "leak", "--broker", wrong.String())
	if refused.Code != 1 || !strings.Contains(refused.Stderr, user+":xxxxx@") {
		t.Errorf("publish to a closed port: exit %d: %s", refused.Code, refused.Stderr)
	}
	outputs["publish, connection refused"] = refused.Stdout + refused.Stderr
	novhost := *u
	novhost.Path = "/no-such-vhost"
	r := env.Run("{}", "publish", "leak", "--broker", novhost.String())
	if r.Code == 0 {
		t.Error("publish to a virtual host that does not exist succeeded")
	}
	outputs["publish, no such vhost"] = r.Stdout + r.Stderr
	r = env.Run("", "run", "--broker", novhost.String(), tasks)
	if r.Code == 0 {
		t.Error("run on a virtual host that does not exist exited 0")
	}
	outputs["run, no such vhost"] = r.Stdout + r.Stderr

	d.Stop()
	outputs["daemon log"] = d.Log()
	for what, out := range outputs {
		if strings.Contains(out, password) {
			i := strings.Index(out, password)
			t.Errorf("%s shows the password: …%s…", what, out[max(0, i-200):min(len(out), i+len(password)+50)])
		}
	}
	t.Logf("searched %d outputs, %d bytes, for the password", len(outputs), total(outputs))
}

func total(m map[string]string) int {
	n := 0
	for _, v := range m {
		n += len(v)
	}
	return n
}

// get answers a GET with its body (the first second of an event stream),
// with the admin token when one is given.
func get(t *testing.T, url, token string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		b.WriteString(sc.Text() + "\n")
	}
	return strconv.Itoa(resp.StatusCode) + "\n" + b.String()
}

func rabbitmqctl(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("rabbitmqctl", append([]string{"-q"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl %v: %v\n%s", args, err, out)
	}
}

// The admin server listens on loopback unless told otherwise; told to
// listen on every interface without a token, the daemon says so; on
// loopback, or with a token, it does not.
func TestAdminServerBeyondLoopbackWarns(t *testing.T) {
	t.Parallel()
	const warning = "the admin server listens beyond this machine without a token: anyone who reaches it sees the status and dead letters; set --admin-token to guard them and to allow actions"
	env := symphonytest.NewEnv(t)
	tasks := symphonytest.WriteTasks(t, map[string]string{"good.star": goodTask})
	for _, c := range []struct {
		args []string
		warn bool
	}{
		{[]string{"--admin-addr", ":0"}, true},
		{[]string{"--admin-addr", "0.0.0.0:0"}, true},
		{[]string{"--admin-addr", "127.0.0.1:0"}, false},
		{[]string{"--admin-addr", "localhost:0"}, false},
		{[]string{"--admin-addr", ":0", "--admin-token", "t0ken"}, false},
	} {
		d := env.Start(append(c.args, tasks)...)
		listening := d.WaitFor("admin server listening", nil)
		d.Stop()
		if got := d.Count(warning, nil) == 1; got != c.warn {
			t.Errorf("%v (listening on %s): warned %v, want %v", c.args, listening.Str("addr"), got, c.warn)
		}
	}
	// The default (what --help shows) is on loopback.
	help := env.MustRun("", "run", "--help").Stdout
	if !strings.Contains(help, `--admin-addr value`) || !strings.Contains(help, `(default: "127.0.0.1:9780")`) {
		t.Errorf("run --help does not show the admin server's default on loopback:\n%s", help)
	}
}
