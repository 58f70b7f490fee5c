package tasks

import (
	"context"
	"time"
)

// Scaled is the work model of a task whose pool size a Scaler decides.
const Scaled WorkModel = "scaler"

// Sample is one measurement of a queue: how many messages were ready.
type Sample struct {
	At    time.Time
	Ready int
}

// Stats is what a pool knows when it decides its size.
type Stats struct {
	// Samples are the last samples of the queue's ready count, oldest
	// first (at most 100).
	Samples []Sample
	// Workers is how many workers the pool runs now.
	Workers int
	// Min and Max bound the pool.
	Min, Max int
	// Busy is how many workers are handling a message.
	Busy int
	// Idle is, per worker, how long ago it last finished a message (or
	// started, if it has not had one); zero for busy workers.
	Idle []time.Duration
	// IdleTimeout is the task's idle_timeout.
	IdleTimeout time.Duration
}

// Scaler decides how many workers a pool should run. The pool clamps the
// answer to [Min, Max] and moves towards it by one worker per interval; an
// error leaves the pool as it is.
type Scaler interface {
	Decide(ctx context.Context, s Stats) (int, error)
}
