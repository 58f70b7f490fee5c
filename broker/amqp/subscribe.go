package amqp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/symphony-go/symphony/broker"
)

// Subscriber returns a Watermill subscriber whose topics are queue names.
// Each Subscribe call is one AMQP channel and consumer with its own
// prefetch, handing out one message at a time.
func (b *Broker) Subscriber(opts broker.ConsumeOptions) (message.Subscriber, error) {
	if b.closed.Load() {
		return nil, fmt.Errorf("create subscriber: %w", errClosed)
	}
	opts.Prefetch = max(opts.Prefetch, 1)
	s := &subscriber{b: b, opts: opts, closing: make(chan struct{})}
	b.mu.Lock()
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	return s, nil
}

type subscriber struct {
	b    *Broker
	opts broker.ConsumeOptions

	mu      sync.Mutex
	closed  bool
	closing chan struct{}
	wg      sync.WaitGroup
}

// Subscribe starts a consumer of queue topic. The channel closes when ctx
// is cancelled (after the message in flight was acked or nacked) or when
// the subscriber is closed.
func (s *subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("subscribe to queue %q: the subscriber is closed", topic)
	}
	s.wg.Add(1)
	s.mu.Unlock()
	c := &consumer{
		b: s.b, s: s, queue: topic, prefetch: s.opts.Prefetch, autoAck: s.opts.AutoAck,
		log: s.b.log.With("queue", topic),
	}
	wctx, cancel := s.b.deadline(ctx)
	err := c.start(wctx)
	cancel()
	if err != nil {
		s.wg.Done()
		return nil, fmt.Errorf("subscribe to queue %q: %w", topic, err)
	}
	out := make(chan *message.Message)
	s.b.consuming(topic, 1)
	go func() {
		defer s.b.consuming(topic, -1)
		c.run(ctx, out)
	}()
	return out, nil
}

// Close ends every subscription of s; their unacked messages, the ones in
// flight included, go back to their queues.
func (s *subscriber) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closing)
	s.mu.Unlock()
	s.wg.Wait()
	s.b.mu.Lock()
	delete(s.b.subs, s)
	s.b.mu.Unlock()
	return nil
}

// consumer is one subscription: one channel and one AMQP consumer at a
// time, opened again after the connection drops or the broker cancels it.
type consumer struct {
	b        *Broker
	s        *subscriber
	log      *slog.Logger
	queue    string
	prefetch int
	autoAck  bool

	ch         *amqp.Channel
	tag        string
	deliveries <-chan amqp.Delivery
}

// start opens the first channel and consumer, so that Subscribe reports a
// missing queue.
func (c *consumer) start(ctx context.Context) error {
	sess, err := c.b.sub.await(ctx, c.s.closing)
	if err != nil {
		return err
	}
	return c.openOrRedeclare(ctx, sess, "declare it first")
}

// openOrRedeclare opens the consumer's channel; a queue declared here but
// deleted since is declared again first. A queue this process never
// declared is ErrNotFound, with unknown saying what happens next.
func (c *consumer) openOrRedeclare(ctx context.Context, sess *session, unknown string) error {
	err := c.open(sess)
	if !notFound(err) {
		return err
	}
	known, err := c.b.redeclare(ctx, c.queue)
	switch {
	case !known:
		return fmt.Errorf("queue %q: %w; %s", c.queue, broker.ErrNotFound, unknown)
	case err != nil:
		return err
	}
	return c.open(sess)
}

func (c *consumer) open(sess *session) error {
	ch, err := channel(sess)
	if err != nil {
		return err
	}
	if err := ch.Qos(c.prefetch, 0, false); err != nil {
		ch.Close()
		return fmt.Errorf("set prefetch: %w", err)
	}
	tag := "symphony-" + watermill.NewShortUUID()
	deliveries, err := ch.Consume(c.queue, tag, false, false, false, false, nil)
	if err != nil {
		ch.Close()
		return err
	}
	c.ch, c.tag, c.deliveries = ch, tag, deliveries
	return nil
}

