package cli_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/symphony-go/symphony/internal/symphonytest"
)

const priorityTask = `
def work(payload, meta):
    log.info("handled", n = payload["n"], p = payload["p"])
    return True

task(name = "jobs", subscribe_to = ["jobs.#"], work = work, max_priority = %d, prefetch = 1)
`

const plainTask = `
def work(payload, meta):
    publish("jobs.plain", {"n": 0, "p": 9}, priority = 9)
    return True

task(name = "plain", subscribe_to = ["plain.#", "jobs.plain"], work = work)
`

// A backlog published with priorities is handled higher first, then in the
// order it came; a priority that a queue without max_priority would get is
// refused by publish and dead-letters a task's message; a changed
// max_priority fails the reload and the running task goes on.
func TestPrioritiesUnderABacklog(t *testing.T) {
	t.Parallel()
	symphonytest.OnEachBroker(t, func(t *testing.T, env *symphonytest.Env) {
		dir := writeTasks(t, map[string]string{"jobs.star": fmt.Sprintf(priorityTask, 9), "plain.star": plainTask})
		d := env.Start(dir)
		d.Stop()

		// Lowest first, so that age alone would give the opposite order.
		const each = 5
		for _, p := range []int{0, 3, 9} {
			var lines strings.Builder
			for i := range each {
				fmt.Fprintf(&lines, "{\"n\": %d, \"p\": %d}\n", i, p)
			}
			env.MustRun(lines.String(), "publish", "--file", "-", "--priority", fmt.Sprint(p), "jobs.work")
		}
		r := env.Run("", "publish", "--priority", "2", "jobs.plain", `{"n": 0, "p": 2}`)
		if r.Code != 1 || !strings.Contains(r.Stderr, "takes no priorities") || !strings.Contains(r.Stderr, "max_priority") {
			t.Errorf("publish with a priority to a key a plain task takes: exit %d, stderr %q; want 1 and why", r.Code, r.Stderr)
		}
		if r := env.Run("", "publish", "--priority", "300", "jobs.work", `{}`); r.Code != 2 || !strings.Contains(r.Stderr, "priority 300 is out of range") {
			t.Errorf("--priority 300: exit %d, stderr %q; want 2 and the range", r.Code, r.Stderr)
		}

		d = env.Start(dir)
		symphonytest.Until(t, "the backlog handled", func() bool { return d.Count("handled", nil) >= 3*each }, d)
		var order []string
		for _, ev := range d.Events("handled") {
			order = append(order, ev.Str("p")+"."+ev.Str("n"))
		}
		var want []string
		for _, p := range []int{9, 3, 0} {
			for i := range each {
				want = append(want, fmt.Sprintf("%d.%d", p, i))
			}
		}
		if strings.Join(order, " ") != strings.Join(want, " ") {
			t.Errorf("handled in the order\n%v\nwant\n%v", order, want)
		}

		// A task that publishes with a priority to a key a plain queue
		// takes: the message is dead-lettered with the reason.
		env.MustRun("", "publish", "plain.go", `{}`)
		ev := d.WaitFor("message dead-lettered", map[string]string{"task": "plain"})
		if !strings.Contains(ev.Str("error"), "takes no priorities") {
			t.Errorf("dead letter error %q; want it to say why", ev.Str("error"))
		}

		// RabbitMQ cannot change max_priority in place: the reload fails
		// with the way out, and the running task goes on.
		if err := os.WriteFile(filepath.Join(dir, "jobs.star"), []byte(fmt.Sprintf(priorityTask, 5)), 0o644); err != nil {
			t.Fatal(err)
		}
		failed := d.WaitFor("reload failed: the running tasks stay", nil)
		if msg := failed.Str("err"); !strings.Contains(msg, "max_priority 9") || !strings.Contains(msg, `queue = \"jobs.p5\"`) && !strings.Contains(msg, `queue = "jobs.p5"`) {
			t.Errorf("reload failure %q; want the change and the way out", msg)
		}
		env.MustRun("", "publish", "--priority", "1", "jobs.after", `{"n": 99, "p": 1}`)
		d.WaitFor("handled", map[string]string{"n": "99"})
		d.Stop()
	})
}
