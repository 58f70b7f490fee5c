package starlarklib

import (
	"fmt"
	"strings"

	"go.starlark.net/starlark"
)

// ownPrefix names the daemon's own settings (SYMPHONY_BROKER and the
// like), which may hold a broker password: env() does not show them.
const ownPrefix = "SYMPHONY_"

// envBuiltin is env(name, default = None): the value of an environment
// variable, or default when it is not set. A name of the daemon's own
// settings is an error rather than None, so that a task that relied on
// one learns why it gets nothing.
func envBuiltin(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var (
		name string
		def  starlark.Value = starlark.None
	)
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "name", &name, "default?", &def); err != nil {
		return nil, err
	}
	if strings.HasPrefix(strings.ToUpper(name), ownPrefix) {
		return nil, fmt.Errorf("%s: %s: the %s* variables are symphony's own settings, which task files do not see; "+
			"give the task a variable of its own", b.Name(), name, ownPrefix)
	}
	lookup := stateOf(th).lookupEnv()
	if v, ok := lookup(name); ok {
		return starlark.String(v), nil
	}
	return def, nil
}
