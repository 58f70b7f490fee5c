package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/schedule"
)

// Schedules returns the broker's schedule records. Every process leads
// every schedule at once: a tick is claimed by the transaction that moves
// its record and stores the tick's message, which only one process wins.
func (b *Broker) Schedules() broker.Schedules { return schedules{b} }

type schedules struct{ b *Broker }

func (s schedules) Lead(ctx context.Context, name string) (broker.Lead, error) {
	if !s.b.open.Load() {
		return nil, errors.New("lead schedule: the broker is closed")
	}
	return &lead{b: s.b, name: name}, nil
}

type lead struct {
	b    *Broker
	name string
}

// Lost never closes: the lead is the database's, not a connection's.
func (l *lead) Lost() <-chan struct{} { return nil }

func (l *lead) Release() {}

func (l *lead) Record(ctx context.Context) (schedule.Record, error) {
	var rec schedule.Record
	var last int64
	err := l.b.rdb.QueryRowContext(ctx, `SELECT schedule, last FROM ticks WHERE exchange = ?1 AND name = ?2`,
		l.b.exchange, l.name).Scan(&rec.Schedule, &last)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return schedule.Record{}, nil
	case err != nil:
		return rec, fmt.Errorf("read the record of schedule %q: %w", l.name, l.b.explain(err))
	}
	rec.Last = time.Unix(0, last)
	return rec, nil
}

func (l *lead) Swap(ctx context.Context, old, new schedule.Record, key string, msg *message.Message) error {
	var rows []stored
	if msg != nil {
		s, err := encode(msg)
		if err != nil {
			return fmt.Errorf("fire schedule %q: %w", l.name, err)
		}
		rows = []stored{s}
	}
	var queues []int64
	err := l.b.write(ctx, true, false, func(ctx context.Context, w *writer) error {
		var res sql.Result
		var err error
		if old.IsZero() {
			res, err = w.conn.ExecContext(ctx, `INSERT INTO ticks (exchange, name, schedule, last) VALUES (?1, ?2, ?3, ?4)
				ON CONFLICT (exchange, name) DO NOTHING`, l.b.exchange, l.name, new.Schedule, new.Last.UnixNano())
		} else {
			res, err = w.conn.ExecContext(ctx, `UPDATE ticks SET schedule = ?3, last = ?4
				WHERE exchange = ?1 AND name = ?2 AND schedule = ?5 AND last = ?6`,
				l.b.exchange, l.name, new.Schedule, new.Last.UnixNano(), old.Schedule, old.Last.UnixNano())
		}
		if err != nil {
			return fmt.Errorf("write the record: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return broker.ErrTickTaken
		}
		if len(rows) > 0 {
			queues, err = l.b.store(ctx, w, key, rows)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("fire schedule %q: %w", l.name, err)
	}
	l.b.notify.wake(queues...)
	return nil
}
