package cli

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

func TestInterspersed(t *testing.T) {
	commands := newApp(nil, io.Discard, io.Discard).Commands
	for _, tc := range []struct{ in, want string }{
		{"run tasks/ --admin-addr 127.0.0.1:9000", "run --admin-addr 127.0.0.1:9000 -- tasks/"},
		{"run --admin-addr 127.0.0.1:9000 tasks/", "run --admin-addr 127.0.0.1:9000 -- tasks/"},
		{"run a --no-watch b --task=x", "run --no-watch --task=x -- a b"},
		{"publish k {} --header a=b", "publish --header a=b -- k {}"},
		{"publish k - --content-type text/plain", "publish --content-type text/plain -- k -"},
		{"publish k -5", "publish -- k -5"},
		{"publish k -- --header", "publish -- k --header"},
		{"publish --header a=b -- k --x --header", "publish --header a=b -- k --x --header"},
		{"publish k --bogus v", "publish --bogus -- k v"},
		{"publish k --file", "publish --file -- k"},
		{"dead list flaky --json --limit 3", "dead list --json --limit 3 -- flaky"},
		{"dead --broker sqlite:x.db list flaky", "dead list --broker sqlite:x.db -- flaky"},
		{"dead --json", "dead --json"},
		{"dead nothing --json", "dead nothing --json"},
		{"status --json", "status --json"},
		{"--version", "--version"},
		{"--help run x", "--help run -- x"},
		{"bogus --x y", "bogus --x y"},
		{"run", "run"},
	} {
		got := strings.Join(interspersed(commands, append([]string{"symphony"}, strings.Fields(tc.in)...))[1:], " ")
		if got != tc.want {
			t.Errorf("%s\n got %s\nwant %s", tc.in, got, tc.want)
		}
	}
}

// Every flag of every command is read the same before and after the
// arguments, by cli itself.
func TestEveryFlagInBothPositions(t *testing.T) {
	type seen struct {
		args  []string
		value string
	}
	var leaves [][]string
	for _, c := range newApp(nil, io.Discard, io.Discard).Commands {
		if len(c.Subcommands) == 0 {
			leaves = append(leaves, []string{c.Name})
		}
		for _, sub := range c.Subcommands {
			leaves = append(leaves, []string{c.Name, sub.Name})
		}
	}
	for _, path := range leaves {
		app := newApp(nil, io.Discard, io.Discard)
		leaf := findCommand(app.Commands, path[0])
		if len(path) == 2 {
			leaf = findCommand(leaf.Subcommands, path[1])
		}
		for _, f := range leaf.Flags {
			name := f.Names()[0]
			flag := []string{"--" + name, "7"}
			if !takesValue(leaf.Flags, name) {
				flag = flag[:1]
			}
			var required []string
			for _, other := range leaf.Flags {
				if r, ok := other.(cli.RequiredFlag); ok && r.IsRequired() && other.Names()[0] != name {
					required = append(required, "--"+other.Names()[0], "r")
				}
			}
			var got []seen
			leaf.Action = func(c *cli.Context) error {
				v := fmt.Sprint(c.Value(name))
				if _, ok := f.(*cli.StringSliceFlag); ok {
					v = strings.Join(c.StringSlice(name), ",")
				}
				got = append(got, seen{c.Args().Slice(), v})
				return nil
			}
			for _, args := range [][]string{
				slices.Concat([]string{"symphony"}, path, required, flag, []string{"arg"}),
				slices.Concat([]string{"symphony"}, path, []string{"arg"}, flag, required),
			} {
				if err := app.Run(interspersed(app.Commands, args)); err != nil {
					t.Errorf("%s: %v", strings.Join(args, " "), err)
				}
			}
			want := "true"
			if len(flag) == 2 {
				want = "7"
			}
			if len(got) != 2 || !slices.Equal(got[0].args, []string{"arg"}) || !slices.Equal(got[1].args, []string{"arg"}) ||
				got[0].value != want || got[1].value != want {
				t.Errorf("%s --%s: before and after the argument read %+v", strings.Join(path, " "), name, got)
			}
		}
	}
}
