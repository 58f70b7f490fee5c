package starlarklib

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/symphony-go/symphony/tasks"
)

// distinctive is a secret value no test output could hold by chance.
const distinctive = "s3cr3t-Zq8vXw-42"

func TestSecretNeverShows(t *testing.T) {
	var logs logBuffer
	env := func(k string) (string, bool) {
		if k == "HOOK_KEY" {
			return distinctive, true
		}
		return "", false
	}
	w := NewWorld(WorldConfig{LookupEnv: env})
	// The daemon's logger goes through the World's Redactor.
	logger := slog.New(w.Redactor.Handler(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	tk := loadTask(t, `
def work(payload, meta):
    k = secret("HOOK_KEY")
    if str(k) != "<secret HOOK_KEY>" or repr(k) != "<secret HOOK_KEY>":
        fail("shown as " + str(k))
    auth = "Bearer " + k
    print(auth, k)
    log.info("sending", key = k, auth = auth)
    publish("out", {"key": k, "auth": auth, "echo": payload["echo"]}, headers = {"h": payload["echo"]})
    if json.encode({"k": k}) != '{"k":"<secret HOOK_KEY>"}':
        fail("json.encode shows " + json.encode({"k": k}))
    if hash.hmac("sha256", k, "body") != hash.hmac("sha256", payload["echo"][6:], "body"):
        fail("hmac did not use the value")
    if payload.get("fail"):
        fail("the key was " + payload["echo"])
    return retry(reason = payload["echo"]) if payload.get("retry") else True
task(subscribe_to = ["#"], work = work)
`, Options{World: w, Logger: logger})

	// The payload holds the value itself, as a server echoing it would.
	body := `{"echo": "value=` + distinctive + `"}`
	r := handle(tk, "application/json", []byte(body))
	if r.Verdict != tasks.Succeeded {
		t.Fatalf("verdict = %s: %v\n%s", r.Verdict, r.Err, r.Backtrace)
	}
	pub := r.Publications[0]
	if want := `{"auth":"<secret HOOK_KEY>","echo":"value=<secret HOOK_KEY>","key":"<secret HOOK_KEY>"}`; string(pub.Body) != want {
		t.Errorf("published %s, want %s", pub.Body, want)
	}
	if pub.Headers["h"] != "value=<secret HOOK_KEY>" {
		t.Errorf("published header %v", pub.Headers["h"])
	}
	failed := handle(tk, "application/json", []byte(`{"echo": "value=`+distinctive+`", "fail": true}`))
	if failed.Verdict != tasks.Failed || !strings.Contains(failed.Err.Error(), "the key was value=<secret HOOK_KEY>") {
		t.Errorf("failure: %s %v", failed.Verdict, failed.Err)
	}
	retried := handle(tk, "application/json", []byte(`{"echo": "value=`+distinctive+`", "retry": true}`))
	if retried.Reason != "value=<secret HOOK_KEY>" {
		t.Errorf("retry reason %q", retried.Reason)
	}
	logger.Info("a daemon line", "err", failed.Err, "body", body)
	for what, text := range map[string]string{
		"logs": logs.String(), "error": failed.Err.Error(), "backtrace": failed.Backtrace,
	} {
		if strings.Contains(text, distinctive) {
			t.Errorf("the secret value shows in the %s:\n%s", what, text)
		}
	}
	for _, want := range []string{`"msg":"<secret HOOK_KEY> <secret HOOK_KEY>"`, `"auth":"<secret HOOK_KEY>"`, `"key":"<secret HOOK_KEY>"`, `"body":"{\"echo\": \"value=<secret HOOK_KEY>\"}"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %s:\n%s", want, logs.String())
		}
	}
}

func TestSecretFiles(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "API_TOKEN"), []byte("from-the-file\n"), 0o600)
	env := func(k string) (string, bool) {
		switch k {
		case "API_TOKEN":
			return "from-the-environment", true
		case "ONLY_ENV", "SYMPHONY_ADMIN_TOKEN":
			return "env-value", true
		}
		return "", false
	}
	s := SecretFiles{Dir: dir, LookupEnv: env}
	for name, want := range map[string]string{"API_TOKEN": "from-the-file", "ONLY_ENV": "env-value"} {
		if got, err := s.Secret(name); err != nil || got != want {
			t.Errorf("Secret(%s) = %q, %v; want %q", name, got, err, want)
		}
	}
	for name, want := range map[string]string{
		"MISSING":              "no secret named MISSING: write it to " + filepath.Join(dir, "MISSING") + " or set the environment variable MISSING",
		"SYMPHONY_ADMIN_TOKEN": "no secret named SYMPHONY_ADMIN_TOKEN",
		"../etc/passwd":        `"../etc/passwd" is not a secret name`,
	} {
		if _, err := s.Secret(name); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Secret(%s) error = %v, want %q", name, err, want)
		}
	}
	if _, err := (SecretFiles{LookupEnv: env}).Secret("SYMPHONY_ADMIN_TOKEN"); err == nil ||
		!strings.Contains(err.Error(), "SYMPHONY_* variables are the daemon's settings") {
		t.Errorf("SYMPHONY_ secret error = %v", err)
	}
	msg := failedRun(t, "", `    secret("NOPE")`, Options{World: &World{Secrets: s}})
	if !strings.Contains(msg, "secret: no secret named NOPE") {
		t.Errorf("error = %s", msg)
	}
}

func TestRedactorHandler(t *testing.T) {
	r := NewRedactor()
	var buf bytes.Buffer
	log := slog.New(r.Handler(slog.NewTextHandler(&buf, nil))).With("bound", "x")
	r.Add("SHORT", "abc") // too short to scrub from text
	r.Add("K", "longer-value")
	r.Add("K2", "longer-value-2")
	log.InfoContext(context.Background(), "m longer-value", slog.Group("g", "a", "longer-value-2"), "n", 3, "list", []string{"longer-value"})
	out := buf.String()
	for _, want := range []string{"msg=\"m <secret K>\"", "g.a=\"<secret K2>\"", "n=3", `list="[\"<secret K>\"]"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log line lacks %s: %s", want, out)
		}
	}
	if got := r.Redact("abc"); got != "abc" {
		t.Errorf("a 3-byte secret was scrubbed: %q", got)
	}
}

// A query that holds a secret is that secret: url.encode's result prints
// as one even when the value is too short for the Redactor to scrub.
func TestURLEncodeKeepsASecret(t *testing.T) {
	w := NewWorld(WorldConfig{LookupEnv: func(k string) (string, bool) { return "q7z", k == "PIN" || k == "KEY" }})
	tk := loadTask(t, `
def work(payload, meta):
    q = url.encode({"pin": secret("PIN"), "key": secret("KEY"), "n": 1})
    plain = url.encode({"n": 1, "s": "x y"})
    publish("out", {"q": q, "s": str(q), "plain": plain, "type": type(q)})
    return True
task(subscribe_to = ["#"], work = work)
`, Options{World: w})
	r := handle(tk, "application/json", []byte(`{}`))
	if r.Verdict != tasks.Succeeded {
		t.Fatalf("verdict = %s: %v\n%s", r.Verdict, r.Err, r.Backtrace)
	}
	want := `{"plain":"n=1&s=x+y","q":"<secret PIN+KEY>","s":"<secret PIN+KEY>","type":"secret"}`
	if got := string(r.Publications[0].Body); got != want {
		t.Errorf("published %s, want %s", got, want)
	}
}
