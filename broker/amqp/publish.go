package amqp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/tasks"
)

// window is how many publishes may await their confirms on one channel.
// It is also the size of the channel's basic.return buffer, so the
// connection's reader never blocks on a return while we wait for confirms.
const window = 256

// poolSize is how many confirm channels are kept for reuse.
const poolSize = 8

// pubChannel is a channel in confirm mode that one publish uses at a time.
type pubChannel struct {
	ch      *amqp.Channel
	gen     uint64
	returns chan amqp.Return
	closes  chan *amqp.Error // why the broker closed the channel
}

// closeReason is why the channel closed, as an error.
func (c *pubChannel) closeReason() error {
	select {
	case e, ok := <-c.closes:
		if ok && e != nil {
			return e
		}
	default:
	}
	return amqp.ErrClosed
}

// pubPool keeps confirm channels of the publishing connection.
type pubPool struct {
	mu   sync.Mutex
	free []*pubChannel
}

func (p *pubPool) get(s *session) (*pubChannel, error) {
	p.mu.Lock()
	for len(p.free) > 0 {
		c := p.free[len(p.free)-1]
		p.free = p.free[:len(p.free)-1]
		if c.gen == s.gen && !c.ch.IsClosed() {
			p.mu.Unlock()
			return c, nil
		}
		c.ch.Close()
	}
	p.mu.Unlock()
	ch, err := channel(s)
	if err != nil {
		return nil, err
	}
	if err := ch.Confirm(false); err != nil {
		ch.Close()
		return nil, fmt.Errorf("enable publisher confirms: %w", err)
	}
	c := &pubChannel{
		ch: ch, gen: s.gen,
		returns: ch.NotifyReturn(make(chan amqp.Return, window)),
		closes:  ch.NotifyClose(make(chan *amqp.Error, 1)),
	}
	return c, nil
}

// put keeps c for the next publish, unless it is broken or the pool full.
func (p *pubPool) put(c *pubChannel) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.ch.IsClosed() || len(p.free) >= poolSize {
		c.ch.Close()
		return
	}
	p.free = append(p.free, c)
}

func (p *pubPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.free {
		c.ch.Close()
	}
	p.free = nil
}

// outgoing is one message to publish.
type outgoing struct {
	exchange, key string
	msg           amqp.Publishing
}

// returnedError is a message the broker could not route (basic.return).
type returnedError struct {
	exchange, key string
	text          string
}

func (e *returnedError) Error() string {
	return fmt.Sprintf("the broker returned a message published to exchange %q with key %q: %s", e.exchange, e.key, e.text)
}

// send publishes msgs with the mandatory flag and waits for the broker's
// confirms, a window at a time: publishing them all before waiting is
// what makes a large Publish fast. It fails with a *returnedError when the
// broker returned one.
func (b *Broker) send(ctx context.Context, msgs []outgoing) error {
	s, err := b.pub.await(ctx, nil)
	if err != nil {
		return err
	}
	if limit := s.conn.Config.FrameSize; limit > 0 {
		for _, m := range msgs {
			if n := propertiesSize(&m.msg); n > limit-8 {
				return fmt.Errorf("message %s: its properties and headers take about %d bytes; "+
					"AMQP carries them in one frame of at most %d bytes", m.msg.MessageId, n, limit)
			}
		}
	}
	c, err := b.pool.get(s)
	if err != nil {
		return err
	}
	err = b.sendOn(ctx, c, msgs)
	b.pool.put(c)
	return err
}

