// Package broker is the seam between the engine and a message broker. A
// Broker publishes to a topic exchange, declares a task's queue with exactly
// its bindings, hands out Watermill subscriptions to a queue, measures a
// queue's depth and keeps dead letters. The embedded broker (broker/sqlite)
// and RabbitMQ (broker/amqp) give every operation the same meaning;
// broker/brokertest proves it.
//
// Messages cross the seam as Watermill messages. Their metadata carries the
// AMQP properties under the Meta* keys below; the application headers travel
// as one JSON object under MetaHeaders so that their types (numbers, lists,
// nested tables such as x-death) survive.
package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/symphony-go/symphony/schedule"
	"github.com/symphony-go/symphony/tasks"
)

// Metadata keys of the messages that cross the seam.
const (
	MetaRoutingKey    = "routing_key"
	MetaExchange      = "exchange"
	MetaQueue         = "queue"
	MetaContentType   = "content_type"
	MetaMessageID     = "message_id"
	MetaCorrelationID = "correlation_id"
	// MetaTimestamp is RFC 3339 with nanoseconds.
	MetaTimestamp = "timestamp"
	// MetaRedelivered is "true" on a message the broker delivered before
	// without an ack or a nack (its consumer died or let it go).
	MetaRedelivered = "redelivered"
	// MetaAttempt is the delivery attempt, "1" on the first delivery. The
	// engine sets it when it retries a message; brokers carry it along.
	MetaAttempt = "attempt"
	// MetaHeaders is a JSON object of the application headers.
	MetaHeaders = "headers"
	// MetaDelay, on a published message, is a Go duration: deliver it no
	// sooner than this.
	MetaDelay = "delay"
	// MetaPriority is the message's priority, 1 to tasks.PriorityLimit;
	// absent means 0.
	MetaPriority = "priority"
)

// ErrUnroutable is returned by Publish when no queue is bound to a pattern
// that matches the routing key: the message went nowhere.
var ErrUnroutable = errors.New("no queue is bound to the routing key")

// ErrNoPriority is returned by Publish for a message with a priority when a
// queue that would receive it takes none (it has no MaxPriority): the
// priority would be silently ignored. Nothing was sent.
var ErrNoPriority = errors.New("a queue bound to the routing key takes no priorities (its task has no max_priority)")

// ErrNotFound is returned for a dead letter or queue that does not exist.
var ErrNotFound = errors.New("not found")

// Queue is a task's queue as the broker should have it.
type Queue struct {
	Name string
	// Patterns are the AMQP topic patterns bound to the queue; Declare
	// removes bindings that are not listed.
	Patterns []string
	// Durable false: the queue goes away with its last consumer.
	Durable bool
	// Type is how RabbitMQ keeps the queue ("" means classic); a quorum
	// queue's dead letters and retries wait in quorum queues too. The
	// embedded broker keeps every queue the same way.
	Type tasks.QueueType
	// MaxPriority, 1 to tasks.PriorityLimit, makes a priority queue; 0 a
	// plain one. RabbitMQ cannot change it on an existing queue, so
	// neither broker does: Declare refuses a change (ErrPriorityChange).
	MaxPriority int
}

// ErrPriorityChange is returned by Declare for a queue that exists with
// another MaxPriority.
var ErrPriorityChange = errors.New("RabbitMQ cannot change the max_priority of an existing queue")

// PriorityChange is the error for a queue that has max_priority was but
// is declared with want: what happened and the ways out. remove, if not
// empty, says how to delete the queue on this broker.
func PriorityChange(queue string, was, want int, remove string) error {
	out := fmt.Sprintf("either keep max_priority as it was, or give the task a new queue (queue = \"%s.p%d\") and let the old one drain",
		queue, want)
	if remove != "" {
		out += ", or drain the queue, stop every daemon of the task and delete it (" + remove + ")"
	}
	return fmt.Errorf("queue %q exists with max_priority %s, and the task now asks for %s: %w; %s",
		queue, priorityWord(was), priorityWord(want), ErrPriorityChange, out)
}

func priorityWord(n int) string {
	if n == 0 {
		return "none"
	}
	return strconv.Itoa(n)
}

// MaxQueueName is the longest queue name either broker takes: AMQP allows
// 255 bytes, and on RabbitMQ a queue's binding record adds ".bindings".
// One limit for both, so that a topology that works on one works on the
// other.
const MaxQueueName = 255 - len(".bindings")

