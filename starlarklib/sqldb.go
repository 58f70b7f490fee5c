package starlarklib

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite" // registers "sqlite" for database/sql

	"github.com/symphony-go/symphony/tasks"
)

// DefaultSQLMaxRows bounds the rows a query returns unless max_rows says
// otherwise.
const DefaultSQLMaxRows = 10_000

// sqliteBusy is how long a statement waits for another connection's
// write lock on an SQLite file (the daemon's workers share it) before it
// fails with "database is locked".
const sqliteBusy = 5 * time.Second

// DatabaseURL is one database of config(databases = ...), checked.
type DatabaseURL struct {
	// URL is as given, a relative sqlite: path made absolute.
	URL string
	// Password is the one in the URL, if any, for the Redactor.
	Password string
	open     func() *sql.DB
}

// ParseDatabaseURL checks a database URL: postgres:// (or postgresql://),
// mysql:// or sqlite:PATH, a relative PATH read against dir (the
// directory of the symphony.star that names it). Nothing is dialled.
func ParseDatabaseURL(raw, dir string) (DatabaseURL, error) {
	scheme, rest, _ := strings.Cut(raw, ":")
	switch strings.ToLower(scheme) {
	case "postgres", "postgresql":
		cfg, err := pgx.ParseConfig(raw)
		if err != nil {
			return DatabaseURL{}, errors.New(redactURL(err.Error(), raw))
		}
		return DatabaseURL{URL: raw, Password: cfg.Password, open: func() *sql.DB { return stdlib.OpenDB(*cfg) }}, nil
	case "mysql":
		cfg, err := mysqlConfig(raw)
		if err != nil {
			return DatabaseURL{}, err
		}
		conn, err := mysql.NewConnector(cfg)
		if err != nil {
			return DatabaseURL{}, err
		}
		return DatabaseURL{URL: raw, Password: cfg.Passwd, open: func() *sql.DB { return sql.OpenDB(conn) }}, nil
	case "sqlite":
		path, query, _ := strings.Cut(rest, "?")
		path = strings.TrimPrefix(path, "//")
		if path == "" {
			return DatabaseURL{}, errors.New("sqlite: needs a path, as sqlite:orders.db")
		}
		if !filepath.IsAbs(path) {
			path = filepath.Join(dir, path)
		}
		q, err := url.ParseQuery(query)
		if err != nil {
			return DatabaseURL{}, fmt.Errorf("sqlite:%s: %v", path, err)
		}
		q.Add("_pragma", "busy_timeout("+strconv.FormatInt(sqliteBusy.Milliseconds(), 10)+")")
		q.Add("_pragma", "foreign_keys(1)")
		q.Add("_pragma", "journal_mode(WAL)")
		// A transaction takes the write lock when it begins, so two
		// workers' transactions wait for each other rather than fail.
		if !q.Has("_txlock") {
			q.Set("_txlock", "immediate")
		}
		// Times are written as SQLite's date functions read them, not as
		// Go prints them.
		if !q.Has("_time_format") {
			q.Set("_time_format", "sqlite")
		}
		dsn := path + "?" + q.Encode()
		given := "sqlite:" + path
		if query != "" {
			given += "?" + query
		}
		return DatabaseURL{URL: given, open: func() *sql.DB {
			db, _ := sql.Open("sqlite", dsn) // fails only for an unknown driver name
			return db
		}}, nil
	}
	return DatabaseURL{}, fmt.Errorf("unsupported database URL %q: use postgres://user:pass@host/db, mysql://user:pass@host/db or sqlite:PATH",
		tasks.RedactURL(raw))
}

// mysqlConfig translates mysql://user:pass@host:port/db?param=value into
// the driver's configuration: the query's parameters are the driver's
// own (tls, charset, loc, ...); parseTime is always on, so DATETIME and
// TIMESTAMP columns are times.
func mysqlConfig(raw string) (*mysql.Config, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, unparsable(raw)
	}
	host := u.Host
	if host == "" {
		host = "127.0.0.1"
	}
	if u.Port() == "" {
		host = net.JoinHostPort(strings.Trim(host, "[]"), "3306")
	}
	cfg, err := mysql.ParseDSN("tcp(" + host + ")/?" + u.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", tasks.RedactURL(raw), redactURL(err.Error(), raw))
	}
	cfg.User = u.User.Username()
	cfg.Passwd, _ = u.User.Password()
	cfg.DBName = strings.TrimPrefix(u.Path, "/")
	cfg.ParseTime = true
	return cfg, nil
}

