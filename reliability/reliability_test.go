package reliability_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/symphony-go/symphony/internal/symphonytest"
)

func TestMain(m *testing.M) { symphonytest.Main(m) }

// full is whether to run the full form of each test rather than CI's short
// one.
var full = os.Getenv("SYMPHONY_RELIABILITY_FULL") == "1"

// scale is short in CI and long in the full form.
func scale(short, long int) int {
	if full {
		return long
	}
	return short
}

// countTask logs every message it handles with its number n.
const countTask = `
def work(payload, meta):
    log.info("handled", n = payload["n"], redelivered = meta.redelivered)
    return True

task(name = "count", subscribe_to = ["count.#"], work = work, max_workers = 2)
`

// pacedTask is countTask taking its time over each message, so that a
// backlog drains for seconds and a fault can strike in the middle.
func pacedTask(seconds float64) string {
	return strings.Replace(countTask, "    return True", fmt.Sprintf("    sleep(%g)\n    return True", seconds), 1)
}

// lines is n JSON payloads {"n": from}, {"n": from+1}, ..., one a line.
func lines(from, n int) string {
	var b strings.Builder
	for i := from; i < from+n; i++ {
		fmt.Fprintf(&b, "{\"n\": %d}\n", i)
	}
	return b.String()
}

// counter tallies the "handled" events of daemons by n as their logs
// grow, reading each event once.
type counter struct {
	daemons []*symphonytest.Daemon
	pos     []int
	seen    map[string]int
	total   int
}

func newCounter(daemons ...*symphonytest.Daemon) *counter {
	return &counter{daemons: daemons, pos: make([]int, len(daemons)), seen: map[string]int{}}
}

func (c *counter) update() {
	for i, d := range c.daemons {
		evs := d.EventsFrom(c.pos[i])
		c.pos[i] += len(evs)
		for _, ev := range evs {
			if ev.Str("msg") == "handled" {
				c.seen[ev.Str("n")]++
				c.total++
			}
		}
	}
}

// awaitHandled waits until every n in want was handled at least once by
// the daemons, and returns how often each n was handled.
func awaitHandled(t *testing.T, want []int, daemons ...*symphonytest.Daemon) map[string]int {
	t.Helper()
	c := newCounter(daemons...)
	missing := map[string]bool{}
	for _, n := range want {
		missing[fmt.Sprint(n)] = true
	}
	symphonytest.Until(t, fmt.Sprintf("%d messages handled", len(want)), func() bool {
		c.update()
		for n := range missing {
			if c.seen[n] > 0 {
				delete(missing, n)
			}
		}
		return len(missing) == 0
	}, daemons...)
	return c.seen
}

// handledAtLeast waits until the daemon has handled n messages.
func handledAtLeast(t *testing.T, d *symphonytest.Daemon, n int) {
	t.Helper()
	c := newCounter(d)
	symphonytest.Until(t, fmt.Sprintf("%d messages handled", n), func() bool {
		c.update()
		return c.total >= n
	}, d)
}

// report logs what a fault cost: lost messages fail the test; duplicates
// are reported and must stay under bound.
func report(t *testing.T, what string, want []int, seen map[string]int, bound int) {
	t.Helper()
	lost, dups := 0, 0
	for _, n := range want {
		switch c := seen[fmt.Sprint(n)]; {
		case c == 0:
			lost++
		case c > 1:
			dups += c - 1
		}
	}
	t.Logf("%s: %d messages, %d lost, %d duplicates (bound %d)", what, len(want), lost, dups, bound)
	if lost > 0 {
		t.Errorf("%s: %d of %d messages lost", what, lost, len(want))
	}
	if dups > bound {
		t.Errorf("%s: %d duplicates, more than the %d in flight", what, dups, bound)
	}
}

func seq(from, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = from + i
	}
	return out
}

func itoa(n int) string { return fmt.Sprint(n) }
