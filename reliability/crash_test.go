package reliability_test

import (
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/symphony-go/symphony/internal/symphonytest"
)

// crashTasks are three tasks of one daemon, each with a pool of two
// workers and the default prefetch (10): per task, at most 2 × 10
// messages are in a worker's hands or leased to it at any moment.
func crashTasks(isolation string) map[string]string {
	files := map[string]string{}
	for _, name := range []string{"a", "b", "c"} {
		files[name+".star"] = fmt.Sprintf(`
def work(payload, meta):
    log.info("handled", n = payload["n"], redelivered = meta.redelivered)
    sleep(0.001)
    return True

task(name = "crash-%s", subscribe_to = ["crash.%s"], work = work,
     min_workers = 2, max_workers = 2, isolation = %q)
`, name, name, isolation)
	}
	return files
}

// inFlight is what crashTasks' daemon can hold at once: 3 tasks × 2
// workers × prefetch 10.
const inFlight = 3 * 2 * 10

// follower tallies the "handled" events of a series of daemons as they
// come, reading each event once (a full run logs tens of thousands).
type follower struct {
	mu      sync.Mutex
	daemons []*symphonytest.Daemon
	read    []int // events read per daemon
	by      []int // messages handled per daemon
	seen    map[string]int
}

func newFollower() *follower { return &follower{seen: map[string]int{}} }

func (f *follower) add(d *symphonytest.Daemon) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.daemons = append(f.daemons, d)
	f.read = append(f.read, 0)
	f.by = append(f.by, 0)
}

// update reads what the daemons logged since the last call.
func (f *follower) update() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, d := range f.daemons {
		evs := d.EventsFrom(f.read[i])
		f.read[i] += len(evs)
		for _, ev := range evs {
			if ev.Str("msg") == "handled" {
				f.seen[ev.Str("n")]++
				f.by[i]++
			}
		}
	}
}

// handledBy is how many handlings the i-th daemon (and its worker
// processes) logged.
func (f *follower) handledBy(i int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.by[i]
}

// distinct is how many of the numbers 0..n-1 were handled at least once.
func (f *follower) distinct(n int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := 0
	for i := range n {
		if f.seen[strconv.Itoa(i)] > 0 {
			c++
		}
	}
	return c
}

func (f *follower) tally() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]int, len(f.seen))
	for k, v := range f.seen {
		out[k] = v
	}
	return out
}

// await waits until cond holds, checking again whenever a daemon logs,
// for at most patience.
func (f *follower) await(t *testing.T, what string, patience time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.After(patience)
	for {
		f.mu.Lock()
		daemons := append([]*symphonytest.Daemon(nil), f.daemons...)
		f.mu.Unlock()
		cases := []reflect.SelectCase{{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(deadline)}}
		for _, d := range daemons {
			cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(d.Changed())})
		}
		f.update()
		if cond() {
			return
		}
		if i, _, _ := reflect.Select(cases); i == 0 {
			t.Fatalf("waited %s for %s", patience, what)
		}
	}
}

// patience for a wait that lasts as long as n messages take: generous, on
// two shared cores under the race detector.
func patience(n int) time.Duration {
	return symphonytest.Wait + time.Duration(n)*20*time.Millisecond
}

// publishInBatches publishes {"n": 0} ... {"n": n-1} with `symphony
// publish --file`, 30 batches taking turns on the three tasks' keys, and
// says on the returned channel how that went.
func publishInBatches(env *symphonytest.Env, n int) <-chan error {
	done := make(chan error, 1)
	go func() {
		err := fmt.Errorf("the publisher stopped")
		defer func() { done <- err }()
		batch := max(n/30, 1)
		for i := 0; i < n; i += batch {
			key := "crash." + string(rune('a'+(i/batch)%3))
			if r := env.Run(lines(i, min(batch, n-i)), "publish", "--file", "-", key); r.Code != 0 {
				err = fmt.Errorf("publish of %d..: exit %d: %s", i, r.Code, r.Stderr)
				return
			}
		}
		err = nil
	}()
	return done
}

// A daemon SIGKILLed under load three times in a row, while publishers go
// on, then started once more: every message is handled, and no more are
// handled twice than the killed daemons held (in handlers, in batched
// acknowledgements not yet stored, or prefetched) when they died. On both
// brokers, with the tasks in the daemon's threads and in worker processes
// (which the kernel stops with their daemon: Pdeathsig).
func TestDaemonSIGKILLedUnderLoad(t *testing.T) {
	t.Parallel()
	for _, isolation := range []string{"thread", "process"} {
		t.Run(isolation, func(t *testing.T) {
			t.Parallel()
			if isolation == "process" {
				symphonytest.NeedsWorkerProcesses(t)
			}
			symphonytest.OnEachBroker(t, func(t *testing.T, env *symphonytest.Env) {
				daemonKilledUnderLoad(t, env, isolation)
			})
		})
	}
}

