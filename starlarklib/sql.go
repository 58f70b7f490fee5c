package starlarklib

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	startime "go.starlark.net/lib/time"
	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"

	"github.com/symphony-go/symphony/tasks"
)

// sqlModule is sql (SPEC §2.1), on the databases of config(databases =
// ...) the task lists in databases:
//
//	query(db, sql, args = [], max_rows = 10000) → list of dicts
//	query_one(db, sql, args = []) → a dict, or None without a row; more
//	    than one row is an error
//	exec(db, sql, args = []) → the rows affected, an int
//	transaction(db, fn) → what fn returns: fn(tx) runs with a tx whose
//	    query, query_one and exec (without db) run in one transaction,
//	    committed when fn returns and rolled back when it fails
//
// args are bound by the driver, never put into the text, with the
// database's own placeholders ($1 on PostgreSQL, ? on MySQL, either on
// SQLite). A parameter is None, a bool, an int, a float, a str, bytes, a
// time or a secret; a column comes back as None, a bool, an int, a float,
// a str, bytes or a time (sqlColumns says which).
func sqlModule() *starlarkstruct.Module {
	return newModule("sql", map[string]builtinFunc{
		"query":       sqlStatement("query", nil),
		"query_one":   sqlStatement("query_one", nil),
		"exec":        sqlStatement("exec", nil),
		"transaction": sqlTransaction,
	})
}

// sqlTxValue is the tx a transaction's fn receives. It is bound to its
// database and ends with the transaction.
type sqlTxValue struct {
	db    string
	tx    SQLTx
	ended bool
}

var _ starlark.HasAttrs = (*sqlTxValue)(nil)

func (t *sqlTxValue) String() string        { return fmt.Sprintf("<sql transaction %s>", t.db) }
func (t *sqlTxValue) Type() string          { return "sql.transaction" }
func (t *sqlTxValue) Freeze()               {}
func (t *sqlTxValue) Truth() starlark.Bool  { return true }
func (t *sqlTxValue) Hash() (uint32, error) { return 0, errors.New("unhashable: sql.transaction") }
func (t *sqlTxValue) AttrNames() []string   { return []string{"exec", "query", "query_one"} }

func (t *sqlTxValue) Attr(name string) (starlark.Value, error) {
	if !slices.Contains(t.AttrNames(), name) {
		return nil, nil
	}
	return starlark.NewBuiltin("tx."+name, sqlStatement(name, t)), nil
}

// sqlStatement is query, query_one or exec: of the sql module when tx is
// nil, else of tx.
func sqlStatement(function string, tx *sqlTxValue) builtinFunc {
	return func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		var (
			db       string
			stmt     starlark.Value
			params   starlark.Value = starlark.None
			maxRowsV starlark.Value = starlark.None
		)
		pairs := []any{"sql", &stmt, "args?", &params}
		if function == "query" {
			pairs = append(pairs, "max_rows?", &maxRowsV)
		}
		if tx == nil {
			pairs = append([]any{"db", &db}, pairs...)
		} else {
			db = tx.db
		}
		if err := starlark.UnpackArgs(b.Name(), args, kwargs, pairs...); err != nil {
			return nil, err
		}
		st := stateOf(th)
		c, err := st.begin(b, tasks.CapSQL, db)
		if err != nil {
			return nil, err
		}
		text, goArgs, maxRows, err := sqlArgs(b.Name(), st.task.spec, db, stmt, params, maxRowsV)
		if err != nil {
			return nil, c.end(err)
		}
		if function == "query_one" {
			maxRows = 1
		}
		var q SQLQuerier
		if tx != nil {
			if tx.ended {
				return nil, c.end(fmt.Errorf("%s: the transaction has ended: use tx only inside its function", b.Name()))
			}
			q = tx.tx
		} else if q, err = st.world().database(db); err != nil {
			return nil, c.end(fmt.Errorf("%s: %w", b.Name(), err))
		}
		if function == "exec" {
			n, err := q.Exec(c.ctx, text, goArgs)
			if err != nil {
				return nil, c.end(fmt.Errorf("%s %s: %w", b.Name(), db, err))
			}
			c.attr("affected", n)
			c.end(nil)
			return starlark.MakeInt64(n), nil
		}
		rows, err := q.Query(c.ctx, text, goArgs, maxRows)
		if err != nil {
			var many *tooManyRowsError
			if function == "query_one" && errors.As(err, &many) {
				err = errors.New("the query returned more than one row: add LIMIT 1, or use sql.query")
			}
			return nil, c.end(fmt.Errorf("%s %s: %w", b.Name(), db, err))
		}
		c.attr("rows", len(rows.Rows))
		list, err := sqlRowsValue(rows)
		if err != nil {
			return nil, c.end(fmt.Errorf("%s %s: %w", b.Name(), db, err))
		}
		c.end(nil)
		if function == "query_one" {
			if len(list) == 0 {
				return starlark.None, nil
			}
			return list[0], nil
		}
		return starlark.NewList(list), nil
	}
}

