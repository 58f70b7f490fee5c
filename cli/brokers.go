package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/broker/amqp"
	"github.com/symphony-go/symphony/broker/sqlite"
)

// openBroker opens the broker a URL names. queues, when not nil, gives the
// task queues the caller knows of: RabbitMQ cannot list queues, so
// dead-letter commands that cover every queue rely on them; it is called
// only for RabbitMQ. Errors name the URL without its password.
func openBroker(ctx context.Context, url, exchange string, log *slog.Logger, queues func() []string) (broker.Broker, error) {
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
	case "amqp", "amqps":
		host, _ := os.Hostname()
		var known []string
		if queues != nil {
			known = queues()
		}
		b, err := amqp.Open(ctx, url, amqp.Options{
			Exchange: exchange,
			Logger:   log,
			Name:     fmt.Sprintf("symphony %s pid %d", host, os.Getpid()),
			Queues:   known,
		})
		if err != nil {
			// Open's errors already name the URL, redacted.
			return nil, err
		}
		return b, nil
	}
	return nil, usagef("broker %q: unknown kind %q; use sqlite:PATH, amqp://... or amqps://...", broker.Redact(url), scheme)
}
