package starlarklib

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"go.starlark.net/starlark"
)

// The fuzz targets of this package. Their seed corpora are in
// testdata/fuzz/<target>; .ci/fuzz runs each for a while.

// FuzzDecodeJSON holds the payload decoder to encoding/json: both accept
// a document or both refuse it, and what both accept decodes to the same
// values. Two differences are by design: integers of any size are exact
// (encoding/json needs UseNumber to keep them), and a string with bytes
// that are not UTF-8 keeps them (encoding/json replaces each with U+FFFD;
// the comparison does the same to ours).
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{
		`{"id": 7, "name": "Ada", "tags": ["a", "b"], "ok": true, "none": null}`,
		`[1, -0, 0.5, 1e3, -1.5E-7, 123456789012345678901234567890]`,
		`"\u00e9\ud83d\ude00\ud800x\\\/\b\f\n\r\t"`, `{"a":1,"a":2}`, ` [ ] `, `{}`, `01`, `1.`, `-`, `"\x"`, `[1,]`,
		`{"a" 1}`, `tru`, "\"\xff\"", `1e400`, `[[[[[[[[[[]]]]]]]]]]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := decodeJSON(data)
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		var want any
		jerr := dec.Decode(&want)
		if jerr == nil {
			if _, more := dec.Token(); more != io.EOF {
				jerr = errors.New("data after the value")
			}
		}
		switch {
		case err == nil && jerr != nil:
			t.Fatalf("decodeJSON accepted %q, which encoding/json refuses (%v): %v", data, jerr, v)
		case err != nil && jerr == nil:
			// Refused by design: nesting deeper than maxDepth, and
			// floats beyond float64's range.
			if strings.Contains(err.Error(), "nested more than") || strings.Contains(err.Error(), "cannot unmarshal number") {
				return
			}
			t.Fatalf("decodeJSON refused %q, which encoding/json accepts: %v", data, err)
		case err == nil:
			if diff := sameJSON(v, want, ""); diff != "" {
				t.Fatalf("decodeJSON(%q) differs from encoding/json: %s", data, diff)
			}
		}
	})
}

// sameJSON compares a decoded Starlark value with what encoding/json
// decoded (with UseNumber), and says where they differ.
func sameJSON(v starlark.Value, want any, at string) string {
	switch w := want.(type) {
	case nil:
		if v != starlark.None {
			return fmt.Sprintf("%s: %s, want None", at, v)
		}
	case bool:
		if v != starlark.Bool(w) {
			return fmt.Sprintf("%s: %s, want %v", at, v, w)
		}
	case string:
		s, ok := v.(starlark.String)
		if !ok || replaceInvalid(string(s)) != w {
			return fmt.Sprintf("%s: %s, want %q", at, v, w)
		}
	case json.Number:
		if !strings.ContainsAny(string(w), ".eE") {
			var n big.Int
			n.SetString(string(w), 10)
			i, ok := v.(starlark.Int)
			if !ok || i.BigInt().Cmp(&n) != 0 {
				return fmt.Sprintf("%s: %s, want the integer %s", at, v, w)
			}
			return ""
		}
		fw, err := strconv.ParseFloat(string(w), 64)
		if fv, ok := v.(starlark.Float); !ok || err != nil || float64(fv) != fw {
			return fmt.Sprintf("%s: %s, want the float %s", at, v, w)
		}
	case []any:
		l, ok := v.(*starlark.List)
		if !ok || l.Len() != len(w) {
			return fmt.Sprintf("%s: %s, want a list of %d", at, v, len(w))
		}
		for i, e := range w {
			if d := sameJSON(l.Index(i), e, fmt.Sprintf("%s[%d]", at, i)); d != "" {
				return d
			}
		}
	case map[string]any:
		d, ok := v.(*starlark.Dict)
		if !ok || d.Len() != len(w) {
			return fmt.Sprintf("%s: %s, want a dict of %d", at, v, len(w))
		}
		for _, kv := range d.Items() {
			k, ok := kv[0].(starlark.String)
			if !ok {
				return fmt.Sprintf("%s: key %s is not a string", at, kv[0])
			}
			e, found := w[replaceInvalid(string(k))]
			if !found {
				return fmt.Sprintf("%s: key %q is not in encoding/json's object", at, k)
			}
			if d := sameJSON(kv[1], e, at+"."+string(k)); d != "" {
				return d
			}
		}
	default:
		return fmt.Sprintf("%s: encoding/json gave a %T", at, want)
	}
	return ""
}

// replaceInvalid replaces each byte that is not part of valid UTF-8 with
// U+FFFD, as encoding/json does.
func replaceInvalid(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		b.WriteRune(r)
		i += n
	}
	return b.String()
}

// FuzzDecodeMsgpack: any input decodes or is refused, never a panic or a
// hang; what decodes encodes again to something that decodes to the same
// value.
func FuzzDecodeMsgpack(f *testing.F) {
	for _, seed := range [][]byte{
		{0x80}, {0x81, 0xa1, 'a', 0x01}, {0x93, 0x01, 0xc3, 0xc0}, {0xc4, 0x02, 0xff, 0x00},
		{0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0}, {0xd6, 0xff, 0, 0, 0, 1}, {0xdc, 0xff, 0xff}, {0xc1},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := decodeMsgpack(data)
		if err != nil {
			return
		}
		roundTrip(t, v, encodeMsgpack, decodeMsgpack, "msgpack")
	})
}

// FuzzDecodeYAML: as FuzzDecodeMsgpack, for YAML.
func FuzzDecodeYAML(f *testing.F) {
	for _, s := range []string{
		"a: 1\nb: [x, y]\n", "- 1\n- 2.5\n- true\n- null\n", "k: &a {x: 1}\nl: *a\n", "!!binary aGk=",
		"t: 2024-01-02T03:04:05Z\n", "? [a]\n: b\n", "a: b: c", "{", "0x1F", "1e400", "- !!float nan\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := decodeYAML(data)
		if err != nil {
			return
		}
		roundTrip(t, v, encodeYAML, decodeYAML, "YAML")
	})
}

// roundTrip encodes v and decodes it again: the same value, or an error
// that says v cannot be written in that format (a float that is not
// finite, a key that is not a string).
func roundTrip(t *testing.T, v starlark.Value, encode func(starlark.Value) ([]byte, error),
	decode func([]byte) (starlark.Value, error), format string) {
	t.Helper()
	b, err := encode(v)
	if err != nil {
		return
	}
	again, err := decode(b)
	if err != nil {
		t.Fatalf("%s of %s does not decode: %v\n%q", format, v, err, b)
	}
	if eq, err := starlark.Equal(v, again); err != nil || !eq {
		t.Fatalf("%s round trip changed %s into %s (%v)\n%q", format, v, again, err, b)
	}
}

// FuzzConvert: a value decoded from JSON survives the trip to Go (what
// handlers' results and headers go through) and back.
func FuzzConvert(f *testing.F) {
	for _, s := range []string{
		`{"id": 7, "n": [1, 2.5, "x", null, true, {"deep": [[]]}]}`, `123456789012345678901234567890`,
		`"é"`, `[]`, `{"b": 1, "a": 2}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := decodeJSON(data)
		if err != nil {
			return
		}
		g, err := toGo(v, false)
		if err != nil {
			t.Fatalf("toGo(%s): %v", v, err)
		}
		back, err := fromGo(g)
		if err != nil {
			t.Fatalf("fromGo(toGo(%s)): %v", v, err)
		}
		if eq, err := starlark.Equal(v, back); err != nil || !eq {
			t.Fatalf("Go round trip changed %s into %s (%v)", v, back, err)
		}
	})
}

// FuzzLoadTaskFile: any task file loads or fails with an error that names
// it, and never panics or runs forever.
func FuzzLoadTaskFile(f *testing.F) {
	for _, s := range []string{
		"task(subscribe_to = [\"a.#\"], work = lambda p, m: True)\n",
		"def work(p, m):\n    return True\ntask(name = \"x\", subscribe_to = [\"a\"], work = work, max_workers = 0)\n",
		"load(\"lib/missing.star\", \"x\")\n", "task(\n", "while True:\n    pass\n", "x = [0] * 1000\n",
		"task(subscribe_to = [\"a..b\"], work = None)\n", "def f():\n    return f()\nf()\n",
		"task(subscribe_to = [\"a\"], work = lambda p, m: True, queue_type = \"quorum\", persistent = False)\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		root := t.TempDir()
		if err := os.WriteFile(filepath.Join(root, "fuzzed.star"), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Load([]string{root}, Options{MaxLoadSteps: 100_000})
		if err != nil && !strings.Contains(err.Error(), "fuzzed.star") {
			t.Fatalf("loading %q failed with an error that names no file: %v", src, err)
		}
	})
}
