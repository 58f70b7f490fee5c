package cli

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/symphony-go/symphony/starlarklib"
)

// testCommand is symphony test: the task tests, run from the files on
// disk as they are now, with every capability stubbed and no broker.
func testCommand() *cli.Command {
	return &cli.Command{
		Name:      "test",
		Usage:     "run the task tests (test_* functions in *_test.star files); no broker is used",
		ArgsUsage: "PATH...",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "run", EnvVars: []string{envName("run")},
				Usage: "run only the test functions whose name matches this regular expression"},
		},
		Action: runTests,
	}
}

func runTests(c *cli.Context) error {
	paths := c.Args().Slice()
	if len(paths) == 0 {
		return usagef("test needs a tasks directory or test files, as in 'symphony test tasks/'")
	}
	// symphony.star is read as run and check read it: the databases it
	// names (config(databases = ...), "name=URL" each) are the ones
	// task(databases = ...) may list. No database is opened.
	file, err := starlarklib.LoadConfig(paths)
	if err != nil {
		return err
	}
	opts := starlarklib.TestOptions{Databases: file.DatabaseNames()}
	if p := c.String("run"); p != "" {
		re, err := regexp.Compile(p)
		if err != nil {
			return usagef("--run: %v", err)
		}
		opts.Run = re
	}
	w := c.App.Writer
	opts.Report = func(r starlarklib.TestResult) {
		status := "PASS"
		if !r.Passed {
			status = "FAIL"
		}
		if r.Name == "" {
			fmt.Fprintf(w, "%s %s (the file does not load)\n", status, r.File)
		} else {
			fmt.Fprintf(w, "%s %s %s (%.2fs)\n", status, r.File, r.Name, r.Took.Seconds())
		}
		if r.Failure != "" {
			for _, line := range strings.Split(r.Failure, "\n") {
				fmt.Fprintf(w, "    %s\n", line)
			}
		}
	}
	sum, err := starlarklib.RunTests(paths, opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%d passed, %d failed\n", sum.Passed, sum.Failed)
	if sum.Failed > 0 {
		return cli.Exit("", exitError)
	}
	return nil
}
