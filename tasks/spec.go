package tasks

import (
	"fmt"
	"regexp"
	"time"
)

// WorkModel says how a task's pool sizes itself and how it runs scripts.
type WorkModel string

const (
	// Longlived pools keep their workers between messages and scale between
	// MinWorkers and MaxWorkers.
	Longlived WorkModel = "longlived"
	// Oneshot pools run every message in a fresh interpreter, prefetch 1,
	// and fill to MaxWorkers.
	Oneshot WorkModel = "oneshot"
)

// Isolation says where a task's workers run.
type Isolation string

const (
	// Thread workers are goroutines of the daemon.
	Thread Isolation = "thread"
	// Process workers are child processes of the daemon.
	Process Isolation = "process"
)

// QueueType says how RabbitMQ keeps a task's queue; the embedded broker
// takes either and behaves the same.
type QueueType string

const (
	// Classic queues live on one RabbitMQ node.
	Classic QueueType = "classic"
	// Quorum queues are replicated across a cluster's nodes (Raft) and
	// survive the loss of a minority of them.
	Quorum QueueType = "quorum"
)

// TimeoutAction says what happens to a message whose handler ran out of time.
type TimeoutAction string

const (
	// TimeoutReject dead-letters the message.
	TimeoutReject TimeoutAction = "reject"
	// TimeoutRetry retries it like a handler that returned False.
	TimeoutRetry TimeoutAction = "retry"
)

// Defaults of a task's settings, as SPEC §2 states them.
const (
	DefaultPrefetch      = 10
	DefaultMaxAttempts   = 5
	DefaultRetryDelay    = time.Second
	DefaultMaxRetryDelay = 5 * time.Minute
	DefaultIdleTimeout   = 10 * time.Second
	// DefaultTimeout bounds a run unless the task says otherwise: a
	// runaway handler (a loop that never ends) is stopped rather than
	// holding its worker, at full CPU, until the daemon stops.
	DefaultTimeout = 10 * time.Minute
	// PriorityLimit is the highest max_priority a task may set and the
	// highest priority a message may ask for: RabbitMQ advises against
	// more levels, each of which costs it memory and CPU.
	PriorityLimit = 10
)

// namePattern is what task and queue names may look like: safe in file
// names, metric labels and AMQP queue names alike.
var namePattern = regexp.MustCompile(`^[a-z0-9_.-]+$`)

// ValidateName reports whether s may name a task or a queue.
func ValidateName(s string) error {
	if !namePattern.MatchString(s) {
		return fmt.Errorf("%q is not a valid name: use lower-case letters, digits, '_', '.' and '-'", s)
	}
	if len(s) > 200 {
		return fmt.Errorf("name %.20q... is %d bytes long; the limit is 200", s, len(s))
	}
	return nil
}

// TickKey is the routing key of the ticks of a task's schedule.
func TickKey(task string) string { return "schedule." + task }

// ValidatePriority reports a message priority out of 0..PriorityLimit.
func ValidatePriority(p int) error {
	if p < 0 || p > PriorityLimit {
		return fmt.Errorf("priority %d is out of range: use 0 to %d (a task's max_priority is at most %d)", p, PriorityLimit, PriorityLimit)
	}
	return nil
}

