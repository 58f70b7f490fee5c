package starlarklib

import (
	"os"
	"os/exec"
)

// ownGroup: Windows has no process groups to kill as one; the program
// alone is killed.
func ownGroup(*exec.Cmd) {}

func killGroup(cmd *exec.Cmd, _ bool) {
	if cmd.Process != nil {
		cmd.Process.Kill()
	}
}

func exitCode(ps *os.ProcessState) int { return ps.ExitCode() }
