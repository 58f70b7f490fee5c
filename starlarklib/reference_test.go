package starlarklib

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.starlark.net/starlark"

	"github.com/symphony-go/symphony/tasks"
)

// referencePage is the reference of everything a task file sees.
const referencePage = "../docs/tasks.md"

// The page's conventions, which the check reads:
//   - every predeclared name has a heading that names it in a code span:
//     "## `http`", "## `publish(...)`";
//   - every member of a module, and every field of the values the
//     builtins hand a task (meta, an http response, an exec result, a
//     re match, a scaler's stats), is the first cell of a table row, in
//     a code span that starts with its full name: "`http.get(url, ...)`"
//     for a function, "`math.pi`" for a value;
//   - every task() and config() argument is the first cell of a row,
//     "| `prefetch` | ...", in the section whose heading names
//     "`task(" or "`config(".

// described are the values a task gets from builtins whose fields the
// page must document, under the names the page gives them.
func described() map[string]starlark.HasAttrs {
	return map[string]starlark.HasAttrs{
		"meta":     newMeta(&tasks.Delivery{}, &tasks.Spec{}),
		"response": responseValue(&HTTPResponse{}).(starlark.HasAttrs),
		"result":   resultValue(&ExecResult{}).(starlark.HasAttrs),
		"match":    &reMatch{loc: []int{0, 0}},
		"stats":    statsValue(tasks.Stats{}).(starlark.HasAttrs),
		"tx":       &sqlTxValue{},
	}
}

// reference is the page, read.
type reference struct {
	lines []string
	// heading[i] is the level of line i if it is a heading, else 0; lines
	// in fenced code are never headings.
	heading []int
}

func readReference(text string) *reference {
	r := &reference{lines: strings.Split(text, "\n")}
	r.heading = make([]int, len(r.lines))
	fenced := false
	for i, l := range r.lines {
		if strings.HasPrefix(l, "```") {
			fenced = !fenced
			continue
		}
		if !fenced && strings.HasPrefix(l, "#") {
			r.heading[i] = len(l) - len(strings.TrimLeft(l, "#"))
		}
	}
	return r
}

// headed tells whether a heading names name in a code span, as `name` or
// `name(...)`.
func (r *reference) headed(name string) bool {
	for i, l := range r.lines {
		if r.heading[i] > 0 && (strings.Contains(l, "`"+name+"`") || strings.Contains(l, "`"+name+"(")) {
			return true
		}
	}
	return false
}

// section returns the lines under the first heading that contains marker,
// up to the next heading of the same or a higher level.
func (r *reference) section(marker string) []string {
	for i, l := range r.lines {
		if r.heading[i] == 0 || !strings.Contains(l, marker) {
			continue
		}
		end := i + 1
		for end < len(r.lines) && (r.heading[end] == 0 || r.heading[end] > r.heading[i]) {
			end++
		}
		return r.lines[i+1 : end]
	}
	return nil
}

var codeSpan = regexp.MustCompile("`([^`]+)`")

// firstCells returns the code spans of the first cell of every table row
// among lines.
func firstCells(lines []string) []string {
	var out []string
	for _, l := range lines {
		if !strings.HasPrefix(l, "|") {
			continue
		}
		cell, _, _ := strings.Cut(l[1:], "|")
		for _, m := range codeSpan.FindAllStringSubmatch(cell, -1) {
			out = append(out, m[1])
		}
	}
	return out
}

// rowNames returns the names the first cells of lines give: the code
// span up to any "(" or " " ("http.get(url)" → "http.get").
func rowNames(lines []string) []string {
	var out []string
	for _, c := range firstCells(lines) {
		name, _, _ := strings.Cut(c, "(")
		name, _, _ = strings.Cut(name, " ")
		out = append(out, name)
	}
	return out
}

