package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/broker/sqlite"
	"github.com/symphony-go/symphony/tasks"
)

// schemaV1 is the whole schema of version 1, before priorities, as
// databases written then have it.
const schemaV1 = `
CREATE TABLE IF NOT EXISTS queues (
	id       INTEGER PRIMARY KEY,
	exchange TEXT NOT NULL,
	name     TEXT NOT NULL,
	durable  INTEGER NOT NULL,
	UNIQUE (exchange, name)
);
CREATE TABLE IF NOT EXISTS bindings (
	queue_id INTEGER NOT NULL,
	pattern  TEXT NOT NULL,
	PRIMARY KEY (queue_id, pattern)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS consumers (
	queue_id   INTEGER NOT NULL,
	owner      INTEGER NOT NULL,
	expires_at INTEGER NOT NULL,
	PRIMARY KEY (queue_id, owner)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
	id         INTEGER PRIMARY KEY,
	queue_id   INTEGER NOT NULL,
	visible_at INTEGER NOT NULL,
	lease      INTEGER NOT NULL DEFAULT 0,
	deliveries INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_ready ON messages (queue_id, visible_at);
CREATE TABLE IF NOT EXISTS bodies (
	id          INTEGER PRIMARY KEY,
	routing_key TEXT NOT NULL,
	uuid        TEXT NOT NULL,
	metadata    TEXT NOT NULL,
	payload     BLOB NOT NULL
);
CREATE TRIGGER IF NOT EXISTS messages_gone AFTER DELETE ON messages
BEGIN
	DELETE FROM bodies WHERE id = OLD.id;
END;
CREATE TABLE IF NOT EXISTS dead (
	id          INTEGER PRIMARY KEY AUTOINCREMENT,
	exchange    TEXT NOT NULL,
	queue       TEXT NOT NULL,
	task        TEXT NOT NULL,
	routing_key TEXT NOT NULL,
	uuid        TEXT NOT NULL,
	metadata    TEXT NOT NULL,
	payload     BLOB NOT NULL,
	reason      TEXT NOT NULL,
	error       TEXT NOT NULL,
	attempt     INTEGER NOT NULL,
	dead_at     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_queue ON dead (exchange, queue, id);
`

// A database of version 1 opens as the current version with its queues, bindings
// and messages kept, and its queues take priorities only once declared so.
func TestUpgradeFromVersion1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v1.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"PRAGMA journal_mode = WAL",
		schemaV1,
		`INSERT INTO queues (id, exchange, name, durable) VALUES (1, 'symphony', 'old', 1)`,
		`INSERT INTO bindings (queue_id, pattern) VALUES (1, 'old.key')`,
		`INSERT INTO messages (id, queue_id, visible_at) VALUES (1, 1, 0)`,
		`INSERT INTO bodies (id, routing_key, uuid, metadata, payload) VALUES (1, 'old.key', 'u1', '{"content_type":"text/plain"}', 'kept')`,
		"PRAGMA user_version = 1",
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("write a version 1 database: %v", err)
		}
	}
	db.Close()

	b := open(t, path, sqlite.Options{})
	if err := b.Publish("old.key", priorityMsg(t, "urgent", 3)); !errors.Is(err, broker.ErrNoPriority) {
		t.Fatalf("publish with a priority to an upgraded plain queue: got %v, want ErrNoPriority", err)
	}
	err = b.Declare(context.Background(), broker.Queue{Name: "old", Patterns: []string{"old.key"}, Durable: true, MaxPriority: 3})
	if !errors.Is(err, broker.ErrPriorityChange) {
		t.Fatalf("declare the upgraded queue with max_priority: got %v, want ErrPriorityChange", err)
	}
	err = b.Declare(context.Background(), broker.Queue{Name: "new", Patterns: []string{"old.key"}, Durable: true, MaxPriority: 3})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Publish("old.key", msg("after")); err != nil {
		t.Fatal(err)
	}
	_, ch := subscribe(t, b, "old", 1)
	for _, want := range []string{"kept", "after"} {
		m := <-ch
		if string(m.Payload) != want {
			t.Fatalf("got %q from the upgraded queue, want %q", m.Payload, want)
		}
		m.Ack()
	}
}

func priorityMsg(t *testing.T, body string, p int) *message.Message {
	t.Helper()
	m, err := broker.NewMessage(tasks.Publication{Body: []byte(body), ContentType: "text/plain", Priority: p})
	if err != nil {
		t.Fatal(err)
	}
	return m
}