func (b *Broker) sendOn(ctx context.Context, c *pubChannel, msgs []outgoing) error {
	// Left over from a publish that failed: not ours.
	drain(c.returns)
	pending := make([]*amqp.DeferredConfirmation, 0, min(len(msgs), window))
	for start := 0; start < len(msgs); start += window {
		pending = pending[:0]
		for _, m := range msgs[start:min(start+window, len(msgs))] {
			dc, err := c.ch.PublishWithDeferredConfirm(m.exchange, m.key, true, false, m.msg)
			if err != nil {
				c.ch.Close()
				return fmt.Errorf("send message: %w", err)
			}
			pending = append(pending, dc)
		}
		for _, dc := range pending {
			select {
			case <-dc.Done():
			case <-ctx.Done():
				// A late confirm must not be taken for another
				// publish's: the channel goes.
				c.ch.Close()
				return fmt.Errorf("wait for the broker's confirm: %w", context.Cause(ctx))
			}
			if !dc.Acked() {
				if c.ch.IsClosed() {
					return fmt.Errorf("the channel closed before the broker confirmed the message: %w", c.closeReason())
				}
				return errors.New("the broker refused the message (basic.nack)")
			}
		}
		// The broker sends basic.return before the confirm, and the
		// connection's reader hands it over before it handles the
		// confirm, so every return of this window is in the buffer now.
		if r, ok := first(c.returns); ok {
			drain(c.returns)
			return &returnedError{exchange: r.Exchange, key: r.RoutingKey, text: r.ReplyText}
		}
	}
	return nil
}

func first(c chan amqp.Return) (amqp.Return, bool) {
	select {
	case r := <-c:
		return r, true
	default:
		return amqp.Return{}, false
	}
}

func drain(c chan amqp.Return) {
	for {
		if _, ok := first(c); !ok {
			return
		}
	}
}

// roundDelay is d in whole milliseconds, rounded up so that a message never
// comes before its delay.
func roundDelay(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return (d + time.Millisecond - 1).Truncate(time.Millisecond)
}

// Publish sends msgs to the exchange with topic as the routing key,
// persistent, waits for the broker's confirms, and returns an error
// wrapping broker.ErrUnroutable when the broker returned one because no
// queue is bound to the key. A message with broker.MetaDelay waits in a
// delay queue first (see the package documentation for what that cannot
// report).
func (b *Broker) Publish(topic string, msgs ...*message.Message) error {
	if err := tasks.ValidateRoutingKey(topic); err != nil {
		return fmt.Errorf("publish %q: %w", topic, err)
	}
	if len(msgs) == 0 {
		return nil
	}
	ctx, cancel := b.deadline(context.Background())
	defer cancel()
	out := make([]outgoing, len(msgs))
	var s *session
	for i, m := range msgs {
		p, err := encode(m)
		if err != nil {
			return fmt.Errorf("publish %q: message %s: %w", topic, m.UUID, err)
		}
		delay, err := broker.Delay(m)
		if err != nil {
			return fmt.Errorf("publish %q: message %s: %w", topic, m.UUID, err)
		}
		out[i] = outgoing{exchange: b.exchange, key: topic, msg: p}
		if delay = roundDelay(delay); delay > 0 {
			if s == nil {
				if s, err = b.pub.await(ctx, nil); err != nil {
					return fmt.Errorf("publish %q: %w", topic, err)
				}
			}
			if out[i].exchange, err = b.delayRoute(s, publishDelay, delay, b.opts.QueueType); err != nil {
				return fmt.Errorf("publish %q: %w", topic, err)
			}
		}
	}
	if slices.ContainsFunc(out, func(o outgoing) bool { return o.msg.Priority > 0 }) {
		if err := b.checkPriority(ctx, topic); err != nil {
			if errors.Is(err, broker.ErrNoPriority) {
				err = fmt.Errorf("%w; set max_priority on its task, or publish without a priority", err)
			}
			return fmt.Errorf("publish %q: %w", topic, err)
		}
	}
	if err := b.send(ctx, out); err != nil {
		var r *returnedError
		if errors.As(err, &r) {
			if r.exchange == b.exchange {
				return fmt.Errorf("publish %q: %w", topic, broker.ErrUnroutable)
			}
			b.forgetDelay(r.exchange)
		}
		return fmt.Errorf("publish %q: %w", topic, err)
	}
	return nil
}

// Requeue puts a copy of msg (its metadata as given, the attempt in a
// header) on queue, after delay: through a delay queue that dead-letters it
// to queue when the delay ends. The original routing key travels in a
// header.
func (b *Broker) Requeue(ctx context.Context, queue string, msg *message.Message, delay time.Duration) error {
	ctx, cancel := b.deadline(ctx)
	defer cancel()
	if err := b.requeue(ctx, queue, msg, delay); err != nil {
		return fmt.Errorf("requeue message %s on queue %q: %w", msg.UUID, queue, err)
	}
	return nil
}

