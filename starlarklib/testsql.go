package starlarklib

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	startime "go.starlark.net/lib/time"
	"go.starlark.net/starlark"

	"github.com/symphony-go/symphony/tasks"
)

// sqlStubKey is a statement with its white space collapsed and a
// trailing semicolon dropped, so that a stub need not copy the task's
// line breaks.
func sqlStubKey(k string) (string, error) {
	s := strings.TrimSuffix(strings.TrimSpace(strings.Join(strings.Fields(k), " ")), ";")
	if s == "" {
		return "", errors.New("want the statement the task runs, as \"SELECT name FROM users WHERE id = $1\"")
	}
	return strings.TrimSpace(s), nil
}

// sqlAnswer is a checked answer of an sql stub.
type sqlAnswer struct {
	rows     *SQLRows
	affected int64
	isRows   bool
	isCount  bool
	err      error
}

// readSQLAnswer reads an answer: a list of rows (dicts), an int (the rows
// an exec affected), or a dict of rows, affected or error.
func readSQLAnswer(v starlark.Value) (sqlAnswer, error) {
	var a sqlAnswer
	switch x := v.(type) {
	case *starlark.List:
		rows, err := stubRows(x)
		return sqlAnswer{rows: rows, isRows: true}, err
	case starlark.Int:
		n, ok := x.Int64()
		if !ok || n < 0 {
			return a, fmt.Errorf("rows affected must be a non-negative int, got %s", x)
		}
		return sqlAnswer{affected: n, isCount: true}, nil
	case *starlark.Dict:
		f, err := answerFields(x, "", "rows", "affected", "error")
		if err != nil {
			return a, err
		}
		if err := stubbedError(f); err != nil {
			return sqlAnswer{err: err}, nil
		}
		if r, ok := f["rows"]; ok {
			l, ok := r.(*starlark.List)
			if !ok {
				return a, fmt.Errorf("rows must be a list of dicts, got %s", describe(r))
			}
			if a.rows, err = stubRows(l); err != nil {
				return a, err
			}
			a.isRows = true
		}
		if n, ok := f["affected"]; ok {
			i, ok := n.(starlark.Int)
			c, fits := i.Int64()
			if !ok || !fits || c < 0 {
				return a, fmt.Errorf("affected must be a non-negative int, got %s", describe(n))
			}
			a.affected, a.isCount = c, true
		}
		if !a.isRows && !a.isCount {
			return a, errors.New(`give rows, affected or error, as {"rows": [{"id": 1}]}`)
		}
		return a, nil
	}
	return a, fmt.Errorf(`an answer is a list of rows ([{"id": 1}]), the rows affected (an int), or a dict of rows, affected or error; got %s`, describe(v))
}

func checkSQLAnswer(v starlark.Value) error {
	_, err := readSQLAnswer(v)
	return err
}

// stubRows converts a list of dicts to rows: the columns in the order
// they first appear, a column a row lacks is NULL.
func stubRows(l *starlark.List) (*SQLRows, error) {
	rows := &SQLRows{}
	index := map[string]int{}
	var dicts []*starlark.Dict
	for i := range l.Len() {
		d, ok := l.Index(i).(*starlark.Dict)
		if !ok {
			return nil, fmt.Errorf("row %d must be a dict of column: value, got %s", i, describe(l.Index(i)))
		}
		for _, kv := range d.Items() {
			k, ok := kv[0].(starlark.String)
			if !ok {
				return nil, fmt.Errorf("row %d: column %s must be a str", i, kv[0])
			}
			if _, seen := index[string(k)]; !seen {
				index[string(k)] = len(rows.Columns)
				rows.Columns = append(rows.Columns, string(k))
			}
		}
		dicts = append(dicts, d)
	}
	for i, d := range dicts {
		row := make([]any, len(rows.Columns))
		for _, kv := range d.Items() {
			v, err := sqlGo(kv[1])
			if err != nil {
				return nil, fmt.Errorf("row %d, column %s: %v", i, kv[0], err)
			}
			row[index[string(kv[0].(starlark.String))]] = v
		}
		rows.Rows = append(rows.Rows, row)
	}
	return rows, nil
}

