package amqp

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/symphony-go/symphony/broker"
)

// ErrAllQueues is returned by DeadLetters for every queue ("") when the
// broker knows of none: RabbitMQ lists queues only through its management
// plugin, which this broker does not require.
var ErrAllQueues = errors.New("RabbitMQ cannot list the dead-letter queues without its management plugin; name the TASK")

// DeadLetters returns the dead letters kept in the <queue>.dead queues.
//
// A dead letter's ID is "<queue>/<id>", the id being 16 hex digits that
// Bury puts in a header, so that Show finds the queue from the ID alone.
// A message that reached a .dead queue another way has the id of its
// message id, or of a hash of its body and headers.
//
// Reading a dead-letter queue takes its messages with basic.get without
// acking them, and gives them back (in their order) by closing the channel;
// meanwhile other readers do not see them. "Every queue" ("") means the
// queues declared through this Broker and Options.Queues; with none it is
// ErrAllQueues.
func (b *Broker) DeadLetters() broker.DeadLetters { return deadLetters{b} }

type deadLetters struct{ b *Broker }

// queuesOf is the queues a dead-letter command on queue reads: queue
// itself, or for "" every queue it stands for.
func (b *Broker) queuesOf(queue string) ([]string, error) {
	if queue != "" {
		return []string{queue}, nil
	}
	b.mu.Lock()
	qs := slices.Clone(b.opts.Queues)
	for name := range b.declared {
		qs = append(qs, name)
	}
	b.mu.Unlock()
	slices.Sort(qs)
	qs = slices.Compact(qs)
	if len(qs) == 0 {
		return nil, ErrAllQueues
	}
	return qs, nil
}

// splitID reads "<queue>/<id>".
func splitID(id string) (queue, key string, ok bool) {
	i := strings.LastIndexByte(id, '/')
	if i <= 0 || i == len(id)-1 {
		return "", "", false
	}
	return id[:i], id[i+1:], true
}

// deadKey is the id of a dead letter within its queue.
func deadKey(d *amqp.Delivery) string {
	if id, ok := d.Headers[hDeadID].(string); ok && id != "" {
		return id
	}
	if d.MessageId != "" {
		return "m-" + d.MessageId
	}
	h := sha256.New()
	h.Write(d.Body)
	h.Write([]byte(tableJSON(d.Headers)))
	return "h-" + hex.EncodeToString(h.Sum(nil)[:8])
}

func (b *Broker) deadLetter(queue string, d *amqp.Delivery) broker.DeadLetter {
	x := b.decode(d)
	str := func(k string) string { s, _ := d.Headers[k].(string); return s }
	dl := broker.DeadLetter{
		ID:          queue + "/" + deadKey(d),
		Queue:       queue,
		Task:        str(hDeadTask),
		RoutingKey:  x.routingKey,
		ContentType: d.ContentType,
		MessageID:   d.MessageId,
		Headers:     headersMap(x.user),
		Body:        d.Body,
		Reason:      str(hDeadReason),
		Error:       str(hDeadError),
		Attempt:     1,
	}
	if dl.MessageID == "" {
		dl.MessageID = str(hUUID)
	}
	if dl.Body == nil {
		dl.Body = []byte{}
	}
	if n, ok := integer(d.Headers[hAttempt]); ok {
		dl.Attempt = int(n)
	}
	if t, err := time.Parse(time.RFC3339Nano, str(hDeadAt)); err == nil {
		dl.DeadAt = t
	} else {
		dl.DeadAt = d.Timestamp
	}
	return dl
}

// scanning holds the dead letters a scan took, unacked, on its channel.
type scanning struct {
	b      *Broker
	ch     *amqp.Channel
	queue  string // the dead-letter queue
	before int    // its ready messages when the scan began
}

// scan gets the messages of queue's dead-letter queue one at a time,
// unacked, and calls visit with each until it returns false or the queue
// is empty. The caller acks what it took on the scan's channel and ends
// it with done, which gives the rest back. A missing dead-letter queue is
// empty.
func (b *Broker) scan(ctx context.Context, queue string, visit func(d *amqp.Delivery) bool) (*scanning, error) {
	sc := &scanning{b: b, queue: DeadQueue(queue)}
	st, err := b.inspect(ctx, sc.queue)
	switch {
	case errors.Is(err, broker.ErrNotFound):
	case err != nil:
		return nil, fmt.Errorf("read dead letters of queue %q: %w", queue, err)
	}
	sc.before = st.Messages
	s, err := b.pub.await(ctx, nil)
	if err != nil {
		return nil, err
	}
	if sc.ch, err = channel(s); err != nil {
		return nil, err
	}
	for ctx.Err() == nil {
		d, ok, err := sc.ch.Get(sc.queue, false)
		if notFound(err) {
			return sc, nil
		}
		if err != nil {
			sc.ch.Close()
			return nil, fmt.Errorf("read dead letters of queue %q: %w", queue, err)
		}
		if !ok || !visit(&d) {
			return sc, nil
		}
	}
	sc.ch.Close()
	return nil, context.Cause(ctx)
}

