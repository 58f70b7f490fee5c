package main

import (
	"fmt"
	"os"
	"strings"
)

// rewriteSection replaces what lies between <!-- NAME:begin --> and
// <!-- NAME:end --> in the file at path, markers kept. Both markers must
// be there once: the prose around them is written by hand.
func rewriteSection(path, name, body string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	begin, end := "<!-- "+name+":begin -->", "<!-- "+name+":end -->"
	s := string(b)
	if strings.Count(s, begin) != 1 || strings.Count(s, end) != 1 {
		return fmt.Errorf("%s must hold %s and %s exactly once each", path, begin, end)
	}
	i := strings.Index(s, begin) + len(begin)
	j := strings.Index(s, end)
	if j < i {
		return fmt.Errorf("%s: %s comes before %s", path, end, begin)
	}
	out := s[:i] + "\n" + strings.TrimSpace(body) + "\n" + s[j:]
	return os.WriteFile(path, []byte(out), 0o644)
}
