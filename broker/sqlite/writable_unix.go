//go:build unix

package sqlite

import "syscall"

// writable asks the kernel whether this process may create files in dir.
func writable(dir string) error { return syscall.Access(dir, 2 /* W_OK */) }
