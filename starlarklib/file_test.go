//go:build unix

package starlarklib

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/symphony-go/symphony/tasks"
)

func TestFile(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "in.bin"), []byte{0xff, 0, 1}, 0o644); err != nil {
		t.Fatal(err)
	}
	runChecks(t, `, allow = ["file"], file_root = "`+root+`"`, `
    eq(file.exists("out"), False)
    file.mkdir("out/deep")
    file.mkdir("out/deep")  # again: no error, as os.makedirs(exist_ok = True)
    eq(file.stat("out").is_dir, True)
    file.write("out/a.txt", "héllo\n")
    eq(file.read_text("out/a.txt"), "héllo\n")
    eq(file.read("out/a.txt"), b"h\xc3\xa9llo\n")
    file.write("out/a.txt", "replaced")
    eq(file.read_text("./out/../out/a.txt"), "replaced")
    file.append("audit.log", "one\n")
    file.append("audit.log", b"two\n")
    eq(file.read_text("audit.log"), "one\ntwo\n")
    eq(file.read("in.bin"), b"\xff\x00\x01")
    s = file.stat("out/a.txt")
    eq((s.name, s.size, s.is_dir, s.mode), ("a.txt", 8, False, 0o644))
    eq(type(s.mod_time), "time.time")
    eq(file.list(), ["audit.log", "in.bin", "out"])
    eq(file.list("out"), ["a.txt", "deep"])
    file.remove("out/a.txt")
    file.remove("out/deep")
    eq(file.list("out"), [])
    eq(file.exists("out/a.txt"), False)
`, Options{})
	b, err := os.ReadFile(filepath.Join(root, "audit.log"))
	if err != nil || string(b) != "one\ntwo\n" {
		t.Errorf("audit.log on disk = %q, %v", b, err)
	}
}

