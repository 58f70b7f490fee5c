package sqlite

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Batching of acks: the acker flushes when this many are pending, or this
// long after the oldest, whichever comes first. A lease by any
// subscription takes them along earlier, for free: a transaction of acks
// alone costs about what a lease does. ackDelay is long enough that
// handlers of a few hundred microseconds (a task making one HTTP call)
// find a lease within it as the no-op drain does, and short enough that a
// daemon killed outright hands out again only a few milliseconds of acked
// messages.
const (
	ackBatch = 512
	ackDelay = 5 * time.Millisecond
)

// ack is one message to delete: its row and the lease that must still be
// ours.
type ack struct{ id, lease int64 }

// ackQueue holds acks not yet written.
type ackQueue struct {
	mu      sync.Mutex
	pending []ack
	// since is when pending last stopped being empty: how long its oldest
	// ack has waited.
	since time.Time
	kick  chan struct{} // first pending ack, or a full batch
}

func (q *ackQueue) init() { q.kick = make(chan struct{}, 1) }

func (q *ackQueue) add(a ack) {
	q.mu.Lock()
	if len(q.pending) == 0 {
		q.since = time.Now()
	}
	q.pending = append(q.pending, a)
	n := len(q.pending)
	q.mu.Unlock()
	if n == 1 || n >= ackBatch {
		select {
		case q.kick <- struct{}{}:
		default:
		}
	}
}

func (q *ackQueue) take() []ack {
	q.mu.Lock()
	defer q.mu.Unlock()
	p := q.pending
	q.pending = nil
	return p
}

func (q *ackQueue) putBack(a []ack) {
	q.mu.Lock()
	if len(q.pending) == 0 {
		q.since = time.Now()
	}
	q.pending = append(a, q.pending...)
	q.mu.Unlock()
}

// due is how long until the pending acks are to be written: ackDelay
// after the oldest, at once for a full batch; ok is false when none are
// pending.
func (q *ackQueue) due() (wait time.Duration, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch {
	case len(q.pending) == 0:
		return 0, false
	case len(q.pending) >= ackBatch:
		return 0, true
	}
	return time.Until(q.since.Add(ackDelay)), true
}

// heldSet is every row this process holds a lease on, so that one
// heartbeat renews them all.
type heldSet struct {
	mu   sync.Mutex
	rows map[int64]int64 // id → lease
}

func (h *heldSet) init() { h.rows = map[int64]int64{} }

func (h *heldSet) add(lease int64, ids []int64) {
	h.mu.Lock()
	for _, id := range ids {
		h.rows[id] = lease
	}
	h.mu.Unlock()
}

func (h *heldSet) remove(ids ...int64) {
	h.mu.Lock()
	for _, id := range ids {
		delete(h.rows, id)
	}
	h.mu.Unlock()
}

// byLease groups the held rows by lease.
func (h *heldSet) byLease() map[int64][]int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	g := map[int64][]int64{}
	for id, l := range h.rows {
		g[l] = append(g[l], id)
	}
	return g
}

// signals wake the subscriptions waiting on a queue: Publish and the like
// wake the queues they wrote to, the poller wakes all of them when another
// process wrote.
type signals struct {
	mu sync.Mutex
	ch map[int64]chan struct{}
}

func (s *signals) init() { s.ch = map[int64]chan struct{}{} }

// wait returns a channel closed at the next wake of queue. Take it before
// looking for work, so that a wake in between is not missed.
func (s *signals) wait(queue int64) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.ch[queue]
	if !ok {
		c = make(chan struct{})
		s.ch[queue] = c
	}
	return c
}

func (s *signals) wake(queues ...int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, q := range queues {
		if c, ok := s.ch[q]; ok {
			close(c)
			delete(s.ch, q)
		}
	}
}

func (s *signals) wakeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for q, c := range s.ch {
		close(c)
		delete(s.ch, q)
	}
}

// idList renders ids as a JSON array, the one parameter that json_each
// turns into a set, so that one prepared statement serves any batch size.
func idList(ids []int64) string {
	buf := make([]byte, 0, 2+len(ids)*8)
	buf = append(buf, '[')
	for i, id := range ids {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = strconv.AppendInt(buf, id, 10)
	}
	return string(append(buf, ']'))
}

// applyAcks deletes acked rows whose lease is still the one acked, and
// returns the acks that deleted a row.
func (b *Broker) applyAcks(ctx context.Context, w *writer, acks []ack) ([]ack, error) {
	groups := map[int64][]int64{}
	for _, a := range acks {
		groups[a.lease] = append(groups[a.lease], a.id)
	}
	done := make([]ack, 0, len(acks))
	for lease, ids := range groups {
		rows, err := w.st(sqlAck).QueryContext(ctx, lease, idList(ids))
		if err != nil {
			return nil, fmt.Errorf("delete acked messages: %w", err)
		}
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, fmt.Errorf("delete acked messages: %w", err)
			}
			done = append(done, ack{id, lease})
		}
		// A scan cut short by its context ends without an error
		// from Next or Close: only Err tells.
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return nil, fmt.Errorf("delete acked messages: %w", err)
		}
	}
	return done, nil
}

