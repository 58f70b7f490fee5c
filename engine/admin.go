package engine

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/symphony-go/symphony/broker"
)

func (e *Engine) adminServer() *http.Server {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(e.cfg.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := broker.Health(e.cfg.Broker); err != nil {
			http.Error(w, "not ready: broker: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		switch {
		case !e.isReady():
			http.Error(w, "not ready: workers are still subscribing", http.StatusServiceUnavailable)
		default:
			w.Write([]byte("ready\n"))
		}
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(e.Status())
	})
	return &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
}

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
	Settings   Settings      `json:"settings"`
	Tasks      []TaskStatus  `json:"tasks"`
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
	// Schedule is the task's schedule, if it has one.
	Schedule *ScheduleStatus `json:"schedule,omitempty"`
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
		Tasks:      []TaskStatus{},
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
			Schedule:    state.tick.status(),
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
