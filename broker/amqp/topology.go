package amqp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/tasks"
)

// Suffixes of the queues that belong to a task queue.
const (
	deadSuffix   = ".dead"
	recordSuffix = ".bindings"
)

// DeadQueue is the dead-letter queue of a task queue.
func DeadQueue(queue string) string { return queue + deadSuffix }

// RecordQueue is the queue holding the binding record of a task queue.
func RecordQueue(queue string) string { return queue + recordSuffix }

// declareExchange declares the durable topic exchange on its own channel
// (a failed declare closes the channel).
func (b *Broker) declareExchange(conn *amqp.Connection) error {
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("declare exchange %q: open channel: %w", b.exchange, err)
	}
	defer ch.Close()
	if err := ch.ExchangeDeclare(b.exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %q (topic, durable): %w", b.exchange, explain(err, "exchange", b.exchange))
	}
	return nil
}

// explain turns RabbitMQ's PRECONDITION_FAILED into an error that says what
// differs and what to do; RabbitMQ's own text names the argument and both
// values.
func explain(err error, kind, name string) error {
	var ae *amqp.Error
	if !errors.As(err, &ae) {
		return err
	}
	switch ae.Code {
	case amqp.PreconditionFailed:
		text := strings.TrimPrefix(ae.Reason, "PRECONDITION_FAILED - ")
		return fmt.Errorf("%s %q already exists with other settings (%s); delete it or choose another name: %w", kind, name, text, err)
	case amqp.AccessRefused:
		return fmt.Errorf("%s %q: access refused (check the user's permissions on the vhost): %w", kind, name, err)
	case amqp.NotFound:
		return fmt.Errorf("%s %q: %w (%v)", kind, name, broker.ErrNotFound, err)
	}
	return err
}

// notFound reports a channel error 404.
func notFound(err error) bool {
	var ae *amqp.Error
	return errors.As(err, &ae) && ae.Code == amqp.NotFound
}

// Declare creates queue q or updates it so that exactly q.Patterns are
// bound to it, and declares its dead-letter queue. A queue of that name
// declared with other arguments is an error naming the difference.
func (b *Broker) Declare(ctx context.Context, q broker.Queue) error {
	patterns, err := q.Check()
	if err != nil {
		return fmt.Errorf("declare queue %q: %w", q.Name, err)
	}
	q.Patterns = patterns
	ctx, cancel := b.deadline(ctx)
	defer cancel()
	for {
		s, err := b.pub.await(ctx, nil)
		if err != nil {
			return fmt.Errorf("declare queue %q: %w", q.Name, err)
		}
		b.declareMu.Lock()
		err = b.apply(s, q)
		b.declareMu.Unlock()
		if err == nil {
			return nil
		}
		// The connection dropped under us: do it again on the next one.
		if s.conn.IsClosed() && ctx.Err() == nil {
			continue
		}
		return fmt.Errorf("declare queue %q: %w", q.Name, err)
	}
}

// redeclare declares queue again as this process last declared it; false
// when it never did.
func (b *Broker) redeclare(ctx context.Context, queue string) (bool, error) {
	b.mu.Lock()
	q, ok := b.declared[queue]
	b.mu.Unlock()
	if !ok {
		return false, nil
	}
	return true, b.Declare(ctx, q)
}

// record is the body of a binding record message.
type record struct {
	Exchange string    `json:"exchange"`
	Patterns []string  `json:"patterns"`
	At       time.Time `json:"at"`
}

