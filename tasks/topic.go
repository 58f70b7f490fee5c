package tasks

import (
	"fmt"
	"strings"
)

// MaxKeyLength is AMQP's limit on routing keys and binding patterns.
const MaxKeyLength = 255

// Match reports whether an AMQP topic pattern matches a routing key, exactly
// as a RabbitMQ topic exchange decides it: words are separated by '.', '*'
// matches exactly one word, '#' matches zero or more words (a lone '#'
// matches every key), and an empty word is a word ("a." has two words).
func Match(pattern, key string) bool {
	return match(words(pattern), words(key))
}

func words(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ".")
}

// match is glob matching over words, '#' the star and '*' the single
// wildcard: on a mismatch it goes back only to the last '#', letting it
// take one word more. Earlier '#'s never need revisiting, so the time is
// O(len(p) × len(w)), not exponential in the '#'s.
func match(p, w []string) bool {
	pi, wi := 0, 0
	star, mark := -1, 0 // the last '#' seen, and the word it stopped before
	for wi < len(w) {
		switch {
		case pi < len(p) && p[pi] == "#":
			star, mark = pi, wi
			pi++
		case pi < len(p) && (p[pi] == "*" || p[pi] == w[wi]):
			pi++
			wi++
		case star >= 0:
			mark++
			pi, wi = star+1, mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == "#" {
		pi++
	}
	return pi == len(p)
}

// ValidatePattern reports a binding pattern that is legal AMQP but almost
// certainly not what its author meant: an empty pattern, an empty word
// ("a..b", "a."), a wildcard glued to text ("a*", "#b"), white space or a
// comma (one string is one pattern; list several instead).
func ValidatePattern(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("pattern is empty; use \"#\" to match every routing key")
	case len(p) > MaxKeyLength:
		return fmt.Errorf("pattern %.30q... is %d bytes long; AMQP allows %d", p, len(p), MaxKeyLength)
	case strings.ContainsAny(p, " \t\r\n,"):
		return fmt.Errorf("pattern %q contains white space or a comma; give each pattern as its own string", p)
	}
	for i, w := range strings.Split(p, ".") {
		switch {
		case w == "":
			return fmt.Errorf("pattern %q has an empty word at position %d (two dots in a row, or a dot at an end)", p, i+1)
		case w != "*" && w != "#" && strings.ContainsAny(w, "*#"):
			return fmt.Errorf("pattern %q has word %q mixing a wildcard with text; '*' and '#' must stand alone between dots", p, w)
		}
	}
	return nil
}

// ValidateRoutingKey reports a routing key no broker would accept.
func ValidateRoutingKey(k string) error {
	if len(k) > MaxKeyLength {
		return fmt.Errorf("routing key %.30q... is %d bytes long; AMQP allows %d", k, len(k), MaxKeyLength)
	}
	return nil
}
