package starlarklib

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
)

// reModule is re, after Python's: match (at the start), fullmatch (the
// whole string), search (anywhere), find_all, sub, split and escape. The
// syntax is Go's RE2 (no backreferences or lookaround: matching time is
// linear in the input); flags are written inline, as (?i) or (?s).
// Compiled patterns are cached per load.
func reModule(cache *reCache) *starlarkstruct.Module {
	find := func(anchor string) builtinFunc {
		return func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
			var pattern, s string
			if err := starlark.UnpackArgs(b.Name(), args, kwargs, "pattern", &pattern, "string", &s); err != nil {
				return nil, err
			}
			re, err := cache.compile(b.Name(), anchor, pattern)
			if err != nil {
				return nil, err
			}
			loc := re.FindStringSubmatchIndex(s)
			if loc == nil {
				return starlark.None, nil
			}
			return &reMatch{re: re, s: s, loc: loc}, nil
		}
	}
	return newModule("re", map[string]builtinFunc{
		"match":     find("match"),
		"fullmatch": find("fullmatch"),
		"search":    find(""),
		"find_all": func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
			var pattern, s string
			if err := starlark.UnpackArgs(b.Name(), args, kwargs, "pattern", &pattern, "string", &s); err != nil {
				return nil, err
			}
			re, err := cache.compile(b.Name(), "", pattern)
			if err != nil {
				return nil, err
			}
			var out []starlark.Value
			for _, loc := range re.FindAllStringSubmatchIndex(s, -1) {
				m := &reMatch{re: re, s: s, loc: loc}
				switch re.NumSubexp() {
				case 0:
					out = append(out, m.group(0))
				case 1:
					out = append(out, m.group(1))
				default:
					out = append(out, m.groups(starlark.String("")))
				}
			}
			return starlark.NewList(out), nil
		},
		"sub": func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
			var (
				pattern, s string
				repl       starlark.Value
				count      int
			)
			if err := starlark.UnpackArgs(b.Name(), args, kwargs, "pattern", &pattern, "repl", &repl, "string", &s, "count?", &count); err != nil {
				return nil, err
			}
			re, err := cache.compile(b.Name(), "", pattern)
			if err != nil {
				return nil, err
			}
			var template string
			fn, isFn := repl.(starlark.Callable)
			if !isFn {
				r, ok := repl.(starlark.String)
				if !ok {
					return nil, fmt.Errorf("%s: repl must be a str or a function of the match, got %s", b.Name(), repl.Type())
				}
				if template, err = goTemplate(string(r), re); err != nil {
					return nil, fmt.Errorf("%s: %v", b.Name(), err)
				}
			}
			var out strings.Builder
			last := 0
			for i, loc := range re.FindAllStringSubmatchIndex(s, -1) {
				if count > 0 && i >= count {
					break
				}
				out.WriteString(s[last:loc[0]])
				if isFn {
					v, err := starlark.Call(th, fn, starlark.Tuple{&reMatch{re: re, s: s, loc: loc}}, nil)
					if err != nil {
						return nil, err
					}
					r, ok := v.(starlark.String)
					if !ok {
						return nil, fmt.Errorf("%s: repl returned %s, want str", b.Name(), v.Type())
					}
					out.WriteString(string(r))
				} else {
					out.Write(re.ExpandString(nil, template, s, loc))
				}
				last = loc[1]
			}
			out.WriteString(s[last:])
			return starlark.String(out.String()), nil
		},
		"split": func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
			var (
				pattern, s string
				maxsplit   int
			)
			if err := starlark.UnpackArgs(b.Name(), args, kwargs, "pattern", &pattern, "string", &s, "maxsplit?", &maxsplit); err != nil {
				return nil, err
			}
			re, err := cache.compile(b.Name(), "", pattern)
			if err != nil {
				return nil, err
			}
			var out []starlark.Value
			last := 0
			for i, loc := range re.FindAllStringSubmatchIndex(s, -1) {
				if maxsplit > 0 && i >= maxsplit {
					break
				}
				out = append(out, starlark.String(s[last:loc[0]]))
				// As in Python, groups in the pattern are part of the result.
				m := &reMatch{re: re, s: s, loc: loc}
				for g := 1; g <= re.NumSubexp(); g++ {
					out = append(out, m.group(g))
				}
				last = loc[1]
			}
			out = append(out, starlark.String(s[last:]))
			return starlark.NewList(out), nil
		},
		"escape": func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
			var s string
			if err := starlark.UnpackArgs(b.Name(), args, kwargs, "string", &s); err != nil {
				return nil, err
			}
			return starlark.String(regexp.QuoteMeta(s)), nil
		},
	})
}

