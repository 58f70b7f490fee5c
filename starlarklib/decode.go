package starlarklib

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
	startime "go.starlark.net/lib/time"
	"go.starlark.net/starlark"
	"gopkg.in/yaml.v3"

	"github.com/symphony-go/symphony/tasks"
)

// mediaType is a content type without its parameters, in lower case:
// "Application/JSON; charset=utf-8" is "application/json".
func mediaType(contentType string) string {
	mt, _, _ := strings.Cut(contentType, ";")
	return strings.ToLower(strings.TrimSpace(mt))
}

// Content types the handler decodes (SPEC §3); anything else arrives as
// bytes.
const (
	typeJSON    = "application/json"
	typeMsgpack = "application/x-msgpack"
	typeYAML    = "application/x-yaml"
)

// format is how a media type's payload is encoded.
type format int

const (
	formatBytes format = iota
	formatJSON
	formatMsgpack
	formatYAML
	formatText
)

// formatOf maps a media type (no parameters, lower case) to its format:
// JSON for application/json, text/javascript and any structured syntax
// suffix +json (application/vnd.api+json); msgpack for application/msgpack
// and application/x-msgpack; YAML for application/yaml, application/x-yaml,
// text/yaml and text/x-yaml; text for the other text/* types; bytes else.
func formatOf(mt string) format {
	switch mt {
	case typeJSON, "text/javascript":
		return formatJSON
	case typeMsgpack, "application/msgpack":
		return formatMsgpack
	case typeYAML, "application/yaml", "text/yaml", "text/x-yaml":
		return formatYAML
	}
	switch {
	case strings.HasSuffix(mt, "+json"):
		return formatJSON
	case strings.HasPrefix(mt, "text/"):
		return formatText
	}
	return formatBytes
}

// IsJSON reports whether a media type (no parameters) is one a handler
// gets decoded as JSON.
func IsJSON(mediaType string) bool { return formatOf(mediaType) == formatJSON }

// CheckPayload decodes a payload as the daemon's handlers will, with the
// same limits, and returns the error they would meet: symphony publish
// refuses what a task would dead-letter with reason decode.
func CheckPayload(contentType string, body []byte) error {
	_, err := decodePayload(contentType, body)
	return err
}

// decodePayload turns a delivery's body into the value the handler gets:
// structured types decoded, text/* as a str, anything else as bytes. An
// empty body of a structured type is None. An error wraps tasks.ErrDecode.
func decodePayload(contentType string, body []byte) (starlark.Value, error) {
	mt := mediaType(contentType)
	f := formatOf(mt)
	switch f {
	case formatBytes:
		return starlark.Bytes(body), nil
	case formatText:
		return starlark.String(body), nil
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return starlark.None, nil
	}
	var (
		v   starlark.Value
		err error
	)
	switch f {
	case formatJSON:
		v, err = decodeJSON(body)
	case formatMsgpack:
		v, err = decodeMsgpack(body)
	case formatYAML:
		v, err = decodeYAML(body)
	}
	if err != nil {
		return nil, fmt.Errorf("decode %s payload: %v: %w", mt, err, tasks.ErrDecode)
	}
	return v, nil
}

// decodeJSON decodes one JSON value (RFC 8259), keeping the order of
// object keys and the exact value of big integers. It is a small
// recursive-descent parser: encoding/json's token API is several times
// slower on large payloads.
func decodeJSON(body []byte) (starlark.Value, error) {
	p := &jsonParser{b: body}
	v, err := p.value(0)
	if err != nil {
		return nil, err
	}
	p.space()
	if p.i < len(p.b) {
		return nil, p.unexpected("after top-level value")
	}
	return v, nil
}

type jsonParser struct {
	b []byte
	i int
}

func (p *jsonParser) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// unexpected reports the byte at p.i, or the end of the input.
func (p *jsonParser) unexpected(context string) error {
	if p.i >= len(p.b) {
		return fmt.Errorf("unexpected end of JSON input at offset %d", p.i)
	}
	c := p.b[p.i]
	q := strconv.Quote(string(rune(c)))
	switch c {
	case '\'':
		q = `\'`
	case '"':
		q = `"`
	default:
		q = q[1 : len(q)-1]
	}
	return fmt.Errorf("invalid character '%s' %s at offset %d", q, context, p.i)
}

