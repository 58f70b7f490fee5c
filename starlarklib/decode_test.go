package starlarklib

import (
	"encoding/json"
	"runtime"
	"strings"
	"testing"
)

func TestDecodeJSON(t *testing.T) {
	t.Parallel()
	good := []struct{ in, repr string }{
		{`0`, `0`},
		{`-0`, `0`},
		{`-12`, `-12`},
		{`-123456789012345678901234567890`, `-123456789012345678901234567890`},
		{`9223372036854775807`, `9223372036854775807`},
		{`9223372036854775808`, `9223372036854775808`},
		{`1.5`, `1.5`},
		{`-1.5e3`, `-1500.0`},
		{`1E-2`, `0.01`},
		{`1e2`, `100.0`},
		{` [ ] `, `[]`},
		{`{ }`, `{}`},
		{`{"a":{"b":[{}]}}`, `{"a": {"b": [{}]}}`},
		{`{"k": 1, "k": 2}`, `{"k": 2}`},
		{`"a\"b\\c\/d\b\f\n\r\t"`, `"a\"b\\c/d\b\f\n\r\t"`},
		{`"\u00e9\u4e16"`, `"é世"`},
		{`"\ud83d\ude00"`, `"😀"`},
		{`"\ud83d"`, `"�"`},
		{`"\ud83dx"`, `"�x"`},
		{`"x\u0000y"`, `"x\x00y"`},
		{`"héllo"`, `"héllo"`},
		{`true`, `True`},
		{`[false, null]`, `[False, None]`},
	}
	for _, c := range good {
		v, err := decodeJSON([]byte(c.in))
		if err != nil {
			t.Errorf("decodeJSON(%s) = %v", c.in, err)
			continue
		}
		if v.String() != c.repr {
			t.Errorf("decodeJSON(%s) = %s, want %s", c.in, v, c.repr)
		}
		if !json.Valid([]byte(c.in)) {
			t.Errorf("test bug: %s is not valid JSON", c.in)
		}
	}

	bad := []struct{ in, msg string }{
		{`01`, "invalid character '1' after top-level value at offset 1"},
		{`-`, "unexpected end of JSON input at offset 1"},
		{`-a`, "invalid character 'a' in numeric literal at offset 1"},
		{`1.`, "unexpected end of JSON input at offset 2"},
		{`1.e3`, "invalid character 'e' after decimal point in numeric literal at offset 2"},
		{`1e`, "unexpected end of JSON input at offset 2"},
		{`1e+`, "unexpected end of JSON input at offset 3"},
		{`+1`, "invalid character '+' looking for beginning of value at offset 0"},
		{`.5`, "invalid character '.' looking for beginning of value at offset 0"},
		{`[1,]`, "invalid character ']' looking for beginning of value at offset 3"},
		{`[1 2]`, "invalid character '2' after array element at offset 3"},
		{`{"a" 1}`, "invalid character '1' after object key at offset 5"},
		{`{"a": 1,}`, "invalid character '}' looking for beginning of object key string at offset 8"},
		{`{"a": 1 "b": 2}`, `invalid character '"' after object key:value pair at offset 8`},
		{`{1: 2}`, "invalid character '1' looking for beginning of object key string at offset 1"},
		{`'a'`, `invalid character '\'' looking for beginning of value at offset 0`},
		{`"a`, "unexpected end of JSON input at offset 2"},
		{"\"a\tb\"", `invalid character '\t' in string literal at offset 2`},
		{`"\x"`, `invalid character 'x' in string escape code at offset 2`},
		{`"\u12"`, `invalid character 'u' in \u hexadecimal character escape at offset 2`},
		{`"\`, "unexpected end of JSON input at offset 2"},
		{`tru`, "unexpected end of JSON input at offset 3"},
		{`nul1`, "invalid character '1' in literal null (expecting 'l') at offset 3"},
		{`[]]`, "invalid character ']' after top-level value at offset 2"},
		{strings.Repeat("[", 2000), "nested more than 1000 levels"},
	}
	// Valid syntax, but no float holds it.
	if _, err := decodeJSON([]byte(`1e400`)); err == nil || !strings.Contains(err.Error(), "number 1e400") {
		t.Errorf("decodeJSON(1e400) = %v, want an out-of-range error", err)
	}
	for _, c := range bad {
		if json.Valid([]byte(c.in)) {
			t.Errorf("test bug: %s is valid JSON", c.in)
		}
		_, err := decodeJSON([]byte(c.in))
		if err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("decodeJSON(%.20s) = %v, want an error containing %q", c.in, err, c.msg)
		}
	}
}

// A msgpack string, bin or ext that says it is bigger than the payload is
// refused before anything is allocated for it: found by FuzzDecodeMsgpack,
// eight bytes that made the decoder allocate 3.3 GB.
func TestMsgpackLengthBeyondThePayload(t *testing.T) {
	for _, body := range []string{
		"\xde\x15\v\xc6\xd2\x14[\x80", // a map whose first key is a bin32 of 3.5 GB
		"\xdb\xff\xff\xff\xffabc",     // a str32 of 4 GB
		"\xc9\x7f\xff\xff\xff\x01",    // an ext32
	} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := decodeMsgpack([]byte(body))
		runtime.ReadMemStats(&after)
		if err == nil || !strings.Contains(err.Error(), "the payload has") {
			t.Errorf("%q: %v; want the length refused", body, err)
		}
		if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
			t.Errorf("%q: decoding allocated %d bytes", body, grew)
		}
	}
}
