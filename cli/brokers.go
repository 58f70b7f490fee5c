package cli

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/broker/sqlite"
)

// openBroker opens the broker a URL names. Errors name the URL without its
// password.
func openBroker(ctx context.Context, url, exchange string, log *slog.Logger) (broker.Broker, error) {
	scheme, rest, _ := strings.Cut(url, ":")
	switch scheme {
	case "sqlite":
		if rest == "" {
			return nil, usagef("broker %q: give a path, as in sqlite:symphony.db", url)
		}
		b, err := sqlite.Open(ctx, rest, sqlite.Options{Exchange: exchange, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("open broker %s: %w", broker.Redact(url), err)
		}
		return b, nil
	}
	return nil, usagef("broker %q: unknown kind %q; use sqlite:PATH", broker.Redact(url), scheme)
}
