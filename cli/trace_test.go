package cli_test

import (
	"compress/gzip"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	collector "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/symphony-go/symphony/internal/symphonytest"
)

// receiver is an OTLP/HTTP trace receiver: it decodes each export request
// as a collector would and keeps the spans.
type receiver struct {
	t   *testing.T
	url string

	mu      sync.Mutex
	spans   []*tracepb.Span
	changed chan struct{}
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{t: t, changed: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != "/v1/traces" || req.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "not an OTLP/HTTP protobuf trace export", http.StatusBadRequest)
			return
		}
		var body io.Reader = req.Body
		if req.Header.Get("Content-Encoding") == "gzip" {
			gz, err := gzip.NewReader(req.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = gz
		}
		b, err := io.ReadAll(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var export collector.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &export); err != nil {
			t.Errorf("receiver: %v", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		for _, rs := range export.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				r.spans = append(r.spans, ss.Spans...)
			}
		}
		close(r.changed)
		r.changed = make(chan struct{})
		r.mu.Unlock()
		out, _ := proto.Marshal(&collector.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(out)
	}))
	t.Cleanup(srv.Close)
	r.url = srv.URL
	return r
}

// span waits for a span whose attributes include want.
func (r *receiver) span(want map[string]string) *tracepb.Span {
	r.t.Helper()
	for {
		r.mu.Lock()
		changed := r.changed
		for _, s := range r.spans {
			if spanHas(s, want) {
				r.mu.Unlock()
				return s
			}
		}
		r.mu.Unlock()
		select {
		case <-changed:
		case <-time.After(symphonytest.Wait):
			r.t.Fatalf("no span with %v", want)
		}
	}
}

