package reliability_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/symphony-go/symphony/internal/symphonytest"
)

// holdTask holds the first delivery of a message that asks it to, as a
// handler busy when its daemon is killed.
const holdTask = `
def work(payload, meta):
    log.info("handled", n = payload["n"], redelivered = meta.redelivered)
    if payload.get("hold") and not meta.redelivered:
        sleep(3600)
    return True

task(name = "hold", subscribe_to = ["hold.#"], work = work, timeout = None)
`

// A daemon on the embedded broker SIGKILLed while it holds leases (one
// message in a handler, the rest prefetched): the restarted daemon finds
// that the process that held them is gone and takes the messages back at
// once. The lease is an hour long, so a redelivery within the test's
// patience cannot be an expiry.
func TestRestartTakesBackTheLeasesOfAKilledDaemon(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	env.UseBroker(env.URL + "?lease=1h")
	tasks := symphonytest.WriteTasks(t, map[string]string{"hold.star": holdTask})
	rounds := scale(1, 3)
	n := 0
	for round := range rounds {
		d := env.Start(tasks)
		// The first message holds the one worker; the next ones wait in
		// its prefetch.
		env.MustRun(`{"n": `+itoa(n)+`, "hold": true}`, "publish", "hold.it")
		env.MustRun(lines(n+1, 9), "publish", "--file", "-", "hold.it")
		d.WaitFor("handled", map[string]string{"n": itoa(n), "redelivered": "false"})
		d.Signal(syscall.SIGKILL)
		d.Exit()

		start := time.Now()
		again := env.Start(tasks)
		again.WaitFor("handled", map[string]string{"n": itoa(n), "redelivered": "true"})
		t.Logf("round %d: restart to the first redelivered message: %s", round+1, time.Since(start).Round(time.Millisecond))
		seen := awaitHandled(t, seq(n, 10), d, again)
		// The killed daemon started only the held message, which its
		// successor handles again: one duplicate.
		report(t, "SIGKILL with leases held", seq(n, 10), seen, 1)
		again.Stop()
		n += 10
	}
}