// settleWait bounds how long done waits for given-back letters to count
// again.
const settleWait = 2 * time.Second

// done closes the scan's channel, which gives back what it holds and did
// not ack (removed were acked), and waits until the queue counts them
// again. A classic queue has them back when the channel is closed; a
// quorum queue takes them back a moment later, and a count, a list or a
// replay of all in between would miss them.
func (sc *scanning) done(ctx context.Context, removed int) {
	sc.ch.Close()
	want := sc.before - removed
	deadline := time.Now().Add(settleWait)
	for {
		st, err := sc.b.inspect(ctx, sc.queue)
		if err != nil || st.Messages >= want || time.Now().After(deadline) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (d deadLetters) List(ctx context.Context, queue string, limit int) ([]broker.DeadLetter, error) {
	queues, err := d.b.queuesOf(queue)
	if err != nil {
		return nil, fmt.Errorf("list dead letters: %w", err)
	}
	var out []broker.DeadLetter
	for _, q := range queues {
		n := 0
		sc, err := d.b.scan(ctx, q, func(m *amqp.Delivery) bool {
			out = append(out, d.b.deadLetter(q, m))
			n++
			return limit <= 0 || n < limit
		})
		if err != nil {
			return nil, fmt.Errorf("list dead letters: %w", err)
		}
		sc.done(ctx, 0)
	}
	if len(queues) > 1 {
		sort.SliceStable(out, func(i, j int) bool { return out[i].DeadAt.Before(out[j].DeadAt) })
	}
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func (d deadLetters) Count(ctx context.Context, queue string) (int, error) {
	queues, err := d.b.queuesOf(queue)
	if err != nil {
		return 0, fmt.Errorf("count dead letters: %w", err)
	}
	ctx, cancel := d.b.deadline(ctx)
	defer cancel()
	total := 0
	for _, q := range queues {
		st, err := d.b.inspect(ctx, DeadQueue(q))
		if errors.Is(err, broker.ErrNotFound) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("count dead letters: %w", err)
		}
		total += st.Messages
	}
	return total, nil
}

func (d deadLetters) Show(ctx context.Context, id string) (broker.DeadLetter, error) {
	queue, key, ok := splitID(id)
	if !ok {
		return broker.DeadLetter{}, fmt.Errorf("show dead letter %q: %w (ids look like QUEUE/ID)", id, broker.ErrNotFound)
	}
	var found *broker.DeadLetter
	sc, err := d.b.scan(ctx, queue, func(m *amqp.Delivery) bool {
		if deadKey(m) == key {
			dl := d.b.deadLetter(queue, m)
			found = &dl
			return false
		}
		return true
	})
	if err != nil {
		return broker.DeadLetter{}, fmt.Errorf("show dead letter %q: %w", id, err)
	}
	sc.done(ctx, 0)
	if found == nil {
		return broker.DeadLetter{}, fmt.Errorf("show dead letter %q: %w", id, broker.ErrNotFound)
	}
	return *found, nil
}

// selection is the dead letters of one queue that ids name; none named
// means all of them.
type selection struct {
	queue string
	keys  []string
}

func (d deadLetters) choose(queue string, ids []string) ([]selection, error) {
	if len(ids) == 0 {
		queues, err := d.b.queuesOf(queue)
		if err != nil {
			return nil, err
		}
		out := make([]selection, len(queues))
		for i, q := range queues {
			out[i] = selection{queue: q}
		}
		return out, nil
	}
	var out []selection
	for _, id := range ids {
		q, key, ok := splitID(id)
		if !ok || (queue != "" && q != queue) {
			return nil, fmt.Errorf("dead letter %q: %w", id, broker.ErrNotFound)
		}
		i := slices.IndexFunc(out, func(s selection) bool { return s.queue == q })
		if i < 0 {
			out = append(out, selection{queue: q})
			i = len(out) - 1
		}
		if !slices.Contains(out[i].keys, key) {
			out[i].keys = append(out[i].keys, key)
		}
	}
	return out, nil
}

// take scans sel's dead-letter queue for the messages it names (all: as
// many as the queue had when it started, so that letters dead again
// meanwhile are not taken twice) and hands them to f while its channel
// holds them. Every id must name a dead letter.
func (d deadLetters) take(ctx context.Context, sel selection, f func(taken []amqp.Delivery) error) (int, error) {
	limit := -1
	if len(sel.keys) == 0 {
		st, err := d.b.inspect(ctx, DeadQueue(sel.queue))
		if errors.Is(err, broker.ErrNotFound) {
			return 0, nil
		}
		if err != nil {
			return 0, err
		}
		limit = st.Messages
	}
	var taken []amqp.Delivery
	seen := 0
	sc, err := d.b.scan(ctx, sel.queue, func(m *amqp.Delivery) bool {
		if limit >= 0 {
			taken = append(taken, *m)
			return len(taken) < limit
		}
		if slices.Contains(sel.keys, deadKey(m)) {
			taken = append(taken, *m)
			seen++
			return seen < len(sel.keys)
		}
		return true
	})
	if err != nil {
		return 0, err
	}
	removed := 0
	defer func() { sc.done(ctx, removed) }()
	if limit < 0 && len(taken) < len(sel.keys) {
		for _, k := range sel.keys {
			if !slices.ContainsFunc(taken, func(m amqp.Delivery) bool { return deadKey(&m) == k }) {
				return 0, fmt.Errorf("dead letter %q: %w", sel.queue+"/"+k, broker.ErrNotFound)
			}
		}
	}
	if len(taken) == 0 {
		return 0, nil
	}
	if err := f(taken); err != nil {
		return 0, err
	}
	for _, m := range taken {
		if err := m.Ack(false); err != nil {
			return 0, fmt.Errorf("remove dead letter from %q: %w", DeadQueue(sel.queue), err)
		}
		removed++
	}
	return len(taken), nil
}

// Replay publishes dead letters back onto their own queue only (through
// the default exchange, so other tasks do not see them again) as first
// attempts, waits for the confirms, then removes them from the dead-letter
// queue. A crash in between leaves a copy in both (at-least-once).
func (d deadLetters) Replay(ctx context.Context, queue string, ids []string) (int, error) {
	sels, err := d.choose(queue, ids)
	if err != nil {
		return 0, fmt.Errorf("replay dead letters: %w", err)
	}
	ctx, cancel := d.b.deadline(ctx)
	defer cancel()
	total := 0
	for _, sel := range sels {
		if _, err := d.b.inspect(ctx, sel.queue); err != nil {
			return total, fmt.Errorf("replay dead letters: %w", err)
		}
		n, err := d.take(ctx, sel, func(taken []amqp.Delivery) error {
			out := make([]outgoing, len(taken))
			for i := range taken {
				out[i] = outgoing{exchange: "", key: sel.queue, msg: revive(&taken[i])}
			}
			return d.b.send(ctx, out)
		})
		total += n
		if err != nil {
			return total, fmt.Errorf("replay dead letters of queue %q: %w", sel.queue, err)
		}
	}
	return total, nil
}

// revive is a dead letter as it goes back to its queue: its properties,
// its headers without the dead-letter ones, attempt 1.
func revive(m *amqp.Delivery) amqp.Publishing {
	h := amqp.Table{}
	for k, v := range m.Headers {
		if !strings.HasPrefix(k, hDeadPrefix) {
			h[k] = v
		}
	}
	h[hAttempt] = int64(1)
	if _, ok := h[hRoutingKey]; !ok {
		h[hRoutingKey] = m.RoutingKey
	}
	return amqp.Publishing{
		Headers:         h,
		ContentType:     m.ContentType,
		ContentEncoding: m.ContentEncoding,
		DeliveryMode:    amqp.Persistent,
		Priority:        m.Priority,
		CorrelationId:   m.CorrelationId,
		ReplyTo:         m.ReplyTo,
		MessageId:       m.MessageId,
		Timestamp:       m.Timestamp,
		Type:            m.Type,
		AppId:           m.AppId,
		Body:            m.Body,
	}
}

// Purge deletes dead letters: all of a queue's with queue.purge, named ones
// by acking them.
func (d deadLetters) Purge(ctx context.Context, queue string, ids []string) (int, error) {
	sels, err := d.choose(queue, ids)
	if err != nil {
		return 0, fmt.Errorf("purge dead letters: %w", err)
	}
	ctx, cancel := d.b.deadline(ctx)
	defer cancel()
	total := 0
	for _, sel := range sels {
		var n int
		if len(sel.keys) == 0 {
			n, err = d.b.purge(ctx, DeadQueue(sel.queue))
		} else {
			n, err = d.take(ctx, sel, func([]amqp.Delivery) error { return nil })
		}
		total += n
		if err != nil {
			return total, fmt.Errorf("purge dead letters of queue %q: %w", sel.queue, err)
		}
	}
	return total, nil
}

func (b *Broker) purge(ctx context.Context, queue string) (int, error) {
	s, err := b.pub.await(ctx, nil)
	if err != nil {
		return 0, err
	}
	ch, err := channel(s)
	if err != nil {
		return 0, err
	}
	defer ch.Close()
	n, err := ch.QueuePurge(queue, false)
	if notFound(err) {
		return 0, nil
	}
	return n, err
}
