package brokertest

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/schedule"
)

// tickRecord is the record of a tick at sec seconds past the epoch.
func tickRecord(sec int) schedule.Record {
	return schedule.Record{Last: time.Unix(int64(sec), 0), Schedule: "every 1s"}
}

func (f *fixture) lead(b broker.Broker, name string) broker.Lead {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	l, err := b.Schedules().Lead(ctx, name)
	if err != nil {
		f.t.Fatalf("lead schedule %s: %v", name, err)
	}
	f.t.Cleanup(l.Release)
	return l
}

func record(t *testing.T, l broker.Lead) schedule.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	r, err := l.Record(ctx)
	if err != nil {
		t.Fatalf("read record: %v", err)
	}
	return r
}

func sameRecord(a, b schedule.Record) bool { return a.Last.Equal(b.Last) && a.Schedule == b.Schedule }

// A schedule's record moves only from the record it is, and the tick it
// fires is published with it: a swap from a stale record is refused and
// publishes nothing. A second process leads once the first lets go (at
// once on the embedded broker, where the record is the claim), and finds
// the record the first one left.
func testScheduleRecord(t *testing.T, f *fixture) {
	q := f.declare("ticks", "schedule.t")
	ctx := context.Background()
	a := f.lead(f.b, q)
	if r := record(t, a); !r.IsZero() {
		t.Fatalf("record of a new schedule = %+v, want none", r)
	}
	if err := a.Swap(ctx, schedule.Record{}, tickRecord(1), "", nil); err != nil {
		t.Fatalf("record a new schedule: %v", err)
	}
	if err := a.Swap(ctx, schedule.Record{}, tickRecord(2), "schedule.t", f.message("stale")); !errors.Is(err, broker.ErrTickTaken) {
		t.Fatalf("swap from a stale record: got %v, want ErrTickTaken", err)
	}
	if r := record(t, a); !sameRecord(r, tickRecord(1)) {
		t.Fatalf("record = %+v, want the tick at 1s", r)
	}
	if err := a.Swap(ctx, tickRecord(1), tickRecord(2), "schedule.t", f.message("tick 2")); err != nil {
		t.Fatalf("fire: %v", err)
	}
	if n := f.depth(q); n != 1 {
		t.Fatalf("after one tick fired the queue holds %d, want 1", n)
	}

	other, err := f.h.Open(f.env)
	if err != nil {
		t.Fatalf("open a second broker: %v", err)
	}
	defer other.Close()
	got := make(chan broker.Lead, 1)
	go func() {
		l, err := other.Schedules().Lead(context.Background(), q)
		if err != nil {
			t.Errorf("second lead: %v", err)
			close(got)
			return
		}
		got <- l
	}()
	// While both lead (the embedded broker), the record decides.
	select {
	case b := <-got:
		if err := b.Swap(ctx, tickRecord(1), tickRecord(2), "schedule.t", f.message("again")); !errors.Is(err, broker.ErrTickTaken) {
			t.Errorf("a second process fired tick 2 again: %v", err)
		}
		got <- b
	case <-time.After(time.Second):
	}
	a.Release()
	var b broker.Lead
	select {
	case b = <-got:
	case <-time.After(patience):
		t.Fatalf("the second process did not lead within %s of the first letting go", patience)
	}
	if b == nil {
		t.FailNow()
	}
	defer b.Release()
	if r := record(t, b); !sameRecord(r, tickRecord(2)) {
		t.Fatalf("the second process reads %+v, want the tick at 2s", r)
	}
	if err := b.Swap(ctx, tickRecord(2), tickRecord(3), "schedule.t", f.message("tick 3")); err != nil {
		t.Fatalf("fire from the second process: %v", err)
	}
	c := f.subscribe(q, broker.ConsumeOptions{Prefetch: 1})
	for _, want := range []string{"tick 2", "tick 3"} {
		m := c.next()
		if body(m) != want {
			t.Errorf("got %q, want %q", m.Payload, want)
		}
		ack(t, m)
	}
	c.close()
	if n := f.depth(q); n != 0 {
		t.Errorf("%d messages left, want none: a refused swap published", n)
	}
}

// A process killed while it leads loses nothing and fires nothing twice:
// the next leader finds the record it wrote last.
func testScheduleLeaderKilled(t *testing.T, f *fixture) {
	q := f.declare("ticks", "schedule.k")
	p := f.spawn(modeLead, map[string]string{envQueue: q, envKey: "schedule.k", envCount: "7"})
	if l := p.line(t); l != "fired" {
		t.Fatalf("child said %q", l)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	l := f.lead(f.b, q)
	if r := record(t, l); !sameRecord(r, tickRecord(7)) {
		t.Fatalf("after the leader was killed the record is %+v, want its tick at 7s", r)
	}
	if err := l.Swap(context.Background(), tickRecord(7), tickRecord(8), "", nil); err != nil {
		t.Fatalf("fire after the kill: %v", err)
	}
	if n := f.depth(q); n != 1 {
		t.Errorf("the queue holds %d ticks, want the killed leader's one", n)
	}
}
