//go:build unix

package cli

import (
	"os"
	"syscall"
)

// daemonSignals are what the daemon handles: INT, TERM and QUIT stop it,
// HUP reloads, USR1 logs a status summary.
func daemonSignals() []os.Signal {
	return []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT, syscall.SIGHUP, syscall.SIGUSR1}
}

func isReload(sig os.Signal) bool { return sig == syscall.SIGHUP }

func isStatus(sig os.Signal) bool { return sig == syscall.SIGUSR1 }
