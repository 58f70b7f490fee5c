package broker

import (
	"testing"
	"time"

	"github.com/symphony-go/symphony/tasks"
)

func TestClaimStarts(t *testing.T) {
	t.Parallel()
	ms := int64(time.Millisecond)
	fifty := tasks.Rate{N: 50, Per: time.Second}  // one per 20 ms, tolerance 100 ms
	perMin := tasks.Rate{N: 20, Per: time.Minute} // one per 3 s, tolerance 6 s
	oneSec := tasks.Rate{N: 1, Per: time.Second}  // one per 1 s, tolerance 1 s
	now := int64(1_000_000) * ms
	for _, c := range []struct {
		name      string
		limit     tasks.Rate
		tat, now  int64
		want      int
		got       int
		tat2, nxt int64
	}{
		{"a new limit grants its tolerance at once", fifty, 0, now, 10, 5, now + 100*ms, 0},
		{"fewer asked, fewer granted", fifty, 0, now, 2, 2, now + 40*ms, 0},
		{"an idle limit earns no more than its tolerance", fifty, now - 10_000*ms, now, 100, 5, now + 100*ms, 0},
		{"at the pace: one interval of room", fifty, now + 80*ms, now, 10, 1, now + 100*ms, 0},
		{"full: none, and when the next fits", fifty, now + 100*ms, now, 3, 0, now + 100*ms, now + 20*ms},
		{"far ahead (another process claimed)", fifty, now + 190*ms, now, 1, 0, now + 190*ms, now + 110*ms},
		{"per minute: two at once", perMin, 0, now, 5, 2, now + 6000*ms, 0},
		{"per minute: the third waits a period's interval", perMin, now + 6000*ms, now, 1, 0, now + 6000*ms, now + 3000*ms},
		{"one a second: one at a time", oneSec, 0, now, 4, 1, now + 1000*ms, 0},
		{"one a second: the next in a second", oneSec, now + 1000*ms, now, 1, 0, now + 1000*ms, now + 1000*ms},
	} {
		got, tat, next := ClaimStarts(c.tat, c.now, c.limit, c.want)
		if got != c.got || tat != c.tat2 || next != c.nxt {
			t.Errorf("%s: ClaimStarts = %d, tat now%+dms, next now%+dms; want %d, now%+dms, now%+dms", c.name,
				got, (tat-now)/ms, (next-now)/ms, c.got, (c.tat2-now)/ms, (c.nxt-now)/ms)
		}
	}

	// Over any window, claims as fast as allowed stay within the bound:
	// (W + tolerance) / interval.
	tat, starts := int64(0), 0
	for t := now; t < now+10_000*ms; t += 7 * ms {
		got, next, _ := ClaimStarts(tat, t, fifty, 3)
		starts += got
		if got > 0 {
			tat = next
		}
	}
	if starts > 505 || starts < 495 {
		t.Errorf("%d starts in 10 s under 50/s claimed every 7 ms, want 495 to 505", starts)
	}
}
