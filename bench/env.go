package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// env is what the benchmarks of one invocation share: the options, the
// machine, the binaries built for it and a temporary root that is removed
// at the end.
type env struct {
	opts    options
	log     io.Writer
	machine machine
	// benchDir is this module's directory, rootDir symphony's.
	benchDir, rootDir string
	tmp               string

	buildMu  sync.Mutex
	binaries map[string]string
}

func newEnv(ctx context.Context, o options, log io.Writer) (*env, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return nil, fmt.Errorf("cannot tell where the bench sources are")
	}
	benchDir := filepath.Dir(file)
	rootDir := filepath.Dir(benchDir)
	if _, err := os.Stat(filepath.Join(rootDir, "go.mod")); err != nil {
		return nil, fmt.Errorf("symphony's module is not at %s: %w", rootDir, err)
	}
	tmp, err := os.MkdirTemp("", "symphony-bench-")
	if err != nil {
		return nil, err
	}
	e := &env{opts: o, log: log, benchDir: benchDir, rootDir: rootDir, tmp: tmp, binaries: map[string]string{}}
	e.machine = describeMachine(ctx, tmp)
	e.describeSource(ctx)
	return e, nil
}

func (e *env) close() {
	if e.opts.keep {
		fmt.Fprintf(e.log, "kept %s\n", e.tmp)
		return
	}
	os.RemoveAll(e.tmp)
}

func (e *env) logf(format string, args ...any) {
	fmt.Fprintf(e.log, format+"\n", args...)
}

// drop removes a directory made by dir, unless -keep.
func (e *env) drop(dir string) {
	if !e.opts.keep {
		os.RemoveAll(dir)
	}
}

// dir makes a fresh directory under the temporary root. Every database of
// every system lives in one of these: same file system, same disk.
func (e *env) dir(prefix string) (string, error) {
	return os.MkdirTemp(e.tmp, prefix+"-")
}

// symphony builds the binary from the sources beside this module, once, as
// a user would: go build, no flags. The commit and the uncommitted changes
// are read again right after the build: others may be editing the tree.
func (e *env) symphony(ctx context.Context) (string, error) {
	_, built := e.binaries["symphony"]
	p, err := e.build(ctx, "symphony", e.rootDir, ".")
	if err == nil && !built {
		e.describeSource(ctx)
	}
	return p, err
}

// describeSource reads the commit symphony's tree is at and, since others
// may be editing symphony in the same work tree and what is built is what
// is there, the files outside bench/ that differ from it.
func (e *env) describeSource(ctx context.Context) {
	e.machine.Source, e.machine.Changed = "unknown", nil
	if out, err := exec.CommandContext(ctx, "git", "-C", e.rootDir, "describe", "--always", "--dirty").Output(); err == nil {
		e.machine.Source = strings.TrimSpace(string(out))
	}
	if out, err := exec.CommandContext(ctx, "git", "-C", e.rootDir, "status", "--porcelain", "--", ".", ":(exclude)bench").Output(); err == nil {
		for line := range strings.SplitSeq(strings.TrimRight(string(out), "\n"), "\n") {
			if len(line) > 3 {
				e.machine.Changed = append(e.machine.Changed, strings.TrimSpace(line[3:]))
			}
		}
	}
}

// symphonyProfiled builds profiled/main.go: the same command line, with
// CPU, blocking and mutex profiles written where SYMPHONY_BENCH_CPUPROFILE
// says. It is built in symphony's module through an overlay that places
// the file in a directory of its own there, so that nothing is written into
// that module and this one need not require it.
func (e *env) symphonyProfiled(ctx context.Context) (string, error) {
	const pkg = "zz_bench_profiled"
	overlay := filepath.Join(e.tmp, "overlay.json")
	b, err := json.Marshal(map[string]map[string]string{"Replace": {
		filepath.Join(e.rootDir, pkg, "main.go"): filepath.Join(e.benchDir, "profiled", "main.go"),
	}})
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(overlay, b, 0o644); err != nil {
		return "", err
	}
	// The build tag keeps the file out of this module's own builds.
	return e.build(ctx, "symphony-profiled", e.rootDir, "-tags", "symphony_bench_profiled", "-overlay", overlay, "./"+pkg)
}

