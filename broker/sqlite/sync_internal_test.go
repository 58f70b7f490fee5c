package sqlite

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/symphony-go/symphony/broker"
)

// synchronous is the setting the writer connection has now.
func synchronous(t *testing.T, b *Broker) int {
	t.Helper()
	b.wmu.Lock()
	defer b.wmu.Unlock()
	var n int
	if err := b.w.conn.QueryRowContext(context.Background(), "PRAGMA synchronous").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Publishes commit with synchronous=FULL (2) unless sync=normal; leases and
// acks with NORMAL (1).
func TestSynchronousPerTransaction(t *testing.T) {
	for _, c := range []struct {
		params      string
		publishSync int
	}{{"", 2}, {"?sync=full", 2}, {"?sync=normal", 1}} {
		ctx := context.Background()
		b, err := Open(ctx, filepath.Join(t.TempDir(), "db")+c.params, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Declare(ctx, broker.Queue{Name: "q", Patterns: []string{"k"}, Durable: true}); err != nil {
			t.Fatal(err)
		}
		if err := b.Publish("k", message.NewMessage("u", []byte("x"))); err != nil {
			t.Fatal(err)
		}
		if got := synchronous(t, b); got != c.publishSync {
			t.Errorf("%q: publish committed with synchronous=%d, want %d", c.params, got, c.publishSync)
		}
		if _, err := b.lease(ctx, 1, 1, false); err != nil {
			t.Fatal(err)
		}
		if got := synchronous(t, b); got != 1 {
			t.Errorf("%q: lease committed with synchronous=%d, want 1", c.params, got)
		}
		b.Close()
	}
}
