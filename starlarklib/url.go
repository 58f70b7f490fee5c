package starlarklib

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
)

// urlModule is url, after Python's urllib.parse: parse(text) → a struct
// (scheme, username, host, port, path, query, fragment, params),
// quote(text, safe = "/"), quote_plus(text, safe = ""), unquote(text),
// unquote_plus(text), encode(query) (urlencode: a dict, whose list
// values repeat the key) and join(base, ref) (urljoin).
func urlModule() *starlarkstruct.Module {
	return newModule("url", map[string]builtinFunc{
		"parse": func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
			var text string
			if err := starlark.UnpackArgs(b.Name(), args, kwargs, "text", &text); err != nil {
				return nil, err
			}
			u, err := url.Parse(text)
			if err != nil {
				return nil, fmt.Errorf("%s: %v", b.Name(), unwrapURLError(err))
			}
			var port starlark.Value = starlark.None
			if p := u.Port(); p != "" {
				n, _ := strconv.Atoi(p)
				port = starlark.MakeInt(n)
			}
			params := starlark.NewDict(0)
			q := u.Query()
			keys := make([]string, 0, len(q))
			for k := range q {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, k := range keys {
				params.SetKey(starlark.String(k), starlark.String(q.Get(k)))
			}
			return starlarkstruct.FromStringDict(starlark.String("url"), starlark.StringDict{
				"scheme":   starlark.String(u.Scheme),
				"username": starlark.String(u.User.Username()),
				"host":     starlark.String(u.Hostname()),
				"port":     port,
				"path":     starlark.String(u.Path),
				"query":    starlark.String(u.RawQuery),
				"fragment": starlark.String(u.Fragment),
				"params":   params,
			}), nil
		},
		"quote":        quoteBuiltin(false, "/"),
		"quote_plus":   quoteBuiltin(true, ""),
		"unquote":      unquoteBuiltin(false),
		"unquote_plus": unquoteBuiltin(true),
		"encode": func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
			var query starlark.IterableMapping
			if err := starlark.UnpackArgs(b.Name(), args, kwargs, "query", &query); err != nil {
				return nil, err
			}
			s, secrets, err := encodeQuery(query)
			if err != nil {
				return nil, fmt.Errorf("%s: %v", b.Name(), err)
			}
			// A query holding a secret's value is that secret still, so
			// that it prints as one wherever it goes next.
			if len(secrets) > 0 {
				return secretValue{name: strings.Join(secrets, "+"), value: s}, nil
			}
			return starlark.String(s), nil
		},
		"join": func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
			var base, ref string
			if err := starlark.UnpackArgs(b.Name(), args, kwargs, "base", &base, "ref", &ref); err != nil {
				return nil, err
			}
			bu, err := url.Parse(base)
			if err != nil {
				return nil, fmt.Errorf("%s: base: %v", b.Name(), unwrapURLError(err))
			}
			ru, err := url.Parse(ref)
			if err != nil {
				return nil, fmt.Errorf("%s: ref: %v", b.Name(), unwrapURLError(err))
			}
			return starlark.String(bu.ResolveReference(ru).String()), nil
		},
	})
}

func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return fmt.Errorf("%q: %v", ue.URL, ue.Err)
	}
	return err
}

// quoteBuiltin is Python's quote (plus: quote_plus, which writes spaces
// as +): letters, digits, "_.-~" and the characters of safe are kept,
// everything else percent-encoded as UTF-8.
func quoteBuiltin(plus bool, defSafe string) builtinFunc {
	return func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		var text starlark.Value
		safe := defSafe
		if err := starlark.UnpackArgs(b.Name(), args, kwargs, "text", &text, "safe?", &safe); err != nil {
			return nil, err
		}
		raw, ok := dataOf(text)
		if !ok {
			return nil, fmt.Errorf("%s: got %s, want str or bytes", b.Name(), text.Type())
		}
		out := quote(raw, safe, plus)
		if s, ok := text.(secretValue); ok {
			return secretValue{name: s.name, value: out}, nil
		}
		return starlark.String(out), nil
	}
}

func quote(raw []byte, safe string, plus bool) string {
	const hexDigits = "0123456789ABCDEF"
	var out strings.Builder
	for _, c := range raw {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', strings.IndexByte("_.-~", c) >= 0:
			out.WriteByte(c)
		case c < 0x80 && strings.IndexByte(safe, c) >= 0:
			out.WriteByte(c)
		case plus && c == ' ':
			out.WriteByte('+')
		default:
			out.WriteByte('%')
			out.WriteByte(hexDigits[c>>4])
			out.WriteByte(hexDigits[c&15])
		}
	}
	return out.String()
}

func unquoteBuiltin(plus bool) builtinFunc {
	return func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		var text string
		if err := starlark.UnpackArgs(b.Name(), args, kwargs, "text", &text); err != nil {
			return nil, err
		}
		var (
			out string
			err error
		)
		if plus {
			out, err = url.QueryUnescape(text)
		} else {
			out, err = url.PathUnescape(text)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %v", b.Name(), err)
		}
		return starlark.String(out), nil
	}
}

// encodeQuery is urlencode: keys in the dict's order; a list value
// repeats its key; None values are left out; numbers and bools are
// written as str() writes them (True, not true: as Python does). secrets
// names the secrets whose values it holds.
func encodeQuery(query starlark.IterableMapping) (q string, secrets []string, err error) {
	var parts []string
	add := func(k string, v starlark.Value) error {
		var s string
		switch x := v.(type) {
		case starlark.NoneType:
			return nil
		case starlark.Bytes:
			s = string(x)
		case secretValue:
			s = x.value
			secrets = append(secrets, x.name)
		case starlark.String:
			s = string(x)
		case starlark.Int, starlark.Float, starlark.Bool:
			s = x.String()
		default:
			return fmt.Errorf("value of %q is a %s: use str, int, float, bool or a list of them", k, v.Type())
		}
		parts = append(parts, url.QueryEscape(k)+"="+url.QueryEscape(s))
		return nil
	}
	for _, kv := range query.Items() {
		k, ok := kv[0].(starlark.String)
		if !ok {
			return "", nil, fmt.Errorf("key %s is a %s; keys must be strings", kv[0], kv[0].Type())
		}
		if list, ok := kv[1].(starlark.Indexable); ok && kv[1].Type() != "string" && kv[1].Type() != "bytes" {
			for i := range list.Len() {
				if err := add(string(k), list.Index(i)); err != nil {
					return "", nil, err
				}
			}
			continue
		}
		if err := add(string(k), kv[1]); err != nil {
			return "", nil, err
		}
	}
	return strings.Join(parts, "&"), secrets, nil
}
