package cli

import (
	"slices"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
)

// interspersed moves the flags of a command line in front of its
// arguments, so that flags may come anywhere after the command's name
// (`symphony run tasks/ --admin-addr :9000`): urfave/cli, like Go's flag
// package, stops at the first argument. A value-taking flag keeps the
// word after it; "--" still ends the flags. Words before the command, an
// unknown command and anything after "--" are left as they are.
func interspersed(commands []*cli.Command, args []string) []string {
	if len(args) < 2 {
		return args
	}
	out := []string{args[0]}
	rest := args[1:]
	// Words before the command are the app's own flags (--help, --version).
	for len(rest) > 0 && strings.HasPrefix(rest[0], "-") {
		out, rest = append(out, rest[0]), rest[1:]
	}
	if len(rest) == 0 {
		return args
	}
	cmd := findCommand(commands, rest[0])
	if cmd == nil {
		return args
	}
	out, rest = append(out, rest[0]), rest[1:]
	// cli adds a help subcommand to each command it has run.
	if slices.ContainsFunc(cmd.Subcommands, func(c *cli.Command) bool { return c.Name != "help" }) {
		// The subcommand is the first argument that is not a flag or a
		// flag's value; flags before it move after it.
		var all []cli.Flag
		for _, sub := range cmd.Subcommands {
			all = append(all, sub.Flags...)
		}
		flags, positional := split(all, rest)
		if len(positional) == 0 {
			return args
		}
		sub := findCommand(cmd.Subcommands, positional[0])
		if sub == nil {
			return args
		}
		out = append(out, positional[0])
		flags, positional = split(sub.Flags, append(flags, positional[1:]...))
		return join(out, flags, positional)
	}
	flags, positional := split(cmd.Flags, rest)
	return join(out, flags, positional)
}

func join(head, flags, positional []string) []string {
	out := append(head, flags...)
	if len(positional) > 0 {
		out = append(out, "--")
		out = append(out, positional...)
	}
	return out
}

func findCommand(commands []*cli.Command, name string) *cli.Command {
	for _, c := range commands {
		if c.Name == name || slices.Contains(c.Aliases, name) {
			return c
		}
	}
	return nil
}

// split separates flags (each with its value, when it takes one as the
// next word) from arguments. "-" (standard input) and a negative number
// are arguments; an unknown flag stays a flag, so that cli reports it.
func split(known []cli.Flag, args []string) (flags, positional []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return flags, append(positional, args[i+1:]...)
		}
		if a == "-" || !strings.HasPrefix(a, "-") || isNumber(a) {
			positional = append(positional, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		if takesValue(known, name) && i+1 < len(args) {
			i++
			flags = append(flags, args[i])
		}
	}
	return flags, positional
}

func isNumber(s string) bool {
	_, err := strconv.ParseFloat(s, 64)
	return err == nil
}

// takesValue is whether the flag of that name reads the next word. The help
// flag is added by cli itself and takes none.
func takesValue(known []cli.Flag, name string) bool {
	for _, f := range known {
		if !slices.Contains(f.Names(), name) {
			continue
		}
		if v, ok := f.(interface{ TakesValue() bool }); ok {
			return v.TakesValue()
		}
		return true
	}
	return false
}