func (e *env) build(ctx context.Context, name, dir string, args ...string) (string, error) {
	e.buildMu.Lock()
	defer e.buildMu.Unlock()
	if p, ok := e.binaries[name]; ok {
		return p, nil
	}
	out := filepath.Join(e.tmp, "bin", name)
	cmd := exec.CommandContext(ctx, "go", append([]string{"build", "-o", out}, args...)...)
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s in %s: %v\n%s", strings.Join(args, " "), dir, err, b)
	}
	e.binaries[name] = out
	return out, nil
}

// machine is what the figures were measured on.
type machine struct {
	Cores     int
	CPU       string
	GoVersion string
	OS        string
	Kernel    string
	FS        string // file system of the temporary directories
	Date      time.Time
	// Source is the commit symphony was built from, "-dirty" when the
	// work tree had changes; Changed are the files outside bench/ that
	// differed from it.
	Source  string
	Changed []string
}

// sourceNote says which uncommitted changes of symphony were built, for a
// section's first line: empty when there were none outside bench/.
// header is the opening of every README section: when, where and on what
// the figures were measured; extra names what else ran there ("databases
// on ...", RabbitMQ's version).
func (m machine) header(extra, loadBefore, loadAfter string) string {
	return fmt.Sprintf("Measured %s on %d cores (`runtime.NumCPU`), %s, %s %s, kernel %s; %s; symphony built from `%s` (`git describe --dirty`)%s.\n",
		m.Date.Format("2006-01-02 15:04 UTC"), m.Cores, m.CPU, m.GoVersion, m.OS, m.Kernel, extra, m.Source, m.sourceNote()) +
		fmt.Sprintf("Load average (1, 5, 15 min) %s before, %s after: the machine is shared, and other work on it skews every figure.\n",
			loadBefore, loadAfter)
}

func (m machine) sourceNote() string {
	if len(m.Changed) == 0 {
		return " (no uncommitted change outside bench/)"
	}
	return " with uncommitted changes to " + strings.Join(m.Changed, ", ")
}

func describeMachine(ctx context.Context, tmp string) machine {
	m := machine{
		Cores:     runtime.NumCPU(),
		CPU:       cpuModel(),
		GoVersion: runtime.Version(),
		OS:        runtime.GOOS + "/" + runtime.GOARCH,
		FS:        fsOf(tmp),
		Date:      time.Now().UTC(),
	}
	if out, err := exec.CommandContext(ctx, "uname", "-r").Output(); err == nil {
		m.Kernel = strings.TrimSpace(string(out))
	}
	return m
}

func (m machine) line() string {
	return fmt.Sprintf("%s, %d cores (%s), %s, %s, kernel %s, temp dirs on %s, symphony at %s",
		m.Date.Format("2006-01-02 15:04 UTC"), m.Cores, m.CPU, m.GoVersion, m.OS, m.Kernel, m.FS, m.Source)
}

// loadAvg is the 1, 5 and 15 minute load averages: other work on the
// machine skews every figure, and this shows how much there was.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "model name", "Model", "cpu model":
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// fsOf names the file system holding path, from the longest matching mount
// point of /proc/mounts.
func fsOf(path string) string {
	f, err := os.Open("/proc/mounts")
	if err != nil {
		return "unknown file system"
	}
	defer f.Close()
	best, kind, dev := "", "", ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 {
			continue
		}
		mnt := fields[1]
		if (path == mnt || strings.HasPrefix(path, strings.TrimSuffix(mnt, "/")+"/")) && len(mnt) >= len(best) {
			best, dev, kind = mnt, fields[0], fields[2]
		}
	}
	if best == "" {
		return "unknown file system"
	}
	return fmt.Sprintf("%s (%s at %s)", kind, dev, best)
}

// process is a child the harness started; kill ends it and its group.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// start runs cmd in its own process group, killed with the group when ctx
// ends.
func start(ctx context.Context, cmd *exec.Cmd) (*process, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	go func() {
		select {
		case <-ctx.Done():
			p.kill()
		case <-p.done:
		}
	}()
	return p, nil
}

// kill ends the process, its process group and every process below it:
// symphony's worker processes run in process groups of their own, out of
// reach of a signal to the daemon's group.
func (p *process) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	below := descendants(p.cmd.Process.Pid)
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	for _, pid := range below {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	<-p.done
}

// stop sends SIGTERM and waits up to grace for the exit, then kills.
func (p *process) stop(grace time.Duration) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(grace):
		p.kill()
		return fmt.Errorf("did not stop within %s of SIGTERM; killed", grace)
	}
}
