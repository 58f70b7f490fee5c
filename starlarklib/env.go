package starlarklib

import (
	"go.starlark.net/starlark"
)

// envBuiltin is env(name, default = None): the value of an environment
// variable, or default when it is not set.
func envBuiltin(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var (
		name string
		def  starlark.Value = starlark.None
	)
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "name", &name, "default?", &def); err != nil {
		return nil, err
	}
	lookup := stateOf(th).lookupEnv()
	if v, ok := lookup(name); ok {
		return starlark.String(v), nil
	}
	return def, nil
}