// redactURL replaces the password of the URL raw in s: the password as
// its text has it (tasks.URLPassword), so that a URL that does not parse
// is covered too, and as it decodes.
func redactURL(s, raw string) string {
	pw := tasks.URLPassword(raw)
	if pw == "" {
		return s
	}
	s = strings.ReplaceAll(s, pw, "xxxxx")
	if plain, err := url.PathUnescape(pw); err == nil && plain != "" {
		s = strings.ReplaceAll(s, plain, "xxxxx")
	}
	return s
}

// unparsable is the error for a database URL that does not parse. The
// parser's own message quotes the URL cut at the fault, which may hold
// a part of the password.
func unparsable(raw string) error {
	return fmt.Errorf("%s does not parse as a URL: percent-encode %%, #, /, ? and @ in the user name and password", tasks.RedactURL(raw))
}

// DatabasePools is the daemon's Databases: one database/sql pool per
// database, shared by every worker, opened lazily (a database that is
// down when the daemon starts fails calls until it is back, and stops
// nothing). Safe for concurrent use.
type DatabasePools struct {
	redactor *Redactor
	mu       sync.Mutex
	pools    map[string]*dbPool
	// closing counts the replaced pools still closing.
	closing sync.WaitGroup
}

// A pool keeps up to maxIdleConns connections idle, each for up to
// maxIdleTime.
const (
	maxIdleConns = 64
	maxIdleTime  = time.Minute
)

type dbPool struct {
	url string
	db  *sql.DB
}

// NewDatabasePools returns pools without databases; Set names them. The
// passwords of their URLs go to r.
func NewDatabasePools(r *Redactor) *DatabasePools {
	return &DatabasePools{redactor: r, pools: map[string]*dbPool{}}
}

// Set makes dbs the databases. A database whose URL is unchanged keeps
// its pool and connections; a new or changed URL gets a new pool; the
// pools replaced or no longer named are closed once their statements
// end.
func (p *DatabasePools) Set(dbs map[string]DatabaseURL) {
	p.mu.Lock()
	var old []*sql.DB
	for name, was := range p.pools {
		if now, ok := dbs[name]; !ok || now.URL != was.url {
			old = append(old, was.db)
			delete(p.pools, name)
		}
	}
	for name, d := range dbs {
		if _, ok := p.pools[name]; ok {
			continue
		}
		p.redactor.Add(name+" database password", d.Password)
		db := d.open()
		// database/sql keeps two idle connections unless told: with more
		// workers than that on one database, every statement past the
		// second closed its connection and a later one opened another (on
		// PostgreSQL a TCP and TLS handshake and a new backend process).
		// Idle ones are closed after a while instead.
		db.SetMaxIdleConns(maxIdleConns)
		db.SetConnMaxIdleTime(maxIdleTime)
		p.pools[name] = &dbPool{url: d.URL, db: db}
	}
	p.mu.Unlock()
	for _, db := range old {
		// Close waits for the statements of a draining generation.
		p.closing.Add(1)
		go func() {
			defer p.closing.Done()
			_ = db.Close()
		}()
	}
}

// Close closes every pool, those a reload replaced included.
func (p *DatabasePools) Close() error {
	p.mu.Lock()
	var errs []error
	for name, d := range p.pools {
		errs = append(errs, d.db.Close())
		delete(p.pools, name)
	}
	p.mu.Unlock()
	p.closing.Wait()
	return errors.Join(errs...)
}

// DB returns the named database's pool.
func (p *DatabasePools) DB(name string) (SQLDB, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if d, ok := p.pools[name]; ok {
		return sqlDB{d.db}, nil
	}
	names := make([]string, 0, len(p.pools))
	for n := range p.pools {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return nil, fmt.Errorf("no database %q: symphony.star names none (config(databases = {%q: \"postgres://...\"}))", name, name)
	}
	return nil, fmt.Errorf("no database %q: the databases are %s", name, strings.Join(names, ", "))
}

// URLs returns the databases as "name=URL", sorted, a relative sqlite:
// path made absolute: what ParseDatabaseURL reads back in another
// process.
func (p *DatabasePools) URLs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, 0, len(p.pools))
	for name, d := range p.pools {
		out = append(out, name+"="+d.url)
	}
	sort.Strings(out)
	return out
}

// pool returns the *sql.DB of a database, for tests.
func (p *DatabasePools) pool(name string) *sql.DB {
	p.mu.Lock()
	defer p.mu.Unlock()
	if d, ok := p.pools[name]; ok {
		return d.db
	}
	return nil
}

