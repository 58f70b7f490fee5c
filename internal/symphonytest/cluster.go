package symphonytest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// rabbitBin is where Debian's rabbitmq-server package keeps the scripts
// that run a node as the calling user (/usr/sbin's wrappers switch to the
// rabbitmq user and its one node).
const rabbitBin = "/usr/lib/rabbitmq/bin"

// Cluster is a RabbitMQ cluster that a test starts beside the machine's
// own RabbitMQ: nodes of its own names, ports, data and log directories
// and Erlang cookie, all under the test's temporary directory. Every node
// is stopped when the test ends.
type Cluster struct {
	t        testing.TB
	dir      string // HOME of the nodes and of rabbitmqctl: the cookie
	advanced string
	Nodes    []*Node
}

// Node is one node of a Cluster.
type Node struct {
	c *Cluster
	// Name is the Erlang node name, NAME@localhost.
	Name string
	// Port is the AMQP port on 127.0.0.1.
	Port int
	dist int
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
}

// StartCluster starts n nodes at once, joins them into one cluster and
// waits until they run. advanced, when not empty, is every node's
// advanced.config (Erlang terms: settings rabbitmq.conf cannot give). It
// needs Debian's rabbitmq-server package; without it the test skips (with
// CI=true it fails). Starting takes a while (tens of seconds for three
// nodes on two cores).
func StartCluster(t testing.TB, n int, advanced string) *Cluster {
	t.Helper()
	if _, err := os.Stat(filepath.Join(rabbitBin, "rabbitmq-server")); err != nil {
		need(t, "a RabbitMQ cluster needs %s/rabbitmq-server (Debian's rabbitmq-server package): %v", rabbitBin, err)
	}
	c := &Cluster{t: t, dir: t.TempDir(), advanced: advanced}
	// The cookie that lets the nodes and rabbitmqctl talk: ours, not the
	// machine's node's.
	cookie := filepath.Join(c.dir, ".erlang.cookie")
	if err := os.WriteFile(cookie, []byte(UniqueName("symphonytestcookie")), 0o400); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.dir, "rabbitmq-env.conf"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.dir, "enabled_plugins"), []byte("[].\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	id := UniqueName("symtest")
	for i := range n {
		node := &Node{c: c, Name: fmt.Sprintf("%s-%d@localhost", id, i+1), Port: freePort(t), dist: freePort(t),
			dir: filepath.Join(c.dir, strconv.Itoa(i+1))}
		c.Nodes = append(c.Nodes, node)
	}
	t.Cleanup(c.stop)
	for _, node := range c.Nodes {
		node.start()
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, node := range c.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = node.await()
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for _, node := range c.Nodes[1:] {
		for _, args := range [][]string{{"stop_app"}, {"join_cluster", c.Nodes[0].Name}, {"start_app"}} {
			if out, err := c.ctl(node, args...); err != nil {
				t.Fatalf("rabbitmqctl -n %s %s: %v\n%s", node.Name, strings.Join(args, " "), err, out)
			}
		}
	}
	return c
}

// freePort is a TCP port on 127.0.0.1 that nothing listened on a moment
// ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// env is the environment of a node and of rabbitmqctl: the cluster's
// cookie, and none of the machine node's settings.
func (c *Cluster) env(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RABBITMQ_") && !strings.HasPrefix(kv, "HOME=") && !strings.HasPrefix(kv, "ERL_") {
			env = append(env, kv)
		}
	}
	return append(env, append([]string{
		"HOME=" + c.dir,
		"RABBITMQ_CONF_ENV_FILE=" + filepath.Join(c.dir, "rabbitmq-env.conf"),
	}, extra...)...)
}

// ctl runs rabbitmqctl against node.
func (c *Cluster) ctl(node *Node, args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(rabbitBin, "rabbitmqctl"), append([]string{"-q", "-n", node.Name}, args...)...)
	cmd.Env = c.env()
	cmd.Dir = c.dir
	return cmd.CombinedOutput()
}

