package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/symphony-go/symphony/broker"
)

// subscriberSet is every open subscriber, for Broker.Close.
type subscriberSet struct {
	mu sync.Mutex
	m  map[*subscriber]struct{}
}

func (s *subscriberSet) init() { s.m = map[*subscriber]struct{}{} }

func (s *subscriberSet) add(x *subscriber) {
	s.mu.Lock()
	s.m[x] = struct{}{}
	s.mu.Unlock()
}

func (s *subscriberSet) remove(x *subscriber) {
	s.mu.Lock()
	delete(s.m, x)
	s.mu.Unlock()
}

func (s *subscriberSet) all() []*subscriber {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*subscriber, 0, len(s.m))
	for x := range s.m {
		out = append(out, x)
	}
	return out
}

// Subscriber returns a Watermill subscriber whose topics are queue names.
// Each Subscribe call is one consumer holding up to opts.Prefetch leased
// messages and handing out one at a time.
func (b *Broker) Subscriber(opts broker.ConsumeOptions) (message.Subscriber, error) {
	if !b.open.Load() {
		return nil, errors.New("create subscriber: the broker is closed")
	}
	opts.Prefetch = max(opts.Prefetch, 1)
	s := &subscriber{b: b, opts: opts, closing: make(chan struct{})}
	b.subs.add(s)
	return s, nil
}

type subscriber struct {
	b       *Broker
	opts    broker.ConsumeOptions
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
	c := &consumer{b: s.b, s: s, queue: topic, prefetch: s.opts.Prefetch, autoAck: s.opts.AutoAck, hot: true}
	err := s.b.rdb.QueryRowContext(ctx, `SELECT id, durable, max_priority > 0 FROM queues WHERE exchange = ?1 AND name = ?2`,
		s.b.exchange, topic).Scan(&c.id, &c.durable, &c.prioritized)
	if errors.Is(err, sql.ErrNoRows) {
		err = fmt.Errorf("queue %q: %w; declare it first", topic, broker.ErrNotFound)
	}
	if err == nil {
		err = s.b.attach(ctx, c.id, c.durable)
	}
	if err == nil {
		s.b.register(ctx)
	}
	if err != nil {
		s.wg.Done()
		return nil, fmt.Errorf("subscribe to queue %q: %w", topic, err)
	}
	c.log = s.b.log.With("queue", topic)
	out := make(chan *message.Message)
	go c.run(ctx, out)
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
	s.b.subs.remove(s)
	s.b.flushAcks()
	return nil
}

// row is a leased message.
type row struct {
	id, lease  int64
	deliveries int
	// returned are the deliveries handed back on purpose; the others
	// before this one were lost with their consumer.
	returned   int
	priority   int
	routingKey string
	uuid       string
	metadata   string
	payload    []byte
}

// consumer is one subscription.
type consumer struct {
	b       *Broker
	s       *subscriber
	log     *slog.Logger
	queue   string
	id      int64
	durable bool
	// prioritized: the queue has a max_priority, so leases take higher
	// priorities first.
	prioritized bool
	prefetch    int
	autoAck     bool
	// hot: the last lease filled up, so lease again before asking whether
	// anything is ready.
	hot bool
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
	defer c.b.detach(c.id, c.durable)
	defer close(out)
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var buf []row
	for {
		if len(buf) == 0 {
			if buf = c.take(ctx, c.prefetch, true); len(buf) == 0 {
				c.b.flushAcks()
				return
			}
		}
		r := buf[0]
		buf = buf[1:]
		msg := c.message(r)
		msg.SetContext(mctx)
		select {
		case out <- msg:
		case <-ctx.Done():
			c.release(append(buf, r), true)
			return
		case <-c.s.closing:
			c.release(append(buf, r), true)
			return
		}
		if c.autoAck {
			c.b.acks.add(ack{r.id, r.lease})
		}
		if len(buf) == 0 && c.prefetch > 1 {
			buf = c.take(ctx, c.prefetch-1, false)
		}
		v := c.await(ctx, msg, &buf)
		switch {
		case v == closed:
			if !c.autoAck {
				c.release([]row{r}, false)
			}
			c.release(buf, true)
			return
		case c.autoAck:
		case v == acked:
			c.b.acks.add(ack{r.id, r.lease})
		case v == nacked:
			c.release([]row{r}, false)
		}
		if ctx.Err() != nil {
			c.release(buf, true)
			c.b.flushAcks()
			return
		}
	}
}

