package starlarklib

import (
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	startime "go.starlark.net/lib/time"
	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
)

// maxDepth bounds the nesting of converted values (and so recursion on
// hostile input).
const maxDepth = 1000

// fromGo converts a header value as the broker delivers it (JSON-decoded
// with json.Number, or an AMQP table) to Starlark. Maps become dicts with
// sorted keys, so that a script sees the same order every time.
func fromGo(v any) (starlark.Value, error) { return fromGoDepth(v, 0) }

func fromGoDepth(v any, depth int) (starlark.Value, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("nested more than %d levels", maxDepth)
	}
	switch x := v.(type) {
	case nil:
		return starlark.None, nil
	case starlark.Value:
		return x, nil
	case bool:
		return starlark.Bool(x), nil
	case string:
		return starlark.String(x), nil
	case []byte:
		return starlark.Bytes(x), nil
	case json.Number:
		return numberValue(string(x))
	case int:
		return starlark.MakeInt(x), nil
	case int8:
		return starlark.MakeInt64(int64(x)), nil
	case int16:
		return starlark.MakeInt64(int64(x)), nil
	case int32:
		return starlark.MakeInt64(int64(x)), nil
	case int64:
		return starlark.MakeInt64(x), nil
	case uint:
		return starlark.MakeUint64(uint64(x)), nil
	case uint8:
		return starlark.MakeUint64(uint64(x)), nil
	case uint16:
		return starlark.MakeUint64(uint64(x)), nil
	case uint32:
		return starlark.MakeUint64(uint64(x)), nil
	case uint64:
		return starlark.MakeUint64(x), nil
	case *big.Int:
		return starlark.MakeBigInt(x), nil
	case float32:
		return starlark.Float(x), nil
	case float64:
		return starlark.Float(x), nil
	case time.Time:
		return startime.Time(x), nil
	case time.Duration:
		return startime.Duration(x), nil
	case []any:
		l := make([]starlark.Value, len(x))
		for i, e := range x {
			sv, err := fromGoDepth(e, depth+1)
			if err != nil {
				return nil, err
			}
			l[i] = sv
		}
		return starlark.NewList(l), nil
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		d := starlark.NewDict(len(x))
		for _, k := range keys {
			sv, err := fromGoDepth(x[k], depth+1)
			if err != nil {
				return nil, err
			}
			if err := d.SetKey(starlark.String(k), sv); err != nil {
				return nil, err
			}
		}
		return d, nil
	}
	// Named map and slice types, such as an AMQP table.
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Map:
		if rv.Type().Key().Kind() == reflect.String {
			m := make(map[string]any, rv.Len())
			for it := rv.MapRange(); it.Next(); {
				m[it.Key().String()] = it.Value().Interface()
			}
			return fromGoDepth(m, depth)
		}
	case reflect.Slice, reflect.Array:
		l := make([]any, rv.Len())
		for i := range l {
			l[i] = rv.Index(i).Interface()
		}
		return fromGoDepth(l, depth)
	}
	if s, ok := v.(fmt.Stringer); ok {
		return starlark.String(s.String()), nil
	}
	return starlark.String(fmt.Sprint(v)), nil
}

// numberValue converts a JSON number to an int (of any size) or a float.
func numberValue(s string) (starlark.Value, error) {
	if !strings.ContainsAny(s, ".eE") {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return starlark.MakeInt64(i), nil
		}
		var i big.Int
		if _, ok := i.SetString(s, 10); ok {
			return starlark.MakeBigInt(&i), nil
		}
	}
	var f float64
	if err := json.Unmarshal([]byte(s), &f); err != nil {
		return nil, fmt.Errorf("number %s: %w", s, err)
	}
	return starlark.Float(f), nil
}

// toGo converts a Starlark value to plain Go values that encoding/json
// writes faithfully: nil, bool, int64 or *big.Int, float64, string,
// []any and map[string]any (dict keys must be strings). Bytes are refused
// unless allowBytes, since JSON would turn them into base64.
func toGo(v starlark.Value, allowBytes bool) (any, error) {
	return toGoDepth(v, allowBytes, 0)
}

func toGoDepth(v starlark.Value, allowBytes bool, depth int) (any, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("nested more than %d levels (a cycle?)", maxDepth)
	}
	switch x := v.(type) {
	case starlark.NoneType:
		return nil, nil
	case starlark.Bool:
		return bool(x), nil
	case starlark.Int:
		if i, ok := x.Int64(); ok {
			return i, nil
		}
		return x.BigInt(), nil
	case starlark.Float:
		f := float64(x)
		if math.IsInf(f, 0) || math.IsNaN(f) {
			return nil, fmt.Errorf("cannot encode non-finite float %v", x)
		}
		return f, nil
	case starlark.String:
		return string(x), nil
	case secretValue:
		// What leaves through a conversion shows the placeholder only.
		return x.String(), nil
	case starlark.Bytes:
		if !allowBytes {
			return nil, fmt.Errorf("cannot encode bytes here: decode them to a string first")
		}
		return []byte(x), nil
	case startime.Time:
		return time.Time(x), nil
	case startime.Duration:
		return time.Duration(x).String(), nil
	case starlark.IterableMapping:
		m := map[string]any{}
		for _, kv := range x.Items() {
			k, ok := kv[0].(starlark.String)
			if !ok {
				return nil, fmt.Errorf("%s key %s is a %s; keys must be strings", x.Type(), kv[0], kv[0].Type())
			}
			g, err := toGoDepth(kv[1], allowBytes, depth+1)
			if err != nil {
				return nil, fmt.Errorf("in key %s: %w", k, err)
			}
			m[string(k)] = g
		}
		return m, nil
	case *starlarkstruct.Struct:
		m := map[string]any{}
		for name, fv := range x.Entries() {
			g, err := toGoDepth(fv, allowBytes, depth+1)
			if err != nil {
				return nil, fmt.Errorf("in field %s: %w", name, err)
			}
			m[name] = g
		}
		return m, nil
	case starlark.Iterable:
		var out []any
		iter := x.Iterate()
		defer iter.Done()
		var e starlark.Value
		for i := 0; iter.Next(&e); i++ {
			g, err := toGoDepth(e, allowBytes, depth+1)
			if err != nil {
				return nil, fmt.Errorf("at index %d: %w", i, err)
			}
			out = append(out, g)
		}
		if out == nil {
			out = []any{}
		}
		return out, nil
	}
	return nil, fmt.Errorf("cannot encode a %s", v.Type())
}