// ackedDone forgets written acks and reports the ones that came too late.
func (b *Broker) ackedDone(acks, done []ack) {
	if len(acks) == 0 {
		return
	}
	ids := make([]int64, len(acks))
	for i, a := range acks {
		ids[i] = a.id
	}
	b.held.remove(ids...)
	if len(done) == len(acks) {
		return
	}
	ok := make(map[ack]bool, len(done))
	for _, a := range done {
		ok[a] = true
	}
	var late []int64
	for _, a := range acks {
		if !ok[a] {
			late = append(late, a.id)
		}
	}
	b.log.Warn("ack after the lease was lost; another consumer may have the message",
		"messages", len(late), "ids", late)
}

// flushAcks writes pending acks now; a graceful stop must not leave acked
// messages to be redelivered.
func (b *Broker) flushAcks() {
	if err := b.write(context.Background(), false, true, nil); err != nil {
		b.log.Warn("write acks failed; the messages will be redelivered", "err", err)
	}
}

// ackLoop writes acks in batches: when a batch is full or ackDelay after
// the oldest pending one. A lease that took the pending acks along
// restarts the wait from the next ack, so a steady flow of acks costs a
// transaction of their own only when no lease came within ackDelay.
// Failures keep the acks pending (their leases are still renewed) and are
// retried.
func (b *Broker) ackLoop() {
	defer b.bg.Done()
	retry := time.Duration(0)
	for {
		var timer <-chan time.Time
		if retry > 0 {
			timer = time.After(retry)
		}
		select {
		case <-b.stop:
			return
		case <-b.acks.kick:
		case <-timer:
		}
		if retry == 0 {
			write, stopped := b.awaitAcks()
			if stopped {
				return
			}
			if !write {
				continue
			}
		}
		if err := b.write(context.Background(), false, true, nil); err != nil {
			b.log.Warn("write acks failed; will retry", "err", err)
			retry = min(max(2*retry, 50*time.Millisecond), time.Second)
			continue
		}
		retry = 0
	}
}

// awaitAcks waits until the pending acks are due: write is false when a
// lease took them all along meanwhile.
func (b *Broker) awaitAcks() (write, stopped bool) {
	for {
		wait, ok := b.acks.due()
		if !ok {
			return false, false
		}
		if wait <= 0 {
			return true, false
		}
		t := time.NewTimer(wait)
		select {
		case <-b.stop:
			t.Stop()
			return false, true
		case <-b.acks.kick: // a full batch, or a first ack after a lease took the others
		case <-t.C:
		}
		t.Stop()
	}
}

// heartbeatLoop renews the leases this process holds and the consumers
// rows of its non-durable queues, every lease/3, and deletes non-durable
// queues whose consumers all died.
func (b *Broker) heartbeatLoop() {
	defer b.bg.Done()
	t := time.NewTicker(b.cfg.lease / 3)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
		}
		if err := b.heartbeat(context.Background()); err != nil {
			b.log.Warn("renew leases failed; will retry", "err", err)
		}
	}
}

func (b *Broker) heartbeat(ctx context.Context) error {
	groups := b.held.byLease()
	return b.write(ctx, false, false, func(ctx context.Context, w *writer) error {
		until := now() + b.cfg.lease.Nanoseconds()
		for lease, ids := range groups {
			slices.Sort(ids)
			if _, err := w.st(sqlExtend).ExecContext(ctx, until, lease, idList(ids)); err != nil {
				return fmt.Errorf("renew leases: %w", err)
			}
		}
		if _, err := w.conn.ExecContext(ctx, `UPDATE consumers SET expires_at = ?1 WHERE owner = ?2`, until, b.owner); err != nil {
			return fmt.Errorf("renew consumers: %w", err)
		}
		if b.registered.Load() {
			if err := b.renew(ctx, w); err != nil {
				return err
			}
		}
		if _, err := w.conn.ExecContext(ctx, `DELETE FROM processes WHERE expires_at < ?1`, now()); err != nil {
			return fmt.Errorf("forget processes not heard of: %w", err)
		}
		return b.sweep(ctx, w)
	})
}

// pollLoop notices writes of other processes: PRAGMA data_version on the
// writer connection changes only when another connection committed, and
// this process has no other writing connection. Same-process writes wake
// their queues directly.
func (b *Broker) pollLoop() {
	defer b.bg.Done()
	t := time.NewTicker(b.cfg.poll)
	defer t.Stop()
	var last int64
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
		}
		// An idle daemon writes nothing for seconds: notice a removed
		// or replaced file now, not at the next write.
		_ = b.checkMoved()
		v, err := b.dataVersion()
		if err != nil {
			b.log.Warn("poll for other processes' writes failed", "err", err)
			continue
		}
		if v != last {
			last = v
			b.notify.wakeAll()
		}
	}
}

func (b *Broker) dataVersion() (int64, error) {
	b.wmu.Lock()
	defer b.wmu.Unlock()
	if b.w == nil {
		return 0, nil
	}
	var v int64
	err := b.w.conn.QueryRowContext(context.Background(), "PRAGMA data_version").Scan(&v)
	return v, err
}

func noop(context.Context, *writer) error { return nil }