func TestFileRefusalsAndErrors(t *testing.T) {
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "passwd"), []byte("root:x:0:0"), 0o644); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(t.TempDir(), "root")
	for _, d := range []string{root, filepath.Join(root, "sub")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for link, to := range map[string]string{
		"out":            outside,                          // a directory outside, absolute
		"sub/up":         "../..",                          // relative, leading out
		"passwd":         filepath.Join(outside, "passwd"), // a file outside
		"sub/inside.txt": "../in.txt",                      // inside: allowed
	} {
		if err := os.Symlink(to, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "in.txt"), []byte("in"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "big"), make([]byte, 2000), 0o644); err != nil {
		t.Fatal(err)
	}
	calls := &callLog{}
	w := NewWorld(WorldConfig{})
	w.Calls = calls
	tk := loadTask(t, `
def work(payload, meta):
    f = getattr(file, payload["fn"])
    r = f(*payload["args"], **(payload.get("kwargs") or {}))
    publish("out", {"r": r if type(r) != "bytes" else str(r)})
task(subscribe_to = ["#"], work = work, allow = ["file"], file_root = "`+root+`")
`, Options{World: w})
	cases := []struct {
		fn     string
		args   []any
		kwargs map[string]any
		want   string
		result string
	}{
		{"write", []any{"../../etc/passwd", "x"}, nil, `file.write: "../../etc/passwd" leads out of file_root of task t (` + root + ")", "refused"},
		{"write", []any{"sub/../../x", "x"}, nil, `file.write: "sub/../../x" leads out of file_root`, "refused"},
		{"read", []any{"/etc/passwd"}, nil, `file.read: "/etc/passwd" is an absolute path`, "refused"},
		{"write", []any{"out/passwd", "x"}, nil, "file.write out/passwd: the path leads out of file_root (through a symlink)", "refused"},
		{"read", []any{"passwd"}, nil, "file.read passwd: the path leads out of file_root", "refused"},
		{"append", []any{"sub/up/x", "x"}, nil, "file.append sub/up/x: the path leads out of file_root", "refused"},
		{"list", []any{"out"}, nil, "file.list out: the path leads out of file_root", "refused"},
		{"exists", []any{"out/passwd"}, nil, "the path leads out of file_root", "refused"},
		{"mkdir", []any{"out/new"}, nil, "the path leads out of file_root", "refused"},
		{"remove", []any{"sub/up/x"}, nil, "the path leads out of file_root", "refused"},
		{"read", []any{"missing.txt"}, nil, "file.read missing.txt: no such file or directory", "error"},
		{"write", []any{"no/such/dir.txt", "x"}, nil, "file.write no/such/dir.txt: no such file or directory", "error"},
		{"read", []any{"big"}, map[string]any{"max_bytes": 1000}, "big is larger than max_bytes (1000 bytes)", "error"},
		{"read_text", []any{"sub"}, nil, "file.read_text sub: is a directory", "error"},
		{"write", []any{"", "x"}, nil, "file.write: the path is empty", "error"},
		{"remove", []any{"."}, nil, "file.remove .: file_root itself is not removed", "error"},
	}
	for _, c := range cases {
		before := len(calls.results())
		r := request(t, tk, context.Background(), map[string]any{"fn": c.fn, "args": c.args, "kwargs": c.kwargs})
		if r.Verdict != tasks.Failed || !strings.Contains(r.Err.Error(), c.want) {
			t.Errorf("%s%v: %s %v\nwant %s", c.fn, c.args, r.Verdict, r.Err, c.want)
		}
		if got := calls.results(); len(got) != before+1 || !strings.HasSuffix(got[len(got)-1], " "+c.result) {
			t.Errorf("%s%v: calls %v, want one %s", c.fn, c.args, got[before:], c.result)
		}
	}
	if b, err := os.ReadFile(filepath.Join(outside, "passwd")); string(b) != "root:x:0:0" {
		t.Errorf("the file outside was changed: %q %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(outside, "new")); err == nil {
		t.Error("a directory was made outside")
	}
	// A symlink that stays inside is followed.
	r := request(t, tk, context.Background(), map[string]any{"fn": "read_text", "args": []any{"sub/inside.txt"}})
	if got := published(t, r); got != `{"r":"in"}` {
		t.Errorf("read through an inside symlink: %s", got)
	}
}

func TestFileNeedsItsGrant(t *testing.T) {
	// Hidden from the loader in a library: refused when it runs.
	root := writeTree(t, map[string]string{
		"lib/io.star": "def save(p, d):\n    file.write(p, d)\n",
		"t.star": `load("lib/io.star", "save")
def work(payload, meta):
    save("a.txt", "x")
task(subscribe_to = ["#"], work = work)
`,
	})
	ts, err := Load([]string{root}, Options{LookupEnv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	r := handle(ts[0], "application/json", []byte(`{}`))
	want := `file.write: task t is not allowed to use file: add allow = ["file"] to its task()`
	if r.Verdict != tasks.Failed || !strings.Contains(r.Err.Error(), want) {
		t.Errorf("%s %v, want %s", r.Verdict, r.Err, want)
	}
	// Visible in the work function: the load fails.
	_, err = Load([]string{writeTree(t, map[string]string{"t.star": `
def work(payload, meta):
    file.write("a.txt", "x")
task(subscribe_to = ["#"], work = work)
`})}, Options{LookupEnv: noEnv})
	if err == nil || !strings.Contains(err.Error(), `allow = ["file"]`) {
		t.Errorf("load: %v", err)
	}
}

func TestFileSecretsAreNotWritten(t *testing.T) {
	root := t.TempDir()
	msg := failedRun(t, `, allow = ["file"], file_root = "`+root+`"`, `    file.write("k.txt", "key=" + secret("KEY"))`,
		Options{LookupEnv: func(string) (string, bool) { return "a distinctive value", true }})
	if !strings.Contains(msg, "file.write: data is <secret KEY>: a secret is not written to files") || strings.Contains(msg, "distinctive") {
		t.Errorf("error = %s", msg)
	}
	if _, err := os.Stat(filepath.Join(root, "k.txt")); err == nil {
		t.Error("k.txt was written")
	}
}

func TestFileRootRelativeToTasksRoot(t *testing.T) {
	root := writeTree(t, map[string]string{
		"data/in.txt": "from data",
		"t.star": `
def work(payload, meta):
    publish("out", file.read_text("in.txt"))
task(subscribe_to = ["#"], work = work, allow = ["file"], file_root = "data")
`,
	})
	ts, err := Load([]string{root}, Options{LookupEnv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	if got := published(t, handle(ts[0], "application/json", []byte(`{}`))); got != `"from data"` {
		t.Errorf("published %s", got)
	}
}
