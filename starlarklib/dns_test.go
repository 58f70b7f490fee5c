package starlarklib

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/symphony-go/symphony/tasks"
)

// lyingDNS is a DNS server on loopback that answers every A question with
// 127.0.0.1 and every other question with no answer: a public name whose
// owner points it at the daemon's own machine. It returns the resolver
// that asks it, and counts the A questions it answered.
func lyingDNS(t *testing.T) (*net.Resolver, *atomic.Int32) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	answered := &atomic.Int32{}
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if resp := lyingAnswer(buf[:n]); resp != nil {
				if binary.BigEndian.Uint16(resp[6:8]) == 1 {
					answered.Add(1)
				}
				pc.WriteTo(resp, from)
			}
		}
	}()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", pc.LocalAddr().String())
	}}, answered
}

// lyingAnswer answers one query (RFC 1035 §4.1): its header and question
// echoed, and for type A one record, 127.0.0.1.
func lyingAnswer(q []byte) []byte {
	if len(q) < 12 || binary.BigEndian.Uint16(q[4:6]) != 1 {
		return nil
	}
	end := 12
	for end < len(q) && q[end] != 0 {
		end += int(q[end]) + 1
	}
	end += 5 // the root label, QTYPE, QCLASS
	if end > len(q) {
		return nil
	}
	qtype := binary.BigEndian.Uint16(q[end-4 : end-2])
	resp := append([]byte{}, q[:end]...)
	resp[2] = 0x84 | q[2]&0x01 // a response, authoritative, RD copied
	resp[3] = 0x00             // no error
	binary.BigEndian.PutUint16(resp[8:10], 0)
	binary.BigEndian.PutUint16(resp[10:12], 0)
	if qtype != 1 {
		binary.BigEndian.PutUint16(resp[6:8], 0)
		return resp
	}
	binary.BigEndian.PutUint16(resp[6:8], 1)
	// The name by pointer to the question's, type A, class IN, TTL 60,
	// four bytes of address.
	return append(resp, 0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1)
}

// A public name that resolves to 127.0.0.1 is refused when it is dialled:
// the check is of the address, after DNS, not of the name.
func TestHTTPNameResolvingToLoopbackIsRefused(t *testing.T) {
	hits := atomic.Int32{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprint(w, "inside")
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(hostOf(srv))
	resolver, answered := lyingDNS(t)
	calls := &callLog{}
	w := NewWorld(WorldConfig{Resolver: resolver})
	w.Calls = calls
	url := "http://hooks.example.com:" + port + "/in"

	r := request(t, httpTask(t, "", w), context.Background(), map[string]any{"url": url})
	want := `hooks.example.com is 127.0.0.1, a private, loopback or link-local address: list "hooks.example.com" in allow_hosts to allow it`
	if r.Verdict != tasks.Failed || !strings.Contains(r.Err.Error(), want) {
		t.Fatalf("verdict %s, error %v\nwant %s", r.Verdict, r.Err, want)
	}
	if got := calls.results(); len(got) != 1 || got[0] != "http.request hooks.example.com refused" {
		t.Errorf("calls %v", got)
	}
	if answered.Load() == 0 {
		t.Error("the test's DNS server was never asked: the refusal did not come from its answer")
	}
	if hits.Load() != 0 {
		t.Errorf("the server was called %d times", hits.Load())
	}
	// Listed by name, the same answer is taken: the server is reached
	// through it.
	listed := httpTask(t, `, allow_hosts = ["hooks.example.com"]`, w)
	if got := publishedJSON(t, request(t, listed, context.Background(), map[string]any{"url": url})); got["text"] != "inside" {
		t.Errorf("listed: %v", got)
	}
}