func daemonKilledUnderLoad(t *testing.T, env *symphonytest.Env, isolation string) {
	n := scale(1500, 10000)
	const kills = 3
	tasks := symphonytest.WriteTasks(t, crashTasks(isolation))
	f := newFollower()
	d := env.Start(tasks)
	f.add(d)
	published := publishInBatches(env, n)
	for k := range kills {
		// Under load: the daemon has handled its share of the messages
		// (a sixth of them) and is working on more.
		f.await(t, fmt.Sprintf("daemon %d to handle %d messages", k+1, n/6), patience(n/6), func() bool {
			return f.handledBy(k) >= n/6
		})
		d.Signal(syscall.SIGKILL)
		d.Exit()
		t.Logf("kill %d: after %d handlings by that daemon, %d of %d messages handled", k+1, f.handledBy(k), f.distinct(n), n)
		start := time.Now()
		d = env.Start(tasks)
		f.add(d)
		f.await(t, "the restarted daemon's first message", patience(0), func() bool { return f.handledBy(k+1) > 0 })
		t.Logf("restart %d: its first message handled %s after the start", k+1, time.Since(start).Round(time.Millisecond))
	}
	if err := <-published; err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	f.await(t, fmt.Sprintf("all %d messages handled", n), patience(n), func() bool { return f.distinct(n) == n })
	t.Logf("after the last restart, the rest handled in %s", time.Since(start).Round(time.Millisecond))
	report(t, fmt.Sprintf("%s: %d SIGKILLs under load (%s isolation)", brokerName(env), kills, isolation), seq(0, n), f.tally(), kills*inFlight)
	d.Stop()
}

// A worker process SIGKILLed under load, three times, while its daemon
// runs: each time the daemon starts another, the killed worker's messages
// come back (on the embedded broker when the daemon notices the process
// gone, not when its lease ends: the lease here is an hour), and every
// message is handled; duplicates stay under what the killed workers held.
func TestWorkerProcessSIGKILLedUnderLoad(t *testing.T) {
	t.Parallel()
	symphonytest.NeedsWorkerProcesses(t)
	symphonytest.OnEachBroker(t, func(t *testing.T, env *symphonytest.Env) {
		if strings.HasPrefix(env.URL, "sqlite:") {
			env.UseBroker(env.URL + "?lease=1h")
		}
		n := scale(1500, 10000)
		const kills = 3
		f := newFollower()
		d := env.Start(symphonytest.WriteTasks(t, crashTasks("process")))
		f.add(d)
		published := publishInBatches(env, n)
		killed := map[string]bool{}
		for k := range kills {
			f.await(t, fmt.Sprintf("%d more messages handled", n/6), patience(n/6), func() bool {
				return f.handledBy(0) >= (k+1)*n/6
			})
			// The worker that handled the latest message is busy.
			var pid string
			evs := d.Events("handled")
			for i := len(evs) - 1; i >= 0 && pid == ""; i-- {
				if p := evs[i].Str("worker_pid"); p != "" && !killed[p] {
					pid = p
				}
			}
			p, err := strconv.Atoi(pid)
			if err != nil {
				t.Fatalf("no worker_pid in the handled events: %v", evs[len(evs)-1])
			}
			proc, err := os.FindProcess(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := proc.Kill(); err != nil {
				t.Fatal(err)
			}
			killed[pid] = true
			d.WaitForNth(k+1, "worker failed", nil)
		}
		if err := <-published; err != nil {
			t.Fatal(err)
		}
		f.await(t, fmt.Sprintf("all %d messages handled", n), patience(n), func() bool { return f.distinct(n) == n })
		// One worker holds at most its prefetch (10).
		report(t, fmt.Sprintf("%s: %d worker processes SIGKILLed under load", brokerName(env), kills), seq(0, n), f.tally(), kills*10)
		d.Stop()
	})
}

// brokerName says which broker env uses, for the figures a test logs.
func brokerName(env *symphonytest.Env) string {
	if strings.HasPrefix(env.URL, "sqlite:") {
		return "sqlite"
	}
	return "rabbitmq"
}
