// Package cli is symphony's command line: its commands and flags, the
// settings merged from flags, environment and symphony.star, signal
// handling, and the wiring of task loading, brokers and the engine. It is
// the only package that sees every other one.
package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"github.com/urfave/cli/v2"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/engine"
)

// Exit codes (SPEC §4).
const (
	exitOK         = 0
	exitError      = 1
	exitUsage      = 2
	exitUnroutable = 3
	exitForced     = 255
)

// version is set at build time with -ldflags "-X .../cli.version=v1.2.3".
var version = ""

// usageError marks a mistake on the command line.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// errHelpShown is the usage error of a command line that named no command:
// its help has been shown already, and is the whole message.
var errHelpShown = usageError{errors.New("no command")}

// Main runs the command line in args and returns the process's exit code.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	app := newApp(stdin, stdout, stderr)
	err := app.Run(interspersed(app.Commands, args))
	if err == nil {
		return exitOK
	}
	if errors.Is(err, errHelpShown) {
		return exitUsage
	}
	code := exitError
	var exitCoder cli.ExitCoder
	switch {
	case errors.As(err, new(usageError)):
		code = exitUsage
	case errors.Is(err, broker.ErrUnroutable):
		code = exitUnroutable
	case errors.Is(err, engine.ErrForced):
		code = exitForced
	case errors.As(err, &exitCoder):
		code = exitCoder.ExitCode()
	}
	if msg := err.Error(); msg != "" {
		fmt.Fprintf(stderr, "symphony: %s\n", msg)
	}
	if code == exitUsage {
		fmt.Fprintln(stderr, "Run 'symphony --help' or 'symphony COMMAND --help' for usage.")
	}
	return code
}

// newApp is the command line's commands and flags.
func newApp(stdin io.Reader, stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:            "symphony",
		Usage:           "run Starlark tasks on messages from a topic exchange",
		Version:         versionString(),
		Reader:          stdin,
		Writer:          stdout,
		ErrWriter:       stderr,
		HideHelpCommand: true,
		Suggest:         true,
		// A header value or a path may hold a comma; a repeatable flag is
		// repeated, not split (--task alone splits, in its option).
		DisableSliceFlagSeparator: true,
		// Errors are printed and mapped to exit codes below, not by cli.
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return usageError{err}
		},
		Commands: []*cli.Command{
			runCommand(),
			checkCommand(),
			testCommand(),
			initCommand(),
			publishCommand(),
			deadCommand(),
			statusCommand(),
			versionCommand(),
			workerCommand(),
		},
	}
	app.Action = unknownCommand(cli.ShowAppHelp, app.Commands)
	for _, c := range app.Commands {
		markUsageErrors(c)
		if len(c.Subcommands) > 0 {
			c.Action = unknownCommand(cli.ShowSubcommandHelp, c.Subcommands)
		}
	}
	return app
}

// unknownCommand is the action of the app and of a command with
// subcommands: "help" shows their help; no command shows it on standard
// error and is a usage error, as an unknown one is (cli's own answer exits
// 3, the code of an unroutable publish).
func unknownCommand(help cli.ActionFunc, commands []*cli.Command) cli.ActionFunc {
	return func(c *cli.Context) error {
		name := c.Args().First()
		if name == "help" {
			return help(c)
		}
		if name == "" {
			w := c.App.Writer
			c.App.Writer = c.App.ErrWriter
			err := help(c)
			c.App.Writer = w
			if err != nil {
				return err
			}
			return errHelpShown
		}
		msg := fmt.Sprintf("no command %q", name)
		if cli.SuggestCommand != nil {
			if s := cli.SuggestCommand(commands, name); s != "" {
				msg += ". " + s
			}
		}
		return usagef("%s", msg)
	}
}

// markUsageErrors makes flag-parsing errors of c and its subcommands exit
// with the usage code.
func markUsageErrors(c *cli.Command) {
	c.OnUsageError = func(_ *cli.Context, err error, _ bool) error { return usageError{err} }
	for _, sub := range c.Subcommands {
		markUsageErrors(sub)
	}
}

func versionString() string {
	v, commit, goVersion := version, "unknown", "unknown"
	if info, ok := debug.ReadBuildInfo(); ok {
		if v == "" && info.Main.Version != "" && info.Main.Version != "(devel)" {
			v = info.Main.Version
		}
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				commit = s.Value
			}
		}
		goVersion = info.GoVersion
	}
	if v == "" {
		v = "dev"
	}
	return fmt.Sprintf("%s (commit %s, %s)", v, commit, goVersion)
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version, commit and Go version",
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("version takes no arguments")
			}
			fmt.Fprintf(c.App.Writer, "symphony %s\n", versionString())
			return nil
		},
	}
}

// isTerminal tells a terminal from a pipe or file without a dependency: a
// terminal is a character device.
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