// await waits for the ack or nack of the message in flight. A cancelled
// ctx returns the messages not yet handed out at once, and still waits.
func (c *consumer) await(ctx context.Context, msg *message.Message, buf *[]row) verdict {
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
			c.release(*buf, true)
			*buf = nil
			done = nil
		}
	}
}

func (c *consumer) stopping(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	select {
	case <-c.s.closing:
		return true
	default:
		return false
	}
}

// take leases up to n ready messages. Blocking, it waits until there are
// some or the consumer stops; otherwise it returns what there is now.
func (c *consumer) take(ctx context.Context, n int, block bool) []row {
	var backoff time.Duration
	for !c.stopping(ctx) {
		sig := c.b.notify.wait(c.id)
		var err error
		var rows []row
		if c.hot {
			if rows, err = c.b.lease(ctx, c.id, n, c.prioritized); err == nil {
				c.hot = len(rows) == n
				if len(rows) > 0 {
					return rows
				}
			}
		}
		var next int64
		var ok bool
		if err == nil {
			next, ok, err = c.b.nextVisible(ctx, c.id)
		}
		if err != nil {
			if c.stopping(ctx) {
				return nil
			}
			backoff = min(max(2*backoff, c.b.cfg.poll), 2*time.Second)
			c.log.Warn("take messages failed; retrying", "err", err, "retry_in", backoff)
			if !block || !c.sleep(ctx, backoff) {
				return nil
			}
			c.hot = true
			continue
		}
		backoff = 0
		t := now()
		if ok && next <= t {
			c.hot = true
			continue
		}
		if !block {
			return nil
		}
		var due <-chan time.Time
		var timer *time.Timer
		if ok {
			timer = time.NewTimer(time.Duration(next - t))
			due = timer.C
		}
		select {
		case <-sig:
		case <-due:
			c.hot = true
		case <-ctx.Done():
		case <-c.s.closing:
		}
		if timer != nil {
			timer.Stop()
		}
	}
	return nil
}

func (c *consumer) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-c.s.closing:
		return false
	}
}

// release returns leased messages to the head of their queue. unsent:
// they never reached a handler, so the lease does not count as a delivery.
func (c *consumer) release(rows []row, unsent bool) {
	if len(rows) == 0 {
		return
	}
	if err := c.b.release(rows, unsent); err != nil {
		c.log.Warn("return messages to the queue failed; they come back when their lease expires",
			"messages", len(rows), "err", err)
	}
	c.b.notify.wake(c.id)
}

func (c *consumer) message(r row) *message.Message {
	md := message.Metadata{}
	if err := json.Unmarshal([]byte(r.metadata), &md); err != nil {
		c.log.Warn("stored metadata does not decode; delivering without it", "message_uuid", r.uuid, "err", err)
		md = message.Metadata{}
	}
	md[broker.MetaExchange] = c.b.exchange
	md[broker.MetaRoutingKey] = r.routingKey
	md[broker.MetaQueue] = c.queue
	if r.deliveries > 1 {
		md[broker.MetaRedelivered] = "true"
	}
	// Each earlier delivery lost with its consumer (a killed worker or
	// daemon: neither acked nor handed back) counts as an attempt.
	if lost := r.deliveries - 1 - r.returned; lost > 0 {
		md[broker.MetaAttempt] = strconv.Itoa(broker.Attempt(&message.Message{Metadata: md}) + lost)
	}
	msg := message.NewMessage(r.uuid, r.payload)
	msg.Metadata = md
	return msg
}

