package engine

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/tasks"
)

// task is a task for a plan: its spec is all the plan reads.
func task(name, queue string, code string, patterns ...string) tasks.Task {
	s := tasks.NewSpec(name)
	s.Queue = queue
	s.Patterns = patterns
	s.Hash = code
	return tasks.Task{Spec: s}
}

// show writes queues as "name[p1 p2]", one after the other.
func show(qs []broker.Queue) string {
	var out []string
	for _, q := range qs {
		s := fmt.Sprintf("%s[%s]", q.Name, strings.Join(q.Patterns, " "))
		if q.MaxPriority > 0 {
			s += fmt.Sprintf("p%d", q.MaxPriority)
		}
		out = append(out, s)
	}
	return strings.Join(out, " ")
}

func TestPlanApply(t *testing.T) {
	prio := task("a", "a", "v1", "ka")
	prio.Spec.MaxPriority = 5
	limited := task("a", "a", "v1", "ka")
	limited.Spec.RateLimit = tasks.Rate{N: 5, Per: time.Second}
	for _, tc := range []struct {
		name                           string
		running, next                  []tasks.Task
		create, bind, rollback, unbind string
	}{
		{name: "nothing changes",
			running: []tasks.Task{task("a", "a", "v1", "ka")}, next: []tasks.Task{task("a", "a", "v1", "ka")}},
		{name: "new code, same patterns: the broker is not touched",
			running: []tasks.Task{task("a", "a", "v1", "ka")}, next: []tasks.Task{task("a", "a", "v2", "ka")}},
		{name: "a pattern added is bound before the swap",
			running: []tasks.Task{task("a", "a", "v1", "ka")}, next: []tasks.Task{task("a", "a", "v1", "ka", "kb")},
			bind: "a[ka kb]", rollback: "a[ka]"},
		{name: "a pattern removed is unbound after it",
			running: []tasks.Task{task("a", "a", "v1", "ka", "kb")}, next: []tasks.Task{task("a", "a", "v1", "kb")},
			unbind: "a[kb]"},
		{name: "a pattern replaced: both bound throughout the swap",
			running: []tasks.Task{task("a", "a", "v1", "ka")}, next: []tasks.Task{task("a", "a", "v1", "kb")},
			bind: "a[ka kb]", rollback: "a[ka]", unbind: "a[kb]"},
		{name: "a new task's queue is created unbound, then bound",
			running: []tasks.Task{task("a", "a", "v1", "ka")}, next: []tasks.Task{task("a", "a", "v1", "ka"), task("b", "b", "v1", "kb")},
			create: "b[]", bind: "b[kb]", rollback: "b[]"},
		{name: "a removed task's queue is unbound after the swap",
			running: []tasks.Task{task("a", "a", "v1", "ka"), task("b", "b", "v1", "kb")}, next: []tasks.Task{task("a", "a", "v1", "ka")},
			unbind: "b[]"},
		{name: "a task renamed with its queue kept: the queue keeps its bindings",
			running: []tasks.Task{task("a", "a", "v1", "k")}, next: []tasks.Task{task("b", "a", "v1", "k")}},
		{name: "a task moved to another queue",
			running: []tasks.Task{task("a", "a", "v1", "k")}, next: []tasks.Task{task("a", "q", "v1", "k")},
			create: "q[]", bind: "q[k]", rollback: "q[]", unbind: "a[]"},
		{name: "two tasks that swap queues",
			running: []tasks.Task{task("x", "qx", "v1", "kx"), task("y", "qy", "v1", "ky")},
			next:    []tasks.Task{task("x", "qy", "v1", "kx"), task("y", "qx", "v1", "ky")},
			bind:    "qy[ky kx] qx[kx ky]", rollback: "qy[ky] qx[kx]", unbind: "qx[ky] qy[kx]"},
		{name: "two tasks on one queue, one of them removed",
			running: []tasks.Task{task("a", "q", "v1", "ka"), task("b", "q", "v1", "kb")}, next: []tasks.Task{task("a", "q", "v1", "ka")},
			unbind: "q[ka]"},
		{name: "a queue's arguments changed are declared, for the broker to accept or refuse",
			running: []tasks.Task{task("a", "a", "v1", "ka")}, next: []tasks.Task{prio},
			bind: "a[ka]p5", rollback: "a[ka]"},
		{name: "a rate limit changed: a new pool, the broker not touched",
			running: []tasks.Task{task("a", "a", "v1", "ka")}, next: []tasks.Task{limited}},
		{name: "everything at once, in the new generation's order",
			running: []tasks.Task{task("a", "a", "v1", "ka"), task("b", "b", "v1", "kb"), task("c", "c", "v1", "kc")},
			next:    []tasks.Task{task("d", "d", "v1", "kd"), task("c", "c", "v2", "kc", "kc2"), task("a", "a", "v1", "ka")},
			create:  "d[]", bind: "d[kd] c[kc kc2]", rollback: "d[] c[kc]", unbind: "b[]"},
	} {
		p := planApply(tc.running, tc.next)
		for _, got := range []struct{ what, got, want string }{
			{"create", show(p.create), tc.create},
			{"bind", show(p.bind), tc.bind},
			{"rollback", show(p.rollback), tc.rollback},
			{"unbind", show(p.unbind), tc.unbind},
		} {
			if got.got != got.want {
				t.Errorf("%s: %s %q, want %q", tc.name, got.what, got.got, got.want)
			}
		}
	}
	// The changed limit is a changed task: its pool is replaced, and the
	// new one waits on the new limit.
	if d := planApply([]tasks.Task{task("a", "a", "v1", "ka")}, []tasks.Task{limited}).diffs; d[0].Change != tasks.Changed {
		t.Errorf("a rate limit changed: %v, want the task changed", d[0].Change)
	}
}