func (p *jsonParser) value(depth int) (starlark.Value, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("nested more than %d levels at offset %d", maxDepth, p.i)
	}
	p.space()
	if p.i >= len(p.b) {
		return nil, p.unexpected("")
	}
	switch c := p.b[p.i]; {
	case c == '{':
		p.i++
		d := starlark.NewDict(0)
		p.space()
		if p.i < len(p.b) && p.b[p.i] == '}' {
			p.i++
			return d, nil
		}
		for {
			p.space()
			if p.i >= len(p.b) || p.b[p.i] != '"' {
				return nil, p.unexpected("looking for beginning of object key string")
			}
			k, err := p.str()
			if err != nil {
				return nil, err
			}
			p.space()
			if p.i >= len(p.b) || p.b[p.i] != ':' {
				return nil, p.unexpected("after object key")
			}
			p.i++
			v, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			if err := d.SetKey(k, v); err != nil {
				return nil, err
			}
			p.space()
			if p.i < len(p.b) && p.b[p.i] == ',' {
				p.i++
				continue
			}
			if p.i < len(p.b) && p.b[p.i] == '}' {
				p.i++
				return d, nil
			}
			return nil, p.unexpected("after object key:value pair")
		}
	case c == '[':
		p.i++
		var l []starlark.Value
		p.space()
		if p.i < len(p.b) && p.b[p.i] == ']' {
			p.i++
			return starlark.NewList(l), nil
		}
		for {
			v, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			l = append(l, v)
			p.space()
			if p.i < len(p.b) && p.b[p.i] == ',' {
				p.i++
				continue
			}
			if p.i < len(p.b) && p.b[p.i] == ']' {
				p.i++
				return starlark.NewList(l), nil
			}
			return nil, p.unexpected("after array element")
		}
	case c == '"':
		return p.str()
	case c == 't':
		return p.literal("true", starlark.True)
	case c == 'f':
		return p.literal("false", starlark.False)
	case c == 'n':
		return p.literal("null", starlark.None)
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	}
	return nil, p.unexpected("looking for beginning of value")
}

func (p *jsonParser) literal(word string, v starlark.Value) (starlark.Value, error) {
	for j := range len(word) {
		if p.i >= len(p.b) || p.b[p.i] != word[j] {
			return nil, p.unexpected(fmt.Sprintf("in literal %s (expecting '%c')", word, word[j]))
		}
		p.i++
	}
	return v, nil
}

// number reads -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?.
func (p *jsonParser) number() (starlark.Value, error) {
	start := p.i
	digits := func() int {
		n := 0
		for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	if p.b[p.i] == '-' {
		p.i++
	}
	switch {
	case p.i < len(p.b) && p.b[p.i] == '0':
		p.i++
	case digits() == 0:
		return nil, p.unexpected("in numeric literal")
	}
	if p.i < len(p.b) && p.b[p.i] == '.' {
		p.i++
		if digits() == 0 {
			return nil, p.unexpected("after decimal point in numeric literal")
		}
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.i++
		if p.i < len(p.b) && (p.b[p.i] == '+' || p.b[p.i] == '-') {
			p.i++
		}
		if digits() == 0 {
			return nil, p.unexpected("in exponent of numeric literal")
		}
	}
	v, err := numberValue(string(p.b[start:p.i]))
	if err != nil {
		return nil, fmt.Errorf("%v at offset %d", err, start)
	}
	return v, nil
}

// str reads a string; p.b[p.i] is its opening quote.
func (p *jsonParser) str() (starlark.Value, error) {
	p.i++
	start := p.i
	for p.i < len(p.b) {
		switch c := p.b[p.i]; {
		case c == '"':
			s := string(p.b[start:p.i])
			p.i++
			return starlark.String(s), nil
		case c == '\\':
			return p.escaped(start)
		case c < 0x20:
			return nil, p.unexpected("in string literal")
		}
		p.i++
	}
	return nil, p.unexpected("")
}

// escaped reads the rest of a string that has escapes, from start.
func (p *jsonParser) escaped(start int) (starlark.Value, error) {
	var sb strings.Builder
	sb.Write(p.b[start:p.i])
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			return starlark.String(sb.String()), nil
		case c < 0x20:
			return nil, p.unexpected("in string literal")
		case c != '\\':
			sb.WriteByte(c)
			p.i++
			continue
		}
		p.i++
		if p.i >= len(p.b) {
			break
		}
		switch e := p.b[p.i]; e {
		case '"', '\\', '/':
			sb.WriteByte(e)
		case 'b':
			sb.WriteByte('\b')
		case 'f':
			sb.WriteByte('\f')
		case 'n':
			sb.WriteByte('\n')
		case 'r':
			sb.WriteByte('\r')
		case 't':
			sb.WriteByte('\t')
		case 'u':
			r, ok := p.hex4(p.i + 1)
			if !ok {
				return nil, p.unexpected("in \\u hexadecimal character escape")
			}
			p.i += 4
			if utf16.IsSurrogate(r) {
				r2, ok := rune(-1), false
				if p.i+2 < len(p.b) && p.b[p.i+1] == '\\' && p.b[p.i+2] == 'u' {
					r2, ok = p.hex4(p.i + 3)
				}
				if dec := utf16.DecodeRune(r, r2); ok && dec != utf8.RuneError {
					r = dec
					p.i += 6
				} else {
					r = utf8.RuneError
				}
			}
			sb.WriteRune(r)
		default:
			return nil, p.unexpected("in string escape code")
		}
		p.i++
	}
	return nil, p.unexpected("")
}

