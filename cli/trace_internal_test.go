package cli

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/symphony-go/symphony/tasks"
)

type countCalls struct{ started, ended int }

func (c *countCalls) StartCall(ctx context.Context, _ *tasks.Call) context.Context {
	c.started++
	return ctx
}
func (c *countCalls) EndCall(context.Context, *tasks.Call) { c.ended++ }

// Without an OTLP endpoint a capability call makes no span (it would go
// nowhere, and a recording span per call costs); it runs in its
// delivery's. With one, it is a span of its own under the delivery's.
func TestCallSpansOnlyWithAnEndpoint(t *testing.T) {
	for _, endpoint := range []string{"", "http://127.0.0.1:1"} {
		tr, err := newTracing(endpoint, "test", nil, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		ctx, delivery := tr.Tracer().Start(context.Background(), "process t")
		count := &countCalls{}
		obs := callObservers(count, endpoint, tr)
		c := &tasks.Call{Task: "t", Module: "http", Function: "get", Start: time.Now()}
		callCtx := obs.StartCall(ctx, c)
		span := trace.SpanFromContext(callCtx)
		c.Result = tasks.CallOK
		obs.EndCall(callCtx, c)
		if count.started != 1 || count.ended != 1 {
			t.Errorf("endpoint %q: the call was counted %d/%d times", endpoint, count.started, count.ended)
		}
		if endpoint == "" && span != delivery {
			t.Errorf("no endpoint: the call made a span of its own")
		}
		if endpoint != "" && (span == delivery || span.SpanContext().TraceID() != delivery.SpanContext().TraceID()) {
			t.Errorf("endpoint: the call's span %v is not a child of the delivery's %v", span.SpanContext(), delivery.SpanContext())
		}
		delivery.End()
		shut, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = tr.Shutdown(shut)
		cancel()
	}
}