func (b *Broker) requeue(ctx context.Context, queue string, msg *message.Message, delay time.Duration) error {
	// A missing queue would silently drop the message when its delay
	// ends, so look first.
	if _, err := b.inspect(ctx, queue); err != nil {
		return err
	}
	p, err := encode(msg)
	if err != nil {
		return err
	}
	p.Headers[hRoutingKey] = msg.Metadata.Get(broker.MetaRoutingKey)
	if msg.Metadata.Get(broker.MetaRedelivered) == "true" {
		p.Headers[hRedelivered] = true
	}
	o := outgoing{exchange: "", key: queue, msg: p}
	if delay = roundDelay(delay); delay > 0 {
		s, err := b.pub.await(ctx, nil)
		if err != nil {
			return err
		}
		if o.exchange, err = b.delayRoute(s, retryDelay, delay, b.queueType(queue)); err != nil {
			return err
		}
	}
	err = b.send(ctx, []outgoing{o})
	var r *returnedError
	if errors.As(err, &r) {
		if r.exchange == "" {
			return fmt.Errorf("queue %q: %w", queue, broker.ErrNotFound)
		}
		b.forgetDelay(r.exchange)
	}
	return err
}

// Bury publishes a copy of msg to the dead-letter queue of queue, with the
// grave's fields and a dead-letter id in headers, and waits for the
// broker's confirm.
func (b *Broker) Bury(ctx context.Context, queue string, msg *message.Message, grave broker.Grave) error {
	ctx, cancel := b.deadline(ctx)
	defer cancel()
	if err := b.bury(ctx, queue, msg, grave); err != nil {
		return fmt.Errorf("bury message %s of queue %q: %w", msg.UUID, queue, err)
	}
	return nil
}

func (b *Broker) bury(ctx context.Context, queue string, msg *message.Message, grave broker.Grave) error {
	p, err := encode(msg)
	if err != nil {
		return err
	}
	attempt := grave.Attempt
	if attempt == 0 {
		attempt = broker.Attempt(msg)
	}
	p.Headers[hRoutingKey] = msg.Metadata.Get(broker.MetaRoutingKey)
	p.Headers[hAttempt] = int64(attempt)
	p.Headers[hDeadID] = newID()
	p.Headers[hDeadTask] = grave.Task
	p.Headers[hDeadReason] = truncate(grave.Reason)
	p.Headers[hDeadError] = truncate(grave.Error)
	p.Headers[hDeadAt] = time.Now().UTC().Format(time.RFC3339Nano)
	dead := DeadQueue(queue)
	for try := 0; ; try++ {
		err = b.send(ctx, []outgoing{{exchange: "", key: dead, msg: p}})
		var r *returnedError
		if !errors.As(err, &r) || try > 0 {
			return err
		}
		// The dead-letter queue is gone (an operator deleted it, or the
		// queue was never declared here): make it, rather than lose a
		// dead letter.
		if err := b.declareDead(ctx, dead); err != nil {
			return err
		}
	}
}

func (b *Broker) declareDead(ctx context.Context, dead string) error {
	s, err := b.pub.await(ctx, nil)
	if err != nil {
		return err
	}
	ch, err := channel(s)
	if err != nil {
		return err
	}
	defer ch.Close()
	if _, err := ch.QueueDeclare(dead, true, false, false, false, nil); err != nil {
		return explain(err, "queue", dead)
	}
	return nil
}

// maxHeaderText bounds the text Bury puts in a header: AMQP headers travel
// in one frame (128 KiB by default), and a larger one makes RabbitMQ close
// the connection, which would fail every later Bury of the same message.
const maxHeaderText = 32 << 10

func truncate(s string) string {
	if len(s) <= maxHeaderText {
		return s
	}
	cut := maxHeaderText
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "\n... (truncated)"
}

// newID is a dead-letter id: 64 random bits in hex.
func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
