package starlarklib

import (
	"strings"
	"unicode"
)

// nearest is the candidate closest to x by edit distance, ignoring case and
// underscores, or "" when none is within half of x's length: the "did you
// mean" of an unknown argument.
func nearest(x string, candidates []string) string {
	fold := func(s string) string {
		return strings.Map(func(r rune) rune {
			if r == '_' || r == '-' {
				return -1
			}
			return unicode.ToLower(r)
		}, s)
	}
	x = fold(x)
	best, bestD := "", (len(x)+1)/2
	for _, c := range candidates {
		if d := levenshtein(x, fold(c)); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func levenshtein(x, y string) int {
	prev := make([]int, len(y)+1)
	cur := make([]int, len(y)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(x); i++ {
		cur[0] = i
		for j := 1; j <= len(y); j++ {
			cost := 1
			if x[i-1] == y[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(y)]
}