func (node *Node) start() {
	t := node.c.t
	t.Helper()
	for _, d := range []string{"mnesia", "log"} {
		if err := os.MkdirAll(filepath.Join(node.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(node.dir, "rabbitmq.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "listeners.tcp.local = 127.0.0.1:%d\n", node.Port), 0o644); err != nil {
		t.Fatal(err)
	}
	advanced := filepath.Join(node.dir, "advanced.config")
	if node.c.advanced != "" {
		if err := os.WriteFile(advanced, []byte(node.c.advanced), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	log, err := os.Create(filepath.Join(node.dir, "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command(filepath.Join(rabbitBin, "rabbitmq-server"))
	cmd.Dir = node.dir
	cmd.Env = node.c.env(
		"RABBITMQ_NODENAME="+node.Name,
		"RABBITMQ_CONFIG_FILE="+conf,
		"RABBITMQ_ADVANCED_CONFIG_FILE="+advanced,
		"RABBITMQ_DIST_PORT="+strconv.Itoa(node.dist),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(node.dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(node.dir, "log"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(node.c.dir, "enabled_plugins"),
		"RABBITMQ_PID_FILE="+filepath.Join(node.dir, "pid"),
	)
	cmd.Stdout, cmd.Stderr = log, log
	// Its own process group: the script, the Erlang VM it starts, and
	// what the VM starts are killed together.
	ownGroup(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start RabbitMQ node %s: %v", node.Name, err)
	}
	node.cmd = cmd
	node.done = make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(node.done)
	}()
}

// await waits until the node runs RabbitMQ.
func (node *Node) await() error {
	out, err := node.c.ctl(node, "wait", filepath.Join(node.dir, "pid"), "--timeout", "120")
	if err != nil {
		server, _ := os.ReadFile(filepath.Join(node.dir, "server.log"))
		return fmt.Errorf("RabbitMQ node %s did not start: %v\n%s\n%s", node.Name, err, out, server)
	}
	return nil
}

// URL is the node's AMQP URL, as guest.
func (node *Node) URL() string { return fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", node.Port) }

// URLs are the URLs of every node, comma-separated, as --broker takes them.
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.Nodes))
	for i, node := range c.Nodes {
		urls[i] = node.URL()
	}
	return strings.Join(urls, ",")
}

// Kill SIGKILLs the node (its Erlang VM and all) and waits until it is
// gone: a crash, not a stop.
func (node *Node) Kill() {
	node.c.t.Helper()
	select {
	case <-node.done:
		return
	default:
	}
	if err := killGroup(node.cmd.Process.Pid); err != nil {
		node.c.t.Fatalf("kill RabbitMQ node %s: %v", node.Name, err)
	}
	select {
	case <-node.done:
	case <-time.After(Wait):
		node.c.t.Fatalf("RabbitMQ node %s still runs %s after SIGKILL", node.Name, Wait)
	}
}

// Restart starts a node that was killed again, with its data: it rejoins
// its cluster.
func (node *Node) Restart() {
	node.c.t.Helper()
	node.start()
	if err := node.await(); err != nil {
		node.c.t.Fatal(err)
	}
}

// Ctl runs rabbitmqctl against the node and returns its output.
func (node *Node) Ctl(args ...string) string {
	node.c.t.Helper()
	out, err := node.c.ctl(node, args...)
	if err != nil {
		node.c.t.Fatalf("rabbitmqctl -n %s %s: %v\n%s", node.Name, strings.Join(args, " "), err, out)
	}
	return string(bytes.TrimSpace(out))
}

// stop kills every node still running: their data goes with the test's
// directory, so there is nothing to stop gracefully for.
func (c *Cluster) stop() {
	for _, node := range c.Nodes {
		if node.cmd != nil {
			node.Kill()
		}
	}
}
