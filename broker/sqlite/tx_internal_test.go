package sqlite

import (
	"context"
	"path/filepath"
	"sync"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/symphony-go/symphony/broker"
)

// endsWhileCommitting is a context that ends while a statement runs: the
// driver checks Done before the statement (open) and then watches it
// (closed at once), as when a subscription stops during a commit.
type endsWhileCommitting struct {
	context.Context
	mu    sync.Mutex
	calls int
	done  chan struct{}
	armed bool
}

func (c *endsWhileCommitting) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.armed {
		if c.calls++; c.calls == 2 {
			close(c.done)
		}
	}
	return c.done
}

func (c *endsWhileCommitting) Err() error {
	select {
	case <-c.done:
		return context.Canceled
	default:
		return nil
	}
}

// A transaction whose context ends during its commit either fails and
// leaves nothing written, or succeeds: never "failed" with its work made.
func TestCommitIsNotReportedFailedWhenMade(t *testing.T) {
	b, err := Open(context.Background(), filepath.Join(t.TempDir(), "db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	b.wmu.Lock()
	defer b.wmu.Unlock()
	for i := range 50 {
		ctx := &endsWhileCommitting{Context: context.Background(), done: make(chan struct{})}
		err := b.w.tx(ctx, func(context.Context) error {
			if _, err := b.w.conn.ExecContext(context.Background(),
				`INSERT INTO queues (exchange, name, durable) VALUES ('x', ?1, 1)`, i); err != nil {
				return err
			}
			ctx.mu.Lock()
			ctx.armed = true // the next statement is the commit
			ctx.mu.Unlock()
			return nil
		})
		var n int
		if qerr := b.w.conn.QueryRowContext(context.Background(),
			`SELECT count(*) FROM queues WHERE exchange = 'x' AND name = ?1`, i).Scan(&n); qerr != nil {
			t.Fatal(qerr)
		}
		if err != nil && n != 0 {
			t.Fatalf("round %d: the transaction was reported failed (%v) but its work was committed", i, err)
		}
	}
}

// A transaction whose context ends during its BEGIN leaves no transaction
// open on the connection, whether the BEGIN was reported failed or not:
// the next write must not meet "cannot start a transaction within a
// transaction".
func TestBeginCutShortLeavesNoTransactionOpen(t *testing.T) {
	b, err := Open(context.Background(), filepath.Join(t.TempDir(), "db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	b.wmu.Lock()
	defer b.wmu.Unlock()
	failed := 0
	for i := range 50 {
		ctx := &endsWhileCommitting{Context: context.Background(), done: make(chan struct{}), armed: true}
		if err := b.w.tx(ctx, func(context.Context) error { return nil }); err != nil {
			failed++
		}
		if err := b.w.tx(context.Background(), func(context.Context) error {
			_, err := b.w.conn.ExecContext(context.Background(),
				`INSERT INTO queues (exchange, name, durable) VALUES ('x', ?1, 1)`, i)
			return err
		}); err != nil {
			t.Fatalf("round %d: the write after a BEGIN cut short failed: %v", i, err)
		}
	}
	t.Logf("%d of 50 BEGINs cut short were reported failed", failed)
}

// endsAfter is a context that ends at the n-th call of Done: somewhere in
// the middle of a lease, wherever n falls.
type endsAfter struct {
	context.Context
	mu    sync.Mutex
	n     int
	done  chan struct{}
	ended bool
}

func (c *endsAfter) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n--; c.n == 0 && !c.ended {
		c.ended = true
		close(c.done)
	}
	return c.done
}

func (c *endsAfter) Err() error {
	select {
	case <-c.done:
		return context.Canceled
	default:
		return nil
	}
}

// A lease whose context ends while its rows are read leases nothing it
// does not return: a row leased and not handed back would wait out the
// lease (30 s) unseen.
func TestLeaseCutShortHoldsNothingUnseen(t *testing.T) {
	b, err := Open(context.Background(), filepath.Join(t.TempDir(), "db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Declare(context.Background(), broker.Queue{Name: "q", Patterns: []string{"k"}, Durable: true}); err != nil {
		t.Fatal(err)
	}
	msgs := make([]*message.Message, 20)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), []byte("x"))
	}
	if err := b.Publish("k", msgs...); err != nil {
		t.Fatal(err)
	}
	var queue int64
	if err := b.rdb.QueryRow(`SELECT id FROM queues WHERE name = 'q'`).Scan(&queue); err != nil {
		t.Fatal(err)
	}
	for n := 1; n <= 30; n++ {
		ctx := &endsAfter{Context: context.Background(), n: n, done: make(chan struct{})}
		rows, _ := b.lease(ctx, queue, 20, false)
		var unseen int
		if err := b.rdb.QueryRow(`SELECT count(*) FROM messages WHERE visible_at > ?1`, now()).Scan(&unseen); err != nil {
			t.Fatal(err)
		}
		if unseen != len(rows) {
			t.Fatalf("context ended at Done call %d: %d rows leased, %d returned", n, unseen, len(rows))
		}
		if err := b.release(rows, true); err != nil {
			t.Fatal(err)
		}
	}
}
