package engine

import (
	"fmt"
	"time"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/tasks"
)

// Status is what the daemon reports about itself at /status.
type Status struct {
	Version    string        `json:"version,omitempty"`
	Broker     string        `json:"broker"`
	Exchange   string        `json:"exchange"`
	Connected  bool          `json:"connected"`
	Ready      bool          `json:"ready"`
	StartedAt  time.Time     `json:"started_at"`
	Generation int           `json:"generation"`
	LastReload *ReloadResult `json:"last_reload"`
	// Reloads are the latest reloads, newest first.
	Reloads  []ReloadResult `json:"reloads"`
	Settings Settings       `json:"settings"`
	Tasks    []TaskStatus   `json:"tasks"`
}

// Settings are the daemon-wide settings in force, which a reload may
// change.
type Settings struct {
	ScalingInterval float64 `json:"scaling_interval_seconds"`
	ShutdownTimeout float64 `json:"shutdown_timeout_seconds"`
	ThrottleMax     int     `json:"throttle_max"`
	ThrottleFactor  float64 `json:"throttle_factor"`
}

// TaskStatus is one task's part of Status.
type TaskStatus struct {
	Name       string      `json:"name"`
	Queue      string      `json:"queue"`
	File       string      `json:"file"`
	Patterns   []string    `json:"patterns"`
	WorkModel  string      `json:"work_model"`
	Isolation  string      `json:"isolation"`
	Workers    WorkerCount `json:"workers"`
	Prefetch   int         `json:"prefetch"`
	QueueDepth int64       `json:"queue_depth"`
	// Throttle is how long worker starts are spaced after failures, in
	// seconds.
	Throttle    float64        `json:"throttle_seconds"`
	LastStart   *Happening     `json:"last_start"`
	LastExit    *Happening     `json:"last_exit"`
	ScalerError string         `json:"scaler_error,omitempty"`
	Draining    int            `json:"draining"`
	Messages    map[string]int `json:"messages"`
	LastError   *Failure       `json:"last_error"`
	// RateLimit is the task's rate_limit ("50/s"), if it has one;
	// Throttled is how many of this daemon's workers hold a message
	// that waits for the limit to let it start.
	RateLimit string `json:"rate_limit,omitempty"`
	Throttled int    `json:"throttled"`
	// Schedule is the task's schedule, if it has one.
	Schedule *ScheduleStatus `json:"schedule,omitempty"`
	// Processes are the worker processes of a task with isolation =
	// "process".
	Processes []Process `json:"processes,omitempty"`
}

// Process is one worker process, for status.
type Process struct {
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
	Busy    bool      `json:"busy"`
	// RSS is its resident memory in bytes, read when status is asked
	// for; 0 where it cannot be read.
	RSS int64 `json:"rss_bytes"`
}

// WorkerCount is a pool's size, how many of its workers are busy, and its
// bounds.
type WorkerCount struct {
	Now  int `json:"now"`
	Busy int `json:"busy"`
	Min  int `json:"min"`
	Max  int `json:"max"`
}

// Status reports the engine's state now.
func (e *Engine) Status() Status {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := Status{
		Version:    e.cfg.Version,
		Broker:     broker.Redact(e.cfg.BrokerURL),
		Exchange:   e.cfg.Exchange,
		Connected:  e.cfg.Broker.Connected(),
		Ready:      e.isReady(),
		StartedAt:  e.started,
		Generation: e.generation,
		LastReload: e.lastReload,
		Reloads:    make([]ReloadResult, 0, len(e.reloads)),
		Tasks:      []TaskStatus{},
	}
	for i := len(e.reloads) - 1; i >= 0; i-- {
		s.Reloads = append(s.Reloads, e.reloads[i])
	}
	t := e.tuning.Load()
	s.Settings = Settings{ScalingInterval: t.ScalingInterval.Seconds(), ShutdownTimeout: t.ShutdownTimeout.Seconds(),
		ThrottleMax: t.ThrottleMax, ThrottleFactor: t.ThrottleFactor}
	draining := map[string]int{}
	for p := range e.draining {
		draining[p.task.Spec.Name]++
	}
	for _, name := range e.order {
		p := e.current[name]
		spec := p.task.Spec
		v := p.snapshot()
		state := p.state
		state.mu.Lock()
		last := state.lastErr
		state.mu.Unlock()
		s.Tasks = append(s.Tasks, TaskStatus{
			Name:        spec.Name,
			Queue:       spec.Queue,
			File:        spec.File,
			Patterns:    spec.Patterns,
			WorkModel:   string(spec.WorkModel),
			Isolation:   string(spec.Isolation),
			Workers:     WorkerCount{Now: v.Workers, Busy: v.Busy, Min: spec.MinWorkers, Max: spec.MaxWorkers},
			Prefetch:    spec.EffectivePrefetch(),
			QueueDepth:  v.Depth,
			Throttle:    v.Throttle.Seconds(),
			LastStart:   v.LastStart,
			LastExit:    v.LastExit,
			ScalerError: v.ScalerError,
			Draining:    draining[name],
			Messages:    state.messages(),
			LastError:   last,
			RateLimit:   spec.RateLimit.String(),
			Throttled:   int(p.throttled.Load()),
			Schedule:    state.tick.status(),
			Processes:   v.processes(),
		})
	}
	return s
}

// LogStatus writes a summary of every task to the log (SIGUSR1).
func (e *Engine) LogStatus() {
	s := e.Status()
	e.log.Info("status", "generation", s.Generation, "tasks", len(s.Tasks), "connected", s.Connected, "ready", s.Ready,
		"uptime", time.Since(s.StartedAt).Round(time.Second).String())
	for _, t := range s.Tasks {
		e.log.Info("status of task", "task", t.Name, "work_model", t.WorkModel, "isolation", t.Isolation,
			"workers", t.Workers.Now, "busy", t.Workers.Busy, "min", t.Workers.Min, "max", t.Workers.Max,
			"queue_depth", t.QueueDepth, "throttle_seconds", t.Throttle, "draining", t.Draining,
			"ack", t.Messages["ack"], "retry", t.Messages["retry"], "dead", t.Messages["dead"])
	}
}

// Publish sends a message to the exchange, as `symphony publish` does,
// and returns its message id. An unroutable key is broker.ErrUnroutable.
func (e *Engine) Publish(pub tasks.Publication) (string, error) {
	msg, err := broker.NewMessage(pub)
	if err != nil {
		return "", err
	}
	if err := e.cfg.Broker.Publish(pub.RoutingKey, msg); err != nil {
		return "", fmt.Errorf("publish %s: %w", pub.RoutingKey, err)
	}
	return msg.UUID, nil
}

// Health is nil when the broker can store and deliver messages now, and
// otherwise says why not (broker.Health).
func (e *Engine) Health() error { return broker.Health(e.cfg.Broker) }

// DeadLetters are the broker's dead letters, to list, show, replay and
// purge.
func (e *Engine) DeadLetters() broker.DeadLetters { return e.cfg.Broker.DeadLetters() }
