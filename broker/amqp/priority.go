package amqp

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/tasks"
)

// RabbitMQ ignores the priority of a message that lands in a queue
// declared without x-max-priority, and AMQP cannot list a key's queues.
// So every queue without priorities also binds its patterns, on a side
// exchange <exchange>.plain, to one sink queue that drops what it gets
// (x-max-length 0). Publishing a message with a priority first sends an
// empty probe there with the mandatory flag: a probe the broker routes
// means a queue without priorities would get the message, which is then
// refused (broker.ErrNoPriority); a returned probe means none would. The
// bindings carry the task queue's name as an argument, so that queues
// with the same pattern do not unbind each other's.

// argQueue is the binding argument that says whose binding it is.
const argQueue = "x-symphony-queue"

// PlainName is the name of the side exchange and of its sink queue. With
// Options.QueueType quorum the sink is a quorum queue, which survives the
// loss of a cluster node, under a name of its own.
func (b *Broker) PlainName() string {
	if b.opts.QueueType == tasks.Quorum {
		return b.exchange + ".plain" + quorumSuffix
	}
	return b.exchange + ".plain"
}

// declarePlain declares the side exchange and its sink queue on ch.
func (b *Broker) declarePlain(ch *amqp.Channel) error {
	name := b.PlainName()
	if err := ch.ExchangeDeclare(name, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %q: %w", name, explain(err, "exchange", name))
	}
	args := withType(amqp.Table{"x-max-length": int64(0), "x-overflow": "drop-head"}, b.opts.QueueType)
	if _, err := ch.QueueDeclare(name, true, false, false, false, args); err != nil {
		return fmt.Errorf("declare queue %q: %w", name, explain(err, "queue", name))
	}
	return nil
}

// markPlain binds the sink to q's patterns when q takes no priorities,
// and unbinds the patterns of previous that it no longer has (all of them
// for a priority queue).
func (b *Broker) markPlain(ch *amqp.Channel, q broker.Queue, previous []string) error {
	if err := b.declarePlain(ch); err != nil {
		return err
	}
	name := b.PlainName()
	args := amqp.Table{argQueue: q.Name}
	var keep []string
	if q.MaxPriority == 0 {
		keep = q.Patterns
	}
	for _, p := range keep {
		if err := ch.QueueBind(name, p, name, false, args); err != nil {
			return fmt.Errorf("bind pattern %q of queue %q: %w", p, q.Name, explain(err, "queue", name))
		}
	}
	for _, p := range append(slices.Clone(previous), q.Patterns...) {
		if slices.Contains(keep, p) {
			continue
		}
		if err := ch.QueueUnbind(name, p, name, args); err != nil {
			return fmt.Errorf("unbind pattern %q of queue %q: %w", p, q.Name, explain(err, "queue", name))
		}
	}
	return nil
}

// checkPriority refuses to publish a message with a priority under key
// when a queue without priorities is bound to it.
func (b *Broker) checkPriority(ctx context.Context, key string) error {
	probe := outgoing{exchange: b.PlainName(), key: key, msg: amqp.Publishing{Body: []byte{}}}
	for try := 0; ; try++ {
		err := b.send(ctx, []outgoing{probe})
		var r *returnedError
		switch {
		case errors.As(err, &r):
			return nil
		case err == nil:
			return broker.ErrNoPriority
		case try == 0 && notFound(err):
			// No queue without priorities was ever declared here: the
			// side exchange does not exist yet.
			s, serr := b.pub.await(ctx, nil)
			if serr != nil {
				return serr
			}
			ch, serr := channel(s)
			if serr != nil {
				return serr
			}
			serr = b.declarePlain(ch)
			ch.Close()
			if serr != nil {
				return serr
			}
		default:
			return fmt.Errorf("check the queues of the key for priorities: %w", err)
		}
	}
}

// inequivalent reads the current value out of RabbitMQ's text for an
// x-max-priority that differs: "received '3' but current is '5'", or
// "... but current is none".
var inequivalent = regexp.MustCompile(`inequivalent arg 'x-max-priority'.*current is (?:the value )?(none|'(\d+)')`)

// priorityRefused turns RabbitMQ's refusal of a changed x-max-priority
// into the error both brokers give, and returns nil for other errors.
func priorityRefused(err error, q broker.Queue) error {
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed {
		return nil
	}
	m := inequivalent.FindStringSubmatch(ae.Reason)
	if m == nil {
		return nil
	}
	was, _ := strconv.Atoi(m[2])
	return broker.PriorityChange(q.Name, was, q.MaxPriority, "rabbitmqctl delete_queue "+q.Name)
}

// queueArgs are the arguments q is declared with.
func queueArgs(q broker.Queue) amqp.Table {
	if q.MaxPriority == 0 {
		return nil
	}
	return amqp.Table{"x-max-priority": int64(q.MaxPriority)}
}
