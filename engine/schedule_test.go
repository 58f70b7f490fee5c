package engine

import (
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/broker/sqlite"
	"github.com/symphony-go/symphony/schedule"
)

// testScheduler is a scheduler of the task "t" whose clock is off by skew.
func testScheduler(t *testing.T, b broker.Broker, expr string, skew time.Duration) *scheduler {
	t.Helper()
	s, err := schedule.Parse(expr)
	if err != nil {
		t.Fatal(err)
	}
	g := func() prometheus.Gauge { return prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"}) }
	return &scheduler{
		name: "t", key: "schedule.t", sched: s, loc: time.UTC, broker: b, state: &tickState{},
		log: slog.New(slog.DiscardHandler), fired: prometheus.NewCounter(prometheus.CounterOpts{Name: "c"}),
		nextG: g(), lastG: g(), now: func() time.Time { return time.Now().Add(skew) }, retryMin: 10 * time.Millisecond,
	}
}

// Daemons whose clocks disagree, one by five minutes, each fire every
// tick they think due, on one broker: each tick is published once. The
// clock decides when a tick fires, never how often.
func TestScheduleWithSkewedClocks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ticks.db")
	var brokers []broker.Broker
	for range 3 {
		b, err := sqlite.Open(t.Context(), path, sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		brokers = append(brokers, b)
	}
	if err := brokers[0].Declare(t.Context(), broker.Queue{Name: "t", Patterns: []string{"schedule.t"}, Durable: true}); err != nil {
		t.Fatal(err)
	}
	sub, err := brokers[0].Subscriber(broker.ConsumeOptions{Prefetch: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ch, err := sub.Subscribe(t.Context(), "t")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	receive := func() {
		t.Helper()
		select {
		case m := <-ch:
			var body struct {
				At string `json:"scheduled_at"`
			}
			if err := json.Unmarshal(m.Payload, &body); err != nil {
				t.Fatal(err)
			}
			if seen[body.At] {
				t.Errorf("tick %s published twice", body.At)
			}
			seen[body.At] = true
			m.Ack()
		case <-time.After(20 * time.Second):
			t.Fatalf("no tick within 20 s; %d so far", len(seen))
		}
	}

	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	skews := []time.Duration{0, 300 * time.Millisecond, 5 * time.Minute}
	scheds := make([]*scheduler, len(skews))
	for i, skew := range skews {
		scheds[i] = testScheduler(t, brokers[i], "every 1s", skew)
		wg.Go(func() { scheds[i].run(ctx) })
	}
	for len(seen) < 5 {
		receive()
	}
	cancel()
	wg.Wait()
	total := 0
	for _, s := range scheds {
		total += int(testutil.ToFloat64(s.fired))
	}
	for len(seen) < total {
		receive()
	}
	n := total
	var fired []float64
	for _, s := range scheds {
		fired = append(fired, testutil.ToFloat64(s.fired))
	}
	if fired[2] == 0 || fired[0]+fired[1]+fired[2] != float64(n) {
		t.Errorf("ticks fired per daemon %v for %d published: the fast clock fires them (early), the others wait", fired, n)
	}
}