// hex4 reads four hex digits at j.
func (p *jsonParser) hex4(j int) (rune, bool) {
	if j+4 > len(p.b) {
		return 0, false
	}
	n, err := strconv.ParseUint(string(p.b[j:j+4]), 16, 32)
	return rune(n), err == nil
}

// decodeMsgpack decodes one msgpack value, keeping the order of map keys.
// bin values become bytes, timestamps time values.
func decodeMsgpack(body []byte) (starlark.Value, error) {
	r := bytes.NewReader(body)
	dec := msgpack.NewDecoder(r)
	var value func(depth int) (starlark.Value, error)
	value = func(depth int) (starlark.Value, error) {
		if depth > maxDepth {
			return nil, fmt.Errorf("nested more than %d levels", maxDepth)
		}
		c, err := dec.PeekCode()
		if err != nil {
			return nil, err
		}
		// The decoder allocates what a string, bin or ext says it holds
		// before reading it: eight bytes could ask for gigabytes.
		at := len(body) - r.Len()
		if n, ok := msgpackSize(body[at:]); ok && n > r.Len() {
			return nil, fmt.Errorf("msgpack value at offset %d says it holds %d bytes; the payload has %d left", at, n, r.Len())
		}
		switch {
		case msgpcode.IsFixedMap(c) || c == msgpcode.Map16 || c == msgpcode.Map32:
			n, err := dec.DecodeMapLen()
			if err != nil {
				return nil, err
			}
			d := starlark.NewDict(min(n, 1024))
			for range n {
				k, err := value(depth + 1)
				if err != nil {
					return nil, err
				}
				v, err := value(depth + 1)
				if err != nil {
					return nil, err
				}
				if err := d.SetKey(k, v); err != nil {
					return nil, fmt.Errorf("map key: %w", err)
				}
			}
			return d, nil
		case msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32:
			n, err := dec.DecodeArrayLen()
			if err != nil {
				return nil, err
			}
			l := make([]starlark.Value, 0, min(n, 1024))
			for range n {
				v, err := value(depth + 1)
				if err != nil {
					return nil, err
				}
				l = append(l, v)
			}
			return starlark.NewList(l), nil
		}
		x, err := dec.DecodeInterface()
		if err != nil {
			return nil, err
		}
		switch x.(type) {
		case nil, bool, string, []byte, int8, int16, int32, int64, uint8, uint16, uint32, uint64, float32, float64, time.Time:
			return fromGo(x)
		}
		return nil, fmt.Errorf("unsupported msgpack value of type %T", x)
	}
	v, err := value(0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.PeekCode(); err != io.EOF {
		return nil, errors.New("unexpected data after the msgpack value")
	}
	return v, nil
}

// msgpackSize is the length a str, bin or ext value at the start of b
// declares (its payload, after the header), if it is one and b holds its
// header.
func msgpackSize(b []byte) (int, bool) {
	width := 0
	switch b[0] {
	case msgpcode.Str8, msgpcode.Bin8, msgpcode.Ext8:
		width = 1
	case msgpcode.Str16, msgpcode.Bin16, msgpcode.Ext16:
		width = 2
	case msgpcode.Str32, msgpcode.Bin32, msgpcode.Ext32:
		width = 4
	default:
		return 0, false
	}
	if len(b) < 1+width {
		return 0, false
	}
	n := 0
	for _, x := range b[1 : 1+width] {
		n = n<<8 | int(x)
	}
	return n, true
}

// decodeYAML decodes the first YAML document, keeping the order of
// mapping keys. Aliases are expanded within a budget, so that a small
// document cannot expand into billions of values.
func decodeYAML(body []byte) (starlark.Value, error) {
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(body)).Decode(&doc); err != nil {
		if err == io.EOF {
			return starlark.None, nil
		}
		return nil, err
	}
	budget := len(body) + 1000
	var value func(n *yaml.Node, depth int) (starlark.Value, error)
	value = func(n *yaml.Node, depth int) (starlark.Value, error) {
		if depth > maxDepth {
			return nil, fmt.Errorf("nested more than %d levels", maxDepth)
		}
		if budget--; budget < 0 {
			return nil, errors.New("aliases expand to too many values")
		}
		switch n.Kind {
		case yaml.DocumentNode:
			if len(n.Content) == 0 {
				return starlark.None, nil
			}
			return value(n.Content[0], depth)
		case yaml.AliasNode:
			return value(n.Alias, depth+1)
		case yaml.SequenceNode:
			l := make([]starlark.Value, 0, len(n.Content))
			for _, c := range n.Content {
				v, err := value(c, depth+1)
				if err != nil {
					return nil, err
				}
				l = append(l, v)
			}
			return starlark.NewList(l), nil
		case yaml.MappingNode:
			return yamlMapping(n, depth, value)
		case yaml.ScalarNode:
			if n.ShortTag() == "!!str" {
				return starlark.String(n.Value), nil
			}
			var x any
			if err := n.Decode(&x); err != nil {
				return nil, err
			}
			return fromGo(x)
		}
		return nil, fmt.Errorf("line %d: unsupported YAML node", n.Line)
	}
	return value(&doc, 0)
}

