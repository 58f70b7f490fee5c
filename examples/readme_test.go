package examples_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/symphony-go/symphony/internal/symphonytest"
)

// block is a Starlark code block of the README.
type block struct {
	line int    // of its opening fence
	path string // "tasks/x.star" from its first line, or empty
	src  string
}

var (
	// registers finds a task() call at the top level of a file.
	registers = regexp.MustCompile(`(?m)^task\(`)
	// taskTest finds a task test.
	taskTest = regexp.MustCompile(`(?m)^def test_`)
)

// readmeBlocks are the README's ```python blocks.
func readmeBlocks(t *testing.T) []block {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var out []block
	var cur *block
	for i, line := range strings.Split(string(b), "\n") {
		switch {
		case cur == nil && line == "```python":
			cur = &block{line: i + 1}
		case cur != nil && line == "```":
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			if cur.src == "" {
				if p, ok := strings.CutPrefix(line, "# tasks/"); ok {
					cur.path = strings.Fields(p)[0]
				}
			}
			cur.src += line + "\n"
		}
	}
	if len(out) == 0 {
		t.Fatal("the README has no python blocks")
	}
	return out
}

// The README's task files work as written (issue 10, item 7): the tour's
// files, named by their first line, run together, every message acked;
// every other block that registers a task loads and validates on its own
// (those call services outside: a web hook, a program).
func TestTheREADMEsTaskFiles(t *testing.T) {
	t.Parallel()
	tour := filepath.Join(t.TempDir(), "tasks")
	var alone []block
	tests := 0
	for _, b := range readmeBlocks(t) {
		tests += len(taskTest.FindAllString(b.src, -1))
		if b.path == "" {
			if registers.MatchString(b.src) {
				alone = append(alone, b)
			}
			continue
		}
		p := filepath.Join(tour, b.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(b.src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	env := symphonytest.NewEnv(t)
	for _, b := range alone {
		dir := filepath.Join(t.TempDir(), "tasks")
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, "example.star"), []byte(b.src), 0o644)
		if r := env.Run("", "check", dir); r.Code != 0 {
			t.Errorf("README.md:%d: the block does not load: %s", b.line, r.Stderr)
		}
	}
	// The tour's task tests run (the README shows one that fails on
	// purpose, so only that each of them ran is checked).
	if tests > 0 {
		r := env.Run("", "test", tour)
		if !strings.Contains(r.Stdout+r.Stderr, fmt.Sprintf("%d passed", strings.Count(r.Stdout, "PASS "))) ||
			strings.Count(r.Stdout, "PASS ")+strings.Count(r.Stdout, "FAIL ") != tests {
			t.Errorf("symphony test on the README's files ran other than its %d tests:\n%s%s", tests, r.Stdout, r.Stderr)
		}
	}
	d := env.Start(tour)
	id := published(t, env.MustRun("", "publish", "image.uploaded.png", `{"id": 7}`))
	d.WaitFor("resizing", map[string]string{"message_id": id, "id": "7", "key": "image.uploaded.png"})
	d.WaitFor("thumbnail ready", map[string]string{"id": "7", "name": "thumb-7-64px.png"})
	d.Stop()
	if n := d.Count("message dead-lettered", nil) + d.Count("message will be retried", nil); n != 0 {
		t.Errorf("the tour's messages were retried or dead-lettered (%d)", n)
	}
}
