package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/tasks"
)

// computed reports the metadata keys the broker sets on delivery (or, for
// the delay, consumes on publish); they are not stored.
func computed(key string) bool {
	switch key {
	case broker.MetaExchange, broker.MetaRoutingKey, broker.MetaQueue, broker.MetaRedelivered, broker.MetaDelay:
		return true
	}
	return false
}

// stored is a message as it goes into the bodies table.
type stored struct {
	uuid     string
	metadata string
	payload  []byte
	delay    time.Duration
	priority int
}

func encode(msg *message.Message) (stored, error) {
	delay, err := broker.Delay(msg)
	if err != nil {
		return stored{}, err
	}
	priority, err := broker.Priority(msg)
	if err != nil {
		return stored{}, err
	}
	md := make(map[string]string, len(msg.Metadata))
	for k, v := range msg.Metadata {
		if !computed(k) {
			md[k] = v
		}
	}
	meta, err := json.Marshal(md)
	if err != nil {
		return stored{}, fmt.Errorf("encode metadata: %w", err)
	}
	payload := []byte(msg.Payload)
	if payload == nil {
		payload = []byte{}
	}
	return stored{uuid: msg.UUID, metadata: string(meta), payload: payload, delay: delay, priority: priority}, nil
}

// insert stores one message on queue, visible at visibleAt.
func insert(ctx context.Context, w *writer, queue int64, routingKey string, s stored, visibleAt int64) error {
	res, err := w.st(sqlInsertMsg).ExecContext(ctx, queue, visibleAt, s.priority)
	if err != nil {
		return fmt.Errorf("insert message: %w", err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return fmt.Errorf("insert message: %w", err)
	}
	if _, err := w.st(sqlInsertBody).ExecContext(ctx, id, routingKey, s.uuid, s.metadata, s.payload); err != nil {
		return fmt.Errorf("insert message body: %w", err)
	}
	return nil
}

// Publish routes msgs by topic, the routing key, through the bindings of
// the exchange, and stores one copy per matching queue. All of msgs are one
// transaction: they are all stored or none is. A key no binding matches
// stores nothing and returns an error wrapping broker.ErrUnroutable.
func (b *Broker) Publish(topic string, msgs ...*message.Message) error {
	if err := tasks.ValidateRoutingKey(topic); err != nil {
		return fmt.Errorf("publish %q: %w", topic, err)
	}
	if len(msgs) == 0 {
		return nil
	}
	rows := make([]stored, len(msgs))
	for i, m := range msgs {
		s, err := encode(m)
		if err != nil {
			return fmt.Errorf("publish %q: message %s: %w", topic, m.UUID, err)
		}
		rows[i] = s
	}
	var queues []int64
	err := b.write(context.Background(), true, false, func(ctx context.Context, w *writer) error {
		var err error
		queues, err = b.store(ctx, w, topic, rows)
		return err
	})
	if err != nil {
		return fmt.Errorf("publish %q: %w", topic, err)
	}
	b.notify.wake(queues...)
	return nil
}

// store routes rows by topic and stores a copy on every queue they go to,
// inside the caller's transaction, and returns those queues.
func (b *Broker) store(ctx context.Context, w *writer, topic string, rows []stored) ([]int64, error) {
	routes, err := b.route(ctx, w, topic)
	if err != nil {
		return nil, err
	}
	if len(routes) == 0 {
		return nil, broker.ErrUnroutable
	}
	prioritized := slices.ContainsFunc(rows, func(s stored) bool { return s.priority > 0 })
	var plain []string
	ids := make([]int64, 0, len(routes))
	for _, r := range routes {
		ids = append(ids, r.id)
		if r.maxPriority == 0 {
			plain = append(plain, r.name)
		}
	}
	if prioritized && len(plain) > 0 {
		return nil, fmt.Errorf("%w: queue %s; set max_priority on its task, or publish without a priority",
			broker.ErrNoPriority, strings.Join(plain, ", "))
	}
	t := now()
	for _, s := range rows {
		for _, q := range ids {
			if err := insert(ctx, w, q, topic, s, t+s.delay.Nanoseconds()); err != nil {
				return nil, err
			}
		}
	}
	return ids, nil
}

// routed is a queue a message goes to.
type routed struct {
	id          int64
	name        string
	maxPriority int
}

// route returns the queues of the exchange bound to a pattern matching key.
func (b *Broker) route(ctx context.Context, w *writer, key string) ([]routed, error) {
	rs, err := w.st(sqlBindings).QueryContext(ctx, b.exchange)
	if err != nil {
		return nil, fmt.Errorf("read bindings: %w", err)
	}
	defer rs.Close()
	var queues []routed
	for rs.Next() {
		var q routed
		var pattern string
		if err := rs.Scan(&q.id, &pattern, &q.name, &q.maxPriority); err != nil {
			return nil, fmt.Errorf("read bindings: %w", err)
		}
		if !slices.ContainsFunc(queues, func(r routed) bool { return r.id == q.id }) && tasks.Match(pattern, key) {
			queues = append(queues, q)
		}
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("read bindings: %w", err)
	}
	return queues, nil
}

// lookup returns the id of queue and whether it is durable, ErrNotFound
// when the exchange has no such queue.
func (b *Broker) lookup(ctx context.Context, w *writer, queue string) (int64, bool, error) {
	var id int64
	var durable bool
	err := w.st(sqlQueue).QueryRowContext(ctx, b.exchange, queue).Scan(&id, &durable)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, fmt.Errorf("queue %q: %w", queue, broker.ErrNotFound)
	}
	if err != nil {
		return 0, false, fmt.Errorf("read queue %q: %w", queue, err)
	}
	return id, durable, nil
}

