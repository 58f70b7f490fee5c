package starlarklib

import (
	"fmt"

	"github.com/google/uuid"
	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
)

// uuidModule is uuid: v4() a random UUID, v7() a time-ordered one (RFC
// 9562: sorts by creation time, good as a database key), each as the
// usual 36-character lower-case string.
func uuidModule() *starlarkstruct.Module {
	gen := func(make func() (uuid.UUID, error)) builtinFunc {
		return func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
			if err := starlark.UnpackArgs(b.Name(), args, kwargs); err != nil {
				return nil, err
			}
			u, err := make()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", b.Name(), err)
			}
			return starlark.String(u.String()), nil
		}
	}
	return newModule("uuid", map[string]builtinFunc{
		"v4": gen(uuid.NewRandom),
		"v7": gen(uuid.NewV7),
	})
}
