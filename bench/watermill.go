package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
)

// watermillConfig is the watermill-amqp configuration of the Watermill
// consumer: NewDurableQueueConfig (a durable queue of competing consumers,
// persistent messages) moved onto the topic exchange, with a constant queue
// name and the binding pattern as its routing key. The topology it declares
// is the one symphony and the plain consumer use: a durable topic exchange,
// a durable queue without arguments, one binding.
func watermillConfig(url, exchange, queue, pattern string, prefetch int) wamqp.Config {
	cfg := wamqp.NewDurableQueueConfig(url)
	cfg.Exchange = wamqp.ExchangeConfig{
		GenerateName: wamqp.GenerateExchangeNameConstant(exchange),
		Type:         "topic",
		// The config helpers leave the exchange non-durable
		// (dependencies.md §2.2).
		Durable: true,
	}
	cfg.Queue.GenerateName = wamqp.GenerateQueueNameConstant(queue)
	cfg.QueueBind.GenerateRoutingKey = func(string) string { return pattern }
	cfg.Consume.Qos.PrefetchCount = prefetch
	return cfg
}

// watermillLogger is a logger that drops everything: watermill-amqp's
// subscriber panics on Close with a nil logger (dependencies.md §2.4).
var watermillLogger watermill.LoggerAdapter = watermill.NopLogger{}

// declareWatermill lets a watermill-amqp subscriber declare its topology
// (SubscribeInitialize), then closes it: the queue exists and is bound
// before the preload, as a first symphony daemon leaves it.
func declareWatermill(url, exchange, queue, pattern string, prefetch int) error {
	sub, err := wamqp.NewSubscriber(watermillConfig(url, exchange, queue, pattern, prefetch), watermillLogger)
	if err != nil {
		return err
	}
	if err := sub.SubscribeInitialize(queue); err != nil {
		sub.Close()
		return err
	}
	return sub.Close()
}

// runWatermill drains queue with a Watermill Router over one watermill-amqp
// subscriber (one connection): `handlers` consumer handlers on the same
// topic, each its own Subscribe call and so its own AMQP channel with
// Qos(prefetch). A watermill-amqp subscription hands out one message and
// waits for its ack before taking the next, so the handlers are what makes
// `handlers` messages be worked at once, as symphony's workers and the
// plain consumers do. Each handler decodes the body, reads the field and
// returns nil, so the router acks. Done when the handlers returned for n
// messages.
func runWatermill(ctx context.Context, url, exchange, queue, pattern string, n, handlers, prefetch, brokerPID int) (consumeRun, error) {
	var r consumeRun
	start := time.Now()
	sub, err := wamqp.NewSubscriber(watermillConfig(url, exchange, queue, pattern, prefetch), watermillLogger)
	if err != nil {
		return r, err
	}
	defer sub.Close()
	router, err := message.NewRouter(message.RouterConfig{}, watermillLogger)
	if err != nil {
		return r, err
	}
	var (
		handled atomic.Int64
		done    = newLatch()
	)
	for i := range handlers {
		router.AddConsumerHandler(fmt.Sprintf("json-%d", i), queue, sub, func(msg *message.Message) error {
			if err := handlePayload(msg.Payload); err != nil {
				done.fail(fmt.Errorf("message %s: %w", msg.UUID, err))
				return err
			}
			if handled.Add(1) == int64(n) {
				done.fail(nil)
			}
			return nil
		})
	}
	// Stopping by cancelling Run's context, not with Router.Close: Close
	// nacks what is in flight (dependencies.md §1.4).
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- router.Run(rctx) }()
	select {
	case <-router.Running():
	case err := <-ran:
		return r, fmt.Errorf("router: %v", err)
	}
	ready := time.Now()
	cpu := startCPU(0, brokerPID)
	err = waitDone(ctx, done, &handled, n)
	r.cpu, r.brokerCPU = cpu.stop()
	cancel()
	select {
	case <-ran:
	case <-time.After(30 * time.Second):
		return r, fmt.Errorf("the router did not stop within 30s of its context's cancellation")
	}
	if err != nil {
		return r, err
	}
	if done.err != nil {
		return r, done.err
	}
	if err := sub.Close(); err != nil {
		return r, err
	}
	r.start, r.ready = done.at.Sub(start), done.at.Sub(ready)
	return r, nil
}
