// Package engine is the daemon's core: one pool of workers per task, each
// worker a subscription to the task's queue; the decision of what happens to
// every message (through tasks.Decide) carried out on the broker, each
// delivery a trace span; graceful and forced shutdown; its metrics and the
// status it reports, which the admin server (package admin) serves.
//
// The engine sees scripts only as tasks.Handler and brokers only as
// broker.Broker, so it knows neither Starlark nor SQLite nor AMQP.
package engine
