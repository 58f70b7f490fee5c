package sqlite

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// self is this process as the processes table records it. On Linux a pid
// means one process within one boot and one pid namespace, and its start
// time (in clock ticks since boot, from /proc) tells it from a later
// process that got the same pid.
func self() identity {
	host, _ := os.Hostname()
	id := identity{host: host, pid: os.Getpid()}
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return id
	}
	ns, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		return id
	}
	// A /proc mounted for another pid namespace would name other
	// processes by our pids.
	if link, err := os.Readlink("/proc/self"); err != nil || link != strconv.Itoa(id.pid) {
		return id
	}
	started, err := startTime(id.pid)
	if err != nil {
		return id
	}
	id.machine = strings.TrimSpace(string(boot)) + " " + ns
	id.started = started
	return id
}

// errEnded: the process has exited and waits to be reaped (a zombie).
var errEnded = errors.New("the process has ended")

// startTime reads field 22 of /proc/PID/stat.
func startTime(pid int) (string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", err
	}
	// Field 2, the command name, may hold spaces and parentheses: the
	// fields after it start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return "", errors.New("unexpected /proc stat format")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return "", errors.New("unexpected /proc stat format")
	}
	if f[0] == "Z" || f[0] == "X" {
		return "", errEnded
	}
	return f[19], nil
}

// gone reports whether other is provably not running: it was recorded on
// this boot in this pid namespace, and its pid is free, ended, or taken
// by a process that started at another time.
func (me identity) gone(other identity) bool {
	if me.machine == "" || other.machine != me.machine || other.pid == me.pid && other.started == me.started {
		return false
	}
	started, err := startTime(other.pid)
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, errEnded):
		return true
	case err != nil:
		return false
	}
	return started != other.started
}