// reCache keeps compiled patterns; it forgets them all when full, which a
// task that builds patterns from its input would otherwise make unbounded.
type reCache struct {
	mu sync.Mutex
	m  map[string]*regexp.Regexp
}

const reCacheSize = 1000

func (c *reCache) compile(fn, anchor, pattern string) (*regexp.Regexp, error) {
	key := anchor + "\x00" + pattern
	c.mu.Lock()
	re := c.m[key]
	c.mu.Unlock()
	if re != nil {
		return re, nil
	}
	src := pattern
	switch anchor {
	case "match":
		src = `^(?:` + pattern + `)`
	case "fullmatch":
		src = `^(?:` + pattern + `)$`
	}
	re, err := regexp.Compile(src)
	if err != nil {
		return nil, fmt.Errorf("%s: bad pattern %q: %v", fn, pattern, strings.TrimPrefix(err.Error(), "error parsing regexp: "))
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= reCacheSize {
		c.m = map[string]*regexp.Regexp{}
	}
	c.m[key] = re
	c.mu.Unlock()
	return re, nil
}

// goTemplate turns a Python replacement (\1, \g<1>, \g<name>, \\) into
// Go's ($1 and ${name}, with $ escaped).
func goTemplate(r string, re *regexp.Regexp) (string, error) {
	var out strings.Builder
	for i := 0; i < len(r); i++ {
		c := r[i]
		switch {
		case c == '$':
			out.WriteString("$$")
		case c == '\\' && i+1 < len(r):
			n := r[i+1]
			switch {
			case n >= '0' && n <= '9':
				j := i + 1
				for j < len(r) && j < i+3 && r[j] >= '0' && r[j] <= '9' {
					j++
				}
				g, _ := strconv.Atoi(r[i+1 : j])
				if g > re.NumSubexp() {
					return "", fmt.Errorf("invalid group reference %d: the pattern has %d groups", g, re.NumSubexp())
				}
				fmt.Fprintf(&out, "${%d}", g)
				i = j - 1
			case n == 'g' && i+2 < len(r) && r[i+2] == '<':
				end := strings.IndexByte(r[i+3:], '>')
				if end < 0 {
					return "", errors.New(`missing > in \g<...>`)
				}
				name := r[i+3 : i+3+end]
				if g, err := strconv.Atoi(name); err == nil {
					if g > re.NumSubexp() {
						return "", fmt.Errorf("invalid group reference %d: the pattern has %d groups", g, re.NumSubexp())
					}
				} else if re.SubexpIndex(name) < 0 {
					return "", fmt.Errorf("unknown group name %q", name)
				}
				fmt.Fprintf(&out, "${%s}", name)
				i += 3 + end
			case n == 'n':
				out.WriteByte('\n')
				i++
			case n == 't':
				out.WriteByte('\t')
				i++
			case n == '\\':
				out.WriteByte('\\')
				i++
			default:
				out.WriteByte(c)
			}
		default:
			out.WriteByte(c)
		}
	}
	return out.String(), nil
}

// reMatch is a match, after Python's re.Match: group(n or name = 0),
// groups(default = None), groupdict(default = None), start(g = 0),
// end(g = 0), span(g = 0). Offsets index bytes, as Starlark strings do.
type reMatch struct {
	re  *regexp.Regexp
	s   string
	loc []int
}

var matchMethods = []string{"end", "group", "groupdict", "groups", "span", "start"}

func (m *reMatch) String() string {
	return fmt.Sprintf("<re.match span=(%d, %d) match=%q>", m.loc[0], m.loc[1], m.s[m.loc[0]:m.loc[1]])
}
func (m *reMatch) Type() string          { return "re.match" }
func (m *reMatch) Freeze()               {}
func (m *reMatch) Truth() starlark.Bool  { return true }
func (m *reMatch) Hash() (uint32, error) { return 0, errors.New("unhashable type: re.match") }
func (m *reMatch) AttrNames() []string   { return matchMethods }

func (m *reMatch) group(g int) starlark.Value {
	if m.loc[2*g] < 0 {
		return starlark.None
	}
	return starlark.String(m.s[m.loc[2*g]:m.loc[2*g+1]])
}

func (m *reMatch) groups(def starlark.Value) starlark.Tuple {
	out := make(starlark.Tuple, m.re.NumSubexp())
	for g := range out {
		out[g] = m.group(g + 1)
		if out[g] == starlark.None {
			out[g] = def
		}
	}
	return out
}

// index reads a group argument: a number or a name.
func (m *reMatch) index(fn string, v starlark.Value) (int, error) {
	switch x := v.(type) {
	case starlark.Int:
		g, ok := x.Int64()
		if !ok || g < 0 || int(g) > m.re.NumSubexp() {
			return 0, fmt.Errorf("%s: no such group %s", fn, x)
		}
		return int(g), nil
	case starlark.String:
		if g := m.re.SubexpIndex(string(x)); g >= 0 {
			return g, nil
		}
		return 0, fmt.Errorf("%s: no such group %s", fn, x)
	}
	return 0, fmt.Errorf("%s: a group is an int or a name, got %s", fn, v.Type())
}

func (m *reMatch) Attr(name string) (starlark.Value, error) {
	method := func(impl builtinFunc) starlark.Value { return starlark.NewBuiltin("match."+name, impl) }
	groupArg := func(b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (int, error) {
		var g starlark.Value = starlark.MakeInt(0)
		if err := starlark.UnpackArgs(b.Name(), args, kwargs, "group?", &g); err != nil {
			return 0, err
		}
		return m.index(b.Name(), g)
	}
	switch name {
	case "group":
		return method(func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
			if len(kwargs) > 0 {
				return nil, fmt.Errorf("%s: takes group numbers or names, not keywords", b.Name())
			}
			if len(args) == 0 {
				return m.group(0), nil
			}
			out := make(starlark.Tuple, len(args))
			for i, a := range args {
				g, err := m.index(b.Name(), a)
				if err != nil {
					return nil, err
				}
				out[i] = m.group(g)
			}
			if len(out) == 1 {
				return out[0], nil
			}
			return out, nil
		}), nil
	case "groups":
		return method(func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
			var def starlark.Value = starlark.None
			if err := starlark.UnpackArgs(b.Name(), args, kwargs, "default?", &def); err != nil {
				return nil, err
			}
			return m.groups(def), nil
		}), nil
	case "groupdict":
		return method(func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
			var def starlark.Value = starlark.None
			if err := starlark.UnpackArgs(b.Name(), args, kwargs, "default?", &def); err != nil {
				return nil, err
			}
			d := starlark.NewDict(m.re.NumSubexp())
			for g, name := range m.re.SubexpNames() {
				if name == "" {
					continue
				}
				v := m.group(g)
				if v == starlark.None {
					v = def
				}
				d.SetKey(starlark.String(name), v)
			}
			return d, nil
		}), nil
	case "start", "end", "span":
		return method(func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
			g, err := groupArg(b, args, kwargs)
			if err != nil {
				return nil, err
			}
			start, end := starlark.MakeInt(m.loc[2*g]), starlark.MakeInt(m.loc[2*g+1])
			switch name {
			case "start":
				return start, nil
			case "end":
				return end, nil
			}
			return starlark.Tuple{start, end}, nil
		}), nil
	}
	return nil, nil
}
