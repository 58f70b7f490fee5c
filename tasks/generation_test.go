package tasks

import (
	"context"
	"fmt"
	"testing"
	"time"
)

func task(name, hash string, patterns ...string) Task {
	s := NewSpec(name)
	s.Hash = hash
	s.Patterns = patterns
	return Task{Spec: s}
}

func TestCompare(t *testing.T) {
	t.Parallel()
	slower := task("b", "h2", "b")
	slower.Spec.Timeout = time.Minute
	old := []Task{task("a", "h1", "a"), task("b", "h2", "b"), task("c", "h3", "c"), task("d", "h4", "d"), task("e", "h5", "e")}
	new := []Task{
		task("f", "h6", "f"),      // added
		task("a", "h1", "a"),      // unchanged
		slower,                    // a setting changed
		task("c", "h3x", "c"),     // the code changed
		task("d", "h4", "d", "x"), // a pattern added
	}
	var got []string
	for _, d := range Compare(old, new) {
		got = append(got, fmt.Sprintf("%s:%s", d.Name, d.Change))
	}
	want := "[f:added a:unchanged b:changed c:changed d:changed e:removed]"
	if fmt.Sprint(got) != want {
		t.Errorf("Compare = %v, want %s", got, want)
	}
	for _, d := range Compare(old, new) {
		if (d.Change == Added) != (d.Old.Spec.Name == "") || (d.Change == Removed) != (d.New.Spec.Name == "") {
			t.Errorf("%s (%s): old %q, new %q", d.Name, d.Change, d.Old.Spec.Name, d.New.Spec.Name)
		}
	}
}

type scaler struct{ n int }

func (s *scaler) Decide(context.Context, Stats) (int, error) { return s.n, nil }

// Every load makes a new Scaler value; the code behind it is the Hash's.
func TestSameSpecIgnoresTheScalerValue(t *testing.T) {
	t.Parallel()
	a, b := task("a", "h", "a").Spec, task("a", "h", "a").Spec
	a.WorkModel, b.WorkModel = Scaled, Scaled
	a.Scaler, b.Scaler = &scaler{1}, &scaler{2}
	if !SameSpec(a, b) {
		t.Error("equal specs differ")
	}
	b.Hash = "other"
	if SameSpec(a, b) {
		t.Error("specs of different code are the same")
	}
}
