package examples_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/symphony-go/symphony/internal/symphonytest"
)

// TestKubernetesManifest reads examples/deploy/kubernetes.yaml as
// Kubernetes would and checks what the README promises of it: the tasks of
// its ConfigMap pass `symphony check`, they are mounted as a directory
// (a subPath mount never sees an update), the probes ask /healthz and
// /readyz, and the broker URL comes from the Secret.
func TestKubernetesManifest(t *testing.T) {
	t.Parallel()
	f, err := os.Open(filepath.Join("deploy", "kubernetes.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	docs := map[string]map[string]any{}
	dec := yaml.NewDecoder(f)
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		docs[doc["kind"].(string)] = doc
	}
	for _, kind := range []string{"Secret", "ConfigMap", "Deployment", "Service"} {
		if docs[kind] == nil {
			t.Fatalf("no %s in the manifest", kind)
		}
	}

	dir := t.TempDir()
	for name, text := range docs["ConfigMap"]["data"].(map[string]any) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text.(string)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	env := symphonytest.NewEnv(t)
	if r := env.MustRun("", "check", dir); !strings.Contains(r.Stdout, "greet\tqueue=greet") {
		t.Errorf("check: %s", r.Stdout)
	}

	pod := dig(t, docs["Deployment"], "spec", "template", "spec").(map[string]any)
	c := pod["containers"].([]any)[0].(map[string]any)
	if p := dig(t, c, "livenessProbe", "httpGet", "path"); p != "/healthz" {
		t.Errorf("liveness probe asks %v", p)
	}
	if p := dig(t, c, "readinessProbe", "httpGet", "path"); p != "/readyz" {
		t.Errorf("readiness probe asks %v", p)
	}
	env2 := map[string]map[string]any{}
	for _, e := range c["env"].([]any) {
		e := e.(map[string]any)
		env2[e["name"].(string)] = e
	}
	if ref := dig(t, env2["SYMPHONY_BROKER"], "valueFrom", "secretKeyRef", "name"); ref != dig(t, docs["Secret"], "metadata", "name") {
		t.Errorf("the broker URL comes from %v", ref)
	}
	for _, m := range c["volumeMounts"].([]any) {
		m := m.(map[string]any)
		if m["name"] == "tasks" && (m["subPath"] != nil || m["mountPath"] != "/etc/symphony/tasks") {
			t.Errorf("tasks mounted as %v", m)
		}
	}
	if args := c["args"].([]any); args[0] != "run" || args[1] != "/etc/symphony/tasks" {
		t.Errorf("runs %v", args)
	}
	grace := pod["terminationGracePeriodSeconds"].(int)
	if grace <= 30 {
		t.Errorf("a grace period of %ds cuts the 30s shutdown timeout short", grace)
	}
}

func dig(t *testing.T, v any, path ...string) any {
	t.Helper()
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("no %s in %v", p, v)
		}
		v = m[p]
	}
	return v
}

// TestSystemdUnit checks the unit of examples/deploy: a Type=notify
// service (the daemon speaks sd_notify) that reloads with HUP and gives a
// stop time longer than the shutdown timeout; systemd-analyze verifies it
// where it is installed.
func TestSystemdUnit(t *testing.T) {
	t.Parallel()
	unit := filepath.Join("deploy", "symphony.service")
	b, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			settings[k] = append(settings[k], v)
		}
	}
	for k, want := range map[string]string{
		"Type": "notify", "ExecReload": "/bin/kill -HUP $MAINPID", "TimeoutStopSec": "45s", "KillMode": "mixed",
		"NoNewPrivileges": "yes", "ProtectSystem": "strict", "DynamicUser": "yes",
	} {
		if got := strings.Join(settings[k], " "); got != want {
			t.Errorf("%s=%s, want %s", k, got, want)
		}
	}
	if analyze, err := exec.LookPath("systemd-analyze"); err == nil {
		// It checks the syntax and the options; the binary it names is
		// not installed here, which it reports separately.
		out, _ := exec.Command(analyze, "verify", unit).CombinedOutput()
		for _, line := range strings.Split(string(out), "\n") {
			if line != "" && !strings.Contains(line, "Command /usr/local/bin/symphony is not executable") {
				t.Errorf("systemd-analyze verify: %s", line)
			}
		}
	}
}
