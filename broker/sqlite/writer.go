package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
)

// schema is the whole database. Messages are split in two tables so that
// leasing, renewing and releasing rewrite small rows only, never a payload:
// messages holds what changes, bodies what does not (same id).
//
// ticks holds each schedule's record: the last tick fired (unix ns) and
// the schedule it was fired under. budgets holds each rate limit's
// theoretical arrival time (unix ns), see Budgets.
//
// Only messages with a priority are in messages_priority, so a queue
// without priorities pays nothing for it: a priority queue leases from
// that index first, then from messages_ready for priority 0.
//
// visible_at is when a row may be delivered: the publish time, the end of
// its delay, or the end of the lease that holds it (unix ns; 0 puts a
// returned message at the head of its queue). Ready is visible_at <= now,
// one range of the index.
//
// processes has a row per consuming process (owner, the high half of its
// lease tokens), so that another process of the machine can prove it gone
// and release its leases; expires_at is when the row may be forgotten.
const schema = `
CREATE TABLE IF NOT EXISTS queues (
	id       INTEGER PRIMARY KEY,
	exchange TEXT NOT NULL,
	name     TEXT NOT NULL,
	durable  INTEGER NOT NULL,
	max_priority INTEGER NOT NULL DEFAULT 0,
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
	deliveries INTEGER NOT NULL DEFAULT 0,
	priority   INTEGER NOT NULL DEFAULT 0,
	returned   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_ready ON messages (queue_id, visible_at);
CREATE INDEX IF NOT EXISTS messages_priority ON messages (queue_id, priority DESC, visible_at) WHERE priority > 0;
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
CREATE TABLE IF NOT EXISTS ticks (
	exchange TEXT NOT NULL,
	name     TEXT NOT NULL,
	schedule TEXT NOT NULL,
	last     INTEGER NOT NULL,
	PRIMARY KEY (exchange, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS budgets (
	exchange TEXT NOT NULL,
	name     TEXT NOT NULL,
	tat      INTEGER NOT NULL,
	PRIMARY KEY (exchange, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS processes (
	owner      INTEGER PRIMARY KEY,
	host       TEXT NOT NULL,
	machine    TEXT NOT NULL,
	pid        INTEGER NOT NULL,
	started    TEXT NOT NULL,
	seen_at    INTEGER NOT NULL,
	expires_at INTEGER NOT NULL
);
`

// upgrade1 brings a version 1 database to version 2, before schema runs.
const upgrade1 = `
ALTER TABLE queues ADD COLUMN max_priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
`

// upgrade4 brings a version 4 database (or older, after upgrade1) to
// version 5: messages count their deliveries handed back on purpose.
const upgrade4 = `
ALTER TABLE messages ADD COLUMN returned INTEGER NOT NULL DEFAULT 0;
`

