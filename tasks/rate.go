package tasks

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Rate is a task's rate_limit: at most N message starts per Per.
type Rate struct {
	N   int
	Per time.Duration
}

// rateUnits are the periods a rate limit may be given in.
var rateUnits = map[string]time.Duration{"s": time.Second, "m": time.Minute, "h": time.Hour}

// MaxRate bounds N: a start every microsecond is far beyond what a
// task's pool does, and a larger N is a typo.
const MaxRate = 1_000_000

// ParseRate reads a rate limit such as "100/s", "20/m" or "5/h".
func ParseRate(s string) (Rate, error) {
	num, unit, ok := strings.Cut(strings.TrimSpace(s), "/")
	per, known := rateUnits[strings.TrimSpace(unit)]
	if !ok || !known {
		return Rate{}, fmt.Errorf("%q is not a rate limit: write starts per period, such as \"100/s\", \"20/m\" or \"5/h\"", s)
	}
	n, err := strconv.Atoi(strings.TrimSpace(num))
	switch {
	case err != nil:
		return Rate{}, fmt.Errorf("%q is not a rate limit: %q is not a whole number of starts (write \"100/s\", \"20/m\" or \"5/h\")", s, num)
	case n < 1:
		return Rate{}, fmt.Errorf("%q allows no starts at all: the count must be at least 1 (to stop a task, remove it or set max_workers)", s)
	case n > MaxRate:
		return Rate{}, fmt.Errorf("%q is more than %d starts per period", s, MaxRate)
	}
	return Rate{N: n, Per: per}, nil
}

// IsZero reports no limit.
func (r Rate) IsZero() bool { return r.N == 0 }

// Interval is the time one start takes of the period.
func (r Rate) Interval() time.Duration { return r.Per / time.Duration(r.N) }

// PerSecond is the limit as starts per second.
func (r Rate) PerSecond() float64 { return float64(r.N) / r.Per.Seconds() }

// String is the limit as a task file writes it; "" for none.
func (r Rate) String() string {
	if r.IsZero() {
		return ""
	}
	for u, d := range rateUnits {
		if d == r.Per {
			return strconv.Itoa(r.N) + "/" + u
		}
	}
	return strconv.Itoa(r.N) + "/" + r.Per.String()
}