// lease takes up to n ready messages of queue with a fresh lease, in one
// statement, together with the acks pending in the process. The bodies are
// read after the commit, on a reader connection, so that the next write
// need not wait for them.
func (b *Broker) lease(ctx context.Context, queue int64, n int, prioritized bool) ([]row, error) {
	token := b.token()
	var rows []row
	q := sqlLease
	if prioritized {
		q = sqlLeasePriority
	}
	err := b.write(ctx, false, true, func(ctx context.Context, w *writer) error {
		t := now()
		rs, err := w.st(q).QueryContext(ctx, token, t+b.cfg.lease.Nanoseconds(), queue, t, n)
		if err != nil {
			return fmt.Errorf("lease messages: %w", err)
		}
		for rs.Next() {
			r := row{lease: token}
			dst := []any{&r.id, &r.deliveries, &r.returned}
			if prioritized {
				dst = append(dst, &r.priority)
			}
			if err := rs.Scan(dst...); err != nil {
				rs.Close()
				return fmt.Errorf("lease messages: %w", err)
			}
			rows = append(rows, r)
		}
		// A scan cut short by its context ends without an error
		// from Next or Close: only Err tells.
		if err := errors.Join(rs.Err(), rs.Close()); err != nil {
			return fmt.Errorf("lease messages: %w", err)
		}
		return nil
	})
	if err != nil || len(rows) == 0 {
		return nil, err
	}
	slices.SortFunc(rows, func(a, b row) int { return cmp.Compare(a.id, b.id) })
	ids := make([]int64, len(rows))
	for i, r := range rows {
		ids[i] = r.id
	}
	b.held.add(token, ids)
	if err := b.readBodies(ctx, rows, ids); err != nil {
		// Give them back rather than hold messages nobody will see.
		if rerr := b.release(rows, true); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return nil, err
	}
	// A body can vanish only if the queue was deleted meanwhile; its lease
	// is then not held either.
	rows = slices.DeleteFunc(rows, func(r row) bool {
		gone := r.uuid == "" && r.metadata == ""
		if gone {
			b.held.remove(r.id)
		}
		return gone
	})
	if prioritized {
		// Handed out in order: higher priorities first.
		slices.SortStableFunc(rows, func(a, b row) int { return cmp.Compare(b.priority, a.priority) })
	}
	return rows, nil
}

func (b *Broker) readBodies(ctx context.Context, rows []row, ids []int64) error {
	rs, err := b.reads[sqlBodies].QueryContext(ctx, idList(ids))
	if err != nil {
		return fmt.Errorf("read messages: %w", err)
	}
	defer rs.Close()
	for rs.Next() {
		var id int64
		var body row
		if err := rs.Scan(&id, &body.routingKey, &body.uuid, &body.metadata, &body.payload); err != nil {
			return fmt.Errorf("read messages: %w", err)
		}
		if i, found := slices.BinarySearchFunc(rows, id, func(r row, id int64) int { return cmp.Compare(r.id, id) }); found {
			rows[i].routingKey, rows[i].uuid, rows[i].metadata, rows[i].payload = body.routingKey, body.uuid, body.metadata, body.payload
		}
	}
	if err := rs.Err(); err != nil {
		return fmt.Errorf("read messages: %w", err)
	}
	return nil
}

// release clears the leases of rows, which makes them ready at the head of
// their queue.
func (b *Broker) release(rows []row, unsent bool) error {
	groups := map[int64][]int64{}
	all := make([]int64, 0, len(rows))
	for _, r := range rows {
		groups[r.lease] = append(groups[r.lease], r.id)
		all = append(all, r.id)
	}
	dec := 0
	if unsent {
		dec = 1
	}
	defer b.held.remove(all...)
	return b.write(context.Background(), false, true, func(ctx context.Context, w *writer) error {
		for lease, ids := range groups {
			if _, err := w.st(sqlRelease).ExecContext(ctx, lease, idList(ids), dec); err != nil {
				return fmt.Errorf("release messages: %w", err)
			}
		}
		return nil
	})
}

// releaseAll returns whatever this process still holds.
func (b *Broker) releaseAll() {
	var rows []row
	for lease, ids := range b.held.byLease() {
		for _, id := range ids {
			rows = append(rows, row{id: id, lease: lease})
		}
	}
	if len(rows) == 0 {
		return
	}
	if err := b.release(rows, false); err != nil {
		b.log.Warn("return messages to the queue failed; they come back when their lease expires",
			"messages", len(rows), "err", err)
	}
}

// nextVisible is when the next message of queue becomes ready (it may be
// now or past): a delay ending or a lease expiring.
func (b *Broker) nextVisible(ctx context.Context, queue int64) (int64, bool, error) {
	var next sql.NullInt64
	err := b.reads[sqlNextVisible].QueryRowContext(ctx, queue).Scan(&next)
	if err != nil {
		return 0, false, fmt.Errorf("look for ready messages: %w", err)
	}
	return next.Int64, next.Valid, nil
}
