package starlarklib

import (
	"context"
	"database/sql"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/symphony-go/symphony/internal/symphonytest"
	"github.com/symphony-go/symphony/tasks"
)

// sqlWorld is a World whose database "db" is url, closed when the test
// ends.
func sqlWorld(t *testing.T, url string) (*World, *DatabasePools) {
	t.Helper()
	d, err := ParseDatabaseURL(url, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w := NewWorld(WorldConfig{})
	pools := NewDatabasePools(w.Redactor)
	pools.Set(map[string]DatabaseURL{"db": d})
	t.Cleanup(func() { pools.Close() })
	w.SQL = pools
	return w, pools
}

const sqlGrant = `, allow = ["sql"], databases = ["db"]`

// sqlDialect is what differs between the databases in the tests: the table
// definition of every type, the placeholders, and what a bool is read as.
type sqlDialect struct {
	name   string
	url    func(t testing.TB) string
	create string // columns i, f, s, b, ok, n, at, j, d
	params string // 9 placeholders
	bool   string // what True reads back as
}

var sqlDialects = []sqlDialect{
	{"postgres", symphonytest.PostgresURL,
		"(i bigint, f double precision, s text, b bytea, ok boolean, n integer, at timestamptz, j jsonb, d numeric(10,2))",
		"$1, $2, $3, $4, $5, $6, $7, $8, $9", "True"},
	{"mysql", symphonytest.MySQLURL,
		"(i bigint, f double, s varchar(40), b varbinary(40), ok boolean, n int, at datetime(6), j json, d decimal(10,2))",
		"?, ?, ?, ?, ?, ?, ?, ?, ?", "1"},
	{"sqlite", func(testing.TB) string { return "sqlite:test.db" },
		"(i integer, f real, s text, b blob, ok boolean, n integer, at timestamp, j json, d text)",
		"?, ?, ?, ?, ?, ?, ?, ?, ?", "1"},
}

// table is a table name of the test's own, so that tests run at once on
// one database.
func table(t *testing.T) string {
	return strings.ReplaceAll(symphonytest.UniqueName("t"), "-", "_")
}

func dropTable(t *testing.T, w *World, name string) {
	t.Cleanup(func() {
		db, err := w.SQL.DB("db")
		if err == nil {
			_, _ = db.Exec(context.Background(), "DROP TABLE "+name, nil)
		}
	})
}

func TestSQLValues(t *testing.T) {
	for _, d := range sqlDialects {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			w, _ := sqlWorld(t, d.url(t))
			tbl := table(t)
			dropTable(t, w, tbl)
			runChecks(t, sqlGrant, `
    eq(sql.exec("db", "CREATE TABLE `+tbl+` `+d.create+`"), 0)
    at = time.time(year = 2024, month = 5, day = 6, hour = 7, minute = 8, second = 9, nanosecond = 123456000, location = "UTC")
    row = [1 << 40, 2.5, "héllo ' \"; DROP TABLE x", b"\x00\xff", True, None, at, json.encode({"a": [1, 2]}), "12.34"]
    eq(sql.exec("db", "INSERT INTO `+tbl+` VALUES (`+d.params+`)", row), 1)
    eq(sql.exec("db", "INSERT INTO `+tbl+` (i, ok) VALUES (`+d.params[:strings.Index(d.params, ",")]+`, FALSE)", args = (-5,)), 1)
    rows = sql.query("db", "SELECT * FROM `+tbl+` ORDER BY i DESC")
    eq(len(rows), 2)
    r = rows[0]
    eq(list(r.keys()), ["i", "f", "s", "b", "ok", "n", "at", "j", "d"])
    eq((r["i"], r["f"], r["s"], r["b"], r["ok"], r["n"]), (1 << 40, 2.5, row[2], b"\x00\xff", `+d.bool+`, None))
    eq(type(r["at"]), "time.time")
    eq(r["at"] == at, True)
    eq((type(r["j"]), json.decode(r["j"])), ("string", {"a": [1, 2]}))
    eq(r["d"], "12.34")
    eq((rows[1]["i"], rows[1]["s"], rows[1]["ok"]), (-5, None, `+map[string]string{"True": "False", "1": "0"}[d.bool]+`))
    eq(sql.query_one("db", "SELECT s FROM `+tbl+` WHERE i = `+d.params[:strings.Index(d.params, ",")]+`", [1 << 40]), {"s": row[2]})
    eq(sql.query_one("db", "SELECT s FROM `+tbl+` WHERE i = `+d.params[:strings.Index(d.params, ",")]+`", [7]), None)
    eq(sql.exec("db", "DELETE FROM `+tbl+` WHERE i < 0"), 1)
`, Options{World: w, Databases: []string{"db"}})
		})
	}
}

