package starlarklib

import (
	"errors"
	"fmt"
	"regexp"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
	"go.starlark.net/syntax"
)

// assertModule is assert, the checks of task tests: eq(a, b), ne(a, b),
// true(x), false(x), contains(container, x) and fails(fn, pattern), each
// with an optional msg. A failed check stops its test with the file, line
// and column of the check.
func assertModule() *starlarkstruct.Module {
	return newModule("assert", map[string]builtinFunc{
		"eq":       assertCompare(syntax.EQL, "=="),
		"ne":       assertCompare(syntax.NEQ, "!="),
		"true":     assertTruth(true),
		"false":    assertTruth(false),
		"contains": assertContains,
		"fails":    assertFails,
	})
}

// assertError is a failed check, at the position of the assert call.
type assertError struct {
	pos, msg string
}

func (e *assertError) Error() string { return e.pos + ": " + e.msg }

// failed is the error of a failed check made by b, with the test's msg
// if it gave one.
func failed(th *starlark.Thread, b *starlark.Builtin, msg starlark.Value, format string, args ...any) error {
	text := fmt.Sprintf(format, args...)
	if s, ok := msg.(starlark.String); ok && s != "" {
		text = string(s) + ": " + text
	} else if msg != nil && msg != starlark.None {
		text = msg.String() + ": " + text
	}
	var m *module
	if tf, ok := th.Local(testLocal).(*testFile); ok {
		m = tf.mod
	}
	return &assertError{pos: callPos(th, m), msg: b.Name() + ": " + text}
}

// shown is a value as a failed check shows it: its Starlark repr.
func shown(v starlark.Value) string {
	s := v.String()
	if len(s) > 2000 {
		s = s[:2000] + "..."
	}
	return s
}

func assertCompare(op syntax.Token, sym string) builtinFunc {
	return func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		var (
			got, want starlark.Value
			msg       starlark.Value = starlark.None
		)
		if err := starlark.UnpackArgs(b.Name(), args, kwargs, "got", &got, "want", &want, "msg?", &msg); err != nil {
			return nil, err
		}
		ok, err := starlark.Compare(op, got, want)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", b.Name(), err)
		}
		if !ok {
			if op == syntax.EQL {
				return nil, failed(th, b, msg, "got %s, want %s", shown(got), shown(want))
			}
			return nil, failed(th, b, msg, "both are %s, want them different", shown(got))
		}
		return starlark.None, nil
	}
}

func assertTruth(want bool) builtinFunc {
	return func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		var (
			x   starlark.Value
			msg starlark.Value = starlark.None
		)
		if err := starlark.UnpackArgs(b.Name(), args, kwargs, "x", &x, "msg?", &msg); err != nil {
			return nil, err
		}
		if bool(x.Truth()) != want {
			return nil, failed(th, b, msg, "got %s, want a %v value", shown(x), want)
		}
		return starlark.None, nil
	}
}

func assertContains(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var (
		container, x starlark.Value
		msg          starlark.Value = starlark.None
	)
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "container", &container, "x", &x, "msg?", &msg); err != nil {
		return nil, err
	}
	in, err := starlark.Binary(syntax.IN, x, container)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", b.Name(), err)
	}
	if !in.Truth() {
		return nil, failed(th, b, msg, "%s is not in %s", shown(x), shown(container))
	}
	return starlark.None, nil
}

// assertFails is fails(fn, pattern = None, msg = None): fn() must fail,
// with an error that the regular expression pattern matches (searched, as
// re.search does). It returns the error's message.
func assertFails(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var (
		fn      starlark.Callable
		pattern starlark.Value = starlark.None
		msg     starlark.Value = starlark.None
	)
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "fn", &fn, "pattern?", &pattern, "msg?", &msg); err != nil {
		return nil, err
	}
	var re *regexp.Regexp
	if pattern != starlark.None {
		p, ok := pattern.(starlark.String)
		if !ok {
			return nil, fmt.Errorf("%s: pattern must be a str, got %s", b.Name(), describe(pattern))
		}
		var err error
		if re, err = regexp.Compile(string(p)); err != nil {
			return nil, fmt.Errorf("%s: pattern: %v", b.Name(), err)
		}
	}
	_, err := starlark.Call(th, fn, nil, nil)
	if err == nil {
		return nil, failed(th, b, msg, "%s did not fail", fn.Name())
	}
	var ae *assertError
	if errors.As(err, &ae) {
		// A check inside fn failed: that is the test's failure, not the
		// error fn was expected to raise.
		return nil, err
	}
	text := err.Error()
	var eval *starlark.EvalError
	if errors.As(err, &eval) {
		text = eval.Msg
	}
	if re != nil && !re.MatchString(text) {
		return nil, failed(th, b, msg, "%s failed with %q, which does not match %q", fn.Name(), text, re)
	}
	return starlark.String(text), nil
}
