package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os/exec"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/symphony-go/symphony/tasks"
)

// The RabbitMQ plumbing the rabbitmq benchmark's systems share: a virtual
// host of their own per run, the preloaded queue, and the checks after.

// vhostPrefix names the virtual hosts this harness creates, so that a check
// at the end can tell that none is left behind.
const vhostPrefix = "symphony-bench-"

// vhost is a fresh RabbitMQ virtual host, deleted with everything in it by
// drop. It needs rabbitmqctl (the local RabbitMQ has no management API).
type vhost struct {
	name string
	url  string // the broker URL with this vhost as its path
}

func newVhost(ctx context.Context, base string) (*vhost, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("-amqp %q: %w", tasks.RedactURL(base), err)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	v := &vhost{name: vhostPrefix + hex.EncodeToString(b[:])}
	if err := rabbitmqctl(ctx, "add_vhost", v.name); err != nil {
		v.drop() // in case it was made before an interrupt stopped rabbitmqctl
		return nil, err
	}
	if err := rabbitmqctl(ctx, "set_permissions", "-p", v.name, u.User.Username(), ".*", ".*", ".*"); err != nil {
		v.drop()
		return nil, err
	}
	u.Path = "/" + v.name
	v.url = u.String()
	return v, nil
}

// drop deletes the vhost, queues, exchanges and messages included. It runs
// on its own context: an interrupted benchmark still cleans up.
func (v *vhost) drop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return rabbitmqctl(ctx, "delete_vhost", v.name)
}

func rabbitmqctl(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "rabbitmqctl", append([]string{"-q"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("rabbitmqctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// leftVhosts is the virtual hosts of this harness that still exist.
func leftVhosts(ctx context.Context) ([]string, error) {
	out, err := exec.CommandContext(ctx, "rabbitmqctl", "-q", "list_vhosts", "name").Output()
	if err != nil {
		return nil, fmt.Errorf("rabbitmqctl list_vhosts: %v", err)
	}
	var left []string
	for line := range strings.SplitSeq(string(out), "\n") {
		if name := strings.TrimSpace(line); strings.HasPrefix(name, vhostPrefix) {
			left = append(left, name)
		}
	}
	return left, nil
}

// rabbitVersion is the version the broker announces in its connection
// properties.
func rabbitVersion(base string) (string, error) {
	conn, err := amqp.Dial(base)
	if err != nil {
		return "", fmt.Errorf("RabbitMQ at %s: %w", tasks.RedactURL(base), err)
	}
	defer conn.Close()
	v, _ := conn.Properties["version"].(string)
	if v == "" {
		v = "unknown"
	}
	return v, nil
}

// declareTopology declares what the plain consumer reads from, as symphony
// declares its own: a durable topic exchange and a durable queue, without
// arguments, bound to pattern.
func declareTopology(url, exchange, queue, pattern string) error {
	conn, err := amqp.Dial(url)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	if err := ch.ExchangeDeclare(exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %s: %w", exchange, err)
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare queue %s: %w", queue, err)
	}
	if err := ch.QueueBind(queue, pattern, exchange, false, nil); err != nil {
		return fmt.Errorf("bind queue %s: %w", queue, err)
	}
	return nil
}

// preloadWindow is how many publishes may await their confirm at once;
// also the batch `symphony publish --file` sends.
const preloadWindow = 1000

// preload publishes n JSON messages to the exchange with key through an
// AMQP feeder (persistent, confirmed, mandatory: a message routed nowhere
// is an error), then checks that queue holds n ready messages. Nothing
// consumes meanwhile. It returns the time the publishing took.
func preload(url, key, queue string, n int) (time.Duration, error) {
	f, err := openAMQPFeeder(url, key)
	if err != nil {
		return 0, err
	}
	took, err := preloadFeeder(f, n)
	f.close()
	if err != nil {
		return 0, err
	}
	if q, err := inspect(url, queue); err != nil {
		return 0, err
	} else if q.Messages != n || q.Consumers != 0 {
		return 0, fmt.Errorf("after publishing %d messages queue %s holds %d ready ones and has %d consumers", n, queue, q.Messages, q.Consumers)
	}
	return took, nil
}

// inspect is the queue's ready messages and consumers; unacked messages are
// counted in neither. A passive declare on a channel of its own: a missing
// queue closes that channel only.
func inspect(url, queue string) (amqp.Queue, error) {
	conn, err := amqp.Dial(url)
	if err != nil {
		return amqp.Queue{}, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return amqp.Queue{}, err
	}
	q, err := ch.QueueDeclarePassive(queue, false, false, false, false, nil)
	if err != nil {
		return amqp.Queue{}, fmt.Errorf("inspect queue %s: %w", queue, err)
	}
	return q, nil
}

// checkEmpty checks that, every consumer gone, queue holds no message: none
// was left unacked (that would be back among the ready ones).
func checkEmpty(url string, queues ...string) error {
	for _, name := range queues {
		q, err := inspect(url, name)
		if err != nil {
			return err
		}
		if q.Messages != 0 || q.Consumers != 0 {
			return fmt.Errorf("after draining, queue %s holds %d messages and has %d consumers", name, q.Messages, q.Consumers)
		}
	}
	return nil
}
