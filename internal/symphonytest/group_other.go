//go:build !unix

package symphonytest

import (
	"os"
	"os/exec"
)

// ownGroup does nothing where there are no process groups: RabbitMQ
// clusters are started on Linux only (rabbitBin is Debian's).
func ownGroup(*exec.Cmd) {}

// killGroup kills the process itself.
func killGroup(pid int) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Kill()
}