// sqlTransaction is transaction(db, fn).
func sqlTransaction(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var (
		db string
		fn starlark.Callable
	)
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "db", &db, "fn", &fn); err != nil {
		return nil, err
	}
	st := stateOf(th)
	c, err := st.begin(b, tasks.CapSQL, db)
	if err != nil {
		return nil, err
	}
	if err := grantedDatabase(b.Name(), st.task.spec, db); err != nil {
		return nil, c.end(err)
	}
	d, err := st.world().database(db)
	if err != nil {
		return nil, c.end(fmt.Errorf("%s: %w", b.Name(), err))
	}
	tx, err := d.Begin(c.ctx)
	if err != nil {
		return nil, c.end(fmt.Errorf("%s %s: begin: %w", b.Name(), db, err))
	}
	txv := &sqlTxValue{db: db, tx: tx}
	res, err := starlark.Call(th, fn, starlark.Tuple{txv}, nil)
	txv.ended = true
	if err != nil {
		// Cancellation has rolled it back already; nothing to report.
		_ = tx.Rollback()
		c.attr("outcome", "rolled back")
		c.end(err)
		// As it is: the backtrace is fn's.
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, c.end(fmt.Errorf("%s %s: commit: %w", b.Name(), db, err))
	}
	c.attr("outcome", "committed")
	c.end(nil)
	return res, nil
}

// database is the named database of the World's Databases.
func (w *World) database(name string) (SQLDB, error) {
	if w.SQL == nil {
		return nil, fmt.Errorf("no database %q: this process has no databases", name)
	}
	return w.SQL.DB(name)
}

// grantedDatabase refuses a database the task's databases do not list.
func grantedDatabase(fn string, spec tasks.Spec, db string) error {
	if slices.Contains(spec.Databases, db) {
		return nil
	}
	return refusedf("%s: task %s may not use database %q: add it to databases = [...] of its task() at %s (it lists %s)",
		fn, spec.Name, db, spec.Pos, strings.Join(spec.Databases, ", "))
}

// sqlArgs checks a statement's arguments.
func sqlArgs(fn string, spec tasks.Spec, db string, stmt, params, maxRowsV starlark.Value) (string, []any, int, error) {
	if err := grantedDatabase(fn, spec, db); err != nil {
		return "", nil, 0, err
	}
	text, ok := stmt.(starlark.String)
	if !ok || strings.TrimSpace(string(text)) == "" {
		return "", nil, 0, fmt.Errorf("%s: sql must be a statement (a non-empty str), got %s", fn, describe(stmt))
	}
	var values []starlark.Value
	switch x := params.(type) {
	case starlark.NoneType:
	case *starlark.List:
		for i := range x.Len() {
			values = append(values, x.Index(i))
		}
	case starlark.Tuple:
		values = x
	default:
		return "", nil, 0, fmt.Errorf("%s: args must be a list of the statement's parameters, as [order_id, name], got %s", fn, describe(params))
	}
	out := make([]any, len(values))
	for i, v := range values {
		g, err := sqlParam(v)
		if err != nil {
			return "", nil, 0, fmt.Errorf("%s: args[%d]: %v", fn, i, err)
		}
		out[i] = g
	}
	maxRows := DefaultSQLMaxRows
	if maxRowsV != starlark.None {
		n, err := starlark.AsInt32(maxRowsV)
		if _, isBool := maxRowsV.(starlark.Bool); err != nil || isBool || n < 1 {
			return "", nil, 0, fmt.Errorf("%s: max_rows must be a positive int, got %s", fn, describe(maxRowsV))
		}
		maxRows = n
	}
	return string(text), out, maxRows, nil
}

// sqlParam converts a parameter for the driver.
func sqlParam(v starlark.Value) (any, error) {
	switch x := v.(type) {
	case starlark.NoneType:
		return nil, nil
	case starlark.Bool:
		return bool(x), nil
	case starlark.Int:
		n, ok := x.Int64()
		if !ok {
			return nil, fmt.Errorf("%s does not fit in 64 bits: pass it as a str", x)
		}
		return n, nil
	case starlark.Float:
		return float64(x), nil
	case starlark.String:
		return string(x), nil
	case starlark.Bytes:
		return []byte(x), nil
	case startime.Time:
		return time.Time(x).Round(0), nil // without the monotonic clock reading
	case secretValue:
		return x.value, nil
	}
	return nil, fmt.Errorf("a parameter is None, a bool, an int, a float, a str, bytes, a time or a secret, not %s (json.encode it for a JSON column)", v.Type())
}

// sqlRowsValue converts rows to a list of dicts, column: value.
func sqlRowsValue(rows *SQLRows) ([]starlark.Value, error) {
	for i, c := range rows.Columns {
		if slices.Contains(rows.Columns[:i], c) {
			return nil, fmt.Errorf("two columns are called %q: name them apart with AS", c)
		}
	}
	list := make([]starlark.Value, 0, len(rows.Rows))
	for _, row := range rows.Rows {
		d := starlark.NewDict(len(rows.Columns))
		for i, c := range rows.Columns {
			var col any
			if i < len(row) {
				col = row[i]
			}
			v, err := fromGo(col)
			if err != nil {
				return nil, fmt.Errorf("column %s: %v", c, err)
			}
			_ = d.SetKey(starlark.String(c), v)
		}
		list = append(list, d)
	}
	return list, nil
}
