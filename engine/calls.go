package engine

import (
	"context"
	"encoding/json"
	"io"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/symphony-go/symphony/tasks"
)

// CallMetrics counts the capability calls tasks make (SPEC §2.1): the
// World's CallObserver in the daemon, and the sink of the calls worker
// processes report.
type CallMetrics struct {
	total    *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewCallMetrics registers symphony_calls_total and
// symphony_call_duration_seconds on reg.
func NewCallMetrics(reg prometheus.Registerer) (*CallMetrics, error) {
	m := &CallMetrics{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "symphony_calls_total",
			Help: "Capability calls tasks made (http, exec, file, sql), by result: ok (a value came back, any HTTP status or exit code), error, refused (not granted, or outside the task's allow_hosts, allow_commands, file_root, databases).",
		}, []string{"task", "module", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "symphony_call_duration_seconds",
			Help:    "Time capability calls took, whatever their result.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"task", "module"}),
	}
	for _, c := range []prometheus.Collector{m.total, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// StartCall implements tasks.CallObserver.
func (m *CallMetrics) StartCall(ctx context.Context, _ *tasks.Call) context.Context { return ctx }

// EndCall implements tasks.CallObserver.
func (m *CallMetrics) EndCall(_ context.Context, c *tasks.Call) {
	m.record(c.Task, c.Module, c.Result, c.Took)
}

func (m *CallMetrics) record(task, module, result string, took time.Duration) {
	m.total.WithLabelValues(task, module, result).Inc()
	m.duration.WithLabelValues(task, module).Observe(took.Seconds())
}

// CallReporter is the CallObserver of a worker process: it reports each
// call on the events pipe, and the daemon counts it in its metrics.
func CallReporter(events io.Writer) tasks.CallObserver { return callReporter{events} }

type callReporter struct{ w io.Writer }

func (callReporter) StartCall(ctx context.Context, _ *tasks.Call) context.Context { return ctx }

func (r callReporter) EndCall(_ context.Context, c *tasks.Call) {
	b, _ := json.Marshal(event{Event: "call", Module: c.Module, Result: c.Result, Took: c.Took.Seconds()})
	// One write a line, well under PIPE_BUF: lines that a run's
	// goroutine and the worker write at once do not interleave.
	_, _ = r.w.Write(append(b, '\n'))
}

// CallObservers is one CallObserver made of several, called in order;
// each StartCall gets the context the one before returned.
type CallObservers []tasks.CallObserver

// StartCall implements tasks.CallObserver.
func (obs CallObservers) StartCall(ctx context.Context, c *tasks.Call) context.Context {
	for _, o := range obs {
		ctx = o.StartCall(ctx, c)
	}
	return ctx
}

// EndCall implements tasks.CallObserver, in reverse order, as deferred calls.
func (obs CallObservers) EndCall(ctx context.Context, c *tasks.Call) {
	for i := len(obs) - 1; i >= 0; i-- {
		obs[i].EndCall(ctx, c)
	}
}
