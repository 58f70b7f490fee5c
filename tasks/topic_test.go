package tasks

import (
	"slices"
	"strings"
	"testing"
)

// oracleKeys and oracle were recorded from RabbitMQ 3.10.8: each pattern was
// bound to its own queue on a topic exchange, every key was published once,
// and the keys each queue received are listed.
var oracleKeys = []string{"", "a", "a.", ".a", "a..b", "a.b", "a.x.b", "a.x.y.b", "b", "a.b.c", ".", "simple", "simple.", "simple.a", "simple.a.b", "simple.a.b.c", "prepended.simple.a", "prepended.simple", "prepended.simple.additional1", "notsimple.a", "#", "*", "a.b.b"}

var oracle = []struct {
	pattern string
	matches []string
}{
	{"#", []string{"", "a", "a.", ".a", "a..b", "a.b", "a.x.b", "a.x.y.b", "b", "a.b.c", ".", "simple", "simple.", "simple.a", "simple.a.b", "simple.a.b.c", "prepended.simple.a", "prepended.simple", "prepended.simple.additional1", "notsimple.a", "#", "*", "a.b.b"}},
	{"*", []string{"a", "b", "simple", "#", "*"}},
	{"simple", []string{"simple"}},
	{"simple.*", []string{"simple.", "simple.a"}},
	{"simple.*.*", []string{"simple.a.b"}},
	{"*.simple.*", []string{"prepended.simple.a", "prepended.simple.additional1"}},
	{"simple.#", []string{"simple", "simple.", "simple.a", "simple.a.b", "simple.a.b.c"}},
	{"#.simple.#", []string{"simple", "simple.", "simple.a", "simple.a.b", "simple.a.b.c", "prepended.simple.a", "prepended.simple", "prepended.simple.additional1"}},
	{"a.#.b", []string{"a..b", "a.b", "a.x.b", "a.x.y.b", "a.b.b"}},
	{"#.#", []string{"", "a", "a.", ".a", "a..b", "a.b", "a.x.b", "a.x.y.b", "b", "a.b.c", ".", "simple", "simple.", "simple.a", "simple.a.b", "simple.a.b.c", "prepended.simple.a", "prepended.simple", "prepended.simple.additional1", "notsimple.a", "#", "*", "a.b.b"}},
	{"*.*", []string{"a.", ".a", "a.b", ".", "simple.", "simple.a", "prepended.simple", "notsimple.a"}},
	{"a.*", []string{"a.", "a.b"}},
	{"#.a", []string{"a", ".a", "simple.a", "prepended.simple.a", "notsimple.a"}},
	{"a.#", []string{"a", "a.", "a..b", "a.b", "a.x.b", "a.x.y.b", "a.b.c", "a.b.b"}},
	{"*.#", []string{"a", "a.", ".a", "a..b", "a.b", "a.x.b", "a.x.y.b", "b", "a.b.c", ".", "simple", "simple.", "simple.a", "simple.a.b", "simple.a.b.c", "prepended.simple.a", "prepended.simple", "prepended.simple.additional1", "notsimple.a", "#", "*", "a.b.b"}},
	{"#.*", []string{"a", "a.", ".a", "a..b", "a.b", "a.x.b", "a.x.y.b", "b", "a.b.c", ".", "simple", "simple.", "simple.a", "simple.a.b", "simple.a.b.c", "prepended.simple.a", "prepended.simple", "prepended.simple.additional1", "notsimple.a", "#", "*", "a.b.b"}},
	{"a.*.#", []string{"a.", "a..b", "a.b", "a.x.b", "a.x.y.b", "a.b.c", "a.b.b"}},
	{"a.#.#.b", []string{"a..b", "a.b", "a.x.b", "a.x.y.b", "a.b.b"}},
	{"", []string{""}}}

func TestMatchAgreesWithRabbitMQ(t *testing.T) {
	t.Parallel()
	for _, o := range oracle {
		for _, k := range oracleKeys {
			want := slices.Contains(o.matches, k)
			if got := Match(o.pattern, k); got != want {
				t.Errorf("Match(%q, %q) = %v, RabbitMQ says %v", o.pattern, k, got, want)
			}
		}
	}
}