// Check reports a queue either broker would refuse, and returns its
// patterns, each validated, without repeats.
func (q Queue) Check() ([]string, error) {
	switch {
	case q.Name == "":
		return nil, errors.New("queue name is empty")
	case len(q.Name) > MaxQueueName:
		return nil, fmt.Errorf("queue name %.30q... is %d bytes long; the limit is %d (AMQP's 255 less the %q suffix of its binding record)",
			q.Name, len(q.Name), MaxQueueName, ".bindings")
	case strings.HasPrefix(q.Name, "amq."):
		return nil, fmt.Errorf("queue name %q starts with amq., which RabbitMQ reserves", q.Name)
	case q.Type != "" && q.Type != tasks.Classic && q.Type != tasks.Quorum:
		return nil, fmt.Errorf("queue %q: unknown queue type %q; use classic or quorum", q.Name, q.Type)
	case q.Type == tasks.Quorum && !q.Durable:
		return nil, fmt.Errorf("queue %q: a quorum queue is always durable; drop persistent = False or use queue_type = \"classic\"", q.Name)
	case q.Type == tasks.Quorum && q.MaxPriority > 0:
		return nil, fmt.Errorf("queue %q: a quorum queue takes no max_priority on RabbitMQ; use queue_type = \"classic\" for priorities", q.Name)
	case q.MaxPriority < 0 || q.MaxPriority > tasks.PriorityLimit:
		return nil, fmt.Errorf("queue %q: max_priority %d is out of range 1..%d", q.Name, q.MaxPriority, tasks.PriorityLimit)
	}
	patterns := []string{}
	for _, p := range q.Patterns {
		if err := tasks.ValidatePattern(p); err != nil {
			return nil, err
		}
		if !slices.Contains(patterns, p) {
			patterns = append(patterns, p)
		}
	}
	return patterns, nil
}

// ConsumeOptions shape one subscription.
type ConsumeOptions struct {
	// Prefetch is how many messages the subscription may hold, the one
	// being handled included. Values below 1 mean 1.
	Prefetch int
	// AutoAck: the broker forgets a message as it delivers it; Ack and
	// Nack do nothing.
	AutoAck bool
}

// Broker is what the engine needs from a message broker.
//
// Subscriptions (from Subscriber) hand out one message at a time: the next
// one comes after the previous was acked or nacked. Ack removes the message;
// Nack returns it to the head of its queue at once, marked redelivered.
// Cancelling the context given to Subscribe stops intake: messages held but
// not yet handed out go back to the queue, the one being handled may still
// be acked or nacked, and then the channel closes. Closing the Subscriber
// ends every subscription and returns every unacked message to its queue.
type Broker interface {
	// Publish sends messages to the exchange with topic as the routing key.
	// It returns ErrUnroutable (wrapped) when no queue would receive one;
	// messages before it in the same call may have been sent.
	Publish(topic string, msgs ...*message.Message) error

	// Declare creates or updates a queue, its bindings and its dead-letter
	// store.
	Declare(ctx context.Context, q Queue) error

	// Subscriber returns a Watermill subscriber whose topics are queue
	// names. Each Subscribe call is one consumer with its own prefetch.
	Subscriber(opts ConsumeOptions) (message.Subscriber, error)

	// Requeue puts a copy of msg on the tail of queue, to be delivered
	// after delay. The caller acks the original afterwards.
	Requeue(ctx context.Context, queue string, msg *message.Message, delay time.Duration) error

	// Bury stores a copy of msg as a dead letter of queue. The caller acks
	// the original afterwards.
	Bury(ctx context.Context, queue string, msg *message.Message, grave Grave) error

	// Depth is the number of messages ready for delivery in queue: not
	// held by a consumer, not waiting out a delay.
	Depth(ctx context.Context, queue string) (int, error)

	// DeadLetters lists, shows, replays and purges dead letters.
	DeadLetters() DeadLetters

	// Schedules claims the ticks of schedules once across every process
	// sharing the broker.
	Schedules() Schedules

	// Budgets shares each task's rate limit between every process
	// sharing the broker.
	Budgets() Budgets

	// Connected reports whether the broker can be reached now.
	Connected() bool

	// Close releases the broker's connections.
	Close() error
}

// Health is nil when b can store and deliver messages now, and otherwise
// says why not: a broker with a Health method of its own gives its reason
// (the embedded broker: a full disk, a file removed or made read-only),
// others only that they are disconnected.
func Health(b Broker) error {
	if h, ok := b.(interface{ Health() error }); ok {
		return h.Health()
	}
	if !b.Connected() {
		return errors.New("disconnected")
	}
	return nil
}

// Grave says why a message was dead-lettered.
type Grave struct {
	Task    string
	Reason  string
	Error   string
	Attempt int
}

