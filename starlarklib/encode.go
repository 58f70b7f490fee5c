package starlarklib

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"go.starlark.net/lib/json"
	startime "go.starlark.net/lib/time"
	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
	"gopkg.in/yaml.v3"
)

// Default content types of publish().
const (
	defaultBytesType = "application/octet-stream"
	defaultValueType = typeJSON
)

// encodePayload is publish()'s encoding of a payload: bytes are sent as
// they are (default application/octet-stream); any other value is encoded
// by the content type, default application/json (as json.encode writes
// it); a str under any type that symphony does not decode (text/plain,
// text/csv, application/xml, ...) is sent as its UTF-8 text.
func encodePayload(th *starlark.Thread, payload starlark.Value, contentType string) ([]byte, string, error) {
	if b, ok := payload.(starlark.Bytes); ok {
		if contentType == "" {
			contentType = defaultBytesType
		}
		return []byte(b), contentType, nil
	}
	if contentType == "" {
		contentType = defaultValueType
	}
	mt := mediaType(contentType)
	var (
		body []byte
		err  error
	)
	switch formatOf(mt) {
	case formatJSON:
		var s starlark.Value
		s, err = starlark.Call(th, json.Module.Members["encode"], starlark.Tuple{payload}, nil)
		if err == nil {
			body = []byte(s.(starlark.String))
		}
	case formatMsgpack:
		body, err = encodeMsgpack(payload)
	case formatYAML:
		body, err = encodeYAML(payload)
	default:
		s, ok := payload.(starlark.String)
		if !ok {
			return nil, "", fmt.Errorf("cannot encode a %s as %s: pass a str or bytes, or use application/json, application/x-msgpack or application/x-yaml", payload.Type(), mt)
		}
		body = []byte(s)
	}
	if err != nil {
		return nil, "", fmt.Errorf("encode payload as %s: %w", mt, err)
	}
	return body, contentType, nil
}

// encodeMsgpack writes v as msgpack, keeping the order of dict keys.
func encodeMsgpack(v starlark.Value) ([]byte, error) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	var write func(v starlark.Value, depth int) error
	write = func(v starlark.Value, depth int) error {
		if depth > maxDepth {
			return fmt.Errorf("nested more than %d levels (a cycle?)", maxDepth)
		}
		switch x := v.(type) {
		case starlark.NoneType:
			return enc.EncodeNil()
		case starlark.Bool:
			return enc.EncodeBool(bool(x))
		case starlark.Int:
			if i, ok := x.Int64(); ok {
				return enc.EncodeInt(i)
			}
			if u, ok := x.Uint64(); ok {
				return enc.EncodeUint(u)
			}
			return fmt.Errorf("int %s does not fit in 64 bits", x)
		case starlark.Float:
			return enc.EncodeFloat64(float64(x))
		case starlark.String:
			return enc.EncodeString(string(x))
		case starlark.Bytes:
			return enc.EncodeBytes([]byte(x))
		case startime.Time:
			return enc.EncodeTime(time.Time(x))
		case startime.Duration:
			return enc.EncodeString(time.Duration(x).String())
		case starlark.IterableMapping:
			items := x.Items()
			if err := enc.EncodeMapLen(len(items)); err != nil {
				return err
			}
			for _, kv := range items {
				if err := write(kv[0], depth+1); err != nil {
					return err
				}
				if err := write(kv[1], depth+1); err != nil {
					return err
				}
			}
			return nil
		case *starlarkstruct.Struct:
			if err := enc.EncodeMapLen(x.Len()); err != nil {
				return err
			}
			for name, fv := range x.Entries() {
				if err := enc.EncodeString(name); err != nil {
					return err
				}
				if err := write(fv, depth+1); err != nil {
					return err
				}
			}
			return nil
		case starlark.Indexable:
			if err := enc.EncodeArrayLen(x.Len()); err != nil {
				return err
			}
			for i := range x.Len() {
				if err := write(x.Index(i), depth+1); err != nil {
					return err
				}
			}
			return nil
		}
		return fmt.Errorf("cannot encode a %s", v.Type())
	}
	if err := write(v, 0); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// encodeYAML writes v as a YAML document, keeping the order of dict keys.
func encodeYAML(v starlark.Value) ([]byte, error) {
	var node func(v starlark.Value, depth int) (*yaml.Node, error)
	node = func(v starlark.Value, depth int) (*yaml.Node, error) {
		if depth > maxDepth {
			return nil, fmt.Errorf("nested more than %d levels (a cycle?)", maxDepth)
		}
		scalar := func(tag, value string) *yaml.Node {
			return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: value}
		}
		switch x := v.(type) {
		case starlark.NoneType:
			return scalar("!!null", "null"), nil
		case starlark.Bool:
			return scalar("!!bool", strconv.FormatBool(bool(x))), nil
		case starlark.Int:
			return scalar("!!int", x.String()), nil
		case starlark.Float:
			f := float64(x)
			switch {
			case math.IsNaN(f):
				return scalar("!!float", ".nan"), nil
			case math.IsInf(f, 1):
				return scalar("!!float", ".inf"), nil
			case math.IsInf(f, -1):
				return scalar("!!float", "-.inf"), nil
			}
			s := strconv.FormatFloat(f, 'g', -1, 64)
			if !strings.ContainsAny(s, ".eEn") {
				s += ".0" // stays a float when read back
			}
			return scalar("!!float", s), nil
		case starlark.String:
			n := scalar("!!str", string(x))
			// yaml.v3 writes line breaks and edge white space in block
			// or plain styles that do not always read back the same
			// ("\n" came back empty): quoted, they do.
			if strings.ContainsAny(string(x), "\n\r\t") || string(x) != strings.TrimSpace(string(x)) {
				n.Style = yaml.DoubleQuotedStyle
			}
			return n, nil
		case starlark.Bytes:
			return scalar("!!binary", base64.StdEncoding.EncodeToString([]byte(x))), nil
		case startime.Time:
			return scalar("!!timestamp", time.Time(x).Format(time.RFC3339Nano)), nil
		case startime.Duration:
			return scalar("!!str", time.Duration(x).String()), nil
		case starlark.IterableMapping:
			n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			for _, kv := range x.Items() {
				k, err := node(kv[0], depth+1)
				if err != nil {
					return nil, err
				}
				val, err := node(kv[1], depth+1)
				if err != nil {
					return nil, err
				}
				n.Content = append(n.Content, k, val)
			}
			return n, nil
		case *starlarkstruct.Struct:
			n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			for name, fv := range x.Entries() {
				val, err := node(fv, depth+1)
				if err != nil {
					return nil, err
				}
				n.Content = append(n.Content, scalar("!!str", name), val)
			}
			return n, nil
		case starlark.Indexable:
			n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
			for i := range x.Len() {
				val, err := node(x.Index(i), depth+1)
				if err != nil {
					return nil, err
				}
				n.Content = append(n.Content, val)
			}
			return n, nil
		}
		return nil, fmt.Errorf("cannot encode a %s", v.Type())
	}
	n, err := node(v, 0)
	if err != nil {
		return nil, err
	}
	return yaml.Marshal(n)
}
