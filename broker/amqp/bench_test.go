package amqp_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/broker/amqp"
	"github.com/symphony-go/symphony/tasks"
)

// Run with e.g. go test -run '^$' -bench . -benchtime 20000x ./broker/amqp
//
// BenchmarkConsume/symphony and BenchmarkConsume/amqp091 do the same work
// (4 consumers, prefetch 10, manual ack of each message) through this
// broker and through plain amqp091-go consumers, so that the cost of the
// Watermill subscription is the ratio of the two.

const (
	benchSubs     = 4
	benchPrefetch = 10
)

var benchPayload = []byte(`{"id": 12345, "name": "a small json payload"}`)

func benchEnv(b *testing.B) (*env, *amqp.Broker, string) {
	b.Helper()
	raw := requireRabbit(b)
	e := &env{url: raw, exchange: uniqueName("bench")}
	br, err := amqp.Open(context.Background(), raw, amqp.Options{Exchange: e.exchange})
	if err != nil {
		b.Fatal(err)
	}
	q := e.exchange + ".q"
	b.Cleanup(func() {
		br.Close()
		if err := deleteAll(raw, e.exchange, []string{q}, br.DelayNames()); err != nil {
			b.Errorf("clean up: %v", err)
		}
	})
	if err := br.Declare(context.Background(), broker.Queue{Name: q, Patterns: []string{"bench.#"}, Durable: true}); err != nil {
		b.Fatal(err)
	}
	return e, br, q
}

// publishN publishes n messages in calls of batch.
func publishN(br *amqp.Broker, n, batch int) error {
	for sent := 0; sent < n; {
		k := min(batch, n-sent)
		msgs := make([]*message.Message, k)
		for i := range msgs {
			m, err := broker.NewMessage(tasks.Publication{Body: benchPayload, ContentType: "application/json"})
			if err != nil {
				return err
			}
			msgs[i] = m
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
		name  string
		batch int
	}{{"batch100", 100}, {"single", 1}} {
		b.Run(c.name, func(b *testing.B) {
			_, br, _ := benchEnv(b)
			b.ResetTimer()
			start := time.Now()
			if err := publishN(br, b.N, c.batch); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}

func BenchmarkConsume(b *testing.B) {
	b.Run("symphony", func(b *testing.B) {
		_, br, q := benchEnv(b)
		if err := publishN(br, b.N, 500); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		start := time.Now()
		consumeSymphony(b, br, q, b.N)
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	})
	b.Run("amqp091", func(b *testing.B) {
		e, br, q := benchEnv(b)
		if err := publishN(br, b.N, 500); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		start := time.Now()
		consumePlain(b, e.url, q, b.N)
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	})
}

// consumeSymphony drains n messages with benchSubs subscriptions, acking
// each.
func consumeSymphony(b *testing.B, br *amqp.Broker, q string, n int) {
	b.Helper()
	var got atomic.Int64
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for range benchSubs {
		s, err := br.Subscriber(broker.ConsumeOptions{Prefetch: benchPrefetch})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		ch, err := s.Subscribe(ctx, q)
		if err != nil {
			b.Fatal(err)
		}
		wg.Go(func() {
			for m := range ch {
				m.Ack()
				if got.Add(1) == int64(n) {
					close(done)
				}
			}
		})
	}
	<-done
	cancel()
	wg.Wait()
}

// consumePlain drains n messages with benchSubs plain amqp091-go
// consumers on one connection, each its own channel, acking each.
func consumePlain(b *testing.B, raw, q string, n int) {
	b.Helper()
	conn, err := amqp091.Dial(raw)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	var got atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	var chans []*amqp091.Channel
	for range benchSubs {
		ch, err := conn.Channel()
		if err != nil {
			b.Fatal(err)
		}
		chans = append(chans, ch)
		if err := ch.Qos(benchPrefetch, 0, false); err != nil {
			b.Fatal(err)
		}
		deliveries, err := ch.Consume(q, "", false, false, false, false, nil)
		if err != nil {
			b.Fatal(err)
		}
		wg.Go(func() {
			for d := range deliveries {
				d.Ack(false)
				if got.Add(1) == int64(n) {
					close(done)
				}
			}
		})
	}
	<-done
	for _, ch := range chans {
		ch.Close()
	}
	wg.Wait()
}
