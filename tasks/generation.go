package tasks

import "reflect"

// Change is what a new load of the tasks does to one task.
type Change int

const (
	// Unchanged: the same code and settings; the running task stays.
	Unchanged Change = iota
	// Added: a task the running set does not have.
	Added
	// Changed: its code (its file or a library it loads) or its settings
	// differ.
	Changed
	// Removed: the new set does not have it.
	Removed
)

func (c Change) String() string {
	switch c {
	case Unchanged:
		return "unchanged"
	case Added:
		return "added"
	case Changed:
		return "changed"
	case Removed:
		return "removed"
	}
	return "unknown"
}

// Diff is a task's change between two loads. Old is the running task
// (none for Added), New the loaded one (none for Removed).
type Diff struct {
	Name     string
	Change   Change
	Old, New Task
}

// Compare lists what going from old to new does to every task, in the
// new set's order followed by the removed tasks in the old set's order.
func Compare(old, new []Task) []Diff {
	running := make(map[string]Task, len(old))
	for _, t := range old {
		running[t.Spec.Name] = t
	}
	kept := make(map[string]bool, len(new))
	var out []Diff
	for _, t := range new {
		name := t.Spec.Name
		kept[name] = true
		o, ok := running[name]
		switch {
		case !ok:
			out = append(out, Diff{Name: name, Change: Added, New: t})
		case SameSpec(o.Spec, t.Spec):
			out = append(out, Diff{Name: name, Change: Unchanged, Old: o, New: t})
		default:
			out = append(out, Diff{Name: name, Change: Changed, Old: o, New: t})
		}
	}
	for _, t := range old {
		if !kept[t.Spec.Name] {
			out = append(out, Diff{Name: t.Spec.Name, Change: Removed, Old: t})
		}
	}
	return out
}

// SameSpec reports whether two loads of a task would run it the same way:
// the same code (Hash covers its file and the libraries it loads) and the
// same settings. A Scaler is code from the same file, so Hash covers it.
func SameSpec(a, b Spec) bool {
	a.Scaler, b.Scaler = nil, nil
	return reflect.DeepEqual(a, b)
}
