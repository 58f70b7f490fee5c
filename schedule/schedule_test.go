package schedule

import (
	"strings"
	"testing"
	"time"
)

func mustParse(t *testing.T, expr string) Schedule {
	t.Helper()
	s, err := Parse(expr)
	if err != nil {
		t.Fatalf("Parse(%q): %v", expr, err)
	}
	return s
}

func TestParseRefuses(t *testing.T) {
	cases := []struct{ expr, want string }{
		{"", "the schedule is empty"},
		{"   ", "the schedule is empty"},
		{"*/5 * * *", `"*/5 * * *" is not a schedule: expected exactly 5 fields, found 4`},
		{"61 * * * *", "end of range (61) above maximum (59)"},
		{"* * * * * *", "expected exactly 5 fields, found 6"},
		{"@fortnightly", "unrecognized descriptor"},
		{"every", "is not a schedule"},
		{"every soon", `"soon" is not a duration`},
		{"every 500ms", "the period must be at least 1s"},
		{"every -5s", "the period must be at least 1s"},
		{"@every 0s", "the period must be at least 1s"},
		{"CRON_TZ=Europe/Paris", "must be followed by the schedule"},
		{"CRON_TZ=Mars/Olympus 0 3 * * *", "bad location Mars/Olympus"},
		{"0 0 30 2 *", "never fires"},
	}
	for _, c := range cases {
		_, err := Parse(c.expr)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", c.expr, err, c.want)
		}
	}
}

var (
	utc   = time.UTC
	paris = mustLoad("Europe/Paris")
)

func mustLoad(name string) *time.Location {
	l, err := time.LoadLocation(name)
	if err != nil {
		panic(err)
	}
	return l
}

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestNextAndPrev(t *testing.T) {
	cases := []struct {
		expr      string
		loc       *time.Location
		t         string
		next      string
		prev      string // latest tick <= t, after a day before t
		prevFound bool
	}{
		{"every 30s", utc, "2026-03-01T10:00:10Z", "2026-03-01T10:00:30Z", "2026-03-01T10:00:00Z", true},
		{"every 30s", utc, "2026-03-01T10:00:30Z", "2026-03-01T10:01:00Z", "2026-03-01T10:00:30Z", true},
		{"@every 1h", paris, "2026-03-01T10:20:00Z", "2026-03-01T11:00:00Z", "2026-03-01T10:00:00Z", true},
		{"*/5 * * * *", utc, "2026-03-01T10:07:59Z", "2026-03-01T10:10:00Z", "2026-03-01T10:05:00Z", true},
		{"*/5 * * * *", utc, "2026-03-01T10:05:00.5Z", "2026-03-01T10:10:00Z", "2026-03-01T10:05:00Z", true},
		{"@hourly", utc, "2026-03-01T10:00:00Z", "2026-03-01T11:00:00Z", "2026-03-01T10:00:00Z", true},
		// 03:00 in Paris is 02:00 UTC in winter.
		{"0 3 * * *", paris, "2026-03-01T01:00:00Z", "2026-03-01T02:00:00Z", "2026-02-28T02:00:00Z", true},
		{"CRON_TZ=Europe/Paris 0 3 * * *", utc, "2026-03-01T01:00:00Z", "2026-03-01T02:00:00Z", "2026-02-28T02:00:00Z", true},
		// Yearly: no tick in the day before.
		{"@yearly", utc, "2026-03-01T00:00:00Z", "2027-01-01T00:00:00Z", "", false},
	}
	for _, c := range cases {
		s := mustParse(t, c.expr)
		now := at(c.t)
		if got := s.Next(now, c.loc); !got.Equal(at(c.next)) {
			t.Errorf("%q in %s: Next(%s) = %s, want %s", c.expr, c.loc, c.t, got.UTC(), c.next)
		}
		p, ok := s.Prev(now, now.Add(-24*time.Hour), c.loc)
		if ok != c.prevFound || ok && !p.Equal(at(c.prev)) {
			t.Errorf("%q in %s: Prev(%s) = %s %v, want %s %v", c.expr, c.loc, c.t, p.UTC(), ok, c.prev, c.prevFound)
		}
	}
	// Prev of a yearly schedule looks back far enough.
	s := mustParse(t, "@yearly")
	if p, ok := s.Prev(at("2026-03-01T00:00:00Z"), at("2020-01-01T00:00:00Z"), utc); !ok || !p.Equal(at("2026-01-01T00:00:00Z")) {
		t.Errorf("yearly Prev = %s %v, want 2026-01-01", p, ok)
	}
}

