//go:build !linux

package sqlite

import "os"

// self is this process as the processes table records it. Without
// Linux's /proc there is no cheap, certain way to tell that a pid names
// the same process it did, so the machine is left unknown and no process
// is ever taken for gone: its leases expire instead.
func self() identity {
	host, _ := os.Hostname()
	return identity{host: host, pid: os.Getpid()}
}

func (me identity) gone(identity) bool { return false }
