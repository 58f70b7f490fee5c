package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/symphony-go/symphony/broker"
)

// DeadLetters returns the dead letters of the exchange. IDs are row ids.
func (b *Broker) DeadLetters() broker.DeadLetters { return deadLetters{b} }

type deadLetters struct{ b *Broker }

const deadColumns = `id, queue, task, routing_key, uuid, metadata, payload, reason, error, attempt, dead_at`

type scanner interface{ Scan(dest ...any) error }

func scanDead(sc scanner) (broker.DeadLetter, error) {
	var d broker.DeadLetter
	var id, deadAt int64
	var uuid, meta string
	if err := sc.Scan(&id, &d.Queue, &d.Task, &d.RoutingKey, &uuid, &meta, &d.Body, &d.Reason, &d.Error, &d.Attempt, &deadAt); err != nil {
		return d, err
	}
	d.ID = strconv.FormatInt(id, 10)
	d.DeadAt = time.Unix(0, deadAt)
	md := map[string]string{}
	if err := json.Unmarshal([]byte(meta), &md); err != nil {
		return d, fmt.Errorf("decode metadata of dead letter %d: %w", id, err)
	}
	d.ContentType = md[broker.MetaContentType]
	d.MessageID = md[broker.MetaMessageID]
	if d.MessageID == "" {
		d.MessageID = uuid
	}
	d.Headers = map[string]any{}
	if h := md[broker.MetaHeaders]; h != "" {
		dec := json.NewDecoder(strings.NewReader(h))
		dec.UseNumber()
		if err := dec.Decode(&d.Headers); err != nil {
			return d, fmt.Errorf("decode headers of dead letter %d: %w", id, err)
		}
	}
	if d.Body == nil {
		d.Body = []byte{}
	}
	return d, nil
}

// where is the filter of dead letters of the broker's exchange by queue
// ("" is every queue) and ids (none is all), with its arguments.
func (d deadLetters) where(queue string, ids []int64) (string, []any) {
	q := `exchange = ?1`
	args := []any{d.b.exchange}
	if queue != "" {
		args = append(args, queue)
		q += ` AND queue = ?` + strconv.Itoa(len(args))
	}
	if len(ids) > 0 {
		args = append(args, idList(ids))
		q += ` AND id IN (SELECT value FROM json_each(?` + strconv.Itoa(len(args)) + `))`
	}
	return q, args
}

