package brokertest

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/tasks"
)

// testBudgetShared: two processes of one broker, each consuming the
// task's queue, wait for starts under one limit: together they start no
// more than the limit allows, and not far fewer.
func testBudgetShared(t *testing.T, f *fixture) {
	q := f.declare("limited", "limited.#")
	other, err := f.h.Open(f.env)
	if err != nil {
		t.Fatalf("open a second broker: %v", err)
	}
	t.Cleanup(func() { other.Close() })
	f.subscribe(q, broker.ConsumeOptions{Prefetch: 1})
	sub, err := other.Subscriber(broker.ConsumeOptions{Prefetch: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close() })
	sctx, scancel := context.WithCancel(context.Background())
	defer scancel()
	if _, err := sub.Subscribe(sctx, q); err != nil {
		t.Fatal(err)
	}

	limit := tasks.Rate{N: 50, Per: time.Second}
	const run = 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), run)
	defer cancel()
	var started atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for _, b := range []broker.Broker{f.b, other} {
		for range 3 { // three workers in each process
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					err := b.Budgets().Wait(ctx, "limited", q, limit)
					if ctx.Err() != nil {
						return
					}
					if err != nil {
						errs <- err
						return
					}
					started.Add(1)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("wait for a start: %v", err)
	}
	// Each process may start its share of the tolerance at once, then
	// keeps the pace: 100 over the two seconds, and the tolerance (5) on
	// top, rounded up per process.
	n := started.Load()
	upper := int64(limit.N)*int64(run/time.Second) + 2*int64(broker.Tolerance(limit)/limit.Interval()) + 2
	if n > upper || n < upper/2 {
		t.Fatalf("%d starts in %s under %s across two processes, want at most %d and more than half that", n, run, limit, upper)
	}

	// A changed limit holds from the next start.
	slow := tasks.Rate{N: 2, Per: time.Second}
	ctx2, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	var slowStarts int
	for f.b.Budgets().Wait(ctx2, "limited", q, slow) == nil {
		slowStarts++
	}
	if want := int(broker.Tolerance(slow)/slow.Interval()) + 2; slowStarts > want {
		t.Fatalf("%d starts in a second after the limit became %s, want at most %d", slowStarts, slow, want)
	}
}
