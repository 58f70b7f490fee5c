package cli

import (
	"fmt"
	"net"
	"os"
	"strings"
)

// notifier tells a service manager what the daemon is doing (systemd's
// sd_notify protocol, for Type=notify and Type=notify-reload units): one
// datagram a state, to the socket NOTIFY_SOCKET names. A few lines of
// our own rather than a dependency.
type notifier struct {
	addr *net.UnixAddr
}

// newNotifier returns the service manager's notifier, or nil when the
// daemon runs without one; a nil notifier sends nothing.
func newNotifier() *notifier {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if strings.HasPrefix(path, "@") {
		path = "\x00" + path[1:] // an abstract socket
	}
	return &notifier{addr: &net.UnixAddr{Name: path, Net: "unixgram"}}
}

// send sends one state, such as "READY=1".
func (n *notifier) send(lines ...string) error {
	if n == nil {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("notify the service manager: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(strings.Join(lines, "\n") + "\n")); err != nil {
		return fmt.Errorf("notify the service manager: %w", err)
	}
	return nil
}

func (n *notifier) ready(status string) error {
	return n.send("READY=1", "STATUS="+status, fmt.Sprintf("MAINPID=%d", os.Getpid()))
}

// reloading marks a reload's start; Type=notify-reload wants the time
// with it, and READY=1 after it.
func (n *notifier) reloading() error {
	lines := []string{"RELOADING=1", "STATUS=reloading"}
	if usec, ok := monotonicUsec(); ok {
		lines = append(lines, fmt.Sprintf("MONOTONIC_USEC=%d", usec))
	}
	return n.send(lines...)
}

func (n *notifier) stopping() error {
	return n.send("STOPPING=1", "STATUS=stopping: finishing in-flight messages")
}
