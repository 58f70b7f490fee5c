//go:build !linux

package engine

import (
	"errors"
	"os/exec"
)

func prepareProcess(*exec.Cmd) error { return errNoProcesses }

func (w *processWorker) rss() (int64, error) { return 0, errNoProcesses }

func rssOf(int) (int64, error) { return 0, errNoProcesses }

var errNoProcesses = errors.New("worker processes need Linux")