// yamlMapping converts a mapping. Merge keys (<<: *base) insert the merged
// mappings' entries first; the mapping's own keys override them.
func yamlMapping(n *yaml.Node, depth int, value func(*yaml.Node, int) (starlark.Value, error)) (starlark.Value, error) {
	d := starlark.NewDict(len(n.Content) / 2)
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			merges = append(merges, n.Content[i+1])
		}
	}
	for _, m := range merges {
		if m.Kind == yaml.AliasNode {
			m = m.Alias
		}
		srcs := []*yaml.Node{m}
		if m.Kind == yaml.SequenceNode {
			srcs = m.Content
		}
		for _, src := range srcs {
			v, err := value(src, depth+1)
			if err != nil {
				return nil, err
			}
			md, ok := v.(*starlark.Dict)
			if !ok {
				return nil, fmt.Errorf("line %d: a merge key needs a mapping", src.Line)
			}
			for _, kv := range md.Items() {
				if _, found, _ := d.Get(kv[0]); !found {
					if err := d.SetKey(kv[0], kv[1]); err != nil {
						return nil, err
					}
				}
			}
		}
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn := n.Content[i]
		if kn.Kind == yaml.ScalarNode && kn.ShortTag() == "!!merge" {
			continue
		}
		k, err := value(kn, depth+1)
		if err != nil {
			return nil, err
		}
		v, err := value(n.Content[i+1], depth+1)
		if err != nil {
			return nil, err
		}
		if err := d.SetKey(k, v); err != nil {
			return nil, fmt.Errorf("line %d: mapping key: %w", kn.Line, err)
		}
	}
	return d, nil
}

// timeValue is a delivery's timestamp for meta: a time value, or None
// when the message has none.
func timeValue(t time.Time) starlark.Value {
	if t.IsZero() {
		return starlark.None
	}
	return startime.Time(t)
}
