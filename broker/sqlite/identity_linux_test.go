package sqlite

import (
	"os/exec"
	"runtime"
	"testing"
)

// gone is a decision that must never take a live process for dead: its
// leases would be handed to another consumer while it still works on them.
func TestGone(t *testing.T) {
	me := self()
	if me.machine == "" || me.started == "" {
		t.Fatalf("no identity on Linux: %+v", me)
	}
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started, err := startTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	child := identity{machine: me.machine, pid: cmd.Process.Pid, started: started}
	cases := []struct {
		name string
		id   identity
		want bool
	}{
		{"itself", me, false},
		{"a live child", child, false},
		{"a pid reused by a process started at another time", identity{machine: me.machine, pid: child.pid, started: started + "0"}, true},
		{"a live child recorded on another machine", identity{machine: "elsewhere", pid: child.pid, started: started + "0"}, false},
		{"a process recorded where the machine was unknown", identity{pid: child.pid, started: started + "0"}, false},
	}
	for _, c := range cases {
		if got := me.gone(c.id); got != c.want {
			t.Errorf("%s: gone = %v, want %v", c.name, got, c.want)
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	// Killed, not yet reaped: a zombie, which holds nothing any more.
	for {
		if _, err := startTime(child.pid); err != nil {
			break
		}
		runtime.Gosched()
	}
	if !me.gone(child) {
		t.Error("a killed child not yet reaped (a zombie) is not gone")
	}
	_ = cmd.Wait()
	if !me.gone(child) {
		t.Error("a killed and reaped child is not gone")
	}
}
