package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/broker/sqlite"
	"github.com/symphony-go/symphony/tasks"
)

// A feeder publishes numbered messages while a daemon runs: from this
// process, as another program on the machine would, through symphony's own
// embedded broker package (the same code `symphony publish` runs) or
// through a plain amqp091-go channel with publisher confirms. The i-th
// message's payload is payloadFormat with id i, so that a task can log
// which one it handled.
type feeder interface {
	// publish sends the next n messages and returns when they are stored
	// (SQLite: committed; RabbitMQ: confirmed).
	publish(n int) error
	// sent is how many messages were published so far.
	sent() int
	close()
}

// sqliteFeeder publishes with broker/sqlite, the messages of one call in
// one transaction committed with synchronous=FULL, as `symphony publish`
// does.
type sqliteFeeder struct {
	b   *sqlite.Broker
	key string
	n   atomic.Int64
}

func openSQLiteFeeder(ctx context.Context, dbPath, key string) (*sqliteFeeder, error) {
	b, err := sqlite.Open(ctx, dbPath, sqlite.Options{})
	if err != nil {
		return nil, err
	}
	return &sqliteFeeder{b: b, key: key}, nil
}

func (f *sqliteFeeder) publish(n int) error {
	if n <= 0 {
		return nil
	}
	first := int(f.n.Load())
	msgs := make([]*message.Message, 0, n)
	for i := range n {
		m, err := broker.NewMessage(tasks.Publication{RoutingKey: f.key, ContentType: "application/json",
			Body: fmt.Appendf(nil, payloadFormat, first+i)})
		if err != nil {
			return err
		}
		msgs = append(msgs, m)
	}
	if err := f.b.Publish(f.key, msgs...); err != nil {
		return err
	}
	f.n.Add(int64(n))
	return nil
}

func (f *sqliteFeeder) sent() int { return int(f.n.Load()) }
func (f *sqliteFeeder) close()    { f.b.Close() }

// amqpFeeder publishes persistent messages with the mandatory flag and
// waits for the broker's confirms.
type amqpFeeder struct {
	conn     *amqp.Connection
	ch       *amqp.Channel
	key      string
	returned atomic.Int64
	n        atomic.Int64
}

func openAMQPFeeder(url, key string) (*amqpFeeder, error) {
	conn, err := amqp.Dial(url)
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		conn.Close()
		return nil, err
	}
	if err := ch.Confirm(false); err != nil {
		conn.Close()
		return nil, fmt.Errorf("confirm mode: %w", err)
	}
	f := &amqpFeeder{conn: conn, ch: ch, key: key}
	returns := ch.NotifyReturn(make(chan amqp.Return, 16))
	go func() {
		for range returns {
			f.returned.Add(1)
		}
	}()
	return f, nil
}

func (f *amqpFeeder) publish(n int) error {
	first := int(f.n.Load())
	pending := make([]*amqp.DeferredConfirmation, 0, n)
	ctx := context.Background()
	for i := range n {
		c, err := f.ch.PublishWithDeferredConfirmWithContext(ctx, rabbitExchange, f.key, true, false, amqp.Publishing{
			ContentType:  "application/json",
			DeliveryMode: amqp.Persistent,
			MessageId:    fmt.Sprintf("bench-%d", first+i),
			Body:         fmt.Appendf(nil, payloadFormat, first+i),
		})
		if err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		pending = append(pending, c)
	}
	for _, c := range pending {
		ok, err := c.WaitContext(ctx)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("the broker nacked message %d", c.DeliveryTag)
		}
	}
	if k := f.returned.Load(); k > 0 {
		return fmt.Errorf("%d messages to %s were returned: no queue is bound to the key", k, f.key)
	}
	f.n.Add(int64(n))
	return nil
}

func (f *amqpFeeder) sent() int { return int(f.n.Load()) }
func (f *amqpFeeder) close()    { f.conn.Close() }

// preloadFeeder publishes n messages in transactions (confirm windows) of
// preloadWindow, and returns how long that took.
func preloadFeeder(f feeder, n int) (time.Duration, error) {
	start := time.Now()
	for done := 0; done < n; {
		k := min(preloadWindow, n-done)
		if err := f.publish(k); err != nil {
			return 0, err
		}
		done += k
	}
	return time.Since(start), nil
}

// stream publishes at rate messages per second from its start until ctx
// ends: every tick, as many as are due by then, in one call. It returns
// the time the first message was stored, and fails if it falls behind by
// more than a second's worth (the machine cannot keep the rate).
type stream struct {
	first chan time.Time // receives the time the first message was stored
	done  chan struct{}
	err   error
}

func startStream(ctx context.Context, f feeder, rate float64, tick time.Duration) *stream {
	s := &stream{first: make(chan time.Time, 1), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(tick)
		defer t.Stop()
		start := time.Now()
		base := f.sent()
		started := false
		for {
			due := int(time.Since(start).Seconds()*rate) + 1 - (f.sent() - base)
			if due > 0 {
				if due > int(rate)+1 && f.sent() > base {
					s.err = fmt.Errorf("the publisher fell %d messages behind its rate of %.0f/s", due, rate)
					return
				}
				if err := f.publish(due); err != nil {
					s.err = err
					return
				}
				if !started {
					started = true
					s.first <- time.Now()
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// wait waits for the stream to end (its context cancelled) and returns
// its error.
func (s *stream) wait() error {
	<-s.done
	return s.err
}
