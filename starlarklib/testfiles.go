package starlarklib

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"go.starlark.net/starlark"
)

// memDir is a task test's file_root: files in memory, seeded by
// run_task(file = {...}), changed by the task's file calls, and shown in
// the result's files. It behaves as an os.Root directory does: a parent
// must exist before a file is written in it, a directory cannot be read.
type memDir struct {
	files map[string][]byte
	dirs  map[string]bool
	// modTime is what stat says of every entry.
	modTime time.Time
}

// fileStubs2dir reads file = {"in/a.txt": "text", "out/": None}: paths
// relative to file_root and their contents (str or bytes); a path ending
// in / is an empty directory. The parents of every path exist.
func fileStubs2dir(v starlark.Value) (*memDir, error) {
	if v == starlark.None {
		return nil, nil
	}
	d, ok := v.(*starlark.Dict)
	if !ok {
		return nil, fmt.Errorf(`file must be a dict of path: content, such as {"in/order.json": "{}"}, got %s`, describe(v))
	}
	m := &memDir{files: map[string][]byte{}, dirs: map[string]bool{".": true}, modTime: time.Now()}
	for _, kv := range d.Items() {
		k, ok := kv[0].(starlark.String)
		if !ok {
			return nil, fmt.Errorf("file: key %s must be a str, a path relative to file_root", kv[0])
		}
		p := string(k)
		dir := strings.HasSuffix(p, "/")
		clean := path.Clean(p)
		if p == "" || path.IsAbs(p) || !fs.ValidPath(clean) || clean == "." {
			return nil, fmt.Errorf("file: %q is not a path inside file_root: give one such as \"in/order.json\"", p)
		}
		if dir {
			if kv[1] != starlark.None {
				return nil, fmt.Errorf("file[%q]: a directory (a path ending in /) has no content: give None", p)
			}
			m.mkdirAll(clean)
			continue
		}
		data, ok := dataOf(kv[1])
		if !ok {
			return nil, fmt.Errorf("file[%q] must be str or bytes, the file's content, got %s", p, describe(kv[1]))
		}
		if m.dirs[clean] {
			return nil, fmt.Errorf("file: %q is both a file and a directory", p)
		}
		m.mkdirAll(path.Dir(clean))
		if _, isFile := m.files[path.Dir(clean)]; isFile {
			return nil, fmt.Errorf("file: %q is inside %q, which is a file", p, path.Dir(clean))
		}
		m.files[clean] = slices.Clone(data)
	}
	for p := range m.files {
		if m.dirs[p] {
			return nil, fmt.Errorf("file: %q is both a file and a directory", p)
		}
	}
	return m, nil
}

// merge writes o's files and directories over m's, as a program writes
// them (their parents made).
func (m *memDir) merge(o *memDir) {
	for d := range o.dirs {
		if d != "." {
			delete(m.files, d)
			m.mkdirAll(d)
		}
	}
	for p, b := range o.files {
		m.mkdirAll(path.Dir(p))
		delete(m.dirs, p)
		m.files[p] = b
	}
}

func (m *memDir) mkdirAll(p string) {
	for ; p != "." && p != "/"; p = path.Dir(p) {
		m.dirs[p] = true
	}
}

// value is the directory's files after the run: path → str (UTF-8 text)
// or bytes, sorted by path.
func (m *memDir) value() starlark.Value {
	d := starlark.NewDict(len(m.files))
	for _, p := range sortedKeys(m.files) {
		d.SetKey(starlark.String(p), textOrBytes(m.files[p]))
	}
	return d
}

func pathError(op, name string, err error) error {
	return &fs.PathError{Op: op, Path: name, Err: err}
}

func (m *memDir) parentExists(op, name string) error {
	parent := path.Dir(name)
	if _, isFile := m.files[parent]; isFile {
		return pathError(op, name, errors.New("not a directory"))
	}
	if !m.dirs[parent] {
		return pathError(op, name, fs.ErrNotExist)
	}
	return nil
}

// ReadFile implements Dir.
func (m *memDir) ReadFile(name string, maxBytes int64) ([]byte, error) {
	if m.dirs[name] {
		return nil, pathError("read", name, errors.New("is a directory"))
	}
	b, ok := m.files[name]
	if !ok {
		return nil, pathError("open", name, fs.ErrNotExist)
	}
	if maxBytes > 0 && int64(len(b)) > maxBytes {
		return nil, fmt.Errorf("%s is larger than max_bytes (%d bytes)", name, maxBytes)
	}
	return slices.Clone(b), nil
}

