package cli

import "testing"

func TestErrorMessage(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"Traceback (most recent call last):\n  t.star:3:9: in work\nError: fail: negative", "fail: negative"},
		{"Traceback (most recent call last):\n  t.star:3:9: in work\n  t.star:7:5: in check\nError: key \"k\" not in dict", `key "k" not in dict`},
		{"Traceback (most recent call last):\n  t.star:3:9: in work\nError in fail: fail: negative", "fail: negative"},
		{"Traceback (most recent call last):\n  t.star:3:9: in work\nError in sleep: interrupted", "sleep: interrupted"},
		{"Traceback (most recent call last):\n  t.star:3:9: in work\nError: first line\nsecond line", "first line"},
		{"decode payload: invalid character 'x'\nmore", "decode payload: invalid character 'x'"},
		{"gave up after 5 attempts; last: busy", "gave up after 5 attempts; last: busy"},
		{"", ""},
	} {
		if got := errorMessage(tc.in); got != tc.want {
			t.Errorf("errorMessage(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := clip("ééééé", 8); got != "éé..." {
		t.Errorf("clip cut a character: %q", got)
	}
}
