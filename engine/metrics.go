package engine

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the engine's Prometheus series, registered on an injected
// registry so that tests and several engines in one process never collide.
type metrics struct {
	messages *prometheus.CounterVec
	duration *prometheus.HistogramVec
	workers  *prometheus.GaugeVec
	depth    *prometheus.GaugeVec
	timeouts *prometheus.CounterVec
	restarts *prometheus.CounterVec

	reloads    *prometheus.CounterVec
	lastReload prometheus.Gauge

	ticks    *prometheus.CounterVec
	nextTick *prometheus.GaugeVec
	lastTick *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "symphony_messages_total",
			Help: "Messages handled, once per delivery, by what happened to them (ack, retry, dead).",
		}, []string{"task", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "symphony_message_duration_seconds",
			Help:    "Time from a delivery reaching a worker to its outcome being settled on the broker.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"task"}),
		workers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "symphony_workers",
			Help: "Workers running in each task's pool.",
		}, []string{"task"}),
		depth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "symphony_queue_depth",
			Help: "Messages ready for delivery in each task's queue, as last sampled.",
		}, []string{"task"}),
		timeouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "symphony_timeouts_total",
			Help: "Runs stopped because they exceeded their task's timeout.",
		}, []string{"task"}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "symphony_worker_restarts_total",
			Help: "Workers started to replace workers that failed.",
		}, []string{"task"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "symphony_reloads_total",
			Help: "Reloads of the task files, by result (success, failure).",
		}, []string{"result"}),
		lastReload: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "symphony_last_reload_success",
			Help: "1 if the last reload succeeded (or none happened yet), 0 if it failed.",
		}),
		ticks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "symphony_schedule_ticks_total",
			Help: "Ticks of each task's schedule that this daemon fired (each tick is fired by one daemon of all that share the broker).",
		}, []string{"task"}),
		nextTick: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "symphony_schedule_next_tick_timestamp_seconds",
			Help: "When each task's schedule ticks next, in Unix seconds.",
		}, []string{"task"}),
		lastTick: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "symphony_schedule_last_tick_timestamp_seconds",
			Help: "The last tick of each task's schedule this daemon knows of (fired or handled), in Unix seconds.",
		}, []string{"task"}),
	}
	for _, c := range []prometheus.Collector{m.messages, m.duration, m.workers, m.depth, m.timeouts, m.restarts, m.reloads, m.lastReload,
		m.ticks, m.nextTick, m.lastTick} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, result := range []string{"success", "failure"} {
		m.reloads.WithLabelValues(result) // present from the start, at 0
	}
	return m, nil
}
