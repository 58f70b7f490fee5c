package starlarklib

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// writeTree writes files (slash path → content) under a fresh directory
// and returns it.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, src := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// errorLines returns err's Errors as "pos: msg" lines with the root
// prefix removed, so that tests can compare positions.
func errorLines(t *testing.T, err error, root string) []string {
	t.Helper()
	es, ok := err.(Errors)
	if !ok {
		t.Fatalf("error is %T (%v), want Errors", err, err)
	}
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = strings.ReplaceAll(e.Error(), root+string(filepath.Separator), "")
	}
	return out
}

// noEnv is a LookupEnv that finds nothing, for hermetic tests.
func noEnv(string) (string, bool) { return "", false }

// wantErrors checks err against want, one error line each, in order: the
// position exactly, the text contained (ROOT standing for root).
func wantErrors(t *testing.T, call string, err error, root string, want []loadError) {
	t.Helper()
	lines := errorLines(t, err, root)
	if len(lines) != len(want) {
		t.Fatalf("%s errors:\n%s\nwant %d errors", call, strings.Join(lines, "\n"), len(want))
	}
	for i, w := range want {
		msg := strings.ReplaceAll(strings.ReplaceAll(w.msg, "ROOT/", ""), "ROOT", root)
		if !strings.HasPrefix(lines[i], w.pos+": ") || !strings.Contains(lines[i], msg) {
			t.Errorf("error %d =\n  %s\nwant position %s and text\n  %s", i, lines[i], w.pos, msg)
		}
	}
}

// logBuffer collects JSON log lines, safe for concurrent writers.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// logger logs every level as JSON into b.
func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// records decodes the lines logged so far.
func (b *logBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}
