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

// statFields are the fields of /proc/PID/stat (pid 0: this process) after
// the command name, so that field 3 (state) is [0]; nil when it cannot be
// read. The name, field 2, is in parentheses and may hold spaces.
func statFields(pid int) []string {
	name := "self"
	if pid != 0 {
		name = strconv.Itoa(pid)
	}
	b, err := os.ReadFile(filepath.Join("/proc", name, "stat"))
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(s[i+1:])
}

// ticks sums fields of /proc/PID/stat numbered as in proc(5) as CPU time;
// 0 when one cannot be read.
func ticks(pid int, fields ...int) time.Duration {
	f := statFields(pid)
	var sum int64
	for _, k := range fields {
		if k-3 >= len(f) {
			return 0
		}
		v, err := strconv.ParseInt(f[k-3], 10, 64)
		if err != nil {
			return 0
		}
		sum += v
	}
	return time.Duration(sum) * clockTick
}

// procCPU is the user and system time PID has used so far (0 for self),
// all its threads included (utime and stime); 0 when it cannot be read.
func procCPU(pid int) time.Duration { return ticks(pid, 14, 15) }

// procCPUTree is pid's CPU time with that of its children it has waited
// for (cutime and cstime): for a daemon that reaps its worker processes,
// its own CPU and theirs.
func procCPUTree(pid int) time.Duration { return ticks(pid, 14, 15, 16, 17) }

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