// verdict is how the wait for a handed-out message ended.
type verdict int

const (
	acked verdict = iota
	nacked
	closed // the subscriber was closed
)

func (c *consumer) run(ctx context.Context, out chan<- *message.Message) {
	defer c.s.wg.Done()
	defer close(out)
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for {
		if c.consume(ctx, mctx, out) {
			return
		}
		if !c.resume(ctx) {
			return
		}
	}
}

// consume hands out the deliveries of the current channel one at a time.
// It returns true when the subscription is over, false when the channel
// or the consumer is gone and must be opened again.
//
// Acks are sent in batches, one basic.ack with multiple set for the latest
// delivery tag: when half the prefetch is acked, when no delivery is
// waiting (so the broker's window never stays shut), before a nack, and
// before the channel closes. RabbitMQ then handles one frame where it
// handled several; an ack lost to a crash before its batch went out only
// redelivers (at-least-once).
func (c *consumer) consume(ctx, mctx context.Context, out chan<- *message.Message) bool {
	acks := ackBatch{ch: c.ch, size: max(c.prefetch/2, 1), settle: c.settle}
	for {
		var d amqp.Delivery
		var ok bool
		select {
		case d, ok = <-c.deliveries:
		default:
			acks.flush()
			select {
			case d, ok = <-c.deliveries:
			case <-ctx.Done():
				c.stopIntake()
				c.ch.Close()
				return true
			case <-c.s.closing:
				c.ch.Close()
				return true
			}
		}
		if !ok {
			acks.flush()
			if c.ch.IsClosed() {
				c.log.Warn("consumer channel closed; resuming when the connection is back")
			} else {
				c.log.Warn("consumer cancelled by the broker (queue deleted?); declaring the queue again")
				c.ch.Close()
			}
			return false
		}
		if d.Redelivered && !c.autoAck {
			// RabbitMQ redelivers a message whose consumer went without
			// settling it: a killed worker or daemon, a lost connection
			// (hand-backs are copies, never redelivered). That delivery
			// counts as an attempt, and the count must outlive this one:
			// the message goes back as a copy with the attempt raised.
			acks.flush()
			if c.charge(&d) {
				continue
			}
		}
		msg := c.message(&d)
		msg.SetContext(mctx)
		select {
		case out <- msg:
		case <-ctx.Done():
			acks.flush()
			c.stopIntake()
			c.ch.Close() // d was not acked: it goes back too
			return true
		case <-c.s.closing:
			acks.flush()
			c.ch.Close()
			return true
		}
		if c.autoAck {
			acks.add(d.DeliveryTag)
		}
		v := c.await(ctx, msg, acks.flush)
		switch {
		case v == closed:
			acks.flush()
			c.ch.Close()
			return true
		case c.autoAck:
		case v == acked:
			acks.add(d.DeliveryTag)
		case v == nacked:
			acks.flush()
			c.handBack(&d)
		}
		if ctx.Err() != nil {
			acks.flush()
			c.ch.Close()
			return true
		}
	}
}

// ackBatch gathers acks of one channel into one basic.ack.
type ackBatch struct {
	ch     *amqp.Channel
	size   int
	settle func(error)
	last   uint64
	n      int
}

func (a *ackBatch) add(tag uint64) {
	a.last = tag
	if a.n++; a.n >= a.size {
		a.flush()
	}
}

func (a *ackBatch) flush() {
	if a.n == 0 {
		return
	}
	a.n = 0
	a.settle(a.ch.Ack(a.last, true))
}

func (c *consumer) settle(err error) {
	if err != nil {
		c.log.Warn("ack or nack failed; the broker will deliver the message again", "err", err)
	}
}

// await waits for the ack or nack of the message in flight. A cancelled
// ctx hands back the messages not yet handed out at once (after the acks
// not yet sent: flush), and still waits.
func (c *consumer) await(ctx context.Context, msg *message.Message, flush func()) verdict {
	done := ctx.Done()
	for {
		select {
		case <-msg.Acked():
			return acked
		case <-msg.Nacked():
			return nacked
		case <-c.s.closing:
			// An ack that raced with Close still counts.
			select {
			case <-msg.Acked():
				return acked
			case <-msg.Nacked():
				return nacked
			default:
				return closed
			}
		case <-done:
			flush()
			c.stopIntake()
			done = nil
		}
	}
}

