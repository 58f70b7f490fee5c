package sqlite_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/broker/brokertest"
	"github.com/symphony-go/symphony/broker/sqlite"
)

// harness runs the conformance suite on a fresh database file per test. The
// short lease makes a killed consumer's messages come back in two seconds.
func harness() brokertest.Harness {
	return brokertest.Harness{
		Name: "sqlite",
		Env: func(t *testing.T) brokertest.Env {
			return brokertest.Env{
				URL:      "sqlite:" + filepath.Join(t.TempDir(), "broker.db") + "?lease=2s&poll=10ms",
				Exchange: "symphony",
			}
		},
		Open: func(env brokertest.Env) (broker.Broker, error) {
			return sqlite.Open(context.Background(), strings.TrimPrefix(env.URL, "sqlite:"), sqlite.Options{Exchange: env.Exchange})
		},
	}
}

func TestMain(m *testing.M) {
	if mode := os.Getenv(envChild); mode != "" {
		os.Exit(child(mode))
	}
	brokertest.Main(m, harness())
}

func TestConformance(t *testing.T) { brokertest.Run(t, harness()) }
