package main

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// rates are the samples of one measure, in messages per second.
type rates []float64

func rateOf(n int, d time.Duration) float64 { return float64(n) / d.Seconds() }

func (r rates) median() float64 {
	if len(r) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(r))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (r rates) min() float64 { return slices.Min(r) }
func (r rates) max() float64 { return slices.Max(r) }

// cell is "median (min–max)", or the median alone for one sample.
func (r rates) cell() string {
	if len(r) == 0 {
		return "–"
	}
	if len(r) == 1 {
		return human(r.median())
	}
	return fmt.Sprintf("%s (%s–%s)", human(r.median()), human(r.min()), human(r.max()))
}

// human writes a rate with about three significant digits: 812, 1.52k,
// 48.3k, 153k.
func human(v float64) string {
	unit := ""
	switch {
	case v >= 999.5e3:
		v, unit = v/1e6, "M"
	case v >= 999.5:
		v, unit = v/1e3, "k"
	}
	switch {
	case unit == "" || v >= 99.95:
		return fmt.Sprintf("%.0f%s", v, unit)
	case v >= 9.995:
		return fmt.Sprintf("%.1f%s", v, unit)
	default:
		return fmt.Sprintf("%.2f%s", v, unit)
	}
}

// ratio is a/b as "12.3×".
func ratio(a, b float64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f×", a/b)
}

// table renders rows as aligned text columns (markdown=false) or as a
// markdown table.
func table(header []string, rows [][]string, markdown bool) string {
	var b strings.Builder
	if markdown {
		b.WriteString("| " + strings.Join(header, " | ") + " |\n|")
		for range header {
			b.WriteString(" --- |")
		}
		b.WriteString("\n")
		for _, r := range rows {
			b.WriteString("| " + strings.Join(r, " | ") + " |\n")
		}
		return b.String()
	}
	width := make([]int, len(header))
	for i, h := range header {
		width[i] = len([]rune(h))
	}
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	line := func(r []string) {
		for i, c := range r {
			if i > 0 {
				b.WriteString("  ")
			}
			b.WriteString(c + strings.Repeat(" ", width[i]-len([]rune(c))))
		}
		b.WriteString("\n")
	}
	line(header)
	for _, r := range rows {
		line(r)
	}
	return b.String()
}
