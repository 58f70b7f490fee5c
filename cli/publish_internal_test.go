package cli

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestPublishDelay(t *testing.T) {
	t.Parallel()
	loc := time.FixedZone("here", 2*3600)
	now := time.Date(2026, 5, 1, 8, 30, 0, 0, loc)
	for _, c := range []struct {
		delay, at string
		want      time.Duration
		err       string
	}{
		{"", "", 0, ""},
		{"30s", "", 30 * time.Second, ""},
		{"1.5", "", 1500 * time.Millisecond, ""},
		{"-1s", "", 0, "negative"},
		{"soon", "", 0, "not a duration"},
		{"", "2026-05-01T09:00:00+02:00", 30 * time.Minute, ""},
		{"", "2026-05-01T07:00:00Z", 30 * time.Minute, ""},
		{"", "2026-05-01 09:00", 30 * time.Minute, ""},
		{"", "2026-05-02T08:30:00", 24 * time.Hour, ""},
		{"", "09:15", 45 * time.Minute, ""},
		{"", "09:15:30", 45*time.Minute + 30*time.Second, ""},
		{"", "08:00", 0, "in the past"},
		{"", "2026-04-30 10:00", 0, "in the past"},
		{"", "tomorrow", 0, "not a time"},
		{"30s", "09:00", 0, "not both"},
	} {
		got, err := publishDelay(c.delay, c.at, now)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) || !errors.As(err, new(usageError)) {
				t.Errorf("--delay %q --at %q: %v, want a usage error saying %q", c.delay, c.at, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("--delay %q --at %q = %s, %v; want %s", c.delay, c.at, got, err, c.want)
		}
	}
}
