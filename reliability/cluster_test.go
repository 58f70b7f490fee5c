package reliability_test

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/internal/symphonytest"
)

// flakyTask fails the first attempt of every message (a retry, which waits
// in a delay queue) and dead-letters the doomed ones.
const flakyTask = `
def work(payload, meta):
    if payload.get("dead"):
        fail("doomed %d" % payload["n"])
    if meta.attempt == 1:
        return False
    log.info("recovered", n = payload["n"], attempt = meta.attempt)
    return True

task(name = "flaky", subscribe_to = ["flaky.#"], work = work, queue_type = "quorum", retry_delay = "1s", max_workers = 2)
`

// A three-node RabbitMQ cluster of the test's own; the daemon is given
// every node in --broker, its tasks use quorum queues (one by the default
// of symphony.star, one by its own queue_type), and the node it is
// connected to is SIGKILLed in the middle of a drain: it moves to another
// node and every message is handled; then retries and dead letters work on
// the nodes that are left. The full form kills a second node after the
// first came back. (Retries that wait in a quorum delay queue at the
// moment its leader is killed are another matter: see
// TestQuorumDelayAcrossLeaderLoss.)
func TestRabbitMQClusterNodeKilled(t *testing.T) {
	t.Parallel()
	cluster := symphonytest.StartCluster(t, 3, "")
	env := symphonytest.NewEnv(t)
	env.UseBroker(cluster.URLs())
	d := env.Start(symphonytest.WriteTasks(t, map[string]string{
		"symphony.star": `config(queue_type = "quorum")`,
		"count.star":    pacedTask(0.005),
		"flaky.star":    flakyTask,
	}))
	d.WaitReady(200)
	for _, q := range []string{"count", "count.dead", "count.bindings", "flaky", "flaky.dead", "flaky.bindings"} {
		if typ := queueType(t, cluster.Nodes[1], q); typ != "quorum" {
			t.Errorf("queue %s is %q, want quorum", q, typ)
		}
	}

	rounds := scale(1, 2)
	n, retried, doomed := scale(2000, 20000), scale(20, 500), scale(5, 50)
	var counted, recovered []int
	dead := 0
	victim := 0 // the daemon starts on the first node
	for round := range rounds {
		base := round * (n + retried + doomed)
		env.MustRun(lines(base, n), "publish", "--file", "-", "count.up")
		counted = append(counted, seq(base, n)...)
		handledAtLeast(t, d, len(counted)-n+n/3)
		node := cluster.Nodes[victim]
		at := d.Count("handled", nil)
		node.Kill()
		d.WaitFor("connection to the broker lost; reconnecting", map[string]string{"node": broker.Redact(node.URL())})
		t.Logf("round %d: killed %s, the daemon's node, with %d of %d messages handled", round+1, node.Name, at-(len(counted)-n), n)
		d.WaitReady(200)
		seen := awaitHandled(t, counted, d)
		report(t, fmt.Sprintf("round %d: node killed mid-drain", round+1), counted, seen, 2*10*(round+1))

		// On the nodes that are left: retries wait in a quorum delay
		// queue, failures go to a quorum dead-letter queue.
		env.MustRun(lines(base+n, retried), "publish", "--file", "-", "flaky.once")
		var doomedLines strings.Builder
		for i := base + n + retried; i < base+n+retried+doomed; i++ {
			fmt.Fprintf(&doomedLines, "{\"n\": %d, \"dead\": true}\n", i)
		}
		env.MustRun(doomedLines.String(), "publish", "--file", "-", "flaky.doomed")
		recovered = append(recovered, seq(base+n, retried)...)
		dead += doomed
		awaitRecovered(t, d, recovered)
		if round+1 < rounds {
			node.Restart()
			// The daemon moved to the node after the one it lost.
			victim = (victim + 1) % len(cluster.Nodes)
		}
	}
	symphonytest.Until(t, fmt.Sprintf("%d messages dead-lettered", dead), func() bool {
		return d.Count("message dead-lettered", nil) >= dead
	}, d)
	r := env.MustRun("", "dead", "list", "flaky", "--json")
	if got := strings.Count(r.Stdout, "doomed"); got < dead {
		t.Errorf("dead list shows %d doomed messages, want %d:\n%s", got, dead, r.Stdout)
	}
	d.Stop()
}

// awaitRecovered waits until every n was handled on a later attempt by the
// flaky task.
func awaitRecovered(t *testing.T, d *symphonytest.Daemon, want []int) {
	t.Helper()
	symphonytest.Until(t, fmt.Sprintf("%d retried messages recovered", len(want)), func() bool {
		seen := map[string]bool{}
		for _, ev := range d.Events("recovered") {
			seen[ev.Str("n")] = true
		}
		for _, n := range want {
			if !seen[fmt.Sprint(n)] {
				return false
			}
		}
		return true
	}, d)
}

// queueType asks a node for the type of a queue of vhost /.
func queueType(t *testing.T, node *symphonytest.Node, queue string) string {
	t.Helper()
	var rows []struct{ Name, Type string }
	if err := json.Unmarshal([]byte(node.Ctl("list_queues", "name", "type", "--formatter", "json")), &rows); err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if r.Name == queue {
			return r.Type
		}
	}
	return ""
}

// A known gap, not run by CI (SYMPHONY_RELIABILITY_GAPS=1 runs it): retries
// waiting in a quorum delay queue when its leader node is SIGKILLed. On
// RabbitMQ 3.10.8 they sometimes (about one kill in three here) stay in the
// queue's dead-letter backlog, neither ready nor delivered, for as long as
// we watched (minutes, a second change of leader included): its
// at-least-once dead-letter worker does not resume. This test fails when
// that happens.
func TestQuorumDelayAcrossLeaderLoss(t *testing.T) {
	if os.Getenv("SYMPHONY_RELIABILITY_GAPS") != "1" {
		t.Skip("a known gap of RabbitMQ's quorum queues; SYMPHONY_RELIABILITY_GAPS=1 runs it")
	}
	t.Parallel()
	cluster := symphonytest.StartCluster(t, 3, "")
	env := symphonytest.NewEnv(t)
	env.UseBroker(cluster.URLs())
	d := env.Start(symphonytest.WriteTasks(t, map[string]string{"flaky.star": flakyTask}))
	const retried = 200
	env.MustRun(lines(0, retried), "publish", "--file", "-", "flaky.once")
	symphonytest.Until(t, "every message retried once", func() bool {
		return d.Count("message will be retried", nil) >= retried
	}, d)
	// The delay queue was declared through the first node: it leads it.
	cluster.Nodes[0].Kill()
	awaitRecovered(t, d, seq(0, retried))
	d.Stop()
}
