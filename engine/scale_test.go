package engine

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/broker/sqlite"
	"github.com/symphony-go/symphony/tasks"
)

// TestPoolGrowsWithTheBacklogAndShrinksWhenIdle runs a longlived pool on
// the embedded broker in a bubble of fake time: a growing backlog of slow
// messages grows it one worker per interval once it has ten samples, up
// to max_workers and no further; when the backlog is gone, the
// extra workers stop after idle_timeout and min_workers stay.
func TestPoolGrowsWithTheBacklogAndShrinksWhenIdle(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		b, err := sqlite.Open(t.Context(), filepath.Join(dir, "scale.db"), sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		s := tasks.NewSpec("slow")
		s.Patterns = []string{"slow"}
		s.MinWorkers, s.MaxWorkers = 1, 3
		s.Prefetch = 1
		s.IdleTimeout = 5 * time.Second
		slow := handlerFunc(func(ctx context.Context, d *tasks.Delivery) tasks.Result {
			time.Sleep(time.Second)
			return tasks.Result{Verdict: tasks.Succeeded}
		})
		e, err := New(Config{Broker: b, Registry: prometheus.NewRegistry(), ScalingInterval: 100 * time.Millisecond,
			Logger: slog.New(slog.DiscardHandler)}, []tasks.Task{{Spec: s, Handler: slow}})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.cfg.Broker.Declare(t.Context(), broker.Queue{Name: "slow", Patterns: []string{"slow"}, Durable: true}); err != nil {
			t.Fatal(err)
		}
		// Work arrives three messages a second for 20 seconds; one worker
		// handles one a second.
		published := make(chan error, 1)
		go func() {
			for range 60 {
				msg, _ := broker.NewMessage(tasks.Publication{RoutingKey: "slow", Body: []byte("x")})
				if err := b.Publish("slow", msg); err != nil {
					published <- err
					return
				}
				time.Sleep(time.Second / 3)
			}
			published <- nil
		}()
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- e.Run(ctx) }()
		<-e.Ready()
		workers := func() int { return e.Status().Tasks[0].Workers.Now }

		// Nothing is decided in the first ten samples (1 s at 100 ms).
		time.Sleep(950 * time.Millisecond)
		synctest.Wait()
		if n := workers(); n != 1 {
			t.Fatalf("%d workers after nine samples, want 1", n)
		}
		// Then, once the backlog's mean passes 1, one worker per interval
		// while it grows, up to max: long before the window of 100 samples
		// (10 s) is full.
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if n := workers(); n != 3 {
			t.Fatalf("%d workers 3 s into a growing backlog, want max_workers 3", n)
		}
		if err := <-published; err != nil {
			t.Fatal(err)
		}
		peak := 0
		deadline := time.Now().Add(2 * time.Minute) // fake time
		for workers() > 1 || e.Status().Tasks[0].QueueDepth > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("still %d workers two minutes after the backlog ended", workers())
			}
			peak = max(peak, workers())
			time.Sleep(100 * time.Millisecond)
			synctest.Wait()
		}
		if peak > 3 {
			t.Errorf("the pool overshot to %d workers", peak)
		}
		// The backlog is gone; the two extra workers stopped after idling
		// idle_timeout, and the min_workers one stays.
		st := e.Status().Tasks[0]
		if st.Messages["ack"] != 60 {
			t.Errorf("%d messages acked, want 60", st.Messages["ack"])
		}
		if st.LastExit == nil || st.LastExit.Reason != "scaled down" {
			t.Errorf("last exit: %+v", st.LastExit)
		}
		time.Sleep(30 * time.Second)
		synctest.Wait()
		if n := workers(); n != 1 {
			t.Errorf("%d workers long after the backlog, want min_workers 1", n)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}