// DeadLetter is a dead-lettered message with everything needed to replay it.
type DeadLetter struct {
	ID          string
	Queue       string
	Task        string
	RoutingKey  string
	ContentType string
	MessageID   string
	Headers     map[string]any
	Body        []byte
	Reason      string
	Error       string
	Attempt     int
	DeadAt      time.Time
}

// DeadLetters gives access to a broker's dead letters. A queue of "" means
// every queue.
type DeadLetters interface {
	// List returns up to limit dead letters of queue, oldest first.
	List(ctx context.Context, queue string, limit int) ([]DeadLetter, error)
	// Count returns how many dead letters queue has.
	Count(ctx context.Context, queue string) (int, error)
	// Show returns one dead letter, or ErrNotFound.
	Show(ctx context.Context, id string) (DeadLetter, error)
	// Replay moves dead letters back onto their queues as first attempts:
	// the ones named by ids, or all of queue's when ids is empty.
	Replay(ctx context.Context, queue string, ids []string) (int, error)
	// Purge deletes dead letters: the ones named by ids, or all of queue's
	// when ids is empty.
	Purge(ctx context.Context, queue string, ids []string) (int, error)
}

// Redact returns a broker URL fit for logs, each password replaced:
// tasks.RedactURL, which works on the text so that a URL that does not
// parse is redacted too.
func Redact(raw string) string { return tasks.RedactURL(raw) }

// ErrTickTaken is returned by Lead.Swap when the schedule's record is no
// longer the one read: another process fired the tick, or restarted the
// schedule, meanwhile. Nothing was published.
var ErrTickTaken = errors.New("the schedule's record changed meanwhile: another process fired the tick")

// Schedules hands out the right to fire a schedule's ticks. A schedule is
// named by its task; its record (the last tick fired, under which
// schedule) lives on the broker, so that a tick fires once whichever
// process fires it, and a process that starts later knows what was fired.
type Schedules interface {
	// Lead blocks until this process may fire the ticks of the schedule
	// name, or ctx ends. On the embedded broker every process may at once
	// (Swap is a transaction that only one wins); on RabbitMQ one process
	// at a time holds the record.
	Lead(ctx context.Context, name string) (Lead, error)
}

// Lead is the right to fire a schedule's ticks, while it lasts.
type Lead interface {
	// Record returns the schedule's record, the zero Record when no
	// process ever ran it.
	Record(ctx context.Context) (schedule.Record, error)
	// Swap replaces the record old with new and, if msg is not nil,
	// publishes msg to the exchange with routing key key, as one step:
	// both happen or neither does, also when the process dies in between.
	// It returns ErrTickTaken when the record is no longer old.
	Swap(ctx context.Context, old, new schedule.Record, key string, msg *message.Message) error
	// Lost is closed when the lead ends without Release (its connection
	// dropped); the caller then asks for a new one.
	Lost() <-chan struct{}
	// Release gives the lead up.
	Release()
}

// Budgets hands out the starts a task's rate limit allows, shared between
// every process that consumes the task's queue through the broker: on the
// embedded broker one budget in the database, claimed in batches by
// transactions; on RabbitMQ the limit split between the processes by how
// many consumers each has of the queue's, as the broker counts them.
type Budgets interface {
	// Wait blocks until this process may start one more message of task,
	// which consumes queue, under limit, or ctx ends. limit may differ
	// from one call to the next (a reload changed it): the new one
	// holds from then on.
	Wait(ctx context.Context, task, queue string, limit tasks.Rate) error
}

// Tolerance is how far ahead of a rate limit's steady pace starts may
// run: a tenth of its period, or one start if that is longer. It bounds
// the error: over any window W at most (W + Tolerance) / limit.Interval()
// starts, so 1 % over ten periods.
func Tolerance(limit tasks.Rate) time.Duration {
	return max(limit.Interval(), limit.Per/10)
}

// ClaimStarts is the decision of a shared rate limit budget (GCRA): tat is
// the limit's theoretical arrival time, when the starts handed out so far
// would all have been due at its steady pace (unix ns; 0 for none yet).
// At now it grants up to want starts, as many as fit before now +
// Tolerance, and returns them with the new tat; when it grants none, next
// is when one will fit. Time not used is not saved up beyond the
// tolerance: an idle limit does not earn a burst.
func ClaimStarts(tat, now int64, limit tasks.Rate, want int) (got int, newTat, next int64) {
	interval := limit.Interval().Nanoseconds()
	tolerance := Tolerance(limit).Nanoseconds()
	tat = max(tat, now)
	room := (now + tolerance - tat) / interval
	got = int(min(max(room, 0), int64(want)))
	if got == 0 {
		return 0, tat, tat - tolerance + interval
	}
	return got, tat + int64(got)*interval, 0
}
