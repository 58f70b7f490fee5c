//go:build !linux

package cli

// monotonicUsec: only Linux has systemd.
func monotonicUsec() (int64, bool) { return 0, false }