func TestDecide(t *testing.T) {
	every := mustParse(t, "every 10s")
	cron5 := mustParse(t, "*/5 * * * *")
	id := every.Identity(utc)
	cases := []struct {
		name string
		s    Schedule
		rec  Record
		now  string
		want Step
	}{
		{"a new schedule starts now, without firing", every, Record{}, "2026-03-01T10:00:03Z",
			Step{Action: Restart, Tick: at("2026-03-01T10:00:10Z"), Record: Record{Last: at("2026-03-01T10:00:03Z"), Schedule: id}}},
		{"the tick is due", every, Record{Last: at("2026-03-01T10:00:00Z"), Schedule: id}, "2026-03-01T10:00:10.002Z",
			Step{Action: Fire, Tick: at("2026-03-01T10:00:10Z"), Record: Record{Last: at("2026-03-01T10:00:10Z"), Schedule: id}}},
		{"not yet", every, Record{Last: at("2026-03-01T10:00:10Z"), Schedule: id}, "2026-03-01T10:00:19.9Z",
			Step{Action: Wait, Tick: at("2026-03-01T10:00:20Z")}},
		{"the tick just fired is not fired again", every, Record{Last: at("2026-03-01T10:00:10Z"), Schedule: id}, "2026-03-01T10:00:10.5Z",
			Step{Action: Wait, Tick: at("2026-03-01T10:00:20Z")}},
		{"ticks missed while no daemon ran fire once, the latest", every, Record{Last: at("2026-03-01T09:00:00Z"), Schedule: id}, "2026-03-01T10:00:04Z",
			Step{Action: Fire, Tick: at("2026-03-01T10:00:00Z"), Record: Record{Last: at("2026-03-01T10:00:00Z"), Schedule: id}}},
		{"a record ahead of a slow clock is waited out", every, Record{Last: at("2026-03-01T10:05:00Z"), Schedule: id}, "2026-03-01T10:00:04Z",
			Step{Action: Wait, Tick: at("2026-03-01T10:05:10Z")}},
		{"a changed schedule restarts from now, no tick doubled", cron5, Record{Last: at("2026-03-01T10:05:00Z"), Schedule: id}, "2026-03-01T10:05:00.2Z",
			Step{Action: Restart, Tick: at("2026-03-01T10:10:00Z"), Record: Record{Last: at("2026-03-01T10:05:00.2Z"), Schedule: "*/5 * * * * in UTC"}}},
		{"a changed schedule keeps a record ahead of the clock", cron5, Record{Last: at("2026-03-01T10:06:00Z"), Schedule: id}, "2026-03-01T10:05:00Z",
			Step{Action: Restart, Tick: at("2026-03-01T10:10:00Z"), Record: Record{Last: at("2026-03-01T10:06:00Z"), Schedule: "*/5 * * * * in UTC"}}},
	}
	for _, c := range cases {
		got := Decide(c.s, utc, c.rec, at(c.now))
		if got.Action != c.want.Action || !got.Tick.Equal(c.want.Tick) || !got.Record.Last.Equal(c.want.Record.Last) || got.Record.Schedule != c.want.Record.Schedule {
			t.Errorf("%s: Decide = %v %s %+v, want %v %s %+v", c.name, got.Action, got.Tick.UTC(), got.Record, c.want.Action, c.want.Tick.UTC(), c.want.Record)
		}
	}
	// A time zone change is a new schedule for cron, not for "every".
	if got := Decide(cron5, paris, Record{Last: at("2026-03-01T10:05:00Z"), Schedule: cron5.Identity(utc)}, at("2026-03-01T10:06:00Z")); got.Action != Restart {
		t.Errorf("cron schedule in another zone: %v, want restart", got.Action)
	}
	if got := Decide(every, paris, Record{Last: at("2026-03-01T10:05:00Z"), Schedule: id}, at("2026-03-01T10:05:01Z")); got.Action != Wait {
		t.Errorf("every schedule in another zone: %v, want wait", got.Action)
	}
}

// Daemons that decide from the same record agree on the tick, whatever
// their clocks say within the period, and firing is a function of the
// record alone: replaying the decisions of three daemons whose clocks
// differ yields each tick once.
func TestDecideAcrossClocks(t *testing.T) {
	s := mustParse(t, "every 1s")
	id := s.Identity(utc)
	rec := Record{Last: at("2026-03-01T10:00:00Z"), Schedule: id}
	start := at("2026-03-01T10:00:00Z")
	skews := []time.Duration{0, 300 * time.Millisecond, -5 * time.Minute}
	fired := map[time.Time]int{}
	for ms := 0; ms < 30_000; ms += 50 {
		for _, skew := range skews {
			now := start.Add(time.Duration(ms)*time.Millisecond + skew)
			if st := Decide(s, utc, rec, now); st.Action == Fire {
				// The claim: a record that moved on refuses a stale tick.
				if st.Record.Last.After(rec.Last) {
					fired[st.Tick]++
					rec = st.Record
				}
			}
		}
	}
	for tick, n := range fired {
		if n != 1 {
			t.Errorf("tick %s fired %d times", tick, n)
		}
	}
	if len(fired) < 29 {
		t.Errorf("%d ticks fired in 30 s, want at least 29", len(fired))
	}
}
