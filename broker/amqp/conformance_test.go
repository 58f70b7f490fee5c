package amqp_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/broker/amqp"
	"github.com/symphony-go/symphony/broker/brokertest"
	"github.com/symphony-go/symphony/internal/symphonytest"
	"github.com/symphony-go/symphony/tasks"
)

// requireRabbit skips the test when RabbitMQ is not reachable, unless
// CI=true, where that is a failure.
func requireRabbit(t testing.TB) string { return symphonytest.RabbitURL(t) }

func uniqueName(prefix string) string { return symphonytest.UniqueName(prefix) }

// opened remembers the brokers of each exchange so that cleanup can delete
// the delay queues they declared.
type opened struct {
	mu sync.Mutex
	m  map[string][]*amqp.Broker
}

func (o *opened) add(exchange string, b *amqp.Broker) {
	o.mu.Lock()
	o.m[exchange] = append(o.m[exchange], b)
	o.mu.Unlock()
}

func (o *opened) delays(exchange string) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var names []string
	for _, b := range o.m[exchange] {
		names = append(names, b.DelayNames()...)
	}
	delete(o.m, exchange)
	return names
}

// quorumPrefix starts the exchange names of the quorum harness, so that
// its child processes, which know only the Env, open the same way.
const quorumPrefix = "btq"

func harness() brokertest.Harness { return harnessOf(tasks.Classic) }

// harnessOf runs the suite with every durable queue that takes no
// priorities declared as qt: retries, delays and dead letters then wait in
// queues of that type.
func harnessOf(qt tasks.QueueType) brokertest.Harness {
	brokers := &opened{m: map[string][]*amqp.Broker{}}
	prefix := "bt"
	if qt == tasks.Quorum {
		prefix = quorumPrefix
	}
	return brokertest.Harness{
		Name: "amqp " + string(qt),
		Env: func(t *testing.T) brokertest.Env {
			return brokertest.Env{URL: requireRabbit(t), Exchange: uniqueName(prefix)}
		},
		Open: func(env brokertest.Env) (broker.Broker, error) {
			qt := tasks.Classic
			if strings.HasPrefix(env.Exchange, quorumPrefix+"-") {
				qt = tasks.Quorum
			}
			b, err := amqp.Open(context.Background(), env.URL, amqp.Options{Exchange: env.Exchange, Name: "symphony-test", QueueType: qt})
			if err != nil {
				return nil, err
			}
			brokers.add(env.Exchange, b)
			if qt == tasks.Quorum {
				return quorumBroker{b}, nil
			}
			return b, nil
		},
		Cleanup: func(env brokertest.Env, queues []string) error {
			return deleteAll(env.URL, env.Exchange, queues, brokers.delays(env.Exchange))
		},
	}
}

// deleteAll deletes the exchange, the task queues with their dead-letter
// queues and binding records, and the delay exchanges and queues.
func deleteAll(rawURL, exchange string, queues, delays []string) error {
	conn, err := amqp091.Dial(rawURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	var errs []error
	do := func(f func(ch *amqp091.Channel) error) {
		ch, err := conn.Channel()
		if err != nil {
			errs = append(errs, err)
			return
		}
		defer ch.Close()
		var ae *amqp091.Error
		if err := f(ch); err != nil && !(errors.As(err, &ae) && ae.Code == amqp091.NotFound) {
			errs = append(errs, err)
		}
	}
	for _, q := range queues {
		for _, name := range []string{q, amqp.DeadQueue(q), amqp.RecordQueue(q), amqp.ScheduleQueue(exchange, q)} {
			do(func(ch *amqp091.Channel) error { _, err := ch.QueueDelete(name, false, false, false); return err })
		}
	}
	for _, name := range delays {
		do(func(ch *amqp091.Channel) error { _, err := ch.QueueDelete(name, false, false, false); return err })
		do(func(ch *amqp091.Channel) error { return ch.ExchangeDelete(name, false, false) })
	}
	for _, plain := range []string{exchange + ".plain", exchange + ".plain.quorum"} {
		do(func(ch *amqp091.Channel) error {
			_, err := ch.QueueDelete(plain, false, false, false)
			return err
		})
		do(func(ch *amqp091.Channel) error { return ch.ExchangeDelete(plain, false, false) })
	}
	do(func(ch *amqp091.Channel) error { return ch.ExchangeDelete(exchange, false, false) })
	return errors.Join(errs...)
}

// envDeclare makes the test binary a child process that declares a queue
// (see declareInChild) and exits.
const envDeclare = "SYMPHONY_AMQP_TEST_DECLARE"

func TestMain(m *testing.M) {
	if spec := os.Getenv(envDeclare); spec != "" {
		os.Exit(declareChild(spec))
	}
	brokertest.Main(m, harness())
}

// declareChild declares the queue of spec, "URL EXCHANGE QUEUE PATTERN...".
func declareChild(spec string) int {
	f := strings.Fields(spec)
	b, err := amqp.Open(context.Background(), f[0], amqp.Options{Exchange: f[1]})
	if err == nil {
		err = b.Declare(context.Background(), broker.Queue{Name: f[2], Patterns: f[3:], Durable: true})
		b.Close()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func TestConformance(t *testing.T) { brokertest.Run(t, harness()) }

// The suite again with quorum queues, as a cluster runs them: retries,
// delayed publishes and dead letters included.
func TestConformanceQuorum(t *testing.T) {
	h := harnessOf(tasks.Quorum)
	h.Skip = map[string]string{
		"PriorityOrder":                       "quorum queues take no priorities; a priority task's queue is classic",
		"PriorityNeedsMaxPriority":            "quorum queues take no priorities; a priority task's queue is classic",
		"DeclareRefusesPriorityChange":        "quorum queues take no priorities; a priority task's queue is classic",
		"NonDurableQueueGoesWithLastConsumer": "a quorum queue is always durable",
	}
	brokertest.Run(t, h)
}

// quorumBroker declares every durable queue without priorities as a quorum
// queue, as a daemon does for tasks with queue_type = "quorum".
type quorumBroker struct{ *amqp.Broker }

func (q quorumBroker) Declare(ctx context.Context, queue broker.Queue) error {
	if queue.Durable && queue.MaxPriority == 0 {
		queue.Type = tasks.Quorum
	}
	return q.Broker.Declare(ctx, queue)
}
