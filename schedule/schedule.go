// Package schedule reads a task's schedule ("*/5 * * * *", "@hourly",
// "every 30s") and decides, from the record of the last tick fired and the
// clock, what a daemon does next: record a new schedule, fire a tick, or
// wait. The decisions are pure functions of their arguments, so that every
// daemon sharing a broker reaches the same answer from the same record,
// and the broker's claim of the record (broker.Schedules) alone decides
// which daemon fires.
package schedule

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// MinEvery is the shortest "every" schedule: each tick is a claim on the
// broker, and finer ticks are better served by a task that loops.
const MinEvery = time.Second

// Schedule is a parsed schedule expression.
type Schedule struct {
	expr string
	// every is the period of "every D" (and "@every D"); ticks fall on
	// multiples of it since the Unix epoch, whatever the time zone, so
	// that every daemon agrees on them.
	every time.Duration
	cron  cron.Schedule
}

// parser takes the five standard fields and the descriptors (@hourly,
// @daily, ...), with an optional CRON_TZ= prefix.
var parser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Parse reads expr: a cron expression of five fields (minute hour
// day-of-month month day-of-week), a descriptor such as "@hourly", either
// optionally prefixed with "CRON_TZ=Zone ", or "every D" with a Go
// duration D of at least a second.
func Parse(expr string) (Schedule, error) {
	s := strings.TrimSpace(expr)
	if s == "" {
		return Schedule{}, errors.New(`the schedule is empty: give a cron expression such as "*/5 * * * *", a descriptor such as "@hourly", or "every 30s"`)
	}
	if rest, ok := cutEvery(s); ok {
		d, err := time.ParseDuration(strings.TrimSpace(rest))
		switch {
		case err != nil:
			return Schedule{}, fmt.Errorf("%q: %q is not a duration such as 30s or 1h30m", expr, strings.TrimSpace(rest))
		case d < MinEvery:
			return Schedule{}, fmt.Errorf("%q: the period must be at least %s", expr, MinEvery)
		}
		return Schedule{expr: s, every: d}, nil
	}
	for _, p := range []string{"CRON_TZ=", "TZ="} {
		// The parser slices up to the first space and panics without one.
		if strings.HasPrefix(s, p) && !strings.Contains(s, " ") {
			return Schedule{}, fmt.Errorf("%q: %s names a time zone and must be followed by the schedule, as in \"CRON_TZ=Europe/Paris 0 3 * * *\"", expr, p)
		}
	}
	c, err := parser.Parse(s)
	if err != nil {
		return Schedule{}, fmt.Errorf("%q is not a schedule: %s; write five fields (minute hour day-of-month month day-of-week) such as \"*/5 * * * *\", a descriptor such as \"@hourly\", or \"every 30s\"",
			expr, err)
	}
	if c.Next(time.Now()).IsZero() {
		return Schedule{}, fmt.Errorf("%q never fires (no such date in the next five years)", expr)
	}
	return Schedule{expr: s, cron: c}, nil
}

// cutEvery recognises "every D" and "@every D".
func cutEvery(s string) (string, bool) {
	for _, p := range []string{"every ", "@every "} {
		if rest, ok := strings.CutPrefix(s, p); ok {
			return rest, true
		}
	}
	return "", false
}

// String is the expression as given, trimmed.
func (s Schedule) String() string { return s.expr }

// Identity names the ticks the schedule makes in loc: two schedules with
// the same identity tick at the same instants. A record kept under
// another identity belongs to another schedule.
func (s Schedule) Identity(loc *time.Location) string {
	if s.every > 0 || strings.HasPrefix(s.expr, "CRON_TZ=") || strings.HasPrefix(s.expr, "TZ=") {
		return s.expr
	}
	return s.expr + " in " + loc.String()
}

// Next is the first tick strictly after t, in loc (the zone of cron
// schedules without CRON_TZ=).
func (s Schedule) Next(t time.Time, loc *time.Location) time.Time {
	if s.every > 0 {
		return time.Unix(0, (floorDiv(t.UnixNano(), int64(s.every))+1)*int64(s.every)).In(loc)
	}
	// Cron resolves to the second: a tick is never a fraction in.
	return s.cron.Next(t.In(loc))
}

// windows are how far back Prev looks for a cron schedule's tick, in
// turn: the first that holds one ends the search, so a frequent schedule
// costs a few steps and a rare one a few hundred.
var windows = []time.Duration{time.Minute, time.Hour, 24 * time.Hour, 32 * 24 * time.Hour, 400 * 24 * time.Hour}

// Prev is the latest tick in (after, t], if there is one. A cron schedule
// looks back at most 400 days.
func (s Schedule) Prev(t, after time.Time, loc *time.Location) (time.Time, bool) {
	if !t.After(after) {
		return time.Time{}, false
	}
	if s.every > 0 {
		p := time.Unix(0, floorDiv(t.UnixNano(), int64(s.every))*int64(s.every)).In(loc)
		return p, p.After(after)
	}
	for _, w := range windows {
		from := t.Add(-w)
		if from.Before(after) {
			from = after
		}
		var last time.Time
		for n := s.Next(from, loc); !n.IsZero() && !n.After(t); n = s.Next(n, loc) {
			last = n
		}
		if !last.IsZero() {
			return last, true
		}
		if !from.After(after) {
			break
		}
	}
	return time.Time{}, false
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// Record is what the broker keeps of a schedule: the last tick fired, and
// the identity of the schedule it was fired under. The zero Record means
// that no daemon ever ran the schedule.
type Record struct {
	Last     time.Time `json:"last"`
	Schedule string    `json:"schedule"`
}

// IsZero reports the record of a schedule that never ran.
func (r Record) IsZero() bool { return r.Last.IsZero() && r.Schedule == "" }

// Action is what a daemon does next.
type Action int

const (
	// Restart: the record is of no schedule, or of another (the task is
	// new, or its schedule or time zone changed): record the new one as
	// having fired now, so that it fires from its next tick on and no tick
	// of the old one fires again.
	Restart Action = iota
	// Fire the tick Step.Tick and record it.
	Fire
	// Wait until Step.Tick, then decide again.
	Wait
)

func (a Action) String() string {
	switch a {
	case Restart:
		return "restart"
	case Fire:
		return "fire"
	case Wait:
		return "wait"
	}
	return "unknown"
}

// Step is a decision.
type Step struct {
	Action Action
	// Tick is the tick to fire (Fire) or the next one due (Wait, Restart).
	Tick time.Time
	// Record is the record after the step (Restart, Fire).
	Record Record
}

// Decide is what a daemon that may fire s (in loc) does when the record
// says rec and its clock says now. Ticks missed while no daemon ran fire
// once, as the latest of them: a daemon down for a day does not fire a
// day of ticks. A record ahead of the clock (a daemon whose clock is
// ahead fired it) is waited out, never fired again.
func Decide(s Schedule, loc *time.Location, rec Record, now time.Time) Step {
	id := s.Identity(loc)
	if rec.Schedule != id {
		last := now
		if rec.Last.After(last) {
			last = rec.Last
		}
		return Step{Action: Restart, Tick: s.Next(last, loc), Record: Record{Last: last, Schedule: id}}
	}
	if p, ok := s.Prev(now, rec.Last, loc); ok {
		return Step{Action: Fire, Tick: p, Record: Record{Last: p, Schedule: id}}
	}
	next := s.Next(rec.Last, loc)
	if !next.After(now) {
		// A tick older than Prev looks back: wait for the next one.
		next = s.Next(now, loc)
	}
	return Step{Action: Wait, Tick: next}
}
