package engine

import (
	"slices"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/tasks"
)

// plan is what applying a generation does to the broker, decided before
// any of it happens (a pure function of the running tasks and the next
// ones, so that a table states it):
//
//  1. create the queues no running task consumes, with no binding, so
//     that the new pools can subscribe while nothing is routed to them;
//  2. (the new pools are made)
//  3. bind: each queue of a new or changed task gets the patterns it will
//     have on top of those it has, so a key that both match is routed
//     throughout; if a later step fails, rollback restores what bind
//     changed and the running tasks never noticed;
//  4. (the swap)
//  5. unbind: each queue whose patterns shrink gets exactly its new ones,
//     and a queue no task consumes any more none.
type plan struct {
	diffs    []tasks.Diff
	create   []broker.Queue
	bind     []broker.Queue
	rollback []broker.Queue // by bind's index: the queue as it was
	unbind   []broker.Queue
}

// queuesOf is the queues a generation's tasks consume, in order of first
// use: each as its first task declares it, with the patterns of all.
func queuesOf(ts []tasks.Task) ([]string, map[string]broker.Queue) {
	var names []string
	byName := map[string]broker.Queue{}
	for _, t := range ts {
		q, seen := byName[t.Spec.Queue]
		if !seen {
			names = append(names, t.Spec.Queue)
			q = queueOf(t.Spec)
			q.Patterns = nil
		}
		q.Patterns = union(q.Patterns, t.Spec.Patterns)
		byName[t.Spec.Queue] = q
	}
	return names, byName
}

// union is a's patterns followed by those of b that a lacks.
func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, p := range b {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// samePatterns is whether two lists hold the same patterns, in any order.
func samePatterns(a, b []string) bool {
	return len(union(a, b)) == len(a) && len(union(b, a)) == len(b)
}

// planApply plans going from the running tasks to the next ones.
func planApply(running, next []tasks.Task) plan {
	p := plan{diffs: tasks.Compare(running, next)}
	oldNames, was := queuesOf(running)
	names, will := queuesOf(next)

	// The queues that new and changed tasks consume, and those that
	// changed and removed tasks leave.
	touched := map[string]bool{}
	for _, d := range p.diffs {
		switch d.Change {
		case tasks.Added:
			touched[d.New.Spec.Queue] = true
		case tasks.Changed:
			touched[d.New.Spec.Queue] = true
			touched[d.Old.Spec.Queue] = true
		case tasks.Removed:
			touched[d.Old.Spec.Queue] = true
		}
	}

	// What each queue is bound to once bind is done.
	bound := map[string][]string{}
	for name, q := range was {
		bound[name] = q.Patterns
	}
	for _, name := range names {
		if !touched[name] {
			continue
		}
		q := will[name]
		old, existed := was[name]
		if !existed {
			empty := q
			empty.Patterns = nil
			p.create = append(p.create, empty)
			p.bind = append(p.bind, q)
			p.rollback = append(p.rollback, empty)
			bound[name] = q.Patterns
			continue
		}
		both := q
		both.Patterns = union(old.Patterns, q.Patterns)
		sameArgs := old.Durable == q.Durable && old.MaxPriority == q.MaxPriority
		if sameArgs && samePatterns(both.Patterns, old.Patterns) {
			continue
		}
		p.bind = append(p.bind, both)
		p.rollback = append(p.rollback, old)
		bound[name] = both.Patterns
	}

	// Old queues first, in their order, then the new ones.
	for _, name := range append(oldNames, names...) {
		if !touched[name] {
			continue
		}
		touched[name] = false // once
		q, kept := will[name]
		if !kept {
			if len(bound[name]) > 0 {
				gone := was[name]
				gone.Patterns = nil
				p.unbind = append(p.unbind, gone)
			}
			continue
		}
		if !samePatterns(bound[name], q.Patterns) {
			p.unbind = append(p.unbind, q)
		}
	}
	return p
}
