package starlarklib

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"slices"

	"go.starlark.net/starlark"
)

// hashes are the algorithms of the hash module, by name.
var hashes = map[string]func() hash.Hash{
	"md5":    md5.New,
	"sha1":   sha1.New,
	"sha256": sha256.New,
	"sha512": sha512.New,
}

// hashModule is hash: md5, sha1, sha256, sha512(data) give the hex digest
// of a str (its UTF-8), bytes or secret; hmac(algorithm, key, message) the
// hex HMAC (key and message may be secrets); compare_digest(a, b) compares
// two digests in constant time, as Python's hmac.compare_digest. hash
// stays callable as Starlark's own hash(x), which returns an int.
type hashModule struct {
	members  starlark.StringDict
	universe starlark.Callable
}

var (
	_ starlark.HasAttrs = (*hashModule)(nil)
	_ starlark.Callable = (*hashModule)(nil)
)

func newHashModule() *hashModule {
	m := &hashModule{members: starlark.StringDict{}, universe: starlark.Universe["hash"].(starlark.Callable)}
	for name, h := range hashes {
		m.members[name] = starlark.NewBuiltin("hash."+name, digest(h))
	}
	m.members["hmac"] = starlark.NewBuiltin("hash.hmac", hmacBuiltin)
	m.members["compare_digest"] = starlark.NewBuiltin("hash.compare_digest", compareDigest)
	m.members.Freeze()
	return m
}

func (m *hashModule) String() string        { return "<module hash>" }
func (m *hashModule) Type() string          { return "module" }
func (m *hashModule) Freeze()               {}
func (m *hashModule) Truth() starlark.Bool  { return true }
func (m *hashModule) Hash() (uint32, error) { return 0, errors.New("unhashable type: module") }
func (m *hashModule) Name() string          { return "hash" }
func (m *hashModule) Attr(name string) (starlark.Value, error) {
	return m.members[name], nil
}
func (m *hashModule) AttrNames() []string {
	names := m.members.Keys()
	slices.Sort(names)
	return names
}

// CallInternal is Starlark's hash(x).
func (m *hashModule) CallInternal(th *starlark.Thread, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	return starlark.Call(th, m.universe, args, kwargs)
}

func digest(h func() hash.Hash) builtinFunc {
	return func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		var data starlark.Value
		if err := starlark.UnpackArgs(b.Name(), args, kwargs, "data", &data); err != nil {
			return nil, err
		}
		raw, ok := dataOf(data)
		if !ok {
			return nil, fmt.Errorf("%s: got %s, want str or bytes", b.Name(), data.Type())
		}
		d := h()
		d.Write(raw)
		return starlark.String(hex.EncodeToString(d.Sum(nil))), nil
	}
}

func hmacBuiltin(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var (
		algorithm    string
		key, message starlark.Value
	)
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "algorithm", &algorithm, "key", &key, "message", &message); err != nil {
		return nil, err
	}
	h, ok := hashes[algorithm]
	if !ok {
		return nil, fmt.Errorf("%s: unknown algorithm %q: use %s", b.Name(), algorithm, quoteList(hashNames()))
	}
	k, ok := dataOf(key)
	if !ok {
		return nil, fmt.Errorf("%s: key: got %s, want str, bytes or a secret", b.Name(), key.Type())
	}
	msg, ok := dataOf(message)
	if !ok {
		return nil, fmt.Errorf("%s: message: got %s, want str or bytes", b.Name(), message.Type())
	}
	mac := hmac.New(h, k)
	mac.Write(msg)
	return starlark.String(hex.EncodeToString(mac.Sum(nil))), nil
}

func compareDigest(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var x, y starlark.Value
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "a", &x, "b", &y); err != nil {
		return nil, err
	}
	bx, ok1 := dataOf(x)
	by, ok2 := dataOf(y)
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("%s: got %s and %s, want str or bytes", b.Name(), x.Type(), y.Type())
	}
	return starlark.Bool(subtle.ConstantTimeCompare(bx, by) == 1), nil
}

func hashNames() []string {
	names := make([]string, 0, len(hashes))
	for n := range hashes {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