func TestSQLBadValues(t *testing.T) {
	w, _ := sqlWorld(t, "sqlite:x.db")
	opts := Options{World: w, Databases: []string{"db"}}
	for stmt, want := range map[string]string{
		`sql.query("db", "SELECT ?", [[1]])`:                             `sql.query: args[0]: a parameter is None, a bool, an int, a float, a str, bytes, a time or a secret, not list`,
		`sql.query("db", "SELECT ?", [1 << 70])`:                         `sql.query: args[0]: 1180591620717411303424 does not fit in 64 bits`,
		`sql.query("db", "SELECT ?", 1)`:                                 `sql.query: args must be a list of the statement's parameters`,
		`sql.query("db", "")`:                                            `sql.query: sql must be a statement`,
		`sql.query("db", "SELECT 1", max_rows = 0)`:                      `sql.query: max_rows must be a positive int`,
		`sql.query("db", "SELECT 1 AS a, 2 AS a")`:                       `sql.query db: two columns are called "a": name them apart with AS`,
		`sql.query_one("db", "SELECT 1 UNION SELECT 2")`:                 `sql.query_one db: the query returned more than one row: add LIMIT 1, or use sql.query`,
		`sql.exec("db", "INSERT INTO nowhere VALUES (1)")`:               `sql.exec db: SQL logic error: no such table: nowhere`,
		`sql.query("db", "SELEC 1")`:                                     `sql.query db: SQL logic error: near "SELEC": syntax error`,
		`sql.transaction("db", lambda tx: tx.query("x"))`:                `tx.query db: SQL logic error: near "x": syntax error`,
		`t = []; sql.transaction("db", t.append); t[0].exec("SELECT 1")`: `tx.exec: the transaction has ended`,
	} {
		if got := failedRun(t, sqlGrant, "    "+stmt, opts); !strings.Contains(got, want) {
			t.Errorf("%s: %s\nwant %s", stmt, got, want)
		}
	}
}

func TestSQLSyntaxError(t *testing.T) {
	for _, d := range sqlDialects {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			w, _ := sqlWorld(t, d.url(t))
			want := map[string]string{
				"postgres": `sql.query db: ERROR: syntax error at or near "SELEC" (SQLSTATE 42601)`,
				"mysql":    `sql.query db: Error 1064 (42000): You have an error in your SQL syntax`,
				"sqlite":   `sql.query db: SQL logic error: near "SELEC": syntax error`,
			}[d.name]
			if got := failedRun(t, sqlGrant, `    sql.query("db", "SELEC 1 FROM nowhere")`, Options{World: w, Databases: []string{"db"}}); !strings.Contains(got, want) {
				t.Errorf("got %s\nwant %s", got, want)
			}
		})
	}
}

func TestSQLTransaction(t *testing.T) {
	for _, d := range sqlDialects {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			w, _ := sqlWorld(t, d.url(t))
			calls := &callLog{}
			w.Calls = calls
			tbl := table(t)
			dropTable(t, w, tbl)
			ph := d.params[:strings.Index(d.params, ",")]
			opts := Options{World: w, Databases: []string{"db"}}
			runChecks(t, sqlGrant, `
    sql.exec("db", "CREATE TABLE `+tbl+` (id integer)")
    def two(tx):
        tx.exec("INSERT INTO `+tbl+` VALUES (`+ph+`)", [1])
        tx.exec("INSERT INTO `+tbl+` VALUES (`+ph+`)", [2])
        return tx.query_one("SELECT count(*) AS n FROM `+tbl+`")["n"]
    eq(sql.transaction("db", two), 2)
`, opts)
			// A failure halfway: the first insert is rolled back with the
			// transaction.
			got := failedRun(t, sqlGrant, `
    def half(tx):
        tx.exec("INSERT INTO `+tbl+` VALUES (`+ph+`)", [3])
        fail("halfway")
    sql.transaction("db", half)
`, opts)
			if !strings.Contains(got, "halfway") {
				t.Errorf("error %s", got)
			}
			runChecks(t, sqlGrant, `
    eq([r["id"] for r in sql.query("db", "SELECT id FROM `+tbl+` ORDER BY id")], [1, 2])
`, opts)
			var outcomes []string
			for _, c := range calls.results() {
				if strings.HasPrefix(c, "sql.transaction") {
					outcomes = append(outcomes, c)
				}
			}
			if strings.Join(outcomes, "|") != "sql.transaction db ok|sql.transaction db error" {
				t.Errorf("transaction calls %v", outcomes)
			}
		})
	}
}

