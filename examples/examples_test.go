// Package examples_test runs every bundled example end to end through the
// real binary on the embedded broker, as its README tells a user to.
package examples_test

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/symphony-go/symphony/internal/symphonytest"
)

func TestMain(m *testing.M) { symphonytest.Main(m) }

// example is the absolute path of a bundled example.
func example(t *testing.T, name string) string {
	p, err := filepath.Abs(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var publishedID = regexp.MustCompile(`published message (\S+) to`)

func published(t *testing.T, r symphonytest.Result) string {
	t.Helper()
	m := publishedID.FindStringSubmatch(r.Stderr)
	if m == nil {
		t.Fatalf("publish printed no message id: %q", r.Stderr)
	}
	return m[1]
}

func TestHello(t *testing.T) {
	t.Parallel()
	symphonytest.OnEachBroker(t, func(t *testing.T, env *symphonytest.Env) {
		d := env.Start(example(t, "hello"))
		id := published(t, env.MustRun("", "publish", "greeting.en", `{"name": "Ada"}`))
		d.WaitFor("hello", map[string]string{"name": "Ada", "routing_key": "greeting.en", "message_id": id})
		d.WaitFor("message acked", map[string]string{"message_id": id})

		// Not a JSON object: the payload arrives as bytes and is greeted as world.
		id = published(t, env.MustRun("hi", "publish", "--content-type", "text/plain", "greeting.fr"))
		d.WaitFor("hello", map[string]string{"name": "world", "message_id": id})
		d.Stop()
	})
}

func TestPipeline(t *testing.T) {
	t.Parallel()
	symphonytest.OnEachBroker(t, func(t *testing.T, env *symphonytest.Env) {
		d := env.Start(example(t, "pipeline"))
		order := `{"id": 1, "lines": [{"price": 2.5, "quantity": 2}, {"price": 0.99}]}`
		id := published(t, env.MustRun("", "publish", "order.placed", order))
		receipt := d.WaitFor("receipt", nil)
		if receipt.Str("order") != "1" || receipt.Str("total") != "5.99" || receipt.Str("correlation_id") != id {
			t.Errorf("receipt = %v; want order 1, total 5.99, correlation id %s", receipt, id)
		}
		d.Stop()
	})
}

func TestFlaky(t *testing.T) {
	t.Parallel()
	symphonytest.OnEachBroker(t, func(t *testing.T, env *symphonytest.Env) {
		d := env.Start(example(t, "flaky"))
		eventually := published(t, env.MustRun("", "publish", "flaky.job", `{"succeed_on": 3}`))
		boom := published(t, env.MustRun("", "publish", "flaky.job", `{"boom": true}`))
		never := published(t, env.MustRun("", "publish", "flaky.job", `{}`))

		d.WaitFor("succeeded", map[string]string{"message_id": eventually, "attempt": "3"})
		dead := d.WaitFor("message dead-lettered", map[string]string{"message_id": boom})
		if dead.Str("reason") != "error" || !strings.Contains(dead.Str("error"), "boom: the payload asked for it") ||
			!strings.Contains(dead.Str("error"), "flaky.star:") {
			t.Errorf("a failing message: %v", dead)
		}
		dead = d.WaitFor("message dead-lettered", map[string]string{"message_id": never})
		if dead.Str("reason") != "max-attempts" || dead.Str("attempt") != "4" {
			t.Errorf("a message that never succeeds: %v", dead)
		}

		type letter struct {
			ID, Reason, Body string
			Attempt          int
		}
		list := func() []letter {
			out := env.MustRun("", "dead", "list", "--json", "flaky").Stdout
			var ls []letter
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				if line == "" {
					continue
				}
				var l letter
				if err := json.Unmarshal([]byte(line), &l); err != nil {
					t.Fatalf("dead list --json line %q: %v", line, err)
				}
				ls = append(ls, l)
			}
			return ls
		}
		ls := list()
		if len(ls) != 2 || ls[0].Reason != "error" || ls[0].Body != `{"boom": true}` || ls[1].Reason != "max-attempts" || ls[1].Attempt != 4 {
			t.Fatalf("dead list = %+v", ls)
		}
		show := env.MustRun("", "dead", "show", ls[0].ID).Stdout
		if !strings.Contains(show, "Traceback") || !strings.Contains(show, `{"boom": true}`) {
			t.Errorf("dead show:\n%s", show)
		}

		if out := env.MustRun("", "dead", "replay", "flaky").Stdout; !strings.Contains(out, "replayed 2") {
			t.Errorf("dead replay: %q", out)
		}
		// Replayed as first attempts: the failure dies again at once, the
		// other after its four attempts.
		d.WaitForNth(2, "message dead-lettered", map[string]string{"message_id": boom, "attempt": "1"})
		d.WaitForNth(2, "message dead-lettered", map[string]string{"message_id": never, "attempt": "4"})
		if out := env.MustRun("", "dead", "purge", "flaky").Stdout; !strings.Contains(out, "purged 2") {
			t.Errorf("dead purge: %q", out)
		}
		if ls := list(); len(ls) != 0 {
			t.Errorf("after purge: %+v", ls)
		}
		d.Stop()
	})
}

func TestExamplesCheck(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	r := env.MustRun("", "check", example(t, "hello"), example(t, "pipeline"), example(t, "flaky"), example(t, "scheduled"), example(t, "orders-db"))
	for _, want := range []string{"hello\tqueue=hello\tpatterns=greeting.#", "orders\t", "receipts\t", "flaky\t", "reports\t", "orders-db\t"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("check output lacks %q:\n%s", want, r.Stdout)
		}
	}
}

// Every example has task tests, and they pass through the real binary:
// symphony test, as the example's README would have a user run it.
func TestExampleTests(t *testing.T) {
	t.Parallel()
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	ran := 0
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := e.Name()
		var taskFiles, tests int
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(p, ".star") {
				return err
			}
			if !strings.HasSuffix(p, "_test.star") {
				taskFiles++
				return nil
			}
			src, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			tests += len(testFunc.FindAll(src, -1))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if taskFiles == 0 {
			if tests > 0 {
				t.Errorf("examples/%s has task tests and no task files", dir)
			}
			continue // not an example of tasks (deploy/)
		}
		ran++
		t.Run(dir, func(t *testing.T) {
			t.Parallel()
			if tests == 0 {
				t.Fatalf("examples/%s has no task tests: add a *_test.star beside its tasks", dir)
			}
			env := symphonytest.NewEnv(t)
			// No broker is used: one that cannot be reached changes nothing.
			env.UseBroker("amqp://guest:guest@127.0.0.1:1/")
			r := env.Run("", "test", example(t, dir))
			want := fmt.Sprintf("%d passed, 0 failed\n", tests)
			if r.Code != 0 || !strings.HasSuffix(r.Stdout, want) {
				t.Errorf("symphony test examples/%s: exit %d, want 0 and %q\nstdout:\n%s\nstderr:\n%s", dir, r.Code, want, r.Stdout, r.Stderr)
			}
			passed := 0
			for _, line := range strings.Split(r.Stdout, "\n") {
				if strings.HasPrefix(line, "PASS ") {
					passed++
				}
			}
			if passed != tests {
				t.Errorf("want one PASS line per test (%d):\n%s", tests, r.Stdout)
			}
		})
	}
	if ran == 0 {
		t.Fatal("no examples found")
	}
}

var testFunc = regexp.MustCompile(`(?m)^def test_\w*\(`)