// stopIntake cancels the consumer and hands the deliveries it holds but
// did not hand out back to the queue; the channel stays open for the ack
// of the message in flight.
func (c *consumer) stopIntake() {
	if c.ch.IsClosed() {
		return
	}
	if err := c.ch.Cancel(c.tag, false); err != nil {
		return // the channel is gone, and its deliveries went back with it
	}
	for d := range c.deliveries {
		if d.Redelivered && c.charge(&d) {
			continue
		}
		if !c.handBack(&d) {
			return
		}
	}
}

// handBack returns a delivery to its queue on purpose (a nack, a
// subscription that stops): as a copy marked redelivered, then the ack of
// the original, so that RabbitMQ's redelivered flag is left to deliveries
// that were lost. The copy goes to the tail of the queue. If the copy
// cannot be sent, the delivery is nacked instead, and may then count as a
// lost attempt. It reports whether the channel still works.
func (c *consumer) handBack(d *amqp.Delivery) bool {
	msg := c.message(d)
	msg.Metadata[broker.MetaRedelivered] = "true"
	ctx, cancel := c.b.deadline(context.Background())
	defer cancel()
	if err := c.b.requeue(ctx, c.queue, msg, 0); err != nil {
		c.log.Warn("hand back a message as a copy failed; nacking it", "message_uuid", msg.UUID, "err", err)
		return d.Nack(false, true) == nil
	}
	return d.Ack(false) == nil
}

// charge counts a lost delivery as an attempt: a copy with the attempt
// raised replaces it. It reports whether it did; if not, the delivery is
// handled as it is.
func (c *consumer) charge(d *amqp.Delivery) bool {
	msg := c.message(d)
	msg.Metadata[broker.MetaAttempt] = strconv.Itoa(broker.Attempt(msg) + 1)
	ctx, cancel := c.b.deadline(context.Background())
	defer cancel()
	if err := c.b.requeue(ctx, c.queue, msg, 0); err != nil {
		c.log.Warn("count a lost delivery as an attempt failed; handling it as it is", "message_uuid", msg.UUID, "err", err)
		return false
	}
	c.settle(d.Ack(false))
	return true
}

// resume opens a new channel and consumer once the connection is back;
// a queue that is gone is declared again when this process declared it.
// It returns false when the subscription ends while waiting.
func (c *consumer) resume(ctx context.Context) bool {
	// Declaring the queue again must not hold up Subscriber.Close.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-c.s.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	pause := c.b.opts.ReconnectMin
	for {
		sess, err := c.b.sub.await(ctx, c.s.closing)
		if err != nil {
			return false
		}
		err = c.openOrRedeclare(ctx, sess, "waiting for it to be declared")
		if err == nil {
			c.log.Info("consumer resumed")
			return true
		}
		if errors.Is(err, errClosed) {
			return false
		}
		c.log.Warn("resume consumer failed; retrying", "err", err, "retry_in", pause.String())
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false
		case <-c.s.closing:
			t.Stop()
			return false
		}
		pause = c.b.nextPause(pause)
	}
}

// message turns a delivery into the Watermill message handlers see.
func (c *consumer) message(d *amqp.Delivery) *message.Message {
	x := c.b.decode(d)
	x.md[broker.MetaRoutingKey] = x.routingKey
	x.md[broker.MetaQueue] = c.queue
	if x.rerouted {
		// It came through a delay queue (or a replay): it was first
		// published to the exchange.
		x.md[broker.MetaExchange] = c.b.exchange
	} else {
		x.md[broker.MetaExchange] = d.Exchange
	}
	if d.Redelivered {
		x.md[broker.MetaRedelivered] = "true"
	}
	msg := message.NewMessage(x.uuid, d.Body)
	msg.Metadata = x.md
	return msg
}
