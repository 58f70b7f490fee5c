package starlarklib

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"

	"github.com/symphony-go/symphony/tasks"
)

// DefaultExecMaxOutput bounds each of a program's stdout and stderr.
const DefaultExecMaxOutput = 10 << 20

// execModule is exec (SPEC §2.1): run(argv, stdin = None, env = None,
// cwd = None, timeout = None, max_output = 10 MiB) runs a program of
// allow_commands, without a shell, and returns struct(code, stdout,
// stderr): code is the exit status (-N when killed by signal N), stdout
// and stderr are str. A non-zero code is a value, not an error.
func execModule() *starlarkstruct.Module {
	return newModule("exec", map[string]builtinFunc{"run": execRun})
}

func execRun(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var (
		argv                          *starlark.List
		stdin, env, cwd, timeout, max starlark.Value = starlark.None, starlark.None, starlark.None, starlark.None, starlark.None
	)
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "argv", &argv, "stdin?", &stdin, "env?", &env,
		"cwd?", &cwd, "timeout?", &timeout, "max_output?", &max); err != nil {
		return nil, err
	}
	st := stateOf(th)
	if msg := notDuringLoad(b.Name(), st); msg != "" {
		return nil, fmt.Errorf("%s", msg)
	}
	var words []string
	for i := range argv.Len() {
		s, ok := textOf(argv.Index(i))
		if !ok {
			return nil, fmt.Errorf("%s: argv[%d] must be a str, got %s", b.Name(), i, argv.Index(i).Type())
		}
		words = append(words, s)
	}
	program := ""
	if len(words) > 0 {
		program = words[0]
	}
	c, err := st.begin(b, tasks.CapExec, program)
	if err != nil {
		return nil, err
	}
	req, err := buildExec(b.Name(), st.task.spec, st.world().Exec, words, stdin, env, cwd, max)
	if err != nil {
		return nil, c.end(err)
	}
	ctx := c.ctx
	if timeout != starlark.None {
		d, err := nonNegativeDuration("timeout", timeout)
		if err != nil {
			return nil, c.end(fmt.Errorf("%s: %v", b.Name(), err))
		}
		if d > 0 {
			var cancel func()
			ctx, cancel = contextWithTimeout(ctx, d)
			defer cancel()
		}
	}
	res, err := st.world().Exec.Run(ctx, req)
	if err != nil {
		return nil, c.end(fmt.Errorf("%s %s: %w", b.Name(), program, err))
	}
	c.attr("code", res.Code)
	c.end(nil)
	return resultValue(res), nil
}

// resultValue is what a task sees of a program's end.
func resultValue(res *ExecResult) starlark.Value {
	return starlarkstruct.FromStringDict(starlark.String("result"), starlark.StringDict{
		"code":   starlark.MakeInt(res.Code),
		"stdout": starlark.String(res.Stdout),
		"stderr": starlark.String(res.Stderr),
	})
}

// buildExec checks a run's arguments: the program must be in
// allow_commands, as a name (looked up in the daemon's PATH) or as the
// exact path listed; runner finds it.
func buildExec(fn string, spec tasks.Spec, runner Runner, argv []string, stdin, env, cwd, max starlark.Value) (*ExecRequest, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("%s: argv is empty: give the program and its arguments, as [\"convert\", \"in.png\", \"out.jpg\"]", fn)
	}
	if !slices.Contains(spec.AllowCommands, argv[0]) {
		return nil, refusedf("%s: %s is not in allow_commands of task %s (%s)", fn, argv[0], spec.Name, strings.Join(spec.AllowCommands, ", "))
	}
	path, err := runner.LookPath(argv[0])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fn, err)
	}
	req := &ExecRequest{Task: spec.Name, Path: path, Argv: argv, MaxOutput: DefaultExecMaxOutput, Dir: spec.FileRoot}
	if stdin != starlark.None {
		data, ok := dataOf(stdin)
		if !ok {
			return nil, fmt.Errorf("%s: stdin must be str or bytes, got %s", fn, stdin.Type())
		}
		req.Stdin = data
	}
	hasPath := false
	if env != starlark.None {
		m, ok := env.(starlark.IterableMapping)
		if !ok {
			return nil, fmt.Errorf("%s: env must be a dict, got %s", fn, env.Type())
		}
		for _, kv := range m.Items() {
			k, kok := kv[0].(starlark.String)
			v, vok := textOf(kv[1])
			if !kok || !vok || k == "" || strings.ContainsAny(string(k), "=\x00") {
				return nil, fmt.Errorf("%s: env must map names to str, got %s: %s", fn, kv[0], kv[1].Type())
			}
			hasPath = hasPath || k == "PATH"
			req.Env = append(req.Env, string(k)+"="+v)
		}
	}
	if !hasPath {
		req.Env = append(req.Env, "PATH="+os.Getenv("PATH"))
	}
	if cwd != starlark.None {
		dir, ok := cwd.(starlark.String)
		if !ok {
			return nil, fmt.Errorf("%s: cwd must be a str, got %s", fn, cwd.Type())
		}
		req.Dir = string(dir)
		if !filepath.IsAbs(req.Dir) && spec.FileRoot != "" {
			req.Dir = filepath.Join(spec.FileRoot, req.Dir)
		}
	}
	if max != starlark.None {
		n, err := parseBytes(max)
		if err != nil {
			return nil, fmt.Errorf("%s: max_output: %v", fn, err)
		}
		req.MaxOutput = n
	}
	return req, nil
}
