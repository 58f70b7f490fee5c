package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/tasks"
)

// Budgets returns the broker's rate limit budgets. A limit is one row of
// the budgets table: its theoretical arrival time (GCRA), the time at
// which the starts handed out so far would all have been due at the
// limit's steady pace. A transaction claims starts by moving it forward,
// as many as fit before now + broker.Tolerance, for every waiter of this
// process at once; every process sharing the file claims from the same
// row, so together they keep to the limit. The processes share a clock:
// they share a file on one machine.
func (b *Broker) Budgets() broker.Budgets { return budgets{b} }

type budgets struct{ b *Broker }

// budget is this process's side of one task's limit.
type budget struct {
	// turn is held by the waiter that takes a start or claims more for
	// everyone waiting; tokens and at belong to its holder.
	turn    chan struct{}
	waiting int64 // guarded by the broker's budgetMu
	tokens  int
	at      time.Time
}

// staleStart is how long a start claimed for a waiter that went away may
// be given to another: later, it would start out of its time.
const staleStart = 100 * time.Millisecond

func (s budgets) Wait(ctx context.Context, task, queue string, limit tasks.Rate) error {
	if limit.IsZero() {
		return nil
	}
	b := s.b
	bg := b.budget(task, 1)
	defer b.budget(task, -1)
	for {
		select {
		case bg.turn <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		now := time.Now()
		if bg.tokens > 0 && now.Sub(bg.at) < staleStart {
			bg.tokens--
			<-bg.turn
			return nil
		}
		got, next, err := b.claim(ctx, task, limit, b.waitingFor(task), now)
		if err != nil {
			<-bg.turn
			return fmt.Errorf("claim starts under the rate limit of task %s: %w", task, err)
		}
		if got > 0 {
			bg.tokens, bg.at = got-1, now
			<-bg.turn
			return nil
		}
		bg.tokens = 0
		<-bg.turn
		t := time.NewTimer(time.Until(next))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

// budget returns task's budget, counting a waiter in (add 1) or out (-1).
func (b *Broker) budget(task string, add int64) *budget {
	b.budgetMu.Lock()
	defer b.budgetMu.Unlock()
	bg, ok := b.budgets[task]
	if !ok {
		bg = &budget{turn: make(chan struct{}, 1)}
		b.budgets[task] = bg
	}
	bg.waiting += add
	return bg
}

func (b *Broker) waitingFor(task string) int {
	b.budgetMu.Lock()
	defer b.budgetMu.Unlock()
	return int(max(b.budgets[task].waiting, 1))
}

// claim takes up to want starts of task's budget at now: how many it got
// and, when none, when the next one is due.
func (b *Broker) claim(ctx context.Context, task string, limit tasks.Rate, want int, now time.Time) (int, time.Time, error) {
	var got int
	var next int64
	err := b.write(ctx, false, false, func(ctx context.Context, w *writer) error {
		var tat int64
		err := w.conn.QueryRowContext(ctx, `SELECT tat FROM budgets WHERE exchange = ?1 AND name = ?2`,
			b.exchange, task).Scan(&tat)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		var newTat int64
		got, newTat, next = broker.ClaimStarts(tat, now.UnixNano(), limit, want)
		if got == 0 {
			return nil
		}
		_, err = w.conn.ExecContext(ctx, `INSERT INTO budgets (exchange, name, tat) VALUES (?1, ?2, ?3)
			ON CONFLICT (exchange, name) DO UPDATE SET tat = excluded.tat`, b.exchange, task, newTat)
		return err
	})
	if err != nil {
		return 0, time.Time{}, b.explain(err)
	}
	return got, time.Unix(0, next), nil
}