// Statements run on the writer connection, prepared once.
const (
	sqlLease = `UPDATE messages SET lease = ?1, visible_at = ?2, deliveries = deliveries + 1
		WHERE id IN (SELECT id FROM messages WHERE queue_id = ?3 AND visible_at <= ?4 ORDER BY visible_at, id LIMIT ?5)
		RETURNING id, deliveries, returned`
	sqlAck = `DELETE FROM messages WHERE lease = ?1 AND id IN (SELECT value FROM json_each(?2)) RETURNING id`
	// A release of messages never handed to a handler (?3 = 1) takes back
	// their delivery; one of messages handed out counts them as returned,
	// so that a delivery neither acked nor returned is known lost.
	sqlRelease = `UPDATE messages SET lease = 0, visible_at = 0, deliveries = deliveries - ?3, returned = returned + 1 - ?3
		WHERE lease = ?1 AND id IN (SELECT value FROM json_each(?2))`
	sqlExtend = `UPDATE messages SET visible_at = ?1 WHERE lease = ?2 AND id IN (SELECT value FROM json_each(?3))`
	// A priority above the queue's max_priority counts as the max, as on
	// RabbitMQ; a queue without one stores 0.
	sqlInsertMsg = `INSERT INTO messages (queue_id, visible_at, priority)
		VALUES (?1, ?2, CASE WHEN ?3 > 0 THEN min(?3, (SELECT max_priority FROM queues WHERE id = ?1)) ELSE 0 END)`
	// sqlLeasePriority is sqlLease for a priority queue: higher priorities
	// first, then by age.
	sqlLeasePriority = `UPDATE messages SET lease = ?1, visible_at = ?2, deliveries = deliveries + 1
		WHERE id IN (
			SELECT id FROM (SELECT id FROM messages WHERE queue_id = ?3 AND priority > 0 AND visible_at <= ?4
				ORDER BY priority DESC, visible_at, id LIMIT ?5)
			UNION ALL
			SELECT id FROM (SELECT id FROM messages WHERE queue_id = ?3 AND priority = 0 AND visible_at <= ?4
				ORDER BY visible_at, id LIMIT ?5)
			LIMIT ?5)
		RETURNING id, deliveries, returned, priority`
	sqlInsertBody = `INSERT INTO bodies (id, routing_key, uuid, metadata, payload) VALUES (?1, ?2, ?3, ?4, ?5)`
	sqlBindings   = `SELECT b.queue_id, b.pattern, q.name, q.max_priority FROM bindings b JOIN queues q ON q.id = b.queue_id WHERE q.exchange = ?1`
	sqlQueue      = `SELECT id, durable FROM queues WHERE exchange = ?1 AND name = ?2`
	sqlBegin      = `BEGIN IMMEDIATE`
	sqlCommit     = `COMMIT`
	sqlSyncFull   = `PRAGMA synchronous = FULL`
	sqlSyncNormal = `PRAGMA synchronous = NORMAL`
)

// Statements run on reader connections.
const (
	sqlBodies      = `SELECT id, routing_key, uuid, metadata, payload FROM bodies WHERE id IN (SELECT value FROM json_each(?1))`
	sqlNextVisible = `SELECT min(visible_at) FROM messages WHERE queue_id = ?1`
)

// writer is the process's one write connection. Every use holds
// Broker.wmu, which makes this process's writes one queue and lets
// consecutive small ones share a transaction.
type writer struct {
	conn  *sql.Conn
	stmts map[string]*sql.Stmt
	// full is the synchronous setting the connection has now.
	full bool
}

func (w *writer) migrate(ctx context.Context, b *Broker) error {
	// Switching to WAL needs a moment of exclusive access; the pragma is in
	// the DSN, and this read tells whether it took.
	var mode string
	if err := w.conn.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("read journal mode: %w", err)
	}
	if mode != "wal" {
		return fmt.Errorf("switch to WAL mode: journal mode is %q (is the file on a network file system?)", mode)
	}
	var version int
	if err := w.conn.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if version > schemaVersion {
		return fmt.Errorf("the database has schema version %d, newer than this symphony knows (%d); upgrade symphony", version, schemaVersion)
	}
	if version == schemaVersion {
		return nil
	}
	return w.tx(ctx, func(ctx context.Context) error {
		// Version 1 had no priorities, version 2 no ticks and budgets,
		// version 3 no processes (schema creates the tables it lacks);
		// the tables it had keep their rows.
		if version == 1 {
			if _, err := w.conn.ExecContext(ctx, upgrade1); err != nil {
				return fmt.Errorf("upgrade schema from version 1: %w", err)
			}
		}
		if version >= 1 && version <= 4 {
			if _, err := w.conn.ExecContext(ctx, upgrade4); err != nil {
				return fmt.Errorf("upgrade schema from version %d: %w", version, err)
			}
		}
		if _, err := w.conn.ExecContext(ctx, schema); err != nil {
			return fmt.Errorf("create schema: %w", err)
		}
		_, err := w.conn.ExecContext(ctx, "PRAGMA user_version = "+strconv.Itoa(schemaVersion))
		return err
	})
}

func (w *writer) prepare(ctx context.Context) error {
	w.stmts = map[string]*sql.Stmt{}
	for _, q := range []string{sqlLease, sqlLeasePriority, sqlAck, sqlRelease, sqlExtend, sqlInsertMsg, sqlInsertBody, sqlBindings, sqlQueue,
		sqlBegin, sqlCommit} {
		st, err := w.conn.PrepareContext(ctx, q)
		if err != nil {
			return fmt.Errorf("prepare statement: %w", err)
		}
		w.stmts[q] = st
	}
	return nil
}

