package starlarklib

import (
	"fmt"
	"slices"
	"strings"

	"go.starlark.net/resolve"
	"go.starlark.net/starlark"
	"go.starlark.net/syntax"

	"github.com/symphony-go/symphony/tasks"
)

// What Load sees in a file's syntax, besides running it:
//   - a member of a predeclared module that does not exist (hash.sha265,
//     http.gett) is an error, as an undefined name is, rather than a
//     failure when the line first runs;
//   - a capability module (http, exec, file, sql) named in a function a
//     task runs, or in a function of the same file that it calls, needs
//     that module in the task's allow. Uses the syntax does not show (in
//     a loaded library, through a variable) are refused when they run.

// capRef is a use of a capability module in a file.
type capRef struct {
	module string
	pos    syntax.Position
}

// topLevel is one top-level statement: its extent, the globals it binds,
// and what it refers to.
type topLevel struct {
	start, end syntax.Position
	binds      []string
	caps       []capRef
	globals    []string
}

// fileRefs is what a file's top-level statements refer to.
type fileRefs struct {
	stmts []topLevel
}

// analyze checks members of predeclared modules and collects the
// references of each top-level statement. f must have been resolved.
func analyze(f *syntax.File, predeclared starlark.StringDict) (*fileRefs, resolve.ErrorList) {
	var errs resolve.ErrorList
	refs := &fileRefs{}
	for _, stmt := range f.Stmts {
		start, end := syntax.Start(stmt), syntax.End(stmt)
		tl := topLevel{start: start, end: end}
		switch s := stmt.(type) {
		case *syntax.DefStmt:
			tl.binds = append(tl.binds, s.Name.Name)
		case *syntax.AssignStmt:
			syntax.Walk(s.LHS, func(n syntax.Node) bool {
				if id, ok := n.(*syntax.Ident); ok {
					tl.binds = append(tl.binds, id.Name)
				}
				return true
			})
		}
		syntax.Walk(stmt, func(n syntax.Node) bool {
			switch n := n.(type) {
			case *syntax.DotExpr:
				id, ok := n.X.(*syntax.Ident)
				if !ok || scopeOf(id) != resolve.Predeclared {
					return true
				}
				if m, ok := predeclared[id.Name].(starlark.HasAttrs); ok && isModule(m) {
					if !slices.Contains(m.AttrNames(), n.Name.Name) {
						errs = append(errs, resolve.Error{Pos: n.Name.NamePos, Msg: unknownMember(id.Name, n.Name.Name, m.AttrNames())})
					}
				}
			case *syntax.Ident:
				switch scopeOf(n) {
				case resolve.Predeclared:
					if slices.Contains(tasks.Capabilities(), n.Name) {
						tl.caps = append(tl.caps, capRef{module: n.Name, pos: n.NamePos})
					}
				case resolve.Global:
					tl.globals = append(tl.globals, n.Name)
				}
			}
			return true
		})
		refs.stmts = append(refs.stmts, tl)
	}
	return refs, errs
}

func scopeOf(id *syntax.Ident) resolve.Scope {
	if b, ok := id.Binding.(*resolve.Binding); ok {
		return b.Scope
	}
	return resolve.Undefined
}

// isModule tells the predeclared values whose members are fixed.
func isModule(v starlark.Value) bool {
	return v.Type() == "module" || v.Type() == "struct"
}

func unknownMember(module, name string, members []string) string {
	msg := fmt.Sprintf("%s has no member %s", module, name)
	if n := nearest(name, members); n != "" {
		return msg + fmt.Sprintf(" (did you mean %s.%s?)", module, n)
	}
	return msg + fmt.Sprintf("; its members are %s", strings.Join(members, ", "))
}

// capabilities returns the capability modules the function fn (defined in
// this file) uses, directly or through the file's other functions, each
// with the position of its first use.
func (r *fileRefs) capabilities(fn starlark.Callable) []capRef {
	f, ok := fn.(*starlark.Function)
	if r == nil || !ok {
		return nil
	}
	pos := f.Position()
	first := -1
	for i, tl := range r.stmts {
		if tl.start.Filename() == pos.Filename() && within(pos, tl.start, tl.end) {
			first = i
			break
		}
	}
	if first < 0 {
		return nil // defined in another file: checked when it runs
	}
	seen := map[int]bool{}
	var out []capRef
	queue := []int{first}
	for len(queue) > 0 {
		i := queue[0]
		queue = queue[1:]
		if seen[i] {
			continue
		}
		seen[i] = true
		for _, c := range r.stmts[i].caps {
			if !slices.ContainsFunc(out, func(o capRef) bool { return o.module == c.module }) {
				out = append(out, c)
			}
		}
		for _, g := range r.stmts[i].globals {
			for j, tl := range r.stmts {
				if slices.Contains(tl.binds, g) {
					queue = append(queue, j)
				}
			}
		}
	}
	return out
}

func within(p, start, end syntax.Position) bool {
	after := p.Line > start.Line || (p.Line == start.Line && p.Col >= start.Col)
	before := p.Line < end.Line || (p.Line == end.Line && p.Col <= end.Col)
	return after && before
}

// checkGrants reports every capability a task's functions use visibly
// without the grant.
func (d *taskDef) checkGrants(refs *fileRefs, pos posMapper) Errors {
	fns := []starlark.Callable{d.work}
	for _, r := range d.routes {
		fns = append(fns, r.fn)
	}
	var errs Errors
	reported := map[string]bool{}
	for _, fn := range fns {
		if fn == nil {
			continue
		}
		for _, c := range refs.capabilities(fn) {
			if reported[c.module] || slices.Contains(d.spec.Allow, c.module) {
				continue
			}
			reported[c.module] = true
			errs = append(errs, Error{Pos: pos(c.pos), Msg: fmt.Sprintf(
				"task %s uses %s here, but its allow does not grant it: add allow = [%q] to its task() at %s",
				d.spec.Name, c.module, c.module, d.spec.Pos)})
		}
	}
	return errs
}
