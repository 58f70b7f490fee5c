package amqp

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/schedule"
)

// A schedule's record lives on RabbitMQ as a message, the token, in a
// queue of its own (<exchange>.schedule.<name>) with a single active
// consumer: of every process that runs the schedule, RabbitMQ delivers
// the token to one only, the leader, which holds it unacked. The leader
// fires a tick in one AMQP transaction on the channel that holds the
// token: it publishes the tick to the exchange and the new token to the
// queue, and acks the old token. A process killed before the commit
// changed nothing (its unacked token goes back to the queue, and the next
// consumer becomes the leader and finds the old record); after it, both
// happened. No clock decides who fires, only who holds the token.
//
// A process that starts and finds the queue empty publishes a token of no
// record; if the leader held the token meanwhile, it gets the extra one
// too and keeps the record with the latest tick (a token of no record
// never wins over a real one), so a race between two first starts
// leaves one record.

// scheduleGather is how long a new leader waits for further tokens after
// the first: a leader that died may have held several, which RabbitMQ
// hands back together.
const scheduleGather = 100 * time.Millisecond

// ScheduleQueue is the queue that holds the record of schedule name.
func (b *Broker) ScheduleQueue(name string) string { return ScheduleQueue(b.exchange, name) }

// ScheduleQueue is the queue that holds the record of schedule name on
// exchange: <exchange>.schedule.<name>, or, past AMQP's 255 bytes, the
// start of it and a hash of the whole.
func ScheduleQueue(exchange, name string) string {
	q := exchange + ".schedule." + name
	if len(q) <= 255 {
		return q
	}
	sum := sha256.Sum256([]byte(q))
	return q[:255-33] + "-" + hex.EncodeToString(sum[:16])
}

// Schedules returns the broker's schedule records; see ScheduleQueue.
func (b *Broker) Schedules() broker.Schedules { return schedules{b} }

type schedules struct{ b *Broker }

func (s schedules) Lead(ctx context.Context, name string) (broker.Lead, error) {
	b := s.b
	queue := b.ScheduleQueue(name)
	for {
		sess, err := b.sub.await(ctx, b.stop)
		if err != nil {
			return nil, fmt.Errorf("lead schedule %q: %w", name, err)
		}
		l, err := b.lead(ctx, sess, name, queue)
		if err == nil {
			return l, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("lead schedule %q: %w", name, context.Cause(ctx))
		}
		if !sess.conn.IsClosed() {
			return nil, fmt.Errorf("lead schedule %q: %w", name, err)
		}
		// The connection dropped while waiting: wait on the next one.
	}
}

// lead subscribes to the schedule's queue and waits to become its leader.
func (b *Broker) lead(ctx context.Context, sess *session, name, queue string) (*amqpLead, error) {
	ch, err := channel(sess)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			ch.Close()
		}
	}()
	q, err := ch.QueueDeclare(queue, true, false, false, false, amqp.Table{"x-single-active-consumer": true})
	if err != nil {
		return nil, explain(err, "queue", queue)
	}
	if q.Messages == 0 {
		body, _ := json.Marshal(schedule.Record{})
		err := b.send(ctx, []outgoing{{exchange: "", key: queue, msg: amqp.Publishing{
			ContentType: "application/json", DeliveryMode: amqp.Persistent, Body: body}}})
		if err != nil {
			return nil, fmt.Errorf("write the first record: %w", err)
		}
	}
	if err := ch.Qos(100, 0, false); err != nil {
		return nil, err
	}
	if err := ch.Tx(); err != nil {
		return nil, fmt.Errorf("begin transactions: %w", err)
	}
	deliveries, err := ch.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		return nil, explain(err, "queue", queue)
	}
	l := &amqpLead{b: b, name: name, queue: queue, ch: ch, deliveries: deliveries,
		returns: ch.NotifyReturn(make(chan amqp.Return, 1)), lost: make(chan struct{})}
	// Followers wait here, as long as the leader lives.
	select {
	case d, open := <-deliveries:
		if !open {
			return nil, fmt.Errorf("the consumer of %q was cancelled", queue)
		}
		l.take(d)
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	case <-sess.lost:
		return nil, sess.err
	}
	gather := time.NewTimer(scheduleGather)
	defer gather.Stop()
	for more := true; more; {
		select {
		case d, open := <-deliveries:
			if !open {
				return nil, fmt.Errorf("the consumer of %q was cancelled", queue)
			}
			l.take(d)
		case <-gather.C:
			more = false
		}
	}
	go l.watch(ch.NotifyClose(make(chan *amqp.Error, 1)))
	ok = true
	b.log.Info("leading schedule", "schedule", name)
	return l, nil
}

