package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// CPU accounting from /proc: how much CPU the consumer and RabbitMQ spent
// during a drain, which on a machine of few cores tells which one limits
// the rate.

// clockTick is the unit of /proc/PID/stat's times (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

// procCPU is the user and system time PID has used so far (0 for self),
// all its threads included; 0 when it cannot be read.
func procCPU(pid int) time.Duration {
	name := "self"
	if pid != 0 {
		name = strconv.Itoa(pid)
	}
	b, err := os.ReadFile(filepath.Join("/proc", name, "stat"))
	if err != nil {
		return 0
	}
	// The command name, field 2, is in parentheses and may hold spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(u+st) * clockTick
}

// rabbitPID is the process of the local RabbitMQ node (the Erlang VM
// started with `-s rabbit boot`; rabbitmqctl runs in a beam.smp of its
// own), 0 when there is none on this machine or more than one.
func rabbitPID() int {
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	found := 0
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", d.Name(), "comm"))
		if err != nil || strings.TrimSpace(string(comm)) != "beam.smp" {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(cmdline), "\x00rabbit\x00boot\x00") {
			continue
		}
		if found != 0 {
			return 0
		}
		found = pid
	}
	return found
}

// cpuMeter measures the CPU a process (0: this one) and RabbitMQ (0: not
// measured) use between startCPU and stop.
type cpuMeter struct {
	pid, brokerPID int
	proc, broker   time.Duration // at start
}

func startCPU(pid, brokerPID int) cpuMeter {
	m := cpuMeter{pid: pid, brokerPID: brokerPID, proc: procCPU(pid)}
	if brokerPID != 0 {
		m.broker = procCPU(brokerPID)
	}
	return m
}

// stop returns the process's CPU and RabbitMQ's since startCPU.
func (m cpuMeter) stop() (proc, broker time.Duration) {
	proc = procCPU(m.pid) - m.proc
	if m.brokerPID != 0 {
		broker = procCPU(m.brokerPID) - m.broker
	}
	return proc, broker
}