type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

type sqlDB struct{ db *sql.DB }

func (d sqlDB) Query(ctx context.Context, q string, args []any, maxRows int) (*SQLRows, error) {
	return runQuery(ctx, d.db, q, args, maxRows)
}

func (d sqlDB) Exec(ctx context.Context, q string, args []any) (int64, error) {
	return runExec(ctx, d.db, q, args)
}

func (d sqlDB) Begin(ctx context.Context) (SQLTx, error) {
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	return sqlTx{tx}, nil
}

type sqlTx struct{ tx *sql.Tx }

func (t sqlTx) Query(ctx context.Context, q string, args []any, maxRows int) (*SQLRows, error) {
	return runQuery(ctx, t.tx, q, args, maxRows)
}

func (t sqlTx) Exec(ctx context.Context, q string, args []any) (int64, error) {
	return runExec(ctx, t.tx, q, args)
}

func (t sqlTx) Commit() error   { return t.tx.Commit() }
func (t sqlTx) Rollback() error { return t.tx.Rollback() }

// tooManyRowsError is a query that returned more than it may.
type tooManyRowsError struct{ max int }

func (e *tooManyRowsError) Error() string {
	return fmt.Sprintf("the query returned more than max_rows (%d): add a LIMIT, or pass max_rows", e.max)
}

func runExec(ctx context.Context, q queryer, stmt string, args []any) (int64, error) {
	res, err := q.ExecContext(ctx, stmt, args...)
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		// Every driver here counts rows; a statement that affects none
		// (CREATE TABLE) may still say it cannot.
		return 0, nil
	}
	return n, nil
}

func runQuery(ctx context.Context, q queryer, stmt string, args []any, maxRows int) (*SQLRows, error) {
	// Cancelled when the query ends early (too many rows), so that the
	// driver drops the rest rather than reading it to the end.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rows, err := q.QueryContext(ctx, stmt, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	types, err := rows.ColumnTypes()
	if err != nil {
		return nil, err
	}
	out := &SQLRows{Columns: make([]string, len(types))}
	kinds := make([]columnKind, len(types))
	for i, t := range types {
		out.Columns[i] = t.Name()
		kinds[i] = kindOfColumn(t.DatabaseTypeName())
	}
	for rows.Next() {
		if len(out.Rows) == maxRows {
			cancel()
			return nil, &tooManyRowsError{max: maxRows}
		}
		vals := make([]any, len(types))
		ptrs := make([]any, len(types))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		for i, v := range vals {
			vals[i] = normalizeColumn(v, kinds[i])
		}
		out.Rows = append(out.Rows, vals)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// columnKind is how a column's bytes are read: the drivers hand text,
// numbers and blobs alike as []byte (MySQL), so the declared type says.
type columnKind int

const (
	columnText columnKind = iota
	columnBytes
	columnInt
	columnFloat
)

func kindOfColumn(dbType string) columnKind {
	t := strings.ToUpper(dbType)
	switch {
	case t == "", t == "BYTEA", t == "BIT", strings.Contains(t, "BLOB"), strings.Contains(t, "BINARY"):
		// "": an expression SQLite gives no type; its text is a string
		// already, so []byte is a blob.
		return columnBytes
	case strings.Contains(t, "INT"):
		return columnInt
	case t == "DOUBLE", t == "FLOAT", t == "REAL":
		return columnFloat
	}
	return columnText
}

// normalizeColumn turns what a driver scanned into nil, bool, int64,
// *big.Int (beyond int64), float64, string, []byte or time.Time.
func normalizeColumn(v any, kind columnKind) any {
	switch x := v.(type) {
	case nil, bool, int64, float64, string, time.Time:
		return x
	case []byte:
		switch kind {
		case columnBytes:
			return slices.Clone(x)
		case columnInt:
			if n, err := strconv.ParseInt(string(x), 10, 64); err == nil {
				return n
			}
			if n, ok := new(big.Int).SetString(string(x), 10); ok {
				return n
			}
		case columnFloat:
			if f, err := strconv.ParseFloat(string(x), 64); err == nil {
				return f
			}
		}
		return string(x)
	case int:
		return int64(x)
	case int32:
		return int64(x)
	case uint64:
		if x <= math.MaxInt64 {
			return int64(x)
		}
		return new(big.Int).SetUint64(x)
	case float32:
		return float64(x)
	case fmt.Stringer:
		return x.String()
	}
	return fmt.Sprint(v)
}
