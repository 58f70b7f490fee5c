package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzPublishLines holds the line reader of `publish --file` to a plain
// reading of the file: every line that is not blank is one payload, in
// order, with a trailing CR dropped; under a JSON content type the first
// line the daemon's decoder refuses stops it before anything is sent,
// naming that line.
func FuzzPublishLines(f *testing.F) {
	for _, seed := range []struct {
		data string
		json bool
	}{
		{"{\"n\": 1}\n{\"n\": 2}\n", true}, {"a\r\nb\n\n  \nc", false}, {"{}\nnot json\n", true},
		{"", true}, {"\n\n", false}, {"x\r", false}, {"{\"a\":\n1}\n", true}, {"\t{}\t\r\n", true},
	} {
		f.Add([]byte(seed.data), seed.json)
	}
	f.Fuzz(func(t *testing.T, data []byte, isJSON bool) {
		path := filepath.Join(t.TempDir(), "lines")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		contentType := "text/plain"
		if isJSON {
			contentType = "application/json"
		}
		check := func(b []byte) error { return checkPayload(contentType, contentType, b) }
		var want []string
		bad := 0
		for i, line := range strings.Split(string(data), "\n") {
			if i == strings.Count(string(data), "\n") && line == "" {
				break // after the last newline
			}
			line = strings.TrimSuffix(line, "\r")
			if strings.TrimSpace(line) == "" {
				continue
			}
			if bad == 0 && check([]byte(line)) != nil {
				bad = i + 1
			}
			want = append(want, line)
		}
		src, err := openLines(path, nil, check)
		if bad > 0 {
			if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("line %d:", bad)) {
				t.Fatalf("%q: got %v; want an error naming line %d", data, err, bad)
			}
			return
		}
		if err != nil {
			t.Fatalf("%q: %v", data, err)
		}
		defer src.Close()
		if src.Total() != len(want) {
			t.Fatalf("%q: %d payloads counted, want %d", data, src.Total(), len(want))
		}
		var got []string
		for {
			batch, err := src.Next(3)
			if err != nil {
				t.Fatal(err)
			}
			if len(batch) == 0 {
				break
			}
			for _, b := range batch {
				got = append(got, string(b))
			}
		}
		if strings.Join(got, "\x00") != strings.Join(want, "\x00") || len(got) != len(want) {
			t.Fatalf("%q: read %q, want %q", data, got, want)
		}
	})
}
