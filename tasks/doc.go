// Package tasks is the contract between the engine and the scripts it runs:
// a task's Spec (name, queue, patterns, work model, limits), the Handler the
// engine calls with a Delivery, the Result a handler returns, the Outcome
// decided from it, and AMQP topic pattern matching.
//
// It imports only the standard library, so both sides of the contract
// (engine and starlarklib) can depend on it without depending on each other.
package tasks
