// Command bench measures symphony side by side with the baseline each
// benchmark names, and records the figures and their ratio in README.md.
//
//	cd bench && go run . sqlite          # one benchmark
//	cd bench && go run . -write all      # every benchmark, README.md rewritten
//
// It is its own module so that the baselines (River, ...) never become
// dependencies of symphony itself. Figures come from here, never from a
// timed test (DESIGN.md rule 15).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// benchmark is one named comparison. Each lives in its own file and adds
// itself to the registry in an init function.
type benchmark struct {
	name  string
	about string
	run   func(ctx context.Context, env *env) (report, error)
}

// report is what a benchmark measured.
type report interface {
	// text is the table printed on the terminal.
	text() string
	// markdown is the README section, between its markers.
	markdown() string
}

// failing is a report that also records a failure of symphony it
// measured rather than hide it (a daemon that stopped consuming): its
// section is written with the failure in it, and the run exits 1.
type failing interface {
	failure() string
}

var registry = map[string]benchmark{}

func register(b benchmark) {
	if _, dup := registry[b.name]; dup {
		panic("benchmark registered twice: " + b.name)
	}
	registry[b.name] = b
}

// options are the flags every benchmark shares.
type options struct {
	n int
	// nSet: -n was given; benchmarks with a default of their own (workers,
	// reload) use it only then.
	nSet       bool
	edits      int
	workers    int
	runs       int
	write      bool
	readme     string
	cpuprofile string
	keep       bool
	verbose    bool
	// riverDefaultN is N for River with all its defaults, which works
	// 10·W jobs/s: measured once, with fewer jobs.
	riverDefaultN int
	// only keeps the configurations whose label contains it.
	only string
	// amqp is the RabbitMQ of the rabbitmq benchmark; prefetch its
	// consumers' prefetch.
	amqp     string
	prefetch int
	// loadSeconds is how long each load of the load benchmark lasts;
	// soakN the messages of the soak.
	loadSeconds float64
	soakN       int
}

func main() {
	// The load benchmark runs this program again as its publishers.
	if len(os.Args) > 1 && os.Args[1] == publisherMode {
		os.Exit(runPublisher(os.Args[2:], os.Stdout, os.Stderr))
	}
	if len(os.Args) > 1 && os.Args[1] == sinkMode {
		os.Exit(runSink(os.Stdout, os.Stderr))
	}
	os.Exit(mainCode(os.Args[1:], os.Stdout, os.Stderr))
}

func mainCode(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.IntVar(&o.n, "n", 20000, "messages (jobs) per run")
	fs.IntVar(&o.workers, "workers", 4, "workers: symphony's max_workers, River's MaxWorkers, the RabbitMQ consumers and Watermill handlers")
	fs.IntVar(&o.prefetch, "prefetch", defaultPrefetch, "rabbitmq: prefetch of every consumer (symphony's task, the plain channels, Watermill's Qos)")
	fs.StringVar(&o.amqp, "amqp", defaultAMQP(), "rabbitmq: the RabbitMQ to use, as a user allowed to use new virtual hosts (default $SYMPHONY_TEST_AMQP_URL, else the local guest)")
	fs.IntVar(&o.edits, "edits", 50, "reload: file edits whose reload latency is measured")
	fs.Float64Var(&o.loadSeconds, "load-seconds", 30, "load: how long each steady load lasts")
	fs.IntVar(&o.soakN, "soak-n", 1000000, "soak: messages through each broker")
	fs.IntVar(&o.runs, "runs", 3, "repetitions; the report gives the median and the spread")
	fs.IntVar(&o.riverDefaultN, "river-default-n", 2000, "jobs for River with all its defaults (capped at 10·workers jobs/s), measured in the first run only; 0 skips it")
	fs.StringVar(&o.only, "only", "", "measure only the configurations whose label contains this (e.g. symphony); not with -write")
	fs.BoolVar(&o.write, "write", false, "rewrite the benchmark's section of README.md with the figures")
	fs.StringVar(&o.readme, "readme", "README.md", "the README whose sections -write rewrites")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write CPU profiles of the work phases into this directory (figures are then not written)")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directories (databases, task files, logs)")
	fs.BoolVar(&o.verbose, "v", false, "print each run as it ends")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: go run . [flags] BENCHMARK... | all\n\nbenchmarks:\n")
		for _, name := range names() {
			fmt.Fprintf(stderr, "  %-10s %s\n", name, registry[name].about)
		}
		fmt.Fprintf(stderr, "\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "n" {
			o.nSet = true
		}
	})
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	if o.loadSeconds <= 0 || o.soakN <= 0 {
		fmt.Fprintln(stderr, "bench: -load-seconds and -soak-n must be positive")
		return 2
	}
	if o.n <= 0 || o.workers <= 0 || o.runs <= 0 || o.riverDefaultN < 0 || o.prefetch <= 0 || o.edits <= 0 {
		fmt.Fprintln(stderr, "bench: -n, -workers, -runs, -prefetch and -edits must be positive")
		return 2
	}
	if o.write && o.only != "" {
		fmt.Fprintln(stderr, "bench: -write records every configuration; drop -only")
		return 2
	}
	if o.write && o.cpuprofile != "" {
		fmt.Fprintln(stderr, "bench: -write and -cpuprofile exclude each other: profiled figures are not the ones to record")
		return 2
	}
	if o.cpuprofile != "" {
		if err := os.MkdirAll(o.cpuprofile, 0o755); err != nil {
			fmt.Fprintf(stderr, "bench: -cpuprofile: %v\n", err)
			return 1
		}
	}
	var todo []benchmark
	for _, a := range fs.Args() {
		if a == "all" {
			todo = todo[:0]
			for _, name := range names() {
				todo = append(todo, registry[name])
			}
			break
		}
		b, ok := registry[a]
		if !ok {
			fmt.Fprintf(stderr, "bench: no benchmark %q; known: %s, all\n", a, strings.Join(names(), ", "))
			return 2
		}
		todo = append(todo, b)
	}

	// An interrupt cancels ctx: children are killed and temporary
	// directories removed on the way out.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	e, err := newEnv(ctx, o, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	defer e.close()
	fmt.Fprintf(stdout, "%s\n", e.machine.line())
	failed := false
	for _, b := range todo {
		fmt.Fprintf(stderr, "== %s: %s\n", b.name, b.about)
		r, err := b.run(ctx, e)
		if err != nil {
			fmt.Fprintf(stderr, "bench: %s: %v\n", b.name, err)
			failed = true
			if errors.Is(err, context.Canceled) {
				break
			}
			continue
		}
		fmt.Fprintln(stdout, r.text())
		if o.write {
			if err := rewriteSection(o.readme, b.name, r.markdown()); err != nil {
				fmt.Fprintf(stderr, "bench: %s: %v\n", b.name, err)
				failed = true
				continue
			}
			fmt.Fprintf(stderr, "wrote the %s section of %s\n", b.name, o.readme)
		}
		if f, ok := r.(failing); ok {
			if msg := f.failure(); msg != "" {
				fmt.Fprintf(stderr, "bench: %s: %s\n", b.name, msg)
				failed = true
			}
		}
	}
	if failed {
		return 1
	}
	return 0
}

// defaultAMQP is the RabbitMQ symphony's tests use.
func defaultAMQP() string {
	if u := os.Getenv("SYMPHONY_TEST_AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

func names() []string {
	var out []string
	for name := range registry {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}