// apply declares q on s: the queue, its dead-letter queue, its bindings,
// and its binding record, and then records q as declared. The caller holds
// declareMu.
func (b *Broker) apply(s *session, q broker.Queue) error {
	ch, err := channel(s)
	if err != nil {
		return err
	}
	defer ch.Close()
	if _, err := ch.QueueDeclare(q.Name, q.Durable, !q.Durable, false, false, withType(queueArgs(q), q.Type)); err != nil {
		if perr := priorityRefused(err, q); perr != nil {
			return perr
		}
		return explain(err, "queue", q.Name)
	}
	if _, err := ch.QueueDeclare(DeadQueue(q.Name), true, false, false, false, withType(nil, q.Type)); err != nil {
		return explain(err, "queue", DeadQueue(q.Name))
	}
	b.mu.Lock()
	previous := slices.Clone(b.declared[q.Name].Patterns)
	b.mu.Unlock()
	var held []amqp.Delivery
	if q.Durable {
		var recorded []string
		if held, recorded, err = b.readRecord(ch, q); err != nil {
			return err
		}
		for _, p := range recorded {
			if !slices.Contains(previous, p) {
				previous = append(previous, p)
			}
		}
	}
	// Bind the new before unbinding the old, so that no key the queue
	// keeps is unbound in between.
	for _, p := range q.Patterns {
		if err := ch.QueueBind(q.Name, p, b.exchange, false, nil); err != nil {
			return fmt.Errorf("bind pattern %q: %w", p, explain(err, "queue", q.Name))
		}
	}
	for _, p := range previous {
		if slices.Contains(q.Patterns, p) {
			continue
		}
		if err := ch.QueueUnbind(q.Name, p, b.exchange, nil); err != nil {
			return fmt.Errorf("unbind stale pattern %q: %w", p, explain(err, "queue", q.Name))
		}
		b.log.Info("removed stale binding", "queue", q.Name, "pattern", p)
	}
	if err := b.markPlain(ch, q, previous); err != nil {
		return err
	}
	if q.Durable {
		if err := b.writeRecord(ch, q, held); err != nil {
			return err
		}
	}
	q.Patterns = slices.Clone(q.Patterns)
	b.mu.Lock()
	b.declared[q.Name] = q
	b.mu.Unlock()
	return nil
}

// withType adds the x-queue-type of a quorum queue to args; a classic
// queue is declared without one, as before queue types existed, so that
// queues declared then are declared alike.
func withType(args amqp.Table, t tasks.QueueType) amqp.Table {
	if t != tasks.Quorum {
		return args
	}
	out := amqp.Table{"x-queue-type": string(tasks.Quorum)}
	for k, v := range args {
		out[k] = v
	}
	return out
}

// queueType is the type of a task queue: as this process declared it, or
// the default of the options.
func (b *Broker) queueType(queue string) tasks.QueueType {
	b.mu.Lock()
	q, ok := b.declared[queue]
	b.mu.Unlock()
	if ok && q.Type != "" {
		return q.Type
	}
	return b.opts.QueueType
}

// readRecord takes every message of the binding record of queue without
// acking them, and returns those of this exchange with the union of their
// patterns (more than one is left only by declares that raced; unbinding a
// pattern that is not bound is harmless). Records of other exchanges stay
// unacked and go back when the channel closes.
func (b *Broker) readRecord(ch *amqp.Channel, q broker.Queue) ([]amqp.Delivery, []string, error) {
	name := RecordQueue(q.Name)
	if _, err := ch.QueueDeclare(name, true, false, false, false, withType(nil, q.Type)); err != nil {
		return nil, nil, explain(err, "queue", name)
	}
	var ours []amqp.Delivery
	var patterns []string
	others := map[string][]string{}
	for {
		d, ok, err := ch.Get(name, false)
		if err != nil {
			return nil, nil, fmt.Errorf("read binding record %q: %w", name, err)
		}
		if !ok {
			if err := b.otherExchange(q.Name, others); err != nil {
				return nil, nil, err
			}
			return ours, patterns, nil
		}
		var r record
		if err := json.Unmarshal(d.Body, &r); err != nil {
			// Not ours to judge; it goes back with the channel.
			b.log.Warn("binding record does not decode; ignoring it", "queue", name, "err", err)
			continue
		}
		if r.Exchange != b.exchange {
			if len(r.Patterns) > 0 {
				others[r.Exchange] = r.Patterns
			}
			continue
		}
		ours = append(ours, d)
		for _, p := range r.Patterns {
			if !slices.Contains(patterns, p) {
				patterns = append(patterns, p)
			}
		}
	}
}

