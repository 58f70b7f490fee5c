package starlarklib

import (
	"encoding/base64"
	"fmt"
	"strings"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
)

// base64Module is base64: encode(data) and decode(text) with the standard
// alphabet, urlsafe_encode and urlsafe_decode with the URL one (as
// Python's b64encode and urlsafe_b64encode). Encoding writes padding;
// decoding accepts text with or without it. Encoding a secret gives a
// secret ("Basic " + base64.encode(user + ":" + secret("PASSWORD"))).
func base64Module() *starlarkstruct.Module {
	return newModule("base64", map[string]builtinFunc{
		"encode":         base64Encode(base64.StdEncoding),
		"decode":         base64Decode(base64.StdEncoding, base64.RawStdEncoding),
		"urlsafe_encode": base64Encode(base64.URLEncoding),
		"urlsafe_decode": base64Decode(base64.URLEncoding, base64.RawURLEncoding),
	})
}

func base64Encode(enc *base64.Encoding) builtinFunc {
	return func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		var data starlark.Value
		if err := starlark.UnpackArgs(b.Name(), args, kwargs, "data", &data); err != nil {
			return nil, err
		}
		raw, ok := dataOf(data)
		if !ok {
			return nil, fmt.Errorf("%s: got %s, want str or bytes", b.Name(), data.Type())
		}
		out := enc.EncodeToString(raw)
		if s, ok := data.(secretValue); ok {
			return secretValue{name: s.name, value: out}, nil
		}
		return starlark.String(out), nil
	}
}

func base64Decode(padded, raw *base64.Encoding) builtinFunc {
	return func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		var data starlark.Value
		if err := starlark.UnpackArgs(b.Name(), args, kwargs, "data", &data); err != nil {
			return nil, err
		}
		text, ok := dataOf(data)
		if !ok {
			return nil, fmt.Errorf("%s: got %s, want str or bytes", b.Name(), data.Type())
		}
		s := strings.TrimRight(strings.TrimSpace(string(text)), "=")
		out, err := raw.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("%s: not valid base64: %v", b.Name(), err)
		}
		return starlark.Bytes(out), nil
	}
}