// The Ruby daemon's routing matrix (reference/symphony-ruby.md §7), with its
// two quirks fixed: a lone '#' matches every key, and '*' needs a word.
func TestMatchRubyMatrix(t *testing.T) {
	t.Parallel()
	cases := []struct {
		pattern string
		yes, no []string
	}{
		{"simple", []string{"simple"}, []string{"simple.a", "notsimple", "prepended.simple", ""}},
		{"simple.*", []string{"simple.a", "simple.additional1"}, []string{"simple", "simple.a.b", "prepended.simple.a"}},
		{"simple.*.*", []string{"simple.a.b"}, []string{"simple", "simple.a", "simple.a.b.c"}},
		{"*.simple.*", []string{"prepended.simple.additional1"}, []string{"simple.a", "prepended.simple", "a.b.simple.c"}},
		{"simple.#", []string{"simple", "simple.a", "simple.a.b"}, []string{"notsimple.a", "prepended.simple.a"}},
		{"#.simple.#", []string{"simple", "simple.a", "simple.a.b", "prepended.simple.a", "prepended.simple"}, []string{"notsimple.a"}},
		// Quirk 1 fixed: Ruby's '#' matched only the literal key "#".
		{"#", []string{"", "a", "a.b.c", "#", "anything.at.all"}, nil},
		// Quirk 2 fixed: Ruby's '*' matched the empty key.
		{"*", []string{"a", "#"}, []string{"", "a.b"}},
	}
	for _, c := range cases {
		for _, k := range c.yes {
			if !Match(c.pattern, k) {
				t.Errorf("Match(%q, %q) = false, want true", c.pattern, k)
			}
		}
		for _, k := range c.no {
			if Match(c.pattern, k) {
				t.Errorf("Match(%q, %q) = true, want false", c.pattern, k)
			}
		}
	}
}

func TestMatchOwnCases(t *testing.T) {
	t.Parallel()
	cases := []struct {
		pattern, key string
		want         bool
	}{
		{"a.#.#.b", "a.b", true},       // '#'s collapse
		{"#.#.#", "", true},            // zero words thrice
		{"a.#", "a", true},             // '#' may be zero words at the end
		{"#.a.#.a.#", "a.a", true},     // backtracking across two '#'
		{"#.a.#.a.#", "a.x.a.x", true}, //
		{"#.a.#.a.#", "x.a.x", false},  // one 'a' is not two
		{"*.*.*", "..", true},          // three empty words
		{"*.*.*", ".", false},          // two empty words
		{"a.*", "a.", true},            // an empty word is a word
		{"A.b", "a.b", false},          // case matters
		{"image.uploaded.#", "image.uploaded.png", true},
		{"image.*.changed", "image.avatar.changed", true},
		{"image.*.changed", "image.changed", false},
		{strings.Repeat("#.", 40) + "x", strings.Repeat("y.", 40) + "z", false},      // no blow-up
		{strings.Repeat("#.a.", 12) + "#.b", strings.Repeat("a.", 120) + "a", false}, // nor here
		{"#.*", "", false},
		{"#.*", "a", true},
		{"*.#.*", "a", false},
		{"*.#.*", "a.b", true},
	}
	for _, c := range cases {
		if got := Match(c.pattern, c.key); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.pattern, c.key, got, c.want)
		}
	}
}

// matchSpec is the definition of a topic match, recursive and slow:
// match must agree with it everywhere.
func matchSpec(p, w []string) bool {
	if len(p) == 0 {
		return len(w) == 0
	}
	switch p[0] {
	case "#":
		for i := 0; i <= len(w); i++ {
			if matchSpec(p[1:], w[i:]) {
				return true
			}
		}
		return false
	case "*":
		return len(w) > 0 && matchSpec(p[1:], w[1:])
	}
	return len(w) > 0 && w[0] == p[0] && matchSpec(p[1:], w[1:])
}

// Every pattern and key of up to five words over a small alphabet.
func TestMatchAgreesWithItsDefinition(t *testing.T) {
	t.Parallel()
	// all is every sequence of up to n words from alphabet.
	all := func(n int, alphabet []string) [][]string {
		out, last := [][]string{nil}, [][]string{nil}
		for range n {
			var next [][]string
			for _, seq := range last {
				for _, a := range alphabet {
					next = append(next, append(slices.Clone(seq), a))
				}
			}
			out, last = append(out, next...), next
		}
		return out
	}
	patterns := all(5, []string{"a", "b", "*", "#"})
	keys := all(5, []string{"a", "b", ""})
	if len(patterns) != 1365 || len(keys) != 364 {
		t.Fatalf("%d patterns and %d keys", len(patterns), len(keys))
	}
	for _, p := range patterns {
		for _, k := range keys {
			if got, want := match(p, k), matchSpec(p, k); got != want {
				t.Fatalf("match(%q, %q) = %v, want %v", p, k, got, want)
			}
		}
	}
}

func TestValidatePattern(t *testing.T) {
	t.Parallel()
	good := []string{"#", "*", "a", "a.b", "a.*.c", "a.#", "#.a.#", "user-created.v2", "a_b.c-d"}
	for _, p := range good {
		if err := ValidatePattern(p); err != nil {
			t.Errorf("ValidatePattern(%q) = %v, want nil", p, err)
		}
	}
	bad := map[string]string{
		"":                       "empty",
		"a..b":                   "empty word at position 2",
		"a.":                     "empty word at position 2",
		".a":                     "empty word at position 1",
		"a*":                     `word "a*" mixing a wildcard`,
		"a.#b":                   `word "#b" mixing a wildcard`,
		"a, b":                   "white space or a comma",
		"a,b":                    "white space or a comma",
		strings.Repeat("a", 256): "256 bytes long",
	}
	for p, want := range bad {
		err := ValidatePattern(p)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ValidatePattern(%.20q) = %v, want an error containing %q", p, err, want)
		}
	}
}