// ErrOtherExchange is Declare's error for a durable queue that a daemon of
// another exchange has bound: queue names are global in a virtual host,
// and one queue would take the messages of both exchanges.
var ErrOtherExchange = errors.New("the queue is bound to another exchange")

// otherExchange refuses a queue that the binding records say is bound to
// another exchange than this broker's, naming both.
func (b *Broker) otherExchange(queue string, others map[string][]string) error {
	if len(others) == 0 {
		return nil
	}
	names := slices.Sorted(maps.Keys(others))
	other := names[0]
	return fmt.Errorf("queue %q: %w: exchange %q binds it to %s, and this daemon's exchange is %q; "+
		"one queue would take the messages of both. Give the task a queue of its own (queue = \"%s.%s\"), "+
		"run both daemons with one --exchange, or use a virtual host per exchange. If exchange %q is no longer used, "+
		"delete the queues %s and %s and start again",
		queue, ErrOtherExchange, other, strings.Join(others[other], ", "), b.exchange, b.exchange, queue,
		other, queue, RecordQueue(queue))
}

// writeRecord publishes the patterns now bound as the new record, waits
// for the broker's confirm, then acks the old records.
func (b *Broker) writeRecord(ch *amqp.Channel, q broker.Queue, old []amqp.Delivery) error {
	name := RecordQueue(q.Name)
	body, err := json.Marshal(record{Exchange: b.exchange, Patterns: q.Patterns, At: time.Now().UTC()})
	if err != nil {
		return fmt.Errorf("encode binding record: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		return fmt.Errorf("write binding record %q: %w", name, err)
	}
	dc, err := ch.PublishWithDeferredConfirm("", name, true, false, amqp.Publishing{
		ContentType:  "application/json",
		DeliveryMode: amqp.Persistent,
		Timestamp:    time.Now(),
		Body:         body,
	})
	if err != nil {
		return fmt.Errorf("write binding record %q: %w", name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.opts.PublishTimeout)
	defer cancel()
	if ok, err := dc.WaitContext(ctx); err != nil || !ok {
		return fmt.Errorf("write binding record %q: the broker did not confirm it (%v)", name, err)
	}
	for _, d := range old {
		if err := d.Ack(false); err != nil {
			return fmt.Errorf("replace binding record %q: %w", name, err)
		}
	}
	return nil
}

// admin is a channel kept open for passive declares (Depth, Requeue's
// check), which RabbitMQ answers with a channel error when the queue is
// missing; then it is opened again.
type admin struct {
	mu  sync.Mutex
	ch  *amqp.Channel
	gen uint64
}

func (a *admin) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ch != nil {
		a.ch.Close()
		a.ch = nil
	}
}

// inspect returns the state of queue: ErrNotFound (wrapped) when it does
// not exist.
func (b *Broker) inspect(ctx context.Context, queue string) (amqp.Queue, error) {
	s, err := b.pub.await(ctx, nil)
	if err != nil {
		return amqp.Queue{}, err
	}
	a := &b.admin
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ch == nil || a.ch.IsClosed() || a.gen != s.gen {
		if a.ch != nil {
			a.ch.Close()
		}
		a.ch = nil
		ch, err := channel(s)
		if err != nil {
			return amqp.Queue{}, err
		}
		a.ch, a.gen = ch, s.gen
	}
	st, err := a.ch.QueueDeclarePassive(queue, false, false, false, false, nil)
	if err != nil {
		a.ch = nil // RabbitMQ closed it
		if notFound(err) {
			return st, fmt.Errorf("queue %q: %w", queue, broker.ErrNotFound)
		}
		return st, err
	}
	return st, nil
}

// Depth is the number of messages ready in queue (not held by a
// consumer; delayed messages wait in their delay queue and do not count).
func (b *Broker) Depth(ctx context.Context, queue string) (int, error) {
	ctx, cancel := b.deadline(ctx)
	defer cancel()
	st, err := b.inspect(ctx, queue)
	if err != nil {
		return 0, fmt.Errorf("count messages of queue %q: %w", queue, err)
	}
	return st.Messages, nil
}

// delay kinds: where a message goes when its delay ends.
type delayKind string

const (
	// retryDelay: back to one queue, through the default exchange.
	retryDelay delayKind = "retry"
	// publishDelay: to the topic exchange with its own routing key.
	publishDelay delayKind = "delay"
)

// delayState is when this process last declared a delay queue, on which
// connection.
type delayState struct {
	at  time.Time
	gen uint64
}

// quorumSuffix ends the names of quorum delay queues.
const quorumSuffix = ".quorum"

// delayName is the name of the exchange and the queue of a delay.
func (b *Broker) delayName(kind delayKind, d time.Duration, t tasks.QueueType) string {
	name := b.exchange + "." + string(kind) + "." + strconv.FormatInt(d.Milliseconds(), 10)
	if t == tasks.Quorum {
		name += quorumSuffix
	}
	return name
}

// expiry is the x-expires of a delay queue: comfortably longer than the
// delay, see refresh.
func expiry(d time.Duration) time.Duration { return 2*d + 10*time.Minute }

// isDelayQueue reports whether name is one of this exchange's delay queues.
func (b *Broker) isDelayQueue(name string) bool {
	rest, ok := strings.CutPrefix(name, b.exchange+".")
	if !ok {
		return false
	}
	kind, ms, ok := strings.Cut(rest, ".")
	if !ok || (kind != string(retryDelay) && kind != string(publishDelay)) {
		return false
	}
	ms = strings.TrimSuffix(ms, quorumSuffix)
	_, err := strconv.ParseUint(ms, 10, 64)
	return err == nil
}

// delayRoute declares (when due) the exchange and queue that hold messages
// for d and returns the exchange to publish them to. A declare counts as
// use of the queue, so declaring again when a quarter of x-expires has
// passed means that a message published now (TTL d) is out of the queue
// before it could expire: d < 3/4 × (2d + 10m).
func (b *Broker) delayRoute(s *session, kind delayKind, d time.Duration, t tasks.QueueType) (string, error) {
	name := b.delayName(kind, d, t)
	b.mu.Lock()
	st, ok := b.delays[name]
	b.mu.Unlock()
	if ok && st.gen == s.gen && time.Since(st.at) < expiry(d)/4 {
		return name, nil
	}
	ch, err := channel(s)
	if err != nil {
		return "", err
	}
	defer ch.Close()
	if err := ch.ExchangeDeclare(name, amqp.ExchangeFanout, true, true, false, false, nil); err != nil {
		return "", fmt.Errorf("declare delay exchange: %w", explain(err, "exchange", name))
	}
	target := ""
	if kind == publishDelay {
		target = b.exchange
	}
	args := amqp.Table{
		"x-message-ttl":          d.Milliseconds(),
		"x-expires":              expiry(d).Milliseconds(),
		"x-dead-letter-exchange": target,
	}
	if t == tasks.Quorum {
		// A quorum queue dead-letters at most once by default: a
		// message whose target cannot take it then would be dropped.
		// At least once needs reject-publish overflow.
		args = withType(args, t)
		args["x-dead-letter-strategy"] = "at-least-once"
		args["x-overflow"] = "reject-publish"
	}
	if _, err := ch.QueueDeclare(name, true, false, false, false, args); err != nil {
		return "", fmt.Errorf("declare delay queue: %w", explain(err, "queue", name))
	}
	if err := ch.QueueBind(name, "", name, false, nil); err != nil {
		return "", fmt.Errorf("bind delay queue: %w", explain(err, "queue", name))
	}
	b.mu.Lock()
	b.delays[name] = delayState{at: time.Now(), gen: s.gen}
	b.mu.Unlock()
	return name, nil
}

// forgetDelay makes the next use of a delay declare it again (after it
// was found missing).
func (b *Broker) forgetDelay(name string) {
	b.mu.Lock()
	delete(b.delays, name)
	b.mu.Unlock()
}