// parseIDs reads dead-letter ids; one that is not a number names no dead
// letter.
func parseIDs(ids []string) ([]int64, error) {
	out := make([]int64, 0, len(ids))
	for _, s := range ids {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("dead letter %q: %w", s, broker.ErrNotFound)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out, nil
}

func (d deadLetters) List(ctx context.Context, queue string, limit int) ([]broker.DeadLetter, error) {
	if limit <= 0 {
		limit = -1
	}
	w, args := d.where(queue, nil)
	args = append(args, limit)
	rs, err := d.b.rdb.QueryContext(ctx, `SELECT `+deadColumns+` FROM dead WHERE `+w+
		` ORDER BY id LIMIT ?`+strconv.Itoa(len(args)), args...)
	if err != nil {
		return nil, fmt.Errorf("list dead letters: %w", d.b.explain(err))
	}
	defer rs.Close()
	var out []broker.DeadLetter
	for rs.Next() {
		dl, err := scanDead(rs)
		if err != nil {
			return nil, fmt.Errorf("list dead letters: %w", err)
		}
		out = append(out, dl)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("list dead letters: %w", err)
	}
	return out, nil
}

func (d deadLetters) Count(ctx context.Context, queue string) (int, error) {
	w, args := d.where(queue, nil)
	var n int
	if err := d.b.rdb.QueryRowContext(ctx, `SELECT count(*) FROM dead WHERE `+w, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count dead letters: %w", d.b.explain(err))
	}
	return n, nil
}

func (d deadLetters) Show(ctx context.Context, id string) (broker.DeadLetter, error) {
	ids, err := parseIDs([]string{id})
	if err != nil {
		return broker.DeadLetter{}, fmt.Errorf("show %w", err)
	}
	dl, err := scanDead(d.b.rdb.QueryRowContext(ctx, `SELECT `+deadColumns+` FROM dead WHERE exchange = ?1 AND id = ?2`,
		d.b.exchange, ids[0]))
	if errors.Is(err, sql.ErrNoRows) {
		return dl, fmt.Errorf("show dead letter %q: %w", id, broker.ErrNotFound)
	}
	if err != nil {
		return dl, fmt.Errorf("show dead letter %q: %w", id, d.b.explain(err))
	}
	return dl, nil
}

// buried is a dead letter as stored, for replay.
type buried struct {
	id         int64
	queue      string
	routingKey string
	uuid       string
	metadata   string
	payload    []byte
}

// selected are the dead letters queue and ids name; every id must name one.
func (d deadLetters) selected(ctx context.Context, w *writer, queue string, ids []int64) ([]buried, error) {
	cond, args := d.where(queue, ids)
	rs, err := w.conn.QueryContext(ctx, `SELECT id, queue, routing_key, uuid, metadata, payload FROM dead WHERE `+cond+` ORDER BY id`, args...)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var out []buried
	for rs.Next() {
		var x buried
		if err := rs.Scan(&x.id, &x.queue, &x.routingKey, &x.uuid, &x.metadata, &x.payload); err != nil {
			return nil, err
		}
		out = append(out, x)
	}
	if err := rs.Err(); err != nil {
		return nil, err
	}
	for _, id := range ids {
		if !slices.ContainsFunc(out, func(x buried) bool { return x.id == id }) {
			if queue != "" {
				return nil, fmt.Errorf("dead letter %d of queue %q: %w", id, queue, broker.ErrNotFound)
			}
			return nil, fmt.Errorf("dead letter %d: %w", id, broker.ErrNotFound)
		}
	}
	return out, nil
}

// Replay moves dead letters back onto their own queue (not through the
// exchange, so tasks that handled the message already do not see it again)
// as first attempts, at the tail. It is one transaction; an id that names
// no dead letter, or a queue that no longer exists, changes nothing.
func (d deadLetters) Replay(ctx context.Context, queue string, ids []string) (int, error) {
	nums, err := parseIDs(ids)
	if err != nil {
		return 0, fmt.Errorf("replay %w", err)
	}
	var n int
	var woken []int64
	err = d.b.write(ctx, true, false, func(ctx context.Context, w *writer) error {
		dls, err := d.selected(ctx, w, queue, nums)
		if err != nil {
			return err
		}
		queues := map[string]int64{}
		t := now()
		for _, dl := range dls {
			q, ok := queues[dl.queue]
			if !ok {
				if q, _, err = d.b.lookup(ctx, w, dl.queue); err != nil {
					return fmt.Errorf("dead letter %d: %w", dl.id, err)
				}
				queues[dl.queue] = q
				woken = append(woken, q)
			}
			md := map[string]string{}
			if err := json.Unmarshal([]byte(dl.metadata), &md); err != nil {
				return fmt.Errorf("decode metadata of dead letter %d: %w", dl.id, err)
			}
			md[broker.MetaAttempt] = "1"
			meta, err := json.Marshal(md)
			if err != nil {
				return fmt.Errorf("encode metadata of dead letter %d: %w", dl.id, err)
			}
			body := dl.payload
			if body == nil {
				body = []byte{}
			}
			s := stored{uuid: dl.uuid, metadata: string(meta), payload: body}
			s.priority, _ = strconv.Atoi(md[broker.MetaPriority])
			if err := insert(ctx, w, q, dl.routingKey, s, t); err != nil {
				return err
			}
			if _, err := w.conn.ExecContext(ctx, `DELETE FROM dead WHERE id = ?1`, dl.id); err != nil {
				return fmt.Errorf("delete dead letter %d: %w", dl.id, err)
			}
		}
		n = len(dls)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("replay dead letters: %w", err)
	}
	d.b.notify.wake(woken...)
	return n, nil
}

// Purge deletes dead letters. An id that names no dead letter deletes
// nothing.
func (d deadLetters) Purge(ctx context.Context, queue string, ids []string) (int, error) {
	nums, err := parseIDs(ids)
	if err != nil {
		return 0, fmt.Errorf("purge %w", err)
	}
	var n int
	err = d.b.write(ctx, true, false, func(ctx context.Context, w *writer) error {
		if len(nums) > 0 {
			if _, err := d.selected(ctx, w, queue, nums); err != nil {
				return err
			}
		}
		cond, args := d.where(queue, nums)
		res, err := w.conn.ExecContext(ctx, `DELETE FROM dead WHERE `+cond, args...)
		if err != nil {
			return err
		}
		m, err := res.RowsAffected()
		n = int(m)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("purge dead letters: %w", err)
	}
	return n, nil
}
