package starlarklib

import (
	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
)

// builtinFunc is the Go signature of a builtin.
type builtinFunc = func(*starlark.Thread, *starlark.Builtin, starlark.Tuple, []starlark.Tuple) (starlark.Value, error)

// newModule makes a module whose members are the builtins fns, each
// named module.function in errors.
func newModule(name string, fns map[string]builtinFunc) *starlarkstruct.Module {
	m := &starlarkstruct.Module{Name: name, Members: starlark.StringDict{}}
	for fn, impl := range fns {
		m.Members[fn] = starlark.NewBuiltin(name+"."+fn, impl)
	}
	return m
}
