package tasks

import (
	"strings"
	"testing"
)

// refMatch is RabbitMQ's topic matching written the obvious way, as a
// table over (pattern word, key word) positions: an independent reference
// for the greedy matcher.
func refMatch(pattern, key string) bool {
	p, w := refWords(pattern), refWords(key)
	// ok[i][j]: p[i:] matches w[j:].
	ok := make([][]bool, len(p)+1)
	for i := range ok {
		ok[i] = make([]bool, len(w)+1)
	}
	ok[len(p)][len(w)] = true
	for i := len(p) - 1; i >= 0; i-- {
		for j := len(w); j >= 0; j-- {
			switch {
			case p[i] == "#":
				ok[i][j] = ok[i+1][j] || (j < len(w) && ok[i][j+1])
			case j == len(w):
				ok[i][j] = false
			default:
				ok[i][j] = (p[i] == "*" || p[i] == w[j]) && ok[i+1][j+1]
			}
		}
	}
	return ok[0][0]
}

// refWords splits a key as RabbitMQ does: "" is no word, "a." two.
func refWords(s string) []string {
	var out []string
	if s == "" {
		return out
	}
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '.' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return out
}

func FuzzMatch(f *testing.F) {
	for _, c := range [][2]string{
		{"#", ""}, {"#", "a.b"}, {"*", ""}, {"*", "a"}, {"a.*", "a."}, {"a.#.b", "a.b"},
		{"#.#", "a"}, {"*.#.*", "a.b"}, {"a.#", "a"}, {"#.b", ".b"}, {"a..b", "a..b"},
		{"#.a.#.a.#", "a.a.a.b.a"}, {"*.*.*", "a..b"},
	} {
		f.Add(c[0], c[1])
	}
	f.Fuzz(func(t *testing.T, pattern, key string) {
		if len(pattern) > MaxKeyLength || len(key) > MaxKeyLength {
			return
		}
		// Patterns made of wildcards and short words find the
		// interesting cases sooner than arbitrary bytes.
		if got, want := Match(pattern, key), refMatch(pattern, key); got != want {
			t.Fatalf("Match(%q, %q) = %v, reference says %v (words %q, %q)", pattern, key, got, want,
				strings.Split(pattern, "."), strings.Split(key, "."))
		}
	})
}
