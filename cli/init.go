package cli

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"
)

// starter is what symphony init writes: a task, its test and a
// symphony.star.
//
//go:embed starter/*
var starter embed.FS

// initDir is where symphony init writes when given no directory.
const initDir = "tasks"

func initCommand() *cli.Command {
	return &cli.Command{
		Name:      "init",
		Usage:     "write a starter tasks directory (a task, its test, a symphony.star); overwrites nothing",
		ArgsUsage: "[DIR]",
		Action:    initTasks,
	}
}

func initTasks(c *cli.Context) error {
	if c.NArg() > 1 {
		return usagef("init takes one directory, got %d arguments", c.NArg())
	}
	dir := initDir
	if c.NArg() == 1 {
		dir = c.Args().First()
	}
	entries, err := fs.ReadDir(starter, "starter")
	if err != nil {
		return err
	}
	// Nothing is written if anything would be overwritten.
	var exist []string
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if _, err := os.Lstat(p); err == nil {
			exist = append(exist, p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("init %s: %w", dir, err)
		}
	}
	if len(exist) > 0 {
		verb := "exists"
		if len(exist) > 1 {
			verb = "exist"
		}
		return fmt.Errorf("init %s: %s already %s; init overwrites nothing: choose another directory, as in 'symphony init new-tasks'",
			dir, strings.Join(exist, ", "), verb)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("init %s: %w", dir, err)
	}
	var wrote []string
	for _, e := range entries {
		src, err := starter.ReadFile("starter/" + e.Name())
		if err != nil {
			return err
		}
		p := filepath.Join(dir, e.Name())
		text := strings.ReplaceAll(string(src), "DIR", dir)
		if err := writeNew(p, []byte(text)); err != nil {
			return fmt.Errorf("init %s: %w (written so far: %s)", dir, err, strings.Join(wrote, ", "))
		}
		wrote = append(wrote, p)
	}
	w := c.App.Writer
	fmt.Fprintf(w, "wrote %s\n\nnext:\n", strings.Join(wrote, ", "))
	fmt.Fprintf(w, "  symphony test %s       # run the task's tests, no broker needed\n", dir)
	fmt.Fprintf(w, "  symphony run %s        # the daemon, on the embedded broker (symphony.db here)\n", dir)
	fmt.Fprintf(w, "  symphony publish user.created '{\"name\": \"Ada\", \"email\": \"ada@example.com\"}'\n")
	return nil
}

// writeNew creates a file that must not exist yet: one created meanwhile
// is not overwritten either.
func writeNew(p string, data []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
