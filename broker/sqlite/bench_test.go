package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/broker/sqlite"
)

// Run with e.g. go test -run '^$' -bench . -benchtime 50000x ./broker/sqlite

func benchBroker(b *testing.B, params string) *sqlite.Broker {
	b.Helper()
	br, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "bench.db")+params, sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { br.Close() })
	if err := br.Declare(context.Background(), broker.Queue{Name: "q", Patterns: []string{"bench.#"}, Durable: true}); err != nil {
		b.Fatal(err)
	}
	return br
}

func publishN(br *sqlite.Broker, n, batch int) error {
	payload := []byte(`{"id": 12345, "name": "a small json payload"}`)
	for sent := 0; sent < n; {
		k := min(batch, n-sent)
		msgs := make([]*message.Message, k)
		for i := range msgs {
			msgs[i] = msg("")
			msgs[i].Payload = payload
		}
		if err := br.Publish("bench.created", msgs...); err != nil {
			return err
		}
		sent += k
	}
	return nil
}

func BenchmarkPublish(b *testing.B) {
	for _, c := range []struct {
		name, params string
		batch        int
	}{
		{"batch100", "", 100},
		{"single/sync=full", "", 1},
		{"single/sync=normal", "?sync=normal", 1},
	} {
		b.Run(c.name, func(b *testing.B) {
			br := benchBroker(b, c.params)
			start := time.Now()
			if err := publishN(br, b.N, c.batch); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}

// consume drains n messages with subs subscriptions, acking each.
func consume(b *testing.B, br *sqlite.Broker, n, subs, prefetch int) {
	b.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := 0
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range subs {
		s, err := br.Subscriber(broker.ConsumeOptions{Prefetch: prefetch})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		ch, err := s.Subscribe(ctx, "q")
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range ch {
				m.Ack()
				mu.Lock()
				got++
				if got == n {
					close(done)
				}
				mu.Unlock()
			}
		}()
	}
	<-done
	cancel()
	wg.Wait()
}

func BenchmarkConsume(b *testing.B) {
	for _, c := range []struct{ subs, prefetch int }{{4, 10}, {4, 100}, {1, 1}, {1, 100}} {
		b.Run(fmt.Sprintf("subs=%d/prefetch=%d", c.subs, c.prefetch), func(b *testing.B) {
			br := benchBroker(b, "")
			if err := publishN(br, b.N, 1000); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			start := time.Now()
			consume(b, br, b.N, c.subs, c.prefetch)
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}

// BenchmarkPublishConsume publishes in batches of 100 while 4 subscriptions
// consume: the steady state of a busy daemon.
func BenchmarkPublishConsume(b *testing.B) {
	for _, prefetch := range []int{10, 100} {
		b.Run(fmt.Sprintf("subs=4/prefetch=%d", prefetch), func(b *testing.B) {
			br := benchBroker(b, "")
			start := time.Now()
			go func() {
				if err := publishN(br, b.N, 100); err != nil {
					b.Error(err)
				}
			}()
			consume(b, br, b.N, 4, prefetch)
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}