// WriteFile implements Dir.
func (m *memDir) WriteFile(name string, data []byte) error {
	if m.dirs[name] {
		return pathError("open", name, errors.New("is a directory"))
	}
	if err := m.parentExists("open", name); err != nil {
		return err
	}
	m.files[name] = slices.Clone(data)
	return nil
}

// AppendFile implements Dir.
func (m *memDir) AppendFile(name string, data []byte) error {
	if m.dirs[name] {
		return pathError("open", name, errors.New("is a directory"))
	}
	if err := m.parentExists("open", name); err != nil {
		return err
	}
	m.files[name] = append(m.files[name], data...)
	return nil
}

// Stat implements Dir.
func (m *memDir) Stat(name string) (FileInfo, error) {
	if m.dirs[name] {
		return FileInfo{Name: path.Base(name), IsDir: true, Mode: uint32(fs.ModeDir | 0o755), ModTime: m.modTime}, nil
	}
	b, ok := m.files[name]
	if !ok {
		return FileInfo{}, pathError("stat", name, fs.ErrNotExist)
	}
	return FileInfo{Name: path.Base(name), Size: int64(len(b)), Mode: 0o644, ModTime: m.modTime}, nil
}

// List implements Dir.
func (m *memDir) List(name string) ([]string, error) {
	if _, isFile := m.files[name]; isFile {
		return nil, pathError("readdirent", name, errors.New("not a directory"))
	}
	if !m.dirs[name] {
		return nil, pathError("open", name, fs.ErrNotExist)
	}
	var out []string
	child := func(p string) {
		if path.Dir(p) == name && p != name {
			out = append(out, path.Base(p))
		}
	}
	for p := range m.files {
		child(p)
	}
	for p := range m.dirs {
		child(p)
	}
	slices.Sort(out)
	return out, nil
}

// Remove implements Dir: a file, or an empty directory.
func (m *memDir) Remove(name string) error {
	if _, ok := m.files[name]; ok {
		delete(m.files, name)
		return nil
	}
	if !m.dirs[name] || name == "." {
		return pathError("remove", name, fs.ErrNotExist)
	}
	if names, _ := m.List(name); len(names) > 0 {
		return pathError("remove", name, errors.New("directory not empty"))
	}
	delete(m.dirs, name)
	return nil
}

// MkdirAll implements Dir.
func (m *memDir) MkdirAll(name string) error {
	for p := name; p != "."; p = path.Dir(p) {
		if _, isFile := m.files[p]; isFile {
			return pathError("mkdir", p, errors.New("not a directory"))
		}
	}
	m.mkdirAll(name)
	return nil
}

// Close implements Dir.
func (m *memDir) Close() error { return nil }

// stubFiles is the test World's FileSystem: every file_root is the run's
// memDir.
type stubFiles struct{ s *testSession }

func (x stubFiles) Open(root string) (Dir, error) {
	r := x.s.run
	if r == nil {
		return nil, errNoRun("file")
	}
	rec := r.current()
	if r.stubs.files == nil {
		call := "file"
		if rec != nil {
			call = fmt.Sprintf("file.%s %s", rec.function, rec.target)
		}
		return nil, r.unstubbed(call, `file = {} (an empty file_root), or file = {"path": "content", ...}`)
	}
	if rec == nil {
		return r.stubs.files, nil
	}
	rec.fields["path"] = starlark.String(rec.target)
	return recordingDir{r.stubs.files, rec}, nil
}

// recordingDir adds what a write or append wrote to its call's record.
type recordingDir struct {
	*memDir
	rec *callRecord
}

func (d recordingDir) WriteFile(name string, data []byte) error {
	d.rec.fields["data"] = textOrBytes(data)
	return d.memDir.WriteFile(name, data)
}

func (d recordingDir) AppendFile(name string, data []byte) error {
	d.rec.fields["data"] = textOrBytes(data)
	return d.memDir.AppendFile(name, data)
}

// current is the call in progress: the last one StartCall recorded.
func (r *testRun) current() *callRecord {
	if len(r.calls) == 0 {
		return nil
	}
	return r.calls[len(r.calls)-1]
}

// textOrBytes is data as a test compares it most easily: a str when it is
// UTF-8 text, else bytes.
func textOrBytes(b []byte) starlark.Value {
	if utf8.Valid(b) {
		return starlark.String(b)
	}
	return starlark.Bytes(b)
}
