package starlarklib

import (
	"cmp"
	"errors"
	"slices"
	"strconv"
	"strings"

	"go.starlark.net/resolve"
	"go.starlark.net/starlark"
	"go.starlark.net/syntax"
)

// Error is one problem found while loading task files, at a position in a
// script.
type Error struct {
	// Pos is file:line:col, or empty when the problem has no position (a
	// root that does not exist).
	Pos string
	// Msg says what is wrong and what to do about it.
	Msg string
}

func (e Error) Error() string {
	if e.Pos == "" {
		return e.Msg
	}
	return e.Pos + ": " + e.Msg
}

// Errors are all the problems found by one Load or LoadConfig, in the
// order the files were read.
type Errors []Error

// Error prints one problem per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// posMapper renders a position; the loader maps a call's '(' to the start
// of the call.
type posMapper func(syntax.Position) string

// sort orders errors by file, line and column, as a compiler lists them;
// errors without a position come first.
func (es Errors) sort() {
	slices.SortStableFunc(es, func(a, b Error) int {
		af, al, ac := splitPos(a.Pos)
		bf, bl, bc := splitPos(b.Pos)
		return cmp.Or(cmp.Compare(af, bf), cmp.Compare(al, bl), cmp.Compare(ac, bc))
	})
}

// splitPos splits "file:line:col" (or just "file").
func splitPos(pos string) (file string, line, col int) {
	file = pos
	if i := strings.LastIndexByte(file, ':'); i >= 0 {
		if n, err := strconv.Atoi(file[i+1:]); err == nil {
			col, file = n, file[:i]
			if j := strings.LastIndexByte(file, ':'); j >= 0 {
				if m, err := strconv.Atoi(file[j+1:]); err == nil {
					line, file = m, file[:j]
				}
			}
		}
	}
	if line == 0 && col != 0 {
		line, col = col, 0
	}
	return file, line, col
}

// errorsOf turns what compiling or executing a file returned into
// positioned errors: a syntax error, every resolve error, or the innermost
// script position of a runtime error.
func errorsOf(err error, pos posMapper) Errors {
	var (
		syn  syntax.Error
		res  resolve.ErrorList
		eval *starlark.EvalError
		es   Errors
	)
	switch {
	case errors.As(err, &es):
		return es
	case errors.As(err, &syn):
		return Errors{{Pos: syn.Pos.String(), Msg: syn.Msg}}
	case errors.As(err, &res):
		out := make(Errors, len(res))
		for i, e := range res {
			out[i] = Error{Pos: e.Pos.String(), Msg: e.Msg}
		}
		return out
	case errors.As(err, &eval):
		return Errors{{Pos: scriptPos(eval.CallStack, pos), Msg: eval.Msg}}
	}
	return Errors{{Msg: err.Error()}}
}

// scriptPos is the position of the innermost frame that is in a script
// rather than in a builtin.
func scriptPos(stack starlark.CallStack, pos posMapper) string {
	for i := len(stack) - 1; i >= 0; i-- {
		if p := stack[i].Pos; p.Filename() != "<builtin>" {
			if pos != nil {
				return pos(p)
			}
			return p.String()
		}
	}
	return ""
}