type amqpLead struct {
	b           *Broker
	name, queue string
	ch          *amqp.Channel
	deliveries  <-chan amqp.Delivery
	returns     chan amqp.Return

	mu   sync.Mutex
	held []amqp.Delivery // tokens not yet acked
	rec  schedule.Record // the latest record of those held, or written last

	lost     chan struct{}
	lostOnce sync.Once
}

// take keeps a token and the record it carries, if it is the latest.
func (l *amqpLead) take(d amqp.Delivery) {
	var r schedule.Record
	if err := json.Unmarshal(d.Body, &r); err != nil {
		l.b.log.Warn("schedule record does not decode; dropping it", "schedule", l.name, "err", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.held = append(l.held, d)
	if r.Last.After(l.rec.Last) || l.rec.IsZero() {
		l.rec = r
	}
}

func (l *amqpLead) watch(closed chan *amqp.Error) {
	<-closed
	l.lostOnce.Do(func() { close(l.lost) })
}

func (l *amqpLead) Lost() <-chan struct{} { return l.lost }

func (l *amqpLead) Release() {
	l.ch.Close()
	l.lostOnce.Do(func() { close(l.lost) })
}

// Record waits, when the leader holds no token (the one it wrote last is
// on its way back to it), for the next one.
func (l *amqpLead) Record(ctx context.Context) (schedule.Record, error) {
	for {
		l.mu.Lock()
		n, rec := len(l.held), l.rec
		l.mu.Unlock()
		select {
		case d, open := <-l.deliveries:
			if !open {
				return schedule.Record{}, errors.New("read the schedule's record: the channel closed")
			}
			l.take(d)
			continue
		default:
		}
		if n > 0 {
			return rec, nil
		}
		select {
		case d, open := <-l.deliveries:
			if !open {
				return schedule.Record{}, errors.New("read the schedule's record: the channel closed")
			}
			l.take(d)
		case <-ctx.Done():
			return schedule.Record{}, context.Cause(ctx)
		case <-l.lost:
			return schedule.Record{}, errors.New("read the schedule's record: the lead was lost")
		}
	}
}

func (l *amqpLead) Swap(ctx context.Context, old, new schedule.Record, key string, msg *message.Message) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.held) == 0 || !l.rec.Last.Equal(old.Last) || l.rec.Schedule != old.Schedule {
		return broker.ErrTickTaken
	}
	if err := l.swap(new, key, msg); err != nil {
		// The transaction may be half sent: give the lead up, and with
		// it the tokens, rather than guess.
		l.ch.Close()
		return fmt.Errorf("fire schedule %q: %w", l.name, err)
	}
	l.held, l.rec = nil, new
	select {
	case r := <-l.returns:
		return fmt.Errorf("fire schedule %q: the tick was recorded but no queue is bound to %q (%s)", l.name, r.RoutingKey, r.ReplyText)
	default:
	}
	return nil
}

func (l *amqpLead) swap(new schedule.Record, key string, msg *message.Message) error {
	if msg != nil {
		p, err := encode(msg)
		if err != nil {
			return err
		}
		if err := l.ch.Publish(l.b.exchange, key, true, false, p); err != nil {
			return fmt.Errorf("publish the tick: %w", err)
		}
	}
	body, err := json.Marshal(new)
	if err != nil {
		return err
	}
	err = l.ch.Publish("", l.queue, false, false, amqp.Publishing{
		ContentType: "application/json", DeliveryMode: amqp.Persistent, Timestamp: time.Now(), Body: body})
	if err != nil {
		return fmt.Errorf("write the record: %w", err)
	}
	for _, d := range l.held {
		if err := d.Ack(false); err != nil {
			return fmt.Errorf("replace the record: %w", err)
		}
	}
	if err := l.ch.TxCommit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}
