package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/symphony-go/symphony/engine"
	"github.com/symphony-go/symphony/tasks"
)

// tracing is the process's tracer: every delivery is a span, whether or
// not the spans go anywhere, so that a message without a traceparent
// starts a trace that its log lines and its publications carry. With an
// OTLP endpoint the spans are exported over OTLP/HTTP.
type tracing struct {
	provider *sdktrace.TracerProvider
	queue    *spanQueue // nil without an endpoint
}

// newTracing sets up the tracer. dropped counts the spans that could not
// be exported (the endpoint down or too slow); nil counts nowhere.
func newTracing(endpoint, version string, dropped prometheus.Counter, log *slog.Logger) (*tracing, error) {
	res := resource.NewSchemaless(attribute.String("service.name", "symphony"), attribute.String("service.version", version))
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	t := &tracing{}
	if endpoint != "" {
		u, err := otlpURL(endpoint)
		if err != nil {
			return nil, err
		}
		exp, err := otlptracehttp.New(context.Background(),
			otlptracehttp.WithEndpointURL(u),
			otlptracehttp.WithTimeout(5*time.Second),
			// A collector that is down costs a few seconds of retries per
			// batch, then the batch is dropped and counted: deliveries
			// never wait for it.
			otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: true, InitialInterval: 500 * time.Millisecond,
				MaxInterval: 2 * time.Second, MaxElapsedTime: 5 * time.Second}),
		)
		if err != nil {
			return nil, fmt.Errorf("--otlp-endpoint %s: %w", endpoint, err)
		}
		t.queue = newSpanQueue(exp, dropped, log)
		opts = append(opts, sdktrace.WithSpanProcessor(t.queue))
	}
	t.provider = sdktrace.NewTracerProvider(opts...)
	return t, nil
}

// otlpURL is the traces URL of an OTLP/HTTP endpoint: a bare
// http://collector:4318 gets the standard /v1/traces path.
func otlpURL(endpoint string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("--otlp-endpoint %q: give an OTLP/HTTP URL such as http://collector:4318", endpoint)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/traces"
	}
	return u.String(), nil
}

// Tracer is the tracer deliveries use.
func (t *tracing) Tracer() trace.Tracer {
	return t.provider.Tracer("github.com/symphony-go/symphony")
}

// Shutdown exports what is queued, within ctx.
func (t *tracing) Shutdown(ctx context.Context) error { return t.provider.Shutdown(ctx) }

// spanQueue is a batching span processor that counts what it drops: a
// span that finds the queue full, and every span of a batch the endpoint
// did not take. The SDK's own batch processor drops silently.
type spanQueue struct {
	exporter sdktrace.SpanExporter
	dropped  prometheus.Counter
	log      *slog.Logger

	spans chan sdktrace.ReadOnlySpan
	flush chan chan struct{}
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once

	warnMu   sync.Mutex
	lastWarn time.Time
}

const (
	spanQueueSize = 4096
	spanBatch     = 512
	spanEvery     = time.Second
)

func newSpanQueue(exp sdktrace.SpanExporter, dropped prometheus.Counter, log *slog.Logger) *spanQueue {
	q := &spanQueue{exporter: exp, dropped: dropped, log: log, spans: make(chan sdktrace.ReadOnlySpan, spanQueueSize),
		flush: make(chan chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	go q.run()
	return q
}

func (q *spanQueue) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

func (q *spanQueue) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return
	}
	select {
	case q.spans <- s:
	default:
		q.drop(1, errors.New("the span queue is full"))
	}
}

func (q *spanQueue) run() {
	defer close(q.done)
	tick := time.NewTicker(spanEvery)
	defer tick.Stop()
	batch := make([]sdktrace.ReadOnlySpan, 0, spanBatch)
	send := func() {
		if len(batch) == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := q.exporter.ExportSpans(ctx, batch); err != nil {
			q.drop(len(batch), err)
		}
		cancel()
		batch = batch[:0]
	}
	drain := func() {
		for {
			select {
			case s := <-q.spans:
				if batch = append(batch, s); len(batch) == spanBatch {
					send()
				}
			default:
				send()
				return
			}
		}
	}
	for {
		select {
		case s := <-q.spans:
			if batch = append(batch, s); len(batch) == spanBatch {
				send()
			}
		case <-tick.C:
			send()
		case ack := <-q.flush:
			drain()
			close(ack)
		case <-q.stop:
			drain()
			return
		}
	}
}

// drop counts lost spans and says why, at most once a minute.
func (q *spanQueue) drop(n int, err error) {
	if q.dropped != nil {
		q.dropped.Add(float64(n))
	}
	q.warnMu.Lock()
	defer q.warnMu.Unlock()
	if time.Since(q.lastWarn) < time.Minute {
		return
	}
	q.lastWarn = time.Now()
	q.log.Warn("spans dropped: the OTLP endpoint did not take them (counted in symphony_spans_dropped_total)", "spans", n, "err", err)
}

func (q *spanQueue) ForceFlush(ctx context.Context) error {
	ack := make(chan struct{})
	select {
	case q.flush <- ack:
	case <-q.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-ack:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (q *spanQueue) Shutdown(ctx context.Context) error {
	q.once.Do(func() { close(q.stop) })
	select {
	case <-q.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return q.exporter.Shutdown(ctx)
}

// traceHandler adds the trace and span ids of a record's context to it:
// every line logged during a delivery (the task's log.*() calls, the
// outcome) names the delivery's span.
type traceHandler struct{ slog.Handler }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return traceHandler{h.Handler.WithAttrs(as)}
}

func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.Handler.WithGroup(name)}
}

// callObservers is what sees a process's capability calls: counted, and
// with an OTLP endpoint each a span. Without one a call's span would go
// nowhere and only cost: the call runs in its delivery's span, whose
// trace id its log lines carry.
func callObservers(count tasks.CallObserver, endpoint string, tr *tracing) tasks.CallObserver {
	if endpoint == "" {
		return count
	}
	return engine.CallObservers{count, callSpans{tr.Tracer()}}
}

// callSpans makes every capability call a task makes a span of its own,
// the child of its delivery's span (the World's call-observation seam).
type callSpans struct{ tracer trace.Tracer }

var _ tasks.CallObserver = callSpans{}

func (c callSpans) StartCall(ctx context.Context, call *tasks.Call) context.Context {
	ctx, _ = c.tracer.Start(ctx, call.Module+"."+call.Function, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithTimestamp(call.Start),
		trace.WithAttributes(
			attribute.String("symphony.task", call.Task),
			attribute.String("symphony.call.module", call.Module),
			attribute.String("symphony.call.function", call.Function),
			attribute.String("symphony.call.target", call.Target),
		))
	return ctx
}

func (c callSpans) EndCall(ctx context.Context, call *tasks.Call) {
	span := trace.SpanFromContext(ctx)
	span.SetAttributes(attribute.String("symphony.call.result", call.Result))
	if call.Result != tasks.CallOK {
		msg := call.Result
		if call.Err != nil {
			msg += ": " + call.Err.Error()
		}
		span.SetStatus(codes.Error, msg)
	}
	span.End(trace.WithTimestamp(call.Start.Add(call.Took)))
}
