// Command symphony runs background work: Starlark tasks subscribed to
// routing keys on a topic exchange, consumed from an embedded SQLite broker
// or from RabbitMQ.
package main

import (
	"os"
	// Schedules name time zones; a machine without the tz database (a
	// scratch container, Windows) still knows them.
	_ "time/tzdata"

	"github.com/symphony-go/symphony/cli"
)

func main() {
	os.Exit(cli.Main(os.Args, os.Stdin, os.Stdout, os.Stderr))
}
