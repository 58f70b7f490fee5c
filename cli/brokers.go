package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/broker/amqp"
	"github.com/symphony-go/symphony/broker/sqlite"
	"github.com/symphony-go/symphony/tasks"
)

// openBroker opens the broker a URL names. queues, when not nil, gives the
// task queues the caller knows of: RabbitMQ cannot list queues, so
// dead-letter commands that cover every queue rely on them; it is called
// only for RabbitMQ. queueType is the daemon's default queue_type, which
// RabbitMQ's delayed publishes follow. existing refuses to create an
// embedded broker's database: only the daemon makes one. Errors name the
// URL without its password.
func openBroker(ctx context.Context, url, exchange string, queueType tasks.QueueType, log *slog.Logger, queues func() []string, existing bool) (broker.Broker, error) {
	scheme, rest, _ := strings.Cut(url, ":")
	switch scheme {
	case "sqlite":
		if rest == "" {
			return nil, usagef("broker %q: give a path, as in sqlite:symphony.db", url)
		}
		b, err := sqlite.Open(ctx, rest, sqlite.Options{Exchange: exchange, Logger: log, Existing: existing})
		if errors.Is(err, sqlite.ErrNoDatabase) {
			return nil, fmt.Errorf("open broker %s: %w (a daemon creates it when it first runs): point --broker (or SYMPHONY_BROKER) "+
				"at the daemon's database, run the command in the directory the daemon runs in, or give --tasks DIR "+
				"whose symphony.star names the broker", broker.Redact(url), err)
		}
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
			Exchange:  exchange,
			Logger:    log,
			Name:      fmt.Sprintf("symphony %s pid %d", host, os.Getpid()),
			Queues:    known,
			QueueType: queueType,
		})
		if err != nil {
			// Open's errors already name the URL, redacted.
			return nil, err
		}
		return b, nil
	}
	return nil, usagef("broker %q: unknown kind %q; use sqlite:PATH, amqp://... or amqps://...", broker.Redact(url), scheme)
}
