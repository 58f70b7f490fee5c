package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// consumeRun is one drain of a preloaded queue by an in-process consumer.
type consumeRun struct {
	// start: from dialling until the n-th ack; ready: from the consumer
	// being registered (every channel consuming, every handler running).
	start, ready time.Duration
	// cpu is this process's CPU time from ready to done, brokerCPU that
	// of the process brokerPID (when not 0).
	cpu, brokerCPU time.Duration
}

// benchPayload is what the consumers decode; the task reads the same
// field.
type benchPayload struct {
	ID   int    `json:"id"`
	Name string `json:"name"`
}

// handlePayload is the work every system does per message: decode the
// JSON body and read one field.
func handlePayload(body []byte) error {
	var p benchPayload
	if err := json.Unmarshal(body, &p); err != nil {
		return err
	}
	if p.ID < 0 {
		return fmt.Errorf("id %d", p.ID)
	}
	return nil
}

// drainTimeout bounds a drain that stops making progress.
const drainTimeout = 30 * time.Second

// runPlain drains queue with plain amqp091-go: one connection, `consumers`
// channels each with Qos(prefetch) and one consumer with manual acks, each
// served by a goroutine that decodes the body, reads the field and acks
// that one message. Done when n messages were acked.
func runPlain(ctx context.Context, url, queue string, n, consumers, prefetch, brokerPID int) (consumeRun, error) {
	var r consumeRun
	start := time.Now()
	conn, err := amqp.Dial(url)
	if err != nil {
		return r, err
	}
	defer conn.Close()
	var (
		acked   atomic.Int64
		done    = newLatch()
		wg      sync.WaitGroup
		channel []*amqp.Channel
	)
	for i := range consumers {
		ch, err := conn.Channel()
		if err != nil {
			return r, err
		}
		channel = append(channel, ch)
		if err := ch.Qos(prefetch, 0, false); err != nil {
			return r, fmt.Errorf("set QoS: %w", err)
		}
		deliveries, err := ch.Consume(queue, fmt.Sprintf("plain-%d", i), false, false, false, false, nil)
		if err != nil {
			return r, fmt.Errorf("consume: %w", err)
		}
		wg.Go(func() {
			for d := range deliveries {
				if err := handlePayload(d.Body); err != nil {
					done.fail(fmt.Errorf("message %s: %w", d.MessageId, err))
					return
				}
				if err := d.Ack(false); err != nil {
					done.fail(fmt.Errorf("ack: %w", err))
					return
				}
				if acked.Add(1) == int64(n) {
					done.fail(nil)
				}
			}
		})
	}
	ready := time.Now()
	cpu := startCPU(0, brokerPID)
	err = waitDone(ctx, done, &acked, n)
	r.cpu, r.brokerCPU = cpu.stop()
	for _, ch := range channel {
		ch.Close()
	}
	wg.Wait()
	if err != nil {
		return r, err
	}
	if done.err != nil {
		return r, done.err
	}
	r.start, r.ready = done.at.Sub(start), done.at.Sub(ready)
	return r, nil
}

// latch is closed once, by the last message or by the first failure.
type latch struct {
	once sync.Once
	c    chan struct{}
	// err and at (when it was closed) are read after c is closed.
	err error
	at  time.Time
}

func newLatch() *latch { return &latch{c: make(chan struct{})} }

// fail closes the latch with err (nil: done) unless it is closed already.
func (l *latch) fail(err error) {
	l.once.Do(func() {
		l.err, l.at = err, time.Now()
		close(l.c)
	})
}

// waitDone waits for the latch, failing when count stops moving for
// drainTimeout.
func waitDone(ctx context.Context, done *latch, count *atomic.Int64, n int) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last, progress := int64(-1), time.Now()
	for {
		select {
		case <-done.c:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			if c := count.Load(); c != last {
				last, progress = c, time.Now()
			} else if time.Since(progress) > drainTimeout {
				return fmt.Errorf("no progress for %s: %d of %d messages handled", drainTimeout, c, n)
			}
		}
	}
}
