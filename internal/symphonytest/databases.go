package symphonytest

import (
	"net"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/symphony-go/symphony/broker"
)

// PostgresURL is the PostgreSQL the tests use: SYMPHONY_TEST_POSTGRES_URL,
// by default the local one (trust authentication, database test). A test
// that needs it and cannot reach it skips, unless CI=true, where that is
// a failure.
func PostgresURL(t testing.TB) string {
	t.Helper()
	return databaseURL(t, "PostgreSQL", "SYMPHONY_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test", "5432")
}

// MySQLURL is the MySQL or MariaDB the tests use: SYMPHONY_TEST_MYSQL_URL,
// by default the local one (root without a password, database test).
// Reached as PostgresURL is.
func MySQLURL(t testing.TB) string {
	t.Helper()
	return databaseURL(t, "MySQL", "SYMPHONY_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test", "3306")
}

func databaseURL(t testing.TB, what, env, def, port string) string {
	t.Helper()
	raw := os.Getenv(env)
	if raw == "" {
		raw = def
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("%s %q does not parse: %v", env, broker.Redact(raw), err)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), port)
	}
	c, err := net.DialTimeout("tcp", host, 2*time.Second)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s at %s is not reachable and CI=true: %v", what, broker.Redact(raw), err)
		}
		t.Skipf("%s at %s is not reachable (%v); set %s or start it (.ci/run does)", what, broker.Redact(raw), err, env)
	}
	c.Close()
	return raw
}
