package cli_test

import (
	"database/sql"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	_ "modernc.org/sqlite"

	"github.com/symphony-go/symphony/internal/symphonytest"
)

// ids reads the ids stored in an SQLite file of the test's.
func ids(t *testing.T, path string) []int {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query("SELECT id FROM t ORDER BY id")
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer rows.Close()
	var out []int
	for rows.Next() {
		var id int
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		out = append(out, id)
	}
	return out
}

// A reload that changes a database's URL sends the task's statements to
// the new database; the databases of symphony.star are those the daemon
// opens, relative paths beside it.
func TestReloadMovesADatabase(t *testing.T) {
	t.Parallel()
	env := symphonytest.NewEnv(t)
	star := func(moved string) string {
		return `config(databases = {"keep": "sqlite:keep.db", "moved": "sqlite:` + moved + `"})` + "\n"
	}
	dir := writeTasks(t, map[string]string{
		"symphony.star": star("a.db"),
		"s.star": `
def work(payload, meta):
    for db in ["keep", "moved"]:
        sql.exec(db, "CREATE TABLE IF NOT EXISTS t (id INTEGER)")
        sql.exec(db, "INSERT INTO t VALUES ($1)", [payload["id"]])
    log.info("stored", id = payload["id"])
task(name = "s", subscribe_to = ["s.#"], work = work, allow = ["sql"], databases = ["keep", "moved"])
`,
	})
	d := env.Start("--no-watch", dir)
	env.MustRun("", "publish", "s.x", `{"id": 1}`)
	d.WaitFor("stored", map[string]string{"id": "1"})
	write(t, filepath.Join(dir, "symphony.star"), star("b.db"))
	d.Signal(syscall.SIGHUP)
	d.WaitFor("reloaded", map[string]string{"trigger": "SIGHUP"})
	env.MustRun("", "publish", "s.x", `{"id": 2}`)
	d.WaitFor("stored", map[string]string{"id": "2"})
	d.Stop()
	for file, want := range map[string][]int{"keep.db": {1, 2}, "a.db": {1}, "b.db": {2}} {
		if got := ids(t, filepath.Join(dir, file)); !slices.Equal(got, want) {
			t.Errorf("%s holds %v, want %v", file, got, want)
		}
	}
}

// A worker process reaches the daemon's databases: a relative sqlite:
// path is beside the daemon's symphony.star, not beside the snapshot of
// the task files the worker loads.
func TestProcessWorkerDatabases(t *testing.T) {
	t.Parallel()
	symphonytest.NeedsWorkerProcesses(t)
	env := symphonytest.NewEnv(t)
	dir := writeTasks(t, map[string]string{
		"symphony.star": `config(databases = {"main": "sqlite:main.db"})` + "\n",
		"p.star": `
def work(payload, meta):
    sql.exec("main", "CREATE TABLE IF NOT EXISTS t (id INTEGER)")
    sql.exec("main", "INSERT INTO t VALUES ($1)", [payload["id"]])
    log.info("stored", id = payload["id"])
task(name = "p", subscribe_to = ["p.#"], work = work, allow = ["sql"], databases = ["main"], isolation = "process")
`,
	})
	d := env.Start(dir)
	env.MustRun("", "publish", "p.x", `{"id": 7}`)
	d.WaitFor("stored", map[string]string{"id": "7"})
	d.Stop()
	if got := ids(t, filepath.Join(dir, "main.db")); !slices.Equal(got, []int{7}) {
		t.Errorf("main.db holds %v, want [7]", got)
	}
}
