//go:build linux

package engine

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/broker/sqlite"
	"github.com/symphony-go/symphony/tasks"
)

func processSpec(name string) tasks.Spec {
	s := spec(name, name)
	s.Isolation = tasks.Process
	return s
}

// A worker process that exits at once, again and again, is restarted
// through the throttle: ln(n) × factor apart, not in a spin.
func TestFailingWorkerProcessesAreThrottled(t *testing.T) {
	t.Parallel()
	const factor = 0.05
	spawn := func(tasks.Spec, bool) (*exec.Cmd, error) { return exec.Command("/bin/false"), nil }
	r := newRigNoWait(t, Config{Spawn: spawn, ThrottleFactor: factor}, tasks.Task{Spec: processSpec("doomed"), Handler: nil})
	var starts []time.Time
	for i := 1; i <= 7; i++ {
		r.events.waitFor(t, i, "worker failed", map[string]string{"task": "doomed"})
	}
	r.events.mu.Lock()
	for _, rec := range r.events.records {
		if rec.Message == "worker process started" {
			starts = append(starts, rec.Time)
		}
	}
	r.events.mu.Unlock()
	// After the n-th failure the throttle holds the next start back
	// ln(n) × factor seconds after the previous one.
	for i := 2; i < len(starts) && i < 7; i++ {
		want := time.Duration(math.Log(float64(i)) * factor * float64(time.Second))
		if gap := starts[i].Sub(starts[i-1]); gap < want {
			t.Errorf("start %d came %s after the one before; the throttle holds it back %s", i+1, gap, want)
		}
	}
	if got := testutil.ToFloat64(r.engine.metrics.restarts.WithLabelValues("doomed")); got < 6 {
		t.Errorf("symphony_worker_restarts_total = %v, want at least 6", got)
	}
	st := r.engine.Status().Tasks[0]
	if st.Throttle <= 0 || st.LastExit == nil || st.LastExit.Reason != "worker process exited with status 1" {
		t.Errorf("status: throttle %v, last exit %+v", st.Throttle, st.LastExit)
	}
}

// A worker process that ignores TERM (and INT, the second signal) is
// killed once the shutdown timeout
// and the forced stop's grace have passed; nothing is left behind.
func TestWorkerProcessIgnoringTermIsKilled(t *testing.T) {
	t.Parallel()
	spawn := func(tasks.Spec, bool) (*exec.Cmd, error) {
		// It reports ready once the signals are ignored, as a worker would once
		// subscribed.
		return exec.Command("sh", "-c", `trap "" TERM INT; echo '{"event":"ready"}' >&3; exec sleep 1000`), nil
	}
	r := newRig(t, Config{Spawn: spawn, ShutdownTimeout: 100 * time.Millisecond}, tasks.Task{Spec: processSpec("stubborn")})
	started := r.events.waitFor(t, 1, "worker process started", nil)
	pid, _ := strconv.Atoi(started["pid"])
	begin := time.Now()
	if err := r.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if took := time.Since(begin); took > 100*time.Millisecond+forcedWait+5*time.Second {
		t.Errorf("stopping took %s", took)
	}
	r.events.waitFor(t, 1, "worker process did not stop: killing it", nil)
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("worker process %d still exists after the daemon stopped (kill 0: %v)", pid, err)
	}
}

// newRigNoWait is newRig for pools that never become ready.
func newRigNoWait(t *testing.T, cfg Config, ts ...tasks.Task) *rig {
	t.Helper()
	return newRigWith(t, cfg, false, ts...)
}

// A worker process asked to stop before it subscribed takes nothing and
// ends cleanly, as a thread worker does: not a failed worker.
func TestWorkerStoppedBeforeSubscribingEndsCleanly(t *testing.T) {
	t.Parallel()
	b, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "worker.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	s := spec("once", "once.#")
	s.WorkModel = tasks.Oneshot
	if err := b.Declare(t.Context(), broker.Queue{Name: s.Queue, Patterns: s.Patterns, Durable: true}); err != nil {
		t.Fatal(err)
	}
	msg, _ := broker.NewMessage(tasks.Publication{RoutingKey: "once.x", Body: []byte(`{}`)})
	if err := b.Publish("once.x", msg); err != nil {
		t.Fatal(err)
	}
	stopped, cancel := context.WithCancel(t.Context())
	cancel()
	err = RunWorker(stopped, t.Context(), WorkerConfig{Broker: b, Logger: slog.New(slog.DiscardHandler), Task: tasks.Task{Spec: s},
		Oneshot: true})
	if err != nil {
		t.Errorf("RunWorker stopped before subscribing: %v, want nil", err)
	}
	if n, err := b.Depth(t.Context(), s.Queue); err != nil || n != 1 {
		t.Errorf("ready messages after: %d (%v), want the 1 published", n, err)
	}
}
