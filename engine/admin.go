package engine

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/symphony-go/symphony/broker"
)

var errServerClosed = http.ErrServerClosed

func (e *Engine) adminServer() *http.Server {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(e.cfg.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case !e.cfg.Broker.Connected():
			http.Error(w, "not ready: broker disconnected", http.StatusServiceUnavailable)
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
	Version   string       `json:"version,omitempty"`
	Broker    string       `json:"broker"`
	Exchange  string       `json:"exchange"`
	Connected bool         `json:"connected"`
	Ready     bool         `json:"ready"`
	StartedAt time.Time    `json:"started_at"`
	Tasks     []TaskStatus `json:"tasks"`
}

// TaskStatus is one task's part of Status.
type TaskStatus struct {
	Name       string         `json:"name"`
	Queue      string         `json:"queue"`
	File       string         `json:"file"`
	Patterns   []string       `json:"patterns"`
	WorkModel  string         `json:"work_model"`
	Isolation  string         `json:"isolation"`
	Workers    WorkerCount    `json:"workers"`
	Prefetch   int            `json:"prefetch"`
	QueueDepth int64          `json:"queue_depth"`
	Messages   map[string]int `json:"messages"`
	LastError  *failure       `json:"last_error"`
}

// WorkerCount is a pool's size and bounds.
type WorkerCount struct {
	Now int `json:"now"`
	Min int `json:"min"`
	Max int `json:"max"`
}

// Status reports the engine's state now.
func (e *Engine) Status() Status {
	s := Status{
		Version:   e.cfg.Version,
		Broker:    broker.Redact(e.cfg.BrokerURL),
		Exchange:  e.cfg.Exchange,
		Connected: e.cfg.Broker.Connected(),
		Ready:     e.isReady(),
		StartedAt: e.started,
		Tasks:     []TaskStatus{},
	}
	for _, p := range e.pools {
		spec := p.task.Spec
		p.mu.Lock()
		last := p.lastErr
		p.mu.Unlock()
		s.Tasks = append(s.Tasks, TaskStatus{
			Name:       spec.Name,
			Queue:      spec.Queue,
			File:       spec.File,
			Patterns:   spec.Patterns,
			WorkModel:  string(spec.WorkModel),
			Isolation:  string(spec.Isolation),
			Workers:    WorkerCount{Now: int(p.workers.Load()), Min: spec.MinWorkers, Max: spec.MaxWorkers},
			Prefetch:   spec.EffectivePrefetch(),
			QueueDepth: p.depth.Load(),
			Messages: map[string]int{
				"ack":   int(p.counts[0].Load()),
				"retry": int(p.counts[1].Load()),
				"dead":  int(p.counts[2].Load()),
			},
			LastError: last,
		})
	}
	return s
}