// checkReference returns what the page fails to document, and what it
// documents that does not exist, each as an instruction to fix it.
func checkReference(text string) []string {
	r := readReference(text)
	var problems []string
	rows := rowNames(r.lines)

	members := map[string]starlark.HasAttrs{}
	pre := predeclared()
	names := pre.Keys()
	slices.Sort(names)
	for _, name := range names {
		v := pre[name]
		what := "## `" + name + "`"
		if _, ok := v.(*starlark.Builtin); ok {
			what = "## `" + name + "(...)`"
		}
		if !r.headed(name) {
			problems = append(problems, fmt.Sprintf("%s: a heading naming it, such as %q, with what it is, its arguments (name, type, default) and its errors",
				name, what))
		}
		if h, ok := v.(starlark.HasAttrs); ok && isModule(v) {
			members[name] = h
		}
	}
	for prefix, h := range described() {
		members[prefix] = h
	}
	prefixes := make([]string, 0, len(members))
	for p := range members {
		prefixes = append(prefixes, p)
	}
	slices.Sort(prefixes)
	for _, p := range prefixes {
		h := members[p]
		for _, m := range h.AttrNames() {
			full := p + "." + m
			v, err := h.Attr(m)
			cell := "`" + full + "`"
			if _, ok := v.(starlark.Callable); ok || err != nil {
				cell = "`" + full + "(...)`"
			}
			if !slices.Contains(rows, full) {
				problems = append(problems, fmt.Sprintf("%s: a table row whose first cell is %s (its arguments with their types and defaults, what it gives back, its errors; how it differs from Python's), under the heading of `%s`",
					full, cell, p))
			}
		}
	}
	// The other way round: a row that names a member there is not.
	for _, name := range rows {
		p, m, ok := strings.Cut(name, ".")
		h := members[p]
		if ok && h != nil && !slices.Contains(h.AttrNames(), m) {
			problems = append(problems, fmt.Sprintf("%s: documented, but %s has no member %s: remove its row or fix its name", name, p, m))
		}
	}

	args := func(fn string, params []string) {
		marker := "`" + fn + "("
		sec := r.section(marker)
		if sec == nil {
			problems = append(problems, fmt.Sprintf("%s(): a section with a heading such as \"## `%s(...)`\" and a table with a row per argument", fn, fn))
		}
		given := rowNames(sec)
		for _, a := range params {
			if !slices.Contains(given, a) {
				problems = append(problems, fmt.Sprintf("%s(%s): a row \"| `%s` | type | default | meaning and errors |\" in the table under the heading of `%s(...)`",
					fn, a, a, fn))
			}
		}
		for _, a := range given {
			if !slices.Contains(params, a) {
				problems = append(problems, fmt.Sprintf("%s(%s): documented, but %s() takes no argument %s: remove its row or fix its name", fn, a, fn, a))
			}
		}
	}
	args("task", taskParams())
	config := make([]string, 0, len(configParams()))
	for k := range configParams() {
		config = append(config, k)
	}
	slices.Sort(config)
	args("config", config)
	return problems
}

// TestReferenceDocumentsEveryBuiltin keeps docs/tasks.md from drifting:
// every name a task file sees, every member and field, every task() and
// config() argument must be on it, and nothing that does not exist.
func TestReferenceDocumentsEveryBuiltin(t *testing.T) {
	text, err := os.ReadFile(referencePage)
	if err != nil {
		t.Fatal(err)
	}
	if problems := checkReference(string(text)); len(problems) > 0 {
		t.Errorf("docs/tasks.md is out of step with what task files see; fix each of these in docs/tasks.md:\n  - %s",
			strings.Join(problems, "\n  - "))
	}
}

// TestReferenceCheckNotices shows that the check fails: the page with
// some entries taken out, or one added that does not exist.
func TestReferenceCheckNotices(t *testing.T) {
	text, err := os.ReadFile(referencePage)
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, l := range strings.Split(string(text), "\n") {
		if strings.HasPrefix(l, "| `http.head(") || strings.HasPrefix(l, "| `prefetch` |") ||
			strings.HasPrefix(l, "| `meta.attempt` |") || strings.HasPrefix(l, "## `uuid`") {
			continue
		}
		kept = append(kept, l)
	}
	kept = append(kept, "", "| `http.gett(url)` | a typo |")
	problems := strings.Join(checkReference(strings.Join(kept, "\n")), "\n")
	for _, want := range []string{"http.head:", "task(prefetch):", "meta.attempt:", "uuid: a heading", "http.gett: documented"} {
		if !strings.Contains(problems, want) {
			t.Errorf("the check did not report %q; it reported:\n%s", want, problems)
		}
	}
}