func TestSQLRowLimit(t *testing.T) {
	for _, d := range sqlDialects {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			w, _ := sqlWorld(t, d.url(t))
			million := map[string]string{
				"postgres": "SELECT g FROM generate_series(1, 1000000) AS g",
				"sqlite":   "WITH RECURSIVE c(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM c LIMIT 1000000) SELECT g FROM c",
				// MariaDB stops a recursive CTE at 1000 rows: ten digits,
				// six times over.
				"mysql": "WITH d(n) AS (SELECT 0 UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 " +
					"UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) " +
					"SELECT a.n + 10 * b.n + 100 * c.n + 1000 * e.n + 10000 * f.n + 100000 * g.n AS g FROM d a, d b, d c, d e, d f, d g",
			}[d.name]
			opts := Options{World: w, Databases: []string{"db"}}
			start := time.Now()
			got := failedRun(t, sqlGrant, `    sql.query("db", "`+million+`")`, opts)
			t.Logf("a million rows refused in %s", time.Since(start))
			if want := "sql.query db: the query returned more than max_rows (10000): add a LIMIT, or pass max_rows"; !strings.Contains(got, want) {
				t.Errorf("got %s\nwant %s", got, want)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("a million rows took %s to refuse", took)
			}
			runChecks(t, sqlGrant, `
    eq(len(sql.query("db", "`+million+` LIMIT 10000")), 10000)
    eq(len(sql.query("db", "`+million+` LIMIT 20000", max_rows = 20000)), 20000)
`, opts)
			// The pool still works: the connection the refused query used
			// was dropped or is clean.
			runChecks(t, sqlGrant, `    eq(sql.query_one("db", "SELECT 1 AS one"), {"one": 1})`, opts)
		})
	}
}

// The run's context (its timeout, shutdown) ends a statement.
func TestSQLCancelled(t *testing.T) {
	w, _ := sqlWorld(t, symphonytest.PostgresURL(t))
	tk := loadTask(t, `
def work(payload, meta):
    sql.query("db", "SELECT pg_sleep(30)")
task(subscribe_to = ["#"], work = work`+sqlGrant+`)
`, Options{World: w, Databases: []string{"db"}})
	ctx, cancel := context.WithTimeoutCause(context.Background(), 300*time.Millisecond, tasks.ErrTimeout)
	defer cancel()
	start := time.Now()
	r := request(t, tk, ctx, map[string]any{})
	if r.Verdict != tasks.Failed {
		t.Fatalf("verdict %s", r.Verdict)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the cancelled query took %s", took)
	}
}

// proxy forwards the connections it accepts on ln to addr.
func proxy(t *testing.T, ln net.Listener, addr string) {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", addr)
				if err != nil {
					return
				}
				defer up.Close()
				go func() { _, _ = io.Copy(up, c); up.Close() }()
				_, _ = io.Copy(c, up)
			}()
		}
	}()
}

