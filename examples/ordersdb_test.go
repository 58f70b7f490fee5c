package examples_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"

	"github.com/symphony-go/symphony/internal/symphonytest"
)

const order = `{"id": 1, "customer": "ada", "lines": [{"sku": "tea", "price": 2.5, "quantity": 2}, {"sku": "cup", "price": 4.0}]}`

// storeOrders runs examples/orders-db, copied into the test's directory
// (its SQLite file goes beside symphony.star), stores one order twice,
// and checks that db holds it once.
func storeOrders(t *testing.T, env *symphonytest.Env, db *sql.DB) {
	dir := filepath.Join(env.Dir, "orders-db")
	if err := os.CopyFS(dir, os.DirFS(example(t, "orders-db"))); err != nil {
		t.Fatal(err)
	}
	d := env.Start(dir)
	id := published(t, env.MustRun("", "publish", "order.placed", order))
	stored := d.WaitFor("order stored", map[string]string{"message_id": id})
	if stored.Str("order") != "1" || stored.Str("total") != "9" {
		t.Errorf("stored %v", stored)
	}
	d.WaitFor("message acked", map[string]string{"message_id": id})
	again := published(t, env.MustRun("", "publish", "order.placed", order))
	d.WaitFor("order already stored", map[string]string{"message_id": again, "order": "1"})
	d.WaitFor("message acked", map[string]string{"message_id": again})
	d.Stop()
	if db == nil {
		var err error
		if db, err = sql.Open("sqlite", filepath.Join(dir, "orders.db")); err != nil {
			t.Fatal(err)
		}
		defer db.Close()
	}
	var orders, lines int
	var total float64
	err := db.QueryRow("SELECT count(*), sum(total) FROM orders").Scan(&orders, &total)
	if err == nil {
		err = db.QueryRow("SELECT count(*) FROM orders_lines WHERE order_id = 1").Scan(&lines)
	}
	if err != nil || orders != 1 || total != 9 || lines != 2 {
		t.Errorf("the database holds %d orders (total %v) and %d lines (%v), want 1 (9) and 2", orders, total, lines, err)
	}
}

func TestOrdersDB(t *testing.T) {
	t.Parallel()
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		storeOrders(t, symphonytest.NewEnv(t), nil)
	})
	// The same task file on PostgreSQL: only the database URL changes,
	// here through the environment variable symphony.star reads.
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		pg := symphonytest.PostgresURL(t)
		admin, err := sql.Open("pgx", pg)
		if err != nil {
			t.Fatal(err)
		}
		defer admin.Close()
		schema := strings.ReplaceAll(symphonytest.UniqueName("orders"), "-", "_")
		if _, err := admin.Exec("CREATE SCHEMA " + schema); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = admin.ExecContext(context.Background(), "DROP SCHEMA "+schema+" CASCADE") })
		sep := "?"
		if strings.Contains(pg, "?") {
			sep = "&"
		}
		url := pg + sep + "search_path=" + schema
		db, err := sql.Open("pgx", url)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		env := symphonytest.NewEnv(t)
		env.Vars = append(env.Vars, "ORDERS_DB="+url)
		storeOrders(t, env, db)
	})
}