// sqlGo converts a stubbed column value to what a driver gives.
func sqlGo(v starlark.Value) (any, error) {
	switch x := v.(type) {
	case starlark.NoneType:
		return nil, nil
	case starlark.Bool:
		return bool(x), nil
	case starlark.Int:
		if n, ok := x.Int64(); ok {
			return n, nil
		}
		return new(big.Int).Set(x.BigInt()), nil
	case starlark.Float:
		return float64(x), nil
	case starlark.String:
		return string(x), nil
	case starlark.Bytes:
		return []byte(x), nil
	case startime.Time:
		return time.Time(x), nil
	}
	return nil, fmt.Errorf("a column holds None, bool, int, float, str, bytes or a time, not %s", v.Type())
}

// stubSQL is the test World's Databases.
type stubSQL struct{ s *testSession }

func (x stubSQL) DB(name string) (SQLDB, error) {
	r := x.s.run
	if r == nil {
		return nil, errNoRun("sql")
	}
	return stubDB{r: r, db: name}, nil
}

// stubDB answers a database's statements from the run's sql stubs.
type stubDB struct {
	r  *testRun
	db string
}

func (d stubDB) Query(ctx context.Context, query string, args []any, maxRows int) (*SQLRows, error) {
	a, err := d.answer(ctx, "query", query, args)
	if err != nil {
		return nil, err
	}
	if !a.isRows {
		return nil, d.r.stubFailed(fmt.Errorf("sql stub for %q answers rows affected, and the task queries it: give a list of rows", query))
	}
	if len(a.rows.Rows) > maxRows {
		if rec := d.r.current(); rec != nil && rec.function == "query_one" {
			return nil, errors.New("the query returned more than one row: add LIMIT 1, or use sql.query")
		}
		return nil, fmt.Errorf("the query returned more than max_rows (%d): add a LIMIT, or pass max_rows", maxRows)
	}
	return a.rows, nil
}

func (d stubDB) Exec(ctx context.Context, query string, args []any) (int64, error) {
	a, err := d.answer(ctx, "exec", query, args)
	if err != nil {
		return 0, err
	}
	if !a.isCount {
		return 0, d.r.stubFailed(fmt.Errorf("sql stub for %q answers rows, and the task runs it with exec: give the rows affected, an int", query))
	}
	return a.affected, nil
}

// answer records a statement and finds its stub's answer.
func (d stubDB) answer(ctx context.Context, kind, query string, args []any) (sqlAnswer, error) {
	r := d.r
	rec := r.record(ctx, tasks.CapSQL, kind, d.db)
	list := make([]starlark.Value, len(args))
	for i, a := range args {
		v, err := fromGo(a)
		if err != nil {
			v = starlark.String(fmt.Sprint(a))
		}
		list[i] = v
	}
	rec.fields["db"] = starlark.String(d.db)
	rec.fields["sql"] = starlark.String(query)
	rec.fields["args"] = starlark.NewList(list)
	key, _ := sqlStubKey(query)
	st := r.stubs.sql[key]
	if st == nil {
		st = r.stubs.sql[anyCall]
	}
	if st == nil {
		hint := fmt.Sprintf(`sql = {%q: [{"column": "value"}]}`, key)
		if kind == "exec" {
			hint = fmt.Sprintf(`sql = {%q: 1} (the rows affected)`, key)
		}
		return sqlAnswer{}, r.unstubbed(fmt.Sprintf("sql.%s %s %q", rec.function, d.db, key), hint)
	}
	v, err := st.answer(r, "sql", rec.value(), checkSQLAnswer)
	if err != nil {
		return sqlAnswer{}, err
	}
	a, _ := readSQLAnswer(v)
	if a.err != nil {
		return sqlAnswer{}, a.err
	}
	return a, nil
}

// Begin starts a transaction, whose statements answer from the same
// stubs; its call's record tells whether it committed.
func (d stubDB) Begin(ctx context.Context) (SQLTx, error) {
	rec, _ := ctx.Value(callKey{}).(*callRecord)
	if rec != nil {
		rec.fields["db"] = starlark.String(d.db)
		rec.fields["outcome"] = starlark.String("open")
	}
	return &stubTx{stubDB: d, rec: rec}, nil
}

type stubTx struct {
	stubDB
	rec *callRecord
}

func (t *stubTx) end(outcome string) error {
	if t.rec != nil {
		t.rec.fields["outcome"] = starlark.String(outcome)
	}
	return nil
}

func (t *stubTx) Commit() error   { return t.end("committed") }
func (t *stubTx) Rollback() error { return t.end("rolled back") }
