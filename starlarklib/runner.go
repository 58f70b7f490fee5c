package starlarklib

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// processRunner is the real Runner. A program runs in a process group of
// its own (on Unix), which is killed as a whole: when the run's context
// ends (TERM, then KILL after termGrace), when an output goes over its
// bound, and once the program itself has exited, so that nothing it
// started outlives it.
type processRunner struct{}

// termGrace is how long a program has between TERM and KILL.
const termGrace = time.Second

func contextWithTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, d, fmt.Errorf("timeout (%s)", d))
}

// boundedBuffer collects output up to max bytes; over tells the runner.
type boundedBuffer struct {
	mu   sync.Mutex
	buf  []byte
	max  int64
	over bool
}

func (b *boundedBuffer) fill(r io.Reader, overflow func()) {
	chunk := make([]byte, 32<<10)
	for {
		n, err := r.Read(chunk)
		if n > 0 {
			b.mu.Lock()
			if int64(len(b.buf)+n) > b.max {
				if !b.over {
					b.over = true
					b.mu.Unlock()
					overflow()
					b.mu.Lock()
				}
			} else {
				b.buf = append(b.buf, chunk[:n]...)
			}
			b.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

// LookPath implements Runner: a name is looked up in the daemon's PATH,
// a path (with a separator) must exist.
func (processRunner) LookPath(program string) (string, error) {
	if !strings.ContainsRune(program, '/') && !strings.ContainsRune(program, filepath.Separator) {
		p, err := exec.LookPath(program)
		if err != nil {
			return "", fmt.Errorf("program %s is not found in PATH (%s)", program, os.Getenv("PATH"))
		}
		return p, nil
	}
	if _, err := os.Stat(program); err != nil {
		return "", fmt.Errorf("program %s: %v", program, err)
	}
	return program, nil
}

func (processRunner) Run(ctx context.Context, req *ExecRequest) (*ExecResult, error) {
	if ctx.Err() != nil {
		return nil, fmt.Errorf("not started: %w", context.Cause(ctx))
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, err
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		errR.Close()
		errW.Close()
		return nil, err
	}
	cmd := &exec.Cmd{Path: req.Path, Args: req.Argv, Env: req.Env, Dir: req.Dir, Stdin: inR, Stdout: outW, Stderr: errW}
	ownGroup(cmd)
	err = cmd.Start()
	// The child has its ends; ours would keep the pipes open.
	inR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		inW.Close()
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("program not found: %w", err)
		}
		return nil, err
	}
	var (
		killOnce sync.Once
		overflow = func() { killOnce.Do(func() { killGroup(cmd, true) }) }
		stdout   = &boundedBuffer{max: req.MaxOutput}
		stderr   = &boundedBuffer{max: req.MaxOutput}
		readers  sync.WaitGroup
	)
	readers.Add(2)
	go func() { defer readers.Done(); stdout.fill(outR, overflow) }()
	go func() { defer readers.Done(); stderr.fill(errR, overflow) }()
	go func() {
		// A program that does not read its input must not block us.
		inW.Write(req.Stdin)
		inW.Close()
	}()

	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var (
		waitErr  error
		canceled bool
	)
	select {
	case waitErr = <-exited:
	case <-ctx.Done():
		canceled = true
		killGroup(cmd, false)
		select {
		case waitErr = <-exited:
		case <-time.After(termGrace):
			killGroup(cmd, true)
			waitErr = <-exited
		}
	}
	// Whatever the program started goes with it.
	killGroup(cmd, true)
	drained := make(chan struct{})
	go func() { readers.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(termGrace):
		// A descendant left the group and holds the pipes: stop reading.
		outR.Close()
		errR.Close()
		<-drained
	}
	outR.Close()
	errR.Close()

	switch {
	case canceled:
		return nil, fmt.Errorf("killed: %w", context.Cause(ctx))
	case stdout.over:
		return nil, fmt.Errorf("killed: its stdout went over max_output (%d bytes)", req.MaxOutput)
	case stderr.over:
		return nil, fmt.Errorf("killed: its stderr went over max_output (%d bytes)", req.MaxOutput)
	}
	var ee *exec.ExitError
	if waitErr != nil && !errors.As(waitErr, &ee) {
		return nil, waitErr
	}
	return &ExecResult{Code: exitCode(cmd.ProcessState), Stdout: stdout.buf, Stderr: stderr.buf}, nil
}