func (w *writer) st(q string) *sql.Stmt { return w.stmts[q] }

// exec runs q prepared when it is, so that migrate can begin and commit
// before prepare.
func (w *writer) exec(ctx context.Context, q string) (sql.Result, error) {
	if st, ok := w.stmts[q]; ok {
		return st.ExecContext(ctx)
	}
	return w.conn.ExecContext(ctx, q)
}

// setSync switches synchronous between FULL and NORMAL; it is per
// connection and read at each commit.
func (w *writer) setSync(ctx context.Context, full bool) error {
	if w.full == full {
		return nil
	}
	q := sqlSyncNormal
	if full {
		q = sqlSyncFull
	}
	// Not a prepared statement: SQLite applies this pragma when it
	// compiles it, so running a prepared one again does nothing.
	if _, err := w.conn.ExecContext(ctx, q); err != nil {
		return fmt.Errorf("set synchronous: %w", err)
	}
	w.full = full
	return nil
}

// tx runs fn in a BEGIN IMMEDIATE transaction. The transaction is driven by
// hand rather than through database/sql's Tx so that the prepared
// statements of the pinned connection can be used inside it as they are.
func (w *writer) tx(ctx context.Context, fn func(ctx context.Context) error) error {
	if _, err := w.exec(ctx, sqlBegin); err != nil {
		// A BEGIN whose context ended while it ran is reported failed
		// even when it opened the transaction, which would then refuse
		// every later BEGIN on this connection. Rolling back a
		// transaction that never began only fails, harmlessly.
		w.rollback()
		return err
	}
	if err := fn(ctx); err != nil {
		w.rollback()
		return err
	}
	// Never cancel a commit: the driver reports a statement whose context
	// ended while it ran as failed even when it completed, and a commit
	// reported failed but made would hand back acks already written and
	// lose track of leases already taken (their messages would wait out the
	// lease). Once the work is done, committing it is right.
	if _, err := w.exec(context.WithoutCancel(ctx), sqlCommit); err != nil {
		w.rollback()
		return err
	}
	return nil
}

func (w *writer) rollback() {
	// Without a cancellable context: a transaction left open would hold
	// the database's write lock for good. The error is that of a
	// transaction SQLite already rolled back.
	_, _ = w.conn.ExecContext(context.Background(), "ROLLBACK")
}

func (w *writer) close() error {
	var errs []error
	for _, st := range w.stmts {
		errs = append(errs, st.Close())
	}
	errs = append(errs, w.conn.Close())
	return errors.Join(errs...)
}

// write runs fn in one write transaction. durable: the transaction stores
// messages and commits with synchronous=FULL unless the DSN said
// sync=normal. withAcks: pending acks ride along, so that a lease and the
// acks that preceded it cost one commit. A nil fn writes pending acks only.
// Acks are taken under wmu and committed before it is released, so holding
// wmu and seeing no pending acks means every earlier ack is written.
func (b *Broker) write(ctx context.Context, durable, withAcks bool, fn func(ctx context.Context, w *writer) error) error {
	b.wmu.Lock()
	defer b.wmu.Unlock()
	w := b.w
	if w == nil {
		return errors.New("the broker is closed")
	}
	var acks []ack
	if withAcks {
		acks = b.acks.take()
	}
	if fn == nil {
		if len(acks) == 0 {
			return nil
		}
		fn = noop
	}
	if err := b.checkFile(); err != nil {
		if len(acks) > 0 {
			b.acks.putBack(acks)
		}
		b.noteWrite(err)
		return err
	}
	if err := w.setSync(ctx, durable && b.cfg.full); err != nil {
		if len(acks) > 0 {
			b.acks.putBack(acks)
		}
		b.noteWrite(err)
		return err
	}
	var done []ack
	err := w.tx(ctx, func(ctx context.Context) error {
		var err error
		if len(acks) > 0 {
			if done, err = b.applyAcks(ctx, w, acks); err != nil {
				return err
			}
		}
		return fn(ctx, w)
	})
	if err != nil {
		err = b.explain(err)
	}
	b.noteWrite(err)
	if err != nil {
		if len(acks) > 0 {
			b.acks.putBack(acks)
		}
		return err
	}
	b.ackedDone(acks, done)
	return nil
}
