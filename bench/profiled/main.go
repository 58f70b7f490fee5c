//go:build symphony_bench_profiled

// Command symphony-profiled is symphony's command line with profiles: when
// SYMPHONY_BENCH_CPUPROFILE names a file X.pprof, the whole life of the
// process is CPU-profiled into it, and the goroutine blocking and mutex
// contention it saw go to X.block.pprof and X.mutex.pprof. The benchmark
// harness runs it with -cpuprofile; the figures it records come from the
// plain binary.
//
// It is built inside symphony's module, not this one, with go build
// -overlay: the file appears there only for that build, so the profiled
// binary has exactly symphony's dependencies and this module none of them;
// the build tag keeps it out of this module's own builds.
package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"

	"github.com/symphony-go/symphony/cli"
)

func main() {
	path := os.Getenv("SYMPHONY_BENCH_CPUPROFILE")
	if path == "" {
		os.Exit(cli.Main(os.Args, os.Stdin, os.Stdout, os.Stderr))
	}
	f, err := os.Create(path)
	if err != nil {
		fail(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fail(err)
	}
	// Sample blocking events of 10µs and more, and every contended mutex.
	runtime.SetBlockProfileRate(10_000)
	runtime.SetMutexProfileFraction(1)
	code := cli.Main(os.Args, os.Stdin, os.Stdout, os.Stderr)
	pprof.StopCPUProfile()
	if err := f.Close(); err != nil {
		fail(err)
	}
	base := strings.TrimSuffix(path, ".pprof")
	for _, p := range []string{"block", "mutex"} {
		if err := write(p, base+"."+p+".pprof"); err != nil {
			fail(err)
		}
	}
	os.Exit(code)
}

func write(profile, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup(profile).WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "cpu profile: %v\n", err)
	os.Exit(1)
}
