package starlarklib

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"go.starlark.net/starlark"

	startime "go.starlark.net/lib/time"
)

// argSet holds the keyword arguments of one task() or config() call and
// collects every problem with them, each at the call's position.
type argSet struct {
	fn, pos string
	vals    map[string]starlark.Value
	// nones are the arguments given as None, for the few whose None
	// means something else than the default (timeout = None: no timeout).
	nones map[string]bool
	errs  Errors
}

// newArgSet checks the names of the arguments against params. A None
// argument counts as not given, so that computed settings can fall back to
// the default.
func newArgSet(fn, pos string, params []string, args starlark.Tuple, kwargs []starlark.Tuple) *argSet {
	a := &argSet{fn: fn, pos: pos, vals: map[string]starlark.Value{}, nones: map[string]bool{}}
	if len(args) > 0 {
		a.errorf("takes keyword arguments only, as in %s(name = value, ...); got %d positional", fn, len(args))
	}
	for _, kv := range kwargs {
		name := string(kv[0].(starlark.String))
		if !slices.Contains(params, name) {
			if n := nearest(name, params); n != "" {
				a.errorf("unknown argument %s (did you mean %s?)", name, n)
			} else {
				a.errorf("unknown argument %s; the arguments are %s", name, strings.Join(params, ", "))
			}
			continue
		}
		if kv[1] == starlark.None {
			a.nones[name] = true
			continue
		}
		a.vals[name] = kv[1]
	}
	return a
}

func (a *argSet) errorf(format string, args ...any) {
	a.errs = append(a.errs, Error{Pos: a.pos, Msg: a.fn + ": " + fmt.Sprintf(format, args...)})
}

func (a *argSet) has(name string) bool { _, ok := a.vals[name]; return ok }

// wrongType reports an argument of the wrong type.
func (a *argSet) wrongType(name, want string, v starlark.Value) {
	a.errorf("%s must be %s, got %s", name, want, describe(v))
}

// describe names a value's type and shows it, shortened.
func describe(v starlark.Value) string {
	s := v.String()
	if len(s) > 40 {
		s = s[:37] + "..."
	}
	return v.Type() + " " + s
}

// str reads a string argument.
func (a *argSet) str(name string, dst *string) bool {
	v, ok := a.vals[name]
	if !ok {
		return false
	}
	s, ok := v.(starlark.String)
	if !ok {
		a.wrongType(name, "a string", v)
		return false
	}
	*dst = string(s)
	return true
}

// oneOf reads a string argument that must be one of choices.
func (a *argSet) oneOf(name string, dst *string, choices ...string) bool {
	var s string
	if !a.str(name, &s) {
		return false
	}
	if !slices.Contains(choices, s) {
		a.errorf("unknown %s %q: use %s", name, s, quoteList(choices))
		return false
	}
	*dst = s
	return true
}

// quoteList writes "a", "b" or "c".
func quoteList(xs []string) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = fmt.Sprintf("%q", x)
	}
	if len(q) == 1 {
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}

// integer reads an int argument of at least lo.
func (a *argSet) integer(name string, dst *int, lo int, why string) bool {
	v, ok := a.vals[name]
	if !ok {
		return false
	}
	n, ok := v.(starlark.Int)
	if !ok {
		a.wrongType(name, "an int", v)
		return false
	}
	i, ok := n.Int64()
	if !ok || i > math.MaxInt32 || i < math.MinInt32 {
		a.errorf("%s is out of range: %s", name, n)
		return false
	}
	if int(i) < lo {
		a.errorf("%s must be at least %d, got %d%s", name, lo, i, why)
		return false
	}
	*dst = int(i)
	return true
}

// boolean reads a True/False argument.
func (a *argSet) boolean(name string, dst *bool) bool {
	v, ok := a.vals[name]
	if !ok {
		return false
	}
	b, ok := v.(starlark.Bool)
	if !ok {
		a.wrongType(name, "True or False", v)
		return false
	}
	*dst = bool(b)
	return true
}

// duration reads a non-negative duration: seconds as a number, a duration
// string such as "1m30s", or a time.duration value.
func (a *argSet) duration(name string, dst *time.Duration) bool {
	v, ok := a.vals[name]
	if !ok {
		return false
	}
	d, err := nonNegativeDuration(name, v)
	if err != nil {
		a.errorf("%v", err)
		return false
	}
	*dst = d
	return true
}

// nonNegativeDuration is toDuration refusing a negative duration; errors
// name the argument.
func nonNegativeDuration(name string, v starlark.Value) (time.Duration, error) {
	d, err := toDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s: %v", name, err)
	}
	if d < 0 {
		return 0, fmt.Errorf("%s must not be negative, got %s", name, v)
	}
	return d, nil
}

// toDuration converts seconds (int or float), a duration string or a
// time.duration to a duration.
func toDuration(v starlark.Value) (time.Duration, error) {
	switch x := v.(type) {
	case starlark.Int, starlark.Float:
		f, _ := starlark.AsFloat(x)
		if math.IsNaN(f) || math.Abs(f) > float64(math.MaxInt64)/float64(time.Second) {
			return 0, fmt.Errorf("%s seconds is out of range", v)
		}
		return time.Duration(math.Round(f * float64(time.Second))), nil
	case starlark.String:
		d, err := time.ParseDuration(string(x))
		if err != nil {
			return 0, fmt.Errorf("%s is not a duration (%v): give seconds (90) or a duration string (\"1m30s\")", x, err)
		}
		return d, nil
	case startime.Duration:
		return time.Duration(x), nil
	}
	return 0, fmt.Errorf("got %s, want seconds (90) or a duration string (\"1m30s\")", describe(v))
}

// strings reads a list (or tuple) of strings.
func (a *argSet) strings(name string, dst *[]string) bool {
	v, ok := a.vals[name]
	if !ok {
		return false
	}
	if s, ok := v.(starlark.String); ok {
		a.errorf("%s must be a list of strings, got string %s: write %s = [%s]", name, s, name, s)
		return false
	}
	var it starlark.Iterable
	switch x := v.(type) {
	case *starlark.List, starlark.Tuple:
		it = x.(starlark.Iterable)
	default:
		a.wrongType(name, "a list of strings", v)
		return false
	}
	iter := it.Iterate()
	defer iter.Done()
	var (
		out  []string
		elem starlark.Value
		good = true
	)
	for i := 0; iter.Next(&elem); i++ {
		s, ok := elem.(starlark.String)
		if !ok {
			a.errorf("%s[%d] must be a string, got %s", name, i, describe(elem))
			good = false
			continue
		}
		if slices.Contains(out, string(s)) {
			a.errorf("%s lists %s twice", name, s)
			good = false
			continue
		}
		out = append(out, string(s))
	}
	if good {
		*dst = out
	}
	return good
}
