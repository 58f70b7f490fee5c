// Package engine is the daemon's core: one pool of workers per task, each
// worker a subscription to the task's queue; the decision of what happens to
// every message (through tasks.Decide) carried out on the broker; graceful
// and forced shutdown; and the admin HTTP server (metrics, health, status).
//
// The engine sees scripts only as tasks.Handler and brokers only as
// broker.Broker, so it knows neither Starlark nor SQLite nor AMQP.
package engine
