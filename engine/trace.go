package engine

import (
	"context"
	"maps"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/symphony-go/symphony/tasks"
)

// traceContext reads and writes the W3C trace context (traceparent,
// tracestate) of message headers.
var traceContext = propagation.TraceContext{}

// headerCarrier is a message's headers as a propagation carrier.
type headerCarrier map[string]any

func (c headerCarrier) Get(key string) string {
	s, _ := c[key].(string)
	return s
}

func (c headerCarrier) Set(key, value string) { c[key] = value }

func (c headerCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// defaultTracer makes spans that go nowhere and carry no new ids, for an
// engine given no tracer.
var defaultTracer = noop.NewTracerProvider().Tracer("")

// startSpan starts a delivery's span under the trace context its message
// carries, if any.
func (r *runner) startSpan(ctx context.Context, d *tasks.Delivery) (context.Context, trace.Span) {
	tracer := r.tracer
	if tracer == nil {
		tracer = defaultTracer
	}
	spec := r.task.Spec
	if d.Headers != nil {
		ctx = traceContext.Extract(ctx, headerCarrier(d.Headers))
	}
	return tracer.Start(ctx, "process "+spec.Name, trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("symphony.task", spec.Name),
			attribute.Int("symphony.attempt", d.Attempt),
			attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.destination.name", spec.Queue),
			attribute.String("messaging.rabbitmq.destination.routing_key", d.RoutingKey),
			attribute.String("messaging.message.id", d.MessageID),
		))
}

// endSpan records a delivery's outcome on its span and ends it.
func endSpan(span trace.Span, out tasks.Outcome) {
	if !span.IsRecording() {
		span.End()
		return
	}
	span.SetAttributes(attribute.String("symphony.outcome", out.Action.String()))
	if out.Reason != "" {
		span.SetAttributes(attribute.String("symphony.reason", out.Reason))
	}
	switch out.Action {
	case tasks.Dead:
		span.SetStatus(codes.Error, out.Reason+": "+lastLine(out.Error))
	case tasks.Retry:
		span.SetStatus(codes.Error, "retry: "+out.Reason)
	case tasks.Release:
		span.SetStatus(codes.Error, "returned to the queue: "+out.Reason)
	}
	span.End()
}

// withTrace returns a publication's headers with the trace context of
// ctx: the message it publishes continues the delivery's trace.
func withTrace(ctx context.Context, headers map[string]any) map[string]any {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return headers
	}
	out := make(map[string]any, len(headers)+2)
	maps.Copy(out, headers)
	traceContext.Inject(ctx, headerCarrier(out))
	return out
}

func lastLine(s string) string {
	for i := len(s) - 1; i > 0; i-- {
		if s[i] == '\n' && i < len(s)-1 {
			return s[i+1:]
		}
	}
	return s
}