// Declare creates queue q or updates it so that exactly q.Patterns are
// bound to it, in one transaction.
func (b *Broker) Declare(ctx context.Context, q broker.Queue) error {
	patterns, err := q.Check()
	if err != nil {
		return fmt.Errorf("declare queue %q: %w", q.Name, err)
	}
	list, err := json.Marshal(patterns)
	if err != nil {
		return fmt.Errorf("declare queue %q: %w", q.Name, err)
	}
	err = b.write(ctx, true, false, func(ctx context.Context, w *writer) error {
		if err := b.sweep(ctx, w); err != nil {
			return err
		}
		var was int
		err := w.conn.QueryRowContext(ctx, `SELECT max_priority FROM queues WHERE exchange = ?1 AND name = ?2`,
			b.exchange, q.Name).Scan(&was)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return fmt.Errorf("read queue: %w", err)
		case was != q.MaxPriority:
			return broker.PriorityChange(q.Name, was, q.MaxPriority, "")
		}
		var id int64
		err = w.conn.QueryRowContext(ctx, `INSERT INTO queues (exchange, name, durable, max_priority) VALUES (?1, ?2, ?3, ?4)
			ON CONFLICT (exchange, name) DO UPDATE SET durable = excluded.durable RETURNING id`,
			b.exchange, q.Name, q.Durable, q.MaxPriority).Scan(&id)
		if err != nil {
			return fmt.Errorf("write queue: %w", err)
		}
		if _, err := w.conn.ExecContext(ctx, `DELETE FROM bindings WHERE queue_id = ?1
			AND pattern NOT IN (SELECT value FROM json_each(?2))`, id, string(list)); err != nil {
			return fmt.Errorf("remove stale bindings: %w", err)
		}
		if _, err := w.conn.ExecContext(ctx, `INSERT OR IGNORE INTO bindings (queue_id, pattern)
			SELECT ?1, value FROM json_each(?2)`, id, string(list)); err != nil {
			return fmt.Errorf("write bindings: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("declare queue %q: %w", q.Name, err)
	}
	return nil
}

// Requeue stores a copy of msg, metadata as given, at the tail of queue,
// visible after delay.
func (b *Broker) Requeue(ctx context.Context, queue string, msg *message.Message, delay time.Duration) error {
	s, err := encode(msg)
	if err != nil {
		return fmt.Errorf("requeue message %s on queue %q: %w", msg.UUID, queue, err)
	}
	var id int64
	err = b.write(ctx, true, false, func(ctx context.Context, w *writer) error {
		var err error
		if id, _, err = b.lookup(ctx, w, queue); err != nil {
			return err
		}
		return insert(ctx, w, id, msg.Metadata.Get(broker.MetaRoutingKey), s, now()+max(delay, 0).Nanoseconds())
	})
	if err != nil {
		return fmt.Errorf("requeue message %s on queue %q: %w", msg.UUID, queue, err)
	}
	b.notify.wake(id)
	return nil
}

// Bury stores a copy of msg as a dead letter of queue.
func (b *Broker) Bury(ctx context.Context, queue string, msg *message.Message, grave broker.Grave) error {
	s, err := encode(msg)
	if err != nil {
		return fmt.Errorf("bury message %s of queue %q: %w", msg.UUID, queue, err)
	}
	attempt := grave.Attempt
	if attempt == 0 {
		attempt = broker.Attempt(msg)
	}
	err = b.write(ctx, true, false, func(ctx context.Context, w *writer) error {
		_, err := w.conn.ExecContext(ctx, `INSERT INTO dead
			(exchange, queue, task, routing_key, uuid, metadata, payload, reason, error, attempt, dead_at)
			VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)`,
			b.exchange, queue, grave.Task, msg.Metadata.Get(broker.MetaRoutingKey), s.uuid, s.metadata, s.payload,
			grave.Reason, grave.Error, attempt, now())
		return err
	})
	if err != nil {
		return fmt.Errorf("bury message %s of queue %q: %w", msg.UUID, queue, err)
	}
	return nil
}

// Depth counts the messages of queue that are ready: neither leased nor
// waiting out a delay.
func (b *Broker) Depth(ctx context.Context, queue string) (int, error) {
	var n int
	err := b.rdb.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM messages m WHERE m.queue_id = q.id AND m.visible_at <= ?3)
		FROM queues q WHERE q.exchange = ?1 AND q.name = ?2`, b.exchange, queue, now()).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("count messages of queue %q: %w", queue, broker.ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("count messages of queue %q: %w", queue, b.explain(err))
	}
	return n, nil
}

// sweep deletes the non-durable queues whose every consumer is gone without
// saying so (its process died): their consumers rows all expired.
func (b *Broker) sweep(ctx context.Context, w *writer) error {
	rs, err := w.conn.QueryContext(ctx, `SELECT q.id FROM queues q WHERE q.durable = 0
		AND EXISTS (SELECT 1 FROM consumers c WHERE c.queue_id = q.id)
		AND NOT EXISTS (SELECT 1 FROM consumers c WHERE c.queue_id = q.id AND c.expires_at > ?1)`, now())
	if err != nil {
		return fmt.Errorf("find abandoned queues: %w", err)
	}
	var ids []int64
	for rs.Next() {
		var id int64
		if err := rs.Scan(&id); err != nil {
			rs.Close()
			return fmt.Errorf("find abandoned queues: %w", err)
		}
		ids = append(ids, id)
	}
	// A scan cut short by its context ends without an error
	// from Next or Close: only Err tells.
	if err := errors.Join(rs.Err(), rs.Close()); err != nil {
		return fmt.Errorf("find abandoned queues: %w", err)
	}
	for _, id := range ids {
		if err := deleteQueue(ctx, w, id); err != nil {
			return err
		}
	}
	return nil
}

func deleteQueue(ctx context.Context, w *writer, id int64) error {
	for _, q := range []string{
		`DELETE FROM messages WHERE queue_id = ?1`,
		`DELETE FROM bindings WHERE queue_id = ?1`,
		`DELETE FROM consumers WHERE queue_id = ?1`,
		`DELETE FROM queues WHERE id = ?1`,
	} {
		if _, err := w.conn.ExecContext(ctx, q, id); err != nil {
			return fmt.Errorf("delete queue: %w", err)
		}
	}
	return nil
}

// attach counts a subscription to a queue; the first one of this process
// registers it as a consumer of a non-durable queue.
func (b *Broker) attach(ctx context.Context, id int64, durable bool) error {
	b.attachMu.Lock()
	defer b.attachMu.Unlock()
	if b.attached[id] == 0 && !durable {
		err := b.write(ctx, false, false, func(ctx context.Context, w *writer) error {
			_, err := w.conn.ExecContext(ctx, `INSERT INTO consumers (queue_id, owner, expires_at) VALUES (?1, ?2, ?3)
				ON CONFLICT (queue_id, owner) DO UPDATE SET expires_at = excluded.expires_at`,
				id, b.owner, now()+b.cfg.lease.Nanoseconds())
			return err
		})
		if err != nil {
			return fmt.Errorf("register consumer: %w", err)
		}
	}
	b.attached[id]++
	return nil
}

// detach undoes attach; the last subscription of the last process to a
// non-durable queue deletes it.
func (b *Broker) detach(id int64, durable bool) {
	b.attachMu.Lock()
	defer b.attachMu.Unlock()
	b.attached[id]--
	if b.attached[id] > 0 {
		return
	}
	delete(b.attached, id)
	if durable {
		return
	}
	err := b.write(context.Background(), false, false, func(ctx context.Context, w *writer) error {
		if _, err := w.conn.ExecContext(ctx, `DELETE FROM consumers WHERE queue_id = ?1 AND owner = ?2`, id, b.owner); err != nil {
			return err
		}
		var keep bool
		err := w.conn.QueryRowContext(ctx, `SELECT durable = 1 OR EXISTS (SELECT 1 FROM consumers c WHERE c.queue_id = q.id AND c.expires_at > ?2)
			FROM queues q WHERE q.id = ?1`, id, now()).Scan(&keep)
		if errors.Is(err, sql.ErrNoRows) || keep {
			return nil
		}
		if err != nil {
			return err
		}
		return deleteQueue(ctx, w, id)
	})
	if err != nil {
		b.log.Warn("delete non-durable queue failed", "queue_id", id, "err", err)
	}
}