// A database that is down when the pools open fails calls, clearly, and
// serves them once it is up.
func TestSQLDatabaseComesBack(t *testing.T) {
	t.Run("postgres", func(t *testing.T) {
		pg := symphonytest.PostgresURL(t)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close() // down: nothing listens there, for now
		u := strings.Replace(pg, "127.0.0.1:5432", addr, 1)
		if u == pg {
			t.Skip("SYMPHONY_TEST_POSTGRES_URL is not on 127.0.0.1:5432")
		}
		w, _ := sqlWorld(t, u)
		opts := Options{World: w, Databases: []string{"db"}}
		got := failedRun(t, sqlGrant, `    sql.query("db", "SELECT 1")`, opts)
		if !strings.Contains(got, "sql.query db: failed to connect") || !strings.Contains(got, "connection refused") {
			t.Errorf("got %s", got)
		}
		if ln, err = net.Listen("tcp", addr); err != nil {
			t.Skipf("the port was taken meanwhile: %v", err)
		}
		proxy(t, ln, "127.0.0.1:5432")
		runChecks(t, sqlGrant, `    eq(sql.query_one("db", "SELECT 1 AS one"), {"one": 1})`, opts)
	})
	t.Run("sqlite", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "later")
		w, _ := sqlWorld(t, "sqlite:"+filepath.Join(dir, "x.db"))
		opts := Options{World: w, Databases: []string{"db"}}
		got := failedRun(t, sqlGrant, `    sql.query("db", "SELECT 1")`, opts)
		if !strings.Contains(got, "sql.query db: unable to open database file") {
			t.Errorf("got %s", got)
		}
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		runChecks(t, sqlGrant, `    eq(sql.query_one("db", "SELECT 1 AS one"), {"one": 1})`, opts)
	})
}

func TestSQLGrants(t *testing.T) {
	w, _ := sqlWorld(t, "sqlite:x.db")
	calls := &callLog{}
	w.Calls = calls
	d, _ := ParseDatabaseURL("sqlite:y.db", t.TempDir())
	w.SQL.(*DatabasePools).Set(map[string]DatabaseURL{"db": d, "other": d})
	opts := Options{World: w, Databases: []string{"db", "other"}}
	got := failedRun(t, sqlGrant, `    sql.transaction("other", lambda tx: None)`, opts)
	if want := `sql.transaction: task t may not use database "other": add it to databases = [...] of its task() at`; !strings.Contains(got, want) {
		t.Errorf("got %s\nwant %s", got, want)
	}
	got = failedRun(t, sqlGrant, `    sql.exec("other", "SELECT 1")`, opts)
	if want := `sql.exec: task t may not use database "other"`; !strings.Contains(got, want) {
		t.Errorf("got %s\nwant %s", got, want)
	}
	// A use the loader cannot see, in a library, is refused when it runs.
	root := writeTree(t, map[string]string{
		"lib.star": "def count():\n    return sql.query(\"db\", \"SELECT 1\")\n",
		"t.star":   "load(\"lib.star\", \"count\")\ndef work(payload, meta):\n    count()\ntask(subscribe_to = [\"#\"], work = work)\n",
	})
	opts.LookupEnv = noEnv
	ts, err := Load([]string{root}, opts)
	if err != nil {
		t.Fatal(err)
	}
	r := handle(ts[0], "application/json", []byte(`{}`))
	if r.Verdict != tasks.Failed || !strings.Contains(r.Err.Error(), `sql.query: task t is not allowed to use sql: add allow = ["sql"] to its task()`) {
		t.Errorf("%s %v", r.Verdict, r.Err)
	}
	if got := strings.Join(calls.results(), "|"); got != "sql.transaction other refused|sql.exec other refused|sql.query db refused" {
		t.Errorf("calls %s", got)
	}
	// Visible in the task's own function: refused when the file loads.
	root = writeTree(t, map[string]string{
		"t.star": "def work(payload, meta):\n    sql.query(\"db\", \"SELECT 1\")\ntask(subscribe_to = [\"#\"], work = work)\n",
	})
	if _, err := Load([]string{root}, opts); err == nil || !strings.Contains(err.Error(), `allow = ["sql"]`) {
		t.Errorf("Load: %v", err)
	}
}

