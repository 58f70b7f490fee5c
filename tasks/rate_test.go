package tasks

import (
	"testing"
	"time"
)

func TestParseRate(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in   string
		want Rate
		text string
	}{
		{"100/s", Rate{100, time.Second}, "100/s"},
		{" 20 / m ", Rate{20, time.Minute}, "20/m"},
		{"5/h", Rate{5, time.Hour}, "5/h"},
	} {
		r, err := ParseRate(c.in)
		if err != nil || r != c.want || r.String() != c.text {
			t.Errorf("ParseRate(%q) = %+v (%q), %v; want %+v (%q)", c.in, r, r.String(), err, c.want, c.text)
		}
	}
	for _, bad := range []string{"", "0/s", "-1/s", "fast", "10", "10/", "/s", "1.5/s", "10/d", "10/sec", "2000000/s"} {
		if r, err := ParseRate(bad); err == nil {
			t.Errorf("ParseRate(%q) = %+v, want an error", bad, r)
		}
	}
	if got := (Rate{50, time.Second}).Interval(); got != 20*time.Millisecond {
		t.Errorf("interval of 50/s = %s", got)
	}
}
