package starlarklib

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"unicode/utf8"

	startime "go.starlark.net/lib/time"
	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"

	"github.com/symphony-go/symphony/tasks"
)

// DefaultFileMaxBytes bounds what file.read and file.read_text return
// unless max_bytes says otherwise.
const DefaultFileMaxBytes = 10 << 20

// fileModule is file (SPEC §2.1): every function takes a path relative
// to the task's file_root, slash-separated; an absolute path, one with
// .. that leaves the root, or one through a symlink that leads out is
// refused.
//
//	read(path, max_bytes = 10 MiB)       bytes
//	read_text(path, max_bytes = 10 MiB)  str (UTF-8; else an error)
//	write(path, data)                    create or replace; data str or bytes
//	append(path, data)                   create or add to the end
//	exists(path)                         bool
//	list(path = ".")                     the names in a directory, sorted
//	remove(path)                         a file or an empty directory
//	mkdir(path)                          a directory and its parents; no error if it exists
//	stat(path)                           struct(name, size, is_dir, mode, mod_time)
//
// As with Python's open(), a file is written only in a directory that
// exists.
func fileModule() *starlarkstruct.Module {
	return newModule("file", map[string]builtinFunc{
		"read":      fileRead(false),
		"read_text": fileRead(true),
		"write":     fileWrite(false),
		"append":    fileWrite(true),
		"exists":    fileExists,
		"list":      fileList,
		"remove":    fileRemove,
		"mkdir":     fileMkdir,
		"stat":      fileStat,
	})
}

// fileCall is one call of the file module in progress: its grant checked,
// its path inside file_root, its directory open.
type fileCall struct {
	*call
	fn   string
	name string // cleaned, relative to file_root
	dir  Dir
}

// beginFile starts a call of b on rawPath: the grant, then the path,
// then the task's file_root opened. The caller ends the call and closes
// the directory.
func beginFile(th *starlark.Thread, b *starlark.Builtin, rawPath starlark.Value) (*fileCall, error) {
	st := stateOf(th)
	if msg := notDuringLoad(b.Name(), st); msg != "" {
		return nil, errors.New(msg)
	}
	p, ok := rawPath.(starlark.String)
	if !ok {
		return nil, fmt.Errorf("%s: path must be a str, got %s", b.Name(), describe(rawPath))
	}
	c, err := st.begin(b, tasks.CapFile, string(p))
	if err != nil {
		return nil, err
	}
	fc := &fileCall{call: c, fn: b.Name(), name: path.Clean(string(p))}
	spec := st.task.spec
	switch {
	case p == "":
		return nil, c.end(fmt.Errorf("%s: the path is empty: give one relative to file_root, such as \"out/report.txt\"", b.Name()))
	case path.IsAbs(string(p)) || filepath.IsAbs(string(p)):
		return nil, c.end(refusedf("%s: %s is an absolute path: file paths are relative to file_root of task %s (%s)", b.Name(), p, spec.Name, spec.FileRoot))
	case !fs.ValidPath(fc.name):
		return nil, c.end(refusedf("%s: %s leads out of file_root of task %s (%s)", b.Name(), p, spec.Name, spec.FileRoot))
	}
	files := st.world().Files
	if files == nil {
		return nil, c.end(fmt.Errorf("%s: no file system", b.Name()))
	}
	if fc.dir, err = files.Open(spec.FileRoot); err != nil {
		return nil, c.end(fmt.Errorf("%s: file_root of task %s: %w", b.Name(), spec.Name, err))
	}
	return fc, nil
}

// end closes the directory and ends the call, err phrased with the path
// once: "file.read in/a.txt: no such file or directory".
func (fc *fileCall) end(err error) error {
	fc.dir.Close()
	if err == nil {
		return fc.call.end(nil)
	}
	if isRefused(err) {
		return fc.call.end(refusedf("%s %s: %v", fc.fn, fc.name, err))
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return fc.call.end(fmt.Errorf("%s %s: %w", fc.fn, fc.name, err))
}

// beginPathCall is beginFile for the functions whose one argument is the
// path.
func beginPathCall(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (*fileCall, error) {
	var p starlark.Value
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "path", &p); err != nil {
		return nil, err
	}
	return beginFile(th, b, p)
}

func fileRead(text bool) builtinFunc {
	return func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		var p, maxBytes starlark.Value = nil, starlark.None
		if err := starlark.UnpackArgs(b.Name(), args, kwargs, "path", &p, "max_bytes?", &maxBytes); err != nil {
			return nil, err
		}
		max := int64(DefaultFileMaxBytes)
		if maxBytes != starlark.None {
			n, err := parseBytes(maxBytes)
			if err != nil {
				return nil, fmt.Errorf("%s: max_bytes: %v", b.Name(), err)
			}
			max = n
		}
		fc, err := beginFile(th, b, p)
		if err != nil {
			return nil, err
		}
		data, err := fc.dir.ReadFile(fc.name, max)
		if err != nil {
			return nil, fc.end(err)
		}
		fc.attr("bytes", len(data))
		if text && !utf8.Valid(data) {
			return nil, fc.end(errors.New("not UTF-8 text: read it with file.read, as bytes"))
		}
		fc.end(nil)
		if text {
			return starlark.String(data), nil
		}
		return starlark.Bytes(data), nil
	}
}

