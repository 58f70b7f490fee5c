//go:build !unix

package cli

import (
	"os"
	"syscall"
)

// daemonSignals are what the daemon handles where there are no Unix
// signals: ^C (os.Interrupt) and a console's close or shutdown (SIGTERM)
// stop it; file changes still reload.
func daemonSignals() []os.Signal { return []os.Signal{os.Interrupt, syscall.SIGTERM} }

func isReload(os.Signal) bool { return false }

func isStatus(os.Signal) bool { return false }