func TestDatabaseURLs(t *testing.T) {
	dir := t.TempDir()
	d, err := ParseDatabaseURL("sqlite:data/orders.db", dir)
	if err != nil || d.URL != "sqlite:"+filepath.Join(dir, "data/orders.db") {
		t.Errorf("sqlite: %+v %v", d, err)
	}
	cfg, err := mysqlConfig("mysql://app:p%40ss@db.example.com/shop?tls=skip-verify&charset=utf8mb4")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.User != "app" || cfg.Passwd != "p@ss" || cfg.Addr != "db.example.com:3306" || cfg.DBName != "shop" ||
		!cfg.ParseTime || cfg.TLSConfig != "skip-verify" {
		t.Errorf("mysql config %+v", cfg)
	}
	if d, err := ParseDatabaseURL("postgres://app:hunter22@db.example.com/shop", dir); err != nil || d.Password != "hunter22" {
		t.Errorf("postgres: %+v %v", d, err)
	}
	for raw, want := range map[string]string{
		"redis://u:hunter22@h/0":            `unsupported database URL "redis://u:xxxxx@h/0": use postgres://`,
		"sqlite:":                           "sqlite: needs a path",
		"mysql://u:hunter22@h/db?tls=maybe": "invalid value / unknown config name: maybe",
		// Passwords that do not parse: the parser's message would quote
		// them, whole or cut at the fault.
		"mysql://u:hunter22%zz@h/db":    `mysql://u:xxxxx@h/db does not parse as a URL: percent-encode`,
		"mysql://u:hunter22#x@h/db":     `mysql://u:xxxxx@h/db does not parse as a URL`,
		"postgres://u:hunter22%zz@h/db": "cannot parse",
		"postgres://u:hun/ter22@h/db":   "cannot parse",
		"redis://u:hunter22%zz@h/0":     `unsupported database URL "redis://u:xxxxx@h/0"`,
	} {
		_, err := ParseDatabaseURL(raw, dir)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "hunter22") || strings.Contains(err.Error(), "ter22") {
			t.Errorf("%s: %v\nwant %s", raw, err, want)
		}
	}
}

// Workers using one database at once keep their connections between
// statements: none is closed for want of room among the idle ones.
func TestDatabasePoolsKeepConnections(t *testing.T) {
	d, err := ParseDatabaseURL("sqlite:keep.db", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	p := NewDatabasePools(NewRedactor())
	defer p.Close()
	p.Set(map[string]DatabaseURL{"db": d})
	db := p.pool("db")
	const workers = 8
	// All hold a connection at once, then all give theirs back.
	conns := make([]*sql.Conn, workers)
	for i := range conns {
		if conns[i], err = db.Conn(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range conns {
		c.Close()
	}
	if st := db.Stats(); st.MaxIdleClosed > 0 || st.Idle != workers {
		t.Errorf("%d connections closed for want of idle room, %d kept idle", st.MaxIdleClosed, st.Idle)
	}
}

// A reload keeps the pool of a database whose URL did not change, and
// replaces (closing) the pool of one whose URL did.
func TestDatabasePoolsSet(t *testing.T) {
	dir := t.TempDir()
	parse := func(raw string) DatabaseURL {
		d, err := ParseDatabaseURL(raw, dir)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	r := NewRedactor()
	p := NewDatabasePools(r)
	defer p.Close()
	p.Set(map[string]DatabaseURL{"a": parse("sqlite:a.db"), "b": parse("sqlite:b.db"), "c": parse("postgres://u:hunter22@127.0.0.1:1/x")})
	a, b := p.pool("a"), p.pool("b")
	p.Set(map[string]DatabaseURL{"a": parse("sqlite:a.db"), "b": parse("sqlite:b2.db")})
	if p.pool("a") != a {
		t.Error("a's pool was replaced, its URL is the same")
	}
	if p.pool("b") == b || p.pool("b") == nil {
		t.Error("b's pool was kept, its URL changed")
	}
	if p.pool("c") != nil {
		t.Error("c's pool is still there")
	}
	p.closing.Wait()
	if err := b.Ping(); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("b's old pool: %v", err)
	}
	if err := a.Ping(); err != nil {
		t.Errorf("a's pool: %v", err)
	}
	if got := r.Redact("password hunter22"); strings.Contains(got, "hunter22") {
		t.Errorf("the password is not redacted: %s", got)
	}
	if _, err := p.DB("c"); err == nil || err.Error() != `no database "c": the databases are a, b` {
		t.Errorf("DB(c) = %v", err)
	}
	if err := p.Close(); err != nil {
		t.Error(err)
	}
	if err := a.Ping(); err == nil {
		t.Error("a is open after Close")
	}
}
