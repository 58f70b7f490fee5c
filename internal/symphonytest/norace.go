//go:build !race

package symphonytest

const raceEnabled = false