func spanHas(s *tracepb.Span, want map[string]string) bool {
	got := map[string]string{}
	for _, kv := range s.Attributes {
		switch v := kv.Value.Value.(type) {
		case *commonpb.AnyValue_StringValue:
			got[kv.Key] = v.StringValue
		case *commonpb.AnyValue_IntValue:
			got[kv.Key] = strconv.FormatInt(v.IntValue, 10)
		}
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

const pipelineFirst = `
def work(payload, meta):
    log.info("first ran", id = payload["id"])
    publish("second.go", {"id": payload["id"]})
    return True

task(name = "first", subscribe_to = ["first.#"], work = work)
`

// firstCalling is the first task calling an HTTP server on the way.
func firstCalling(url, host string) string {
	return strings.Replace(strings.Replace(pipelineFirst, `    return True`, `    http.get("`+url+`")
    return True`, 1), `work = work)`, `work = work, allow = ["http"], allow_hosts = ["`+host+`"])`, 1)
}

const pipelineSecond = `
def work(payload, meta):
    log.info("second ran", id = payload["id"], traceparent = meta.headers.get("traceparent", ""))
    return True

task(name = "second", subscribe_to = ["second.#"], work = work, isolation = "process")
`

// TestTracing runs a two-task pipeline (the second task in worker
// processes) with an OTLP receiver: each delivery is a span, the first
// the child of the traceparent the message came with, the second the
// child of the first; the log lines of each delivery name its trace and
// span.
func TestTracing(t *testing.T) {
	t.Parallel()
	recv := newReceiver(t)
	env := symphonytest.NewEnv(t)
	dir := t.TempDir()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) }))
	t.Cleanup(api.Close)
	write(t, filepath.Join(dir, "first.star"), firstCalling(api.URL+"/ping", strings.TrimPrefix(api.URL, "http://")))
	write(t, filepath.Join(dir, "second.star"), pipelineSecond)
	d := env.Start("--otlp-endpoint", recv.url, dir)

	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	env.MustRun("", "publish", "--header", "traceparent=00-"+traceID+"-"+parentID+"-01", "first.go", `{"id": 1}`)
	first := recv.span(map[string]string{"symphony.task": "first", "symphony.outcome": "ack"})
	second := recv.span(map[string]string{"symphony.task": "second", "symphony.outcome": "ack"})
	if got := hex.EncodeToString(first.TraceId); got != traceID {
		t.Errorf("first's trace %s, want the message's %s", got, traceID)
	}
	if got := hex.EncodeToString(first.ParentSpanId); got != parentID {
		t.Errorf("first's parent %s, want the message's %s", got, parentID)
	}
	if got := hex.EncodeToString(second.TraceId); got != traceID {
		t.Errorf("second's trace %s, want %s", got, traceID)
	}
	if got, want := hex.EncodeToString(second.ParentSpanId), hex.EncodeToString(first.SpanId); got != want {
		t.Errorf("second's parent %s, want first's span %s", got, want)
	}
	if !spanHas(first, map[string]string{"messaging.rabbitmq.destination.routing_key": "first.go", "symphony.attempt": "1"}) ||
		first.Kind != tracepb.Span_SPAN_KIND_CONSUMER || first.Name != "process first" {
		t.Errorf("first span: %v", first)
	}

	// The capability call is a span of its own, the child of the
	// delivery's.
	call := recv.span(map[string]string{"symphony.call.module": "http", "symphony.call.function": "get", "symphony.call.result": "ok"})
	if hex.EncodeToString(call.ParentSpanId) != hex.EncodeToString(first.SpanId) || call.Name != "http.get" ||
		!spanHas(call, map[string]string{"symphony.task": "first"}) {
		t.Errorf("the http call's span: %v", call)
	}

	// The log lines of each delivery, the task's own included, name its
	// span; the second task saw the traceparent first published with.
	ran := d.WaitFor("first ran", map[string]string{"trace_id": traceID})
	if ran.Str("span_id") != hex.EncodeToString(first.SpanId) {
		t.Errorf("first's log line: %v", ran)
	}
	acked := d.WaitFor("message acked", map[string]string{"task": "first"})
	if acked.Str("trace_id") != traceID || acked.Str("span_id") != hex.EncodeToString(first.SpanId) {
		t.Errorf("first's outcome line: %v", acked)
	}
	ran = d.WaitFor("second ran", map[string]string{"trace_id": traceID})
	if ran.Str("span_id") != hex.EncodeToString(second.SpanId) ||
		ran.Str("traceparent") != "00-"+traceID+"-"+hex.EncodeToString(first.SpanId)+"-01" {
		t.Errorf("second's log line: %v", ran)
	}

	// A message without a traceparent starts a trace.
	env.MustRun("", "publish", "first.go", `{"id": 2}`)
	ran = d.WaitFor("first ran", map[string]string{"id": "2"})
	newTrace := ran.Str("trace_id")
	if len(newTrace) != 32 || newTrace == traceID {
		t.Fatalf("a message without a traceparent ran in trace %q", newTrace)
	}
	root := recv.span(map[string]string{"symphony.task": "first", "messaging.message.id": publishedIDOf(t, d, "2")})
	if len(root.ParentSpanId) != 0 || hex.EncodeToString(root.TraceId) != newTrace {
		t.Errorf("the new trace's first span: parent %x, trace %x", root.ParentSpanId, root.TraceId)
	}
	d.Stop()
}

// publishedIDOf is the message id of the first delivery whose "first ran"
// line has the id.
func publishedIDOf(t *testing.T, d *symphonytest.Daemon, id string) string {
	t.Helper()
	return d.WaitFor("first ran", map[string]string{"id": id}).Str("message_id")
}

// TestTracingEndpointDown: with the OTLP endpoint down, deliveries carry
// on and the spans are dropped and counted.
func TestTracingEndpointDown(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now
	env := symphonytest.NewEnv(t)
	dir := t.TempDir()
	write(t, filepath.Join(dir, "first.star"), strings.Replace(pipelineFirst, `publish("second.go", {"id": payload["id"]})`, "", 1))
	d := env.Start("--otlp-endpoint", down, dir)
	for _, id := range []string{"1", "2", "3"} {
		env.MustRun("", "publish", "first.go", `{"id": `+id+`}`)
		d.WaitFor("message acked", map[string]string{"task": "first"})
	}
	symphonytest.Until(t, "the dropped spans are counted", func() bool {
		v := metric(t, d, "symphony_spans_dropped_total")
		return v != "" && v != "0"
	}, d)
	d.Stop()
}
