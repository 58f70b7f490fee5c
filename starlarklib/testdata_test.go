package starlarklib

import (
	"context"
	"strings"
	"testing"

	"github.com/symphony-go/symphony/tasks"
)

// testdata/bad holds one tree with many kinds of mistakes; Load reports
// every one, sorted by position.
func TestLoadBadTree(t *testing.T) {
	t.Parallel()
	_, err := Load([]string{"testdata/bad"}, Options{LookupEnv: noEnv})
	if err == nil {
		t.Fatal("Load(testdata/bad) succeeded")
	}
	want := []string{
		`testdata/bad/arguments.star:4:1: task: unknown argument subscibe (did you mean subscribe_to?)`,
		`testdata/bad/arguments.star:4:1: task: subscribe_to[0]: pattern "order..placed" has an empty word at position 2 (two dots in a row, or a dot at an end)`,
		`testdata/bad/arguments.star:4:1: task: unknown work_model "forever": use "longlived", "oneshot" or scaler(decide = fn)`,
		`testdata/bad/arguments.star:4:1: task: min_workers (3) is greater than max_workers (2)`,
		`testdata/bad/arguments.star:4:1: task: prefetch must be at least 1, got 0`,
		`testdata/bad/arguments.star:4:1: task: timeout: "1m30" is not a duration (time: missing unit in duration "1m30"): give seconds (90) or a duration string ("1m30s")`,
		`testdata/bad/escape.star:1:1: cannot load ../secrets.star: "../secrets.star" is outside the tasks root testdata/bad; loads outside the root are refused (paths are relative to the root, not to the loading file)`,
		`testdata/bad/lib/broken.star:2:10: floating-point division by zero`,
		`testdata/bad/lib/cycle_a.star:1:1: cannot load lib/cycle_b.star: testdata/bad/lib/cycle_b.star:1:1: cannot load lib/cycle_a.star: load cycle: lib/cycle_a.star loads lib/cycle_b.star loads lib/cycle_a.star; move the code they share into a library that neither loads`,
		`testdata/bad/lib/cycle_b.star:1:1: cannot load lib/cycle_a.star: load cycle: lib/cycle_a.star loads lib/cycle_b.star loads lib/cycle_a.star; move the code they share into a library that neither loads`,
		`testdata/bad/loads_broken.star:1:1: cannot load lib/broken.star: testdata/bad/lib/broken.star:2:10: floating-point division by zero`,
		`testdata/bad/loads_cycle.star:1:1: cannot load lib/cycle_a.star: testdata/bad/lib/cycle_a.star:1:1: cannot load lib/cycle_b.star: testdata/bad/lib/cycle_b.star:1:1: cannot load lib/cycle_a.star: load cycle: lib/cycle_a.star loads lib/cycle_b.star loads lib/cycle_a.star; move the code they share into a library that neither loads`,
		`testdata/bad/orders.star:4:1: task: name "orders" is already used by the task at testdata/bad/duplicate.star:2:1; task names are unique across the tasks roots: pass another name = "..."`,
		`testdata/bad/syntax.star:2:1: got newline, want ':'`,
		`testdata/bad/toplevel.star:2:15: key "large" not in dict`,
		`testdata/bad/work.star:4:1: task: work: function work takes 1 parameter; it must take two: def work(payload, meta)`,
	}
	got := strings.Split(err.Error(), "\n")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Load(testdata/bad) errors:\n%s\n\nwant:\n%s", err, strings.Join(want, "\n"))
	}
}

// testdata/good is a small, valid tasks root: it loads, and its tasks run.
func TestLoadGoodTree(t *testing.T) {
	t.Parallel()
	got, err := Load([]string{"testdata/good"}, Options{LookupEnv: noEnv})
	if err != nil {
		t.Fatalf("Load(testdata/good) = %v", err)
	}
	byName := map[string]tasks.Task{}
	for _, tk := range got {
		byName[tk.Spec.Name] = tk
	}
	if len(byName) != 2 {
		t.Fatalf("tasks = %v", byName)
	}

	thumbs := byName["thumbnails"]
	r := thumbs.Handler.Handle(context.Background(), &tasks.Delivery{
		Body: []byte(`{"id": 7}`), ContentType: "application/json", RoutingKey: "image.uploaded.png",
	})
	if r.Verdict != tasks.Succeeded || len(r.Publications) != 1 || string(r.Publications[0].Body) != `{"id":7}` {
		t.Errorf("thumbnails: %+v", r)
	}

	charge := byName["billing.charge"]
	if charge.Spec.File != "billing/charge.star" || charge.Spec.WorkModel != tasks.Oneshot {
		t.Errorf("billing.charge spec = %+v", charge.Spec)
	}
	r = charge.Handler.Handle(context.Background(), &tasks.Delivery{
		Body: []byte(`{"id": 1, "total": 12.34}`), ContentType: "application/json", RoutingKey: "order.placed",
	})
	if r.Verdict != tasks.Succeeded || len(r.Publications) != 1 || string(r.Publications[0].Body) != `{"cents":1234,"order":1}` {
		t.Errorf("billing.charge order: %+v", r)
	}
	r = charge.Handler.Handle(context.Background(), &tasks.Delivery{
		Body: []byte(`{"id": 2}`), ContentType: "application/json", RoutingKey: "order.placed",
	})
	if r.Verdict != tasks.RetryRequested || r.Reason != "order has no total yet" || r.RetryAfter.String() != "10s" {
		t.Errorf("billing.charge without total: %+v", r)
	}

	cfg, err := LoadConfig([]string{"testdata/good"})
	if err != nil || cfg["exchange"].Values[0] != "shop" || cfg["shutdown-timeout"].Values[0] != "45s" {
		t.Errorf("LoadConfig(testdata/good) = %v, %v", cfg, err)
	}
}