// Spec is everything the engine needs to know about a task besides its
// handler. The zero value is not useful; start from NewSpec.
type Spec struct {
	// Name is unique across the tasks root.
	Name string
	// File is the task file, relative to its tasks root.
	File string
	// Pos is where task() was called, as file:line:col.
	Pos string
	// Queue is the broker queue the task consumes; defaults to Name.
	Queue string
	// Patterns are the AMQP topic patterns the queue is bound to.
	Patterns []string
	// WorkModel defaults to Longlived.
	WorkModel WorkModel
	// Scaler decides the pool size of a Scaled task.
	Scaler Scaler
	// ScaleInterval is how often a Scaled task's pool decides; zero means
	// the daemon's scaling interval.
	ScaleInterval time.Duration
	// MinWorkers and MaxWorkers bound the pool; both default to 1.
	MinWorkers, MaxWorkers int
	// Prefetch is how many messages a worker may hold; defaults to 10.
	// Use EffectivePrefetch: oneshot tasks and tasks with MaxMemory
	// always use 1.
	Prefetch int
	// Timeout bounds one run of the handler; defaults to DefaultTimeout;
	// zero means none.
	Timeout time.Duration
	// TimeoutAction defaults to TimeoutReject.
	TimeoutAction TimeoutAction
	// MaxAttempts is how many deliveries a retried message gets before it
	// is dead-lettered; defaults to 5.
	MaxAttempts int
	// RetryDelay is the first retry's delay (1s); it doubles each attempt up
	// to MaxRetryDelay (5m).
	RetryDelay, MaxRetryDelay time.Duration
	// Acknowledge false means the broker forgets a message on delivery.
	Acknowledge bool
	// Persistent false means a non-durable queue deleted with its last consumer.
	Persistent bool
	// Isolation defaults to Thread.
	Isolation Isolation
	// IdleTimeout stops extra longlived workers; defaults to 10s.
	IdleTimeout time.Duration
	// MaxSteps bounds the Starlark steps of one run; zero means none.
	MaxSteps uint64
	// MaxMemory bounds a worker process, in bytes; zero means none.
	MaxMemory int64
	// Allow lists the capabilities granted: "http", "exec", "file", "sql".
	Allow []string
	// AllowHosts limits "http" to these hosts; empty means any public host.
	AllowHosts []string
	// AllowCommands are the programs "exec" may run.
	AllowCommands []string
	// FileRoot confines "file" to this directory.
	FileRoot string
	// Databases are the databases "sql" may use, by name.
	Databases []string
	// Schedule, if set, publishes a tick to the task (routing key
	// schedule.<name>) on this schedule: a cron expression, a descriptor
	// such as "@hourly", or "every 30s" (see package schedule).
	Schedule string
	// QueueType defaults to Classic, or to the daemon's queue_type.
	QueueType QueueType
	// MaxPriority, from 1 to 10, makes the queue take message priorities
	// 0..MaxPriority, higher first; zero means the queue takes none.
	MaxPriority int
	// RateLimit bounds how many of the task's messages start per period,
	// across every process sharing the broker; zero means no limit.
	RateLimit Rate
	// Hash covers the task's file and every library it loads; two specs with
	// the same hash run the same code.
	Hash string
}

// NewSpec returns a Spec named name with every other setting at its default.
func NewSpec(name string) Spec {
	return Spec{
		Name:          name,
		Queue:         name,
		WorkModel:     Longlived,
		MinWorkers:    1,
		MaxWorkers:    1,
		Prefetch:      DefaultPrefetch,
		Timeout:       DefaultTimeout,
		TimeoutAction: TimeoutReject,
		MaxAttempts:   DefaultMaxAttempts,
		RetryDelay:    DefaultRetryDelay,
		MaxRetryDelay: DefaultMaxRetryDelay,
		Acknowledge:   true,
		Persistent:    true,
		QueueType:     Classic,
		Isolation:     Thread,
		IdleTimeout:   DefaultIdleTimeout,
	}
}

// EffectivePrefetch is the prefetch the broker should use for one worker.
func (s Spec) EffectivePrefetch() int {
	// A worker process killed for its memory loses every message it
	// holds, and each loss counts as an attempt: it holds only the one
	// that may be the cause.
	// A rate-limited worker holds one message waiting for its start:
	// more would only wait longer, held from workers of other daemons
	// that may start them sooner (and, on RabbitMQ, nearer its
	// consumer_timeout).
	if s.WorkModel == Oneshot || s.MaxMemory > 0 || s.Prefetch < 1 || !s.RateLimit.IsZero() {
		return 1
	}
	return s.Prefetch
}

// Backoff is the delay before delivery attempt+1 of a message whose
// attempt-th delivery asked to be retried: RetryDelay doubled per attempt,
// capped at MaxRetryDelay.
func (s Spec) Backoff(attempt int) time.Duration {
	ceiling := s.MaxRetryDelay
	if ceiling <= 0 {
		ceiling = DefaultMaxRetryDelay
	}
	d := s.RetryDelay
	for i := 1; i < attempt && d < ceiling; i++ {
		d *= 2
	}
	return min(d, ceiling)
}