func fileWrite(appending bool) builtinFunc {
	return func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		var p, data starlark.Value
		if err := starlark.UnpackArgs(b.Name(), args, kwargs, "path", &p, "data", &data); err != nil {
			return nil, err
		}
		var content []byte
		switch x := data.(type) {
		case starlark.String:
			content = []byte(x)
		case starlark.Bytes:
			content = []byte(x)
		case secretValue:
			// A file is out of the Redactor's reach: what is written
			// there stays, in backups and in whoever reads it.
			return nil, fmt.Errorf("%s: data is %s: a secret is not written to files", b.Name(), x)
		default:
			return nil, fmt.Errorf("%s: data must be str or bytes, got %s", b.Name(), describe(data))
		}
		fc, err := beginFile(th, b, p)
		if err != nil {
			return nil, err
		}
		fc.attr("bytes", len(content))
		if appending {
			err = fc.dir.AppendFile(fc.name, content)
		} else {
			err = fc.dir.WriteFile(fc.name, content)
		}
		return starlark.None, fc.end(err)
	}
}

func fileExists(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	fc, err := beginPathCall(th, b, args, kwargs)
	if err != nil {
		return nil, err
	}
	_, err = fc.dir.Stat(fc.name)
	if errors.Is(err, fs.ErrNotExist) {
		return starlark.False, fc.end(nil)
	}
	if err != nil {
		return nil, fc.end(err)
	}
	return starlark.True, fc.end(nil)
}

func fileList(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var p starlark.Value = starlark.String(".")
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "path?", &p); err != nil {
		return nil, err
	}
	fc, err := beginFile(th, b, p)
	if err != nil {
		return nil, err
	}
	names, err := fc.dir.List(fc.name)
	if err != nil {
		return nil, fc.end(err)
	}
	out := make([]starlark.Value, len(names))
	for i, n := range names {
		out[i] = starlark.String(n)
	}
	return starlark.NewList(out), fc.end(nil)
}

func fileRemove(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	fc, err := beginPathCall(th, b, args, kwargs)
	if err != nil {
		return nil, err
	}
	if fc.name == "." {
		return nil, fc.end(errors.New("file_root itself is not removed"))
	}
	return starlark.None, fc.end(fc.dir.Remove(fc.name))
}

func fileMkdir(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	fc, err := beginPathCall(th, b, args, kwargs)
	if err != nil {
		return nil, err
	}
	return starlark.None, fc.end(fc.dir.MkdirAll(fc.name))
}

func fileStat(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	fc, err := beginPathCall(th, b, args, kwargs)
	if err != nil {
		return nil, err
	}
	fi, err := fc.dir.Stat(fc.name)
	if err != nil {
		return nil, fc.end(err)
	}
	return starlarkstruct.FromStringDict(starlark.String("stat"), starlark.StringDict{
		"name":     starlark.String(fi.Name),
		"size":     starlark.MakeInt64(fi.Size),
		"is_dir":   starlark.Bool(fi.IsDir),
		"mode":     starlark.MakeUint64(uint64(fi.Mode & 0o7777)),
		"mod_time": startime.Time(fi.ModTime),
	}), fc.end(nil)
}

// rootFiles is the real FileSystem: every directory an os.Root, which
// refuses any name that leads out of it, through .. or a symlink,
// whatever happens to the tree meanwhile.
type rootFiles struct{}

func (rootFiles) Open(root string) (Dir, error) {
	r, err := os.OpenRoot(root)
	if err != nil {
		return nil, err
	}
	return rootDir{r}, nil
}

type rootDir struct{ r *os.Root }

// escapes tells an os.Root refusal (its error is not exported) from any
// other failure, so that it counts as refused.
func escapes(err error) error {
	if err != nil && strings.Contains(err.Error(), "path escapes from parent") {
		return refusedf("the path leads out of file_root (through a symlink)")
	}
	return err
}

func (d rootDir) ReadFile(name string, maxBytes int64) ([]byte, error) {
	f, err := d.r.Open(name)
	if err != nil {
		return nil, escapes(err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		return nil, pathError("read", name, errors.New("is a directory"))
	}
	data, err := io.ReadAll(io.LimitReader(f, maxBytes+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > maxBytes {
		return nil, fmt.Errorf("%s is larger than max_bytes (%d bytes)", name, maxBytes)
	}
	return data, nil
}

func (d rootDir) WriteFile(name string, data []byte) error {
	return escapes(d.r.WriteFile(name, data, 0o644))
}

func (d rootDir) AppendFile(name string, data []byte) error {
	f, err := d.r.OpenFile(name, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return escapes(err)
	}
	// One write: lines that several workers append stay whole.
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (d rootDir) Stat(name string) (FileInfo, error) {
	fi, err := d.r.Stat(name)
	if err != nil {
		return FileInfo{}, escapes(err)
	}
	return FileInfo{Name: fi.Name(), Size: fi.Size(), IsDir: fi.IsDir(), Mode: uint32(fi.Mode().Perm()), ModTime: fi.ModTime()}, nil
}

func (d rootDir) List(name string) ([]string, error) {
	f, err := d.r.Open(name)
	if err != nil {
		return nil, escapes(err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	return names, nil
}

func (d rootDir) Remove(name string) error { return escapes(d.r.Remove(name)) }

func (d rootDir) MkdirAll(name string) error { return escapes(d.r.MkdirAll(name, 0o755)) }

func (d rootDir) Close() error { return d.r.Close() }
