// Package reliability holds the fault tests behind RELIABILITY.md: each
// runs the real symphony binary against real brokers, does something bad
// to it (a full disk, a database file removed under it, a killed process,
// a cut or silent network, a cluster node killed), and counts what became
// of every message. The package has no code of its own; its tests are the
// commands that reproduce the table's rows.
//
// CI runs every test in a short form. SYMPHONY_RELIABILITY_FULL=1 runs the
// full form (more messages, more rounds, the whole cluster scenario), as
// RELIABILITY.md says for each row.
package reliability
