package starlarklib

import (
	"encoding/hex"
	"fmt"
	"strings"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
)

// hexModule is hex: encode(data) gives lower-case hex digits (as Python's
// bytes.hex()), decode(text) the bytes (as bytes.fromhex; either case,
// surrounding space ignored).
func hexModule() *starlarkstruct.Module {
	return newModule("hex", map[string]builtinFunc{
		"encode": func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
			var data starlark.Value
			if err := starlark.UnpackArgs(b.Name(), args, kwargs, "data", &data); err != nil {
				return nil, err
			}
			raw, ok := dataOf(data)
			if !ok {
				return nil, fmt.Errorf("%s: got %s, want str or bytes", b.Name(), data.Type())
			}
			out := hex.EncodeToString(raw)
			if s, ok := data.(secretValue); ok {
				return secretValue{name: s.name, value: out}, nil
			}
			return starlark.String(out), nil
		},
		"decode": func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
			var text string
			if err := starlark.UnpackArgs(b.Name(), args, kwargs, "text", &text); err != nil {
				return nil, err
			}
			out, err := hex.DecodeString(strings.TrimSpace(text))
			if err != nil {
				return nil, fmt.Errorf("%s: not hex: %v", b.Name(), err)
			}
			return starlark.Bytes(out), nil
		},
	})
}
