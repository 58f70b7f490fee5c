// Package sqlite is the embedded broker: a topic exchange, its queues,
// bindings and dead letters in one SQLite file (pure Go, modernc.org/sqlite).
//
// Several processes may use the file at once (the daemon, `symphony publish`,
// a second daemon): the database runs in WAL mode, every write is a short
// BEGIN IMMEDIATE transaction on the one writer connection of its process,
// and busy_timeout absorbs contention. No transaction is held while a task
// runs: a consumer leases rows, and a lease that is not renewed expires, so
// the messages of a consumer that died come back, marked redelivered.
//
// Speed comes from batches: a subscription leases up to its prefetch in one
// statement, and acks of every subscription of the process are deleted
// together, piggybacking on the next lease or flushed by an acker a few
// milliseconds later. A crash before the flush only redelivers
// (at-least-once).
//
// Durability: a message for which Publish returned nil is in the database
// file. By default (sync=full) the transactions that store messages
// (Publish, Requeue, Bury, Replay, Declare) commit with synchronous=FULL, so
// they survive a power loss, not only a crash of the process. The
// bookkeeping of consumption (leases, acks, nacks) commits with
// synchronous=NORMAL: losing the last of those to a power loss can only
// redeliver a message, never lose one, and it avoids an fsync per batch.
// sync=normal makes every commit NORMAL (durable across process crashes,
// not power loss).
//
// Non-durable queues (Queue.Durable false) follow RabbitMQ's auto-delete: the
// queue, its bindings and its messages are deleted when its last
// subscription ends. Consumers are tracked per process with a lease of their
// own in the consumers table, so a queue consumed by two processes stays
// until both stop, and the queue of a process that died is deleted once that
// lease expires (by any process that declares queues or consumes). A
// non-durable queue that never had a subscription stays. Dead letters are
// kept either way.
//
// Faults: every write first checks that the path still leads to the file
// that was opened and that the file and its journal may be written. A file
// removed or replaced under the broker fails every write from then on
// (ErrFileMoved): writing on would store messages that no process will
// ever read. A write that fails for want of a usable file (a full disk, an
// I/O error, a read-only file, a lock held too long) stores nothing and
// says so to its caller; acks that cannot be written stay pending and are
// tried again. Health is the outcome of the last write, found out by a
// small write when none happened in the last second, so readiness means
// "can store and ack now".
//
// Leases of the dead: a consuming process records itself in the processes
// table (pid, start time, boot and pid namespace), and its number fills the
// high half of its lease tokens. A process that finds another of its
// machine gone (its pid free, ended, or reused by a process started at
// another time) releases that one's leases at once, rather than waiting
// them out; it looks when it first subscribes and every second after. A
// process it cannot prove gone (another pid namespace, a system without
// /proc) is waited out as before.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	sqlitedriver "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/symphony-go/symphony/broker"
)

// Defaults of the DSN query parameters.
const (
	DefaultLease = 30 * time.Second
	DefaultPoll  = 25 * time.Millisecond
	DefaultBusy  = 5 * time.Second
)

// schemaVersion is PRAGMA user_version of a database this package wrote.
const schemaVersion = 5

// Options are the settings that do not come from the DSN.
type Options struct {
	// Exchange names the topic exchange; queues, bindings, messages and
	// dead letters are per exchange, so two exchanges in one file do not
	// see each other. Default "symphony".
	Exchange string
	// Logger receives the broker's warnings; nil discards them.
	Logger *slog.Logger
	// Existing refuses to create the database: a command that reads or
	// adds to a daemon's broker must not make an empty one by mistake.
	// Open then fails with ErrNoDatabase.
	Existing bool
}

// ErrNoDatabase is Open's error for a database that does not exist when
// Options.Existing is set.
var ErrNoDatabase = errors.New("the database does not exist")

// config is what Open read from the DSN.
type config struct {
	path  string
	lease time.Duration
	poll  time.Duration
	busy  time.Duration
	// full: commits that store messages use synchronous=FULL.
	full bool
}

// Broker is the embedded broker. It implements broker.Broker.
type Broker struct {
	cfg      config
	exchange string
	log      *slog.Logger
	// owner identifies this process in the processes and consumers
	// tables and in its lease tokens; me is what it records there.
	owner int64
	me    identity
	// registered: this process has its row in the processes table.
	registered atomic.Bool
	// file is the database file as opened; a write checks that the path
	// still leads to it.
	file   os.FileInfo
	health health

	rdb *sql.DB // readers: depth, dead letters, readiness checks
	// reads are the hot statements of rdb, prepared once (parsing costs
	// more than running them).
	reads map[string]*sql.Stmt
	wdb   *sql.DB // one connection, pinned as wconn
	wmu   sync.Mutex
	w     *writer // guarded by wmu; nil once closed
	open  atomic.Bool

	acks   ackQueue
	held   heldSet
	notify signals
	subs   subscriberSet

	// attached counts this process's subscriptions per queue id, for the
	// consumers table of non-durable queues.
	attachMu sync.Mutex
	attached map[int64]int

	budgetMu sync.Mutex
	budgets  map[string]*budget

	stop chan struct{}  // closed by Close: background loops end
	bg   sync.WaitGroup // the background loops
}

var _ broker.Broker = (*Broker)(nil)

// Open opens (creating if needed) the database at dsn, the part of the broker
// URL after "sqlite:", e.g. "symphony.db" or "/var/lib/x.db?lease=5s".
//
// Query parameters: lease (how long a consumer holds a message it has not
// acked before another may take it; renewed every lease/3 while the
// consumer lives; default 30s), poll (how often idle consumers look for
// messages written by other processes; default 25ms), busy (how long a write
// waits for another process's lock before failing; default 5s) and
// sync=full|normal (see the package documentation; default full). The
// directory must exist: Open does not create it.
func Open(ctx context.Context, dsn string, opts Options) (*Broker, error) {
	cfg, err := parseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("open sqlite broker %q: %w", dsn, err)
	}
	if err := checkPath(cfg.path); err != nil {
		return nil, fmt.Errorf("open sqlite database %s: %w", cfg.path, err)
	}
	if opts.Existing {
		if _, err := os.Stat(cfg.path); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("open sqlite database %s: %w", cfg.path, ErrNoDatabase)
		}
	}
	if opts.Exchange == "" {
		opts.Exchange = "symphony"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	b := &Broker{
		cfg:      cfg,
		exchange: opts.Exchange,
		log:      opts.Logger.With("broker", "sqlite", "database", cfg.path, "exchange", opts.Exchange),
		owner:    newOwner(),
		me:       self(),
		attached: map[int64]int{},
		budgets:  map[string]*budget{},
		stop:     make(chan struct{}),
	}
	b.notify.init()
	b.held.init()
	b.subs.init()
	b.acks.init()
	if err := b.connect(ctx); err != nil {
		b.closeDBs()
		return nil, fmt.Errorf("open sqlite database %s: %w", cfg.path, err)
	}
	if b.file, err = os.Stat(cfg.path); err != nil {
		b.closeDBs()
		return nil, fmt.Errorf("open sqlite database %s: %w", cfg.path, err)
	}
	b.open.Store(true)
	b.bg.Add(3)
	go b.ackLoop()
	go b.heartbeatLoop()
	go b.pollLoop()
	return b, nil
}

func parseDSN(dsn string) (config, error) {
	cfg := config{lease: DefaultLease, poll: DefaultPoll, busy: DefaultBusy, full: true}
	path, query, _ := strings.Cut(dsn, "?")
	if path == "" {
		return cfg, errors.New("the database path is empty; give one, e.g. sqlite:symphony.db")
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return cfg, fmt.Errorf("read query parameters: %w", err)
	}
	for key, vals := range q {
		v := vals[len(vals)-1]
		switch key {
		case "lease", "poll", "busy":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return cfg, fmt.Errorf("parameter %s=%q is not a positive duration like 30s or 50ms", key, v)
			}
			switch key {
			case "lease":
				if d < 30*time.Millisecond {
					return cfg, fmt.Errorf("parameter lease=%s is too short; use at least 30ms", v)
				}
				cfg.lease = d
			case "poll":
				cfg.poll = d
			case "busy":
				cfg.busy = d
			}
		case "sync":
			switch strings.ToLower(v) {
			case "full":
				cfg.full = true
			case "normal":
				cfg.full = false
			default:
				return cfg, fmt.Errorf("parameter sync=%q must be full or normal", v)
			}
		default:
			return cfg, fmt.Errorf("unknown parameter %q; known are lease, poll, busy and sync", key)
		}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return cfg, fmt.Errorf("resolve path %q: %w", path, err)
	}
	cfg.path = abs
	return cfg, nil
}

// checkPath explains the paths SQLite would refuse with a bare "unable to
// open database file".
func checkPath(path string) error {
	dir := filepath.Dir(path)
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("directory %s does not exist; create it first", dir)
	case errors.Is(err, syscall.ENOTDIR):
		return fmt.Errorf("%s is not a directory (a part of the path is a file)", dir)
	case err != nil:
		return fmt.Errorf("inspect directory %s: %w", dir, err)
	case !st.IsDir():
		return fmt.Errorf("%s is not a directory", dir)
	}
	st, err = os.Stat(path)
	if err == nil && st.IsDir() {
		return fmt.Errorf("%s is a directory, not a database file", path)
	}
	if errors.Is(err, fs.ErrNotExist) {
		if _, werr := os.Stat(path + "-wal"); werr == nil {
			return fmt.Errorf("%s does not exist, but its journal %s-wal does: the database was removed without it; "+
				"restore the database, or move %s-wal and %s-shm away (they belong to the removed database)", path, path, path, path)
		}
	}
	// SQLite creates the -wal and -shm files next to the database, so the
	// directory must be writable even when the file already exists.
	if err := writable(dir); err != nil {
		return fmt.Errorf("directory %s is not writable: %w", dir, err)
	}
	return nil
}

func (b *Broker) driverDSN(writer bool) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout("+strconv.FormatInt(b.cfg.busy.Milliseconds(), 10)+")")
	q.Add("_pragma", "foreign_keys(0)")
	q.Add("_pragma", "synchronous(NORMAL)")
	if writer {
		q.Add("_pragma", "journal_mode(WAL)")
		q.Set("_txlock", "immediate")
	} else {
		q.Add("_pragma", "query_only(1)")
	}
	return b.cfg.path + "?" + q.Encode()
}

func (b *Broker) connect(ctx context.Context) error {
	var err error
	b.wdb, err = sql.Open("sqlite", b.driverDSN(true))
	if err != nil {
		return err
	}
	b.wdb.SetMaxOpenConns(1)
	b.wdb.SetMaxIdleConns(1)
	b.wdb.SetConnMaxLifetime(0)
	b.wdb.SetConnMaxIdleTime(0)
	conn, err := b.wdb.Conn(ctx)
	if err != nil {
		return describeOpenError(err)
	}
	w := &writer{conn: conn}
	if err := w.migrate(ctx, b); err != nil {
		conn.Close()
		return describeOpenError(err)
	}
	if err := w.prepare(ctx); err != nil {
		w.close()
		return err
	}
	b.w = w
	b.rdb, err = sql.Open("sqlite", b.driverDSN(false))
	if err != nil {
		return err
	}
	b.rdb.SetMaxOpenConns(4)
	b.rdb.SetMaxIdleConns(4)
	b.reads = map[string]*sql.Stmt{}
	for _, q := range []string{sqlBodies, sqlNextVisible} {
		st, err := b.rdb.PrepareContext(ctx, q)
		if err != nil {
			return fmt.Errorf("prepare statement: %w", err)
		}
		b.reads[q] = st
	}
	return nil
}

// describeOpenError adds what an operator can do to the errors SQLite gives
// for files it cannot use.
func describeOpenError(err error) error {
	switch sqliteCode(err) {
	case sqlite3.SQLITE_CANTOPEN:
		return fmt.Errorf("cannot open or create the file (check that it and its directory are writable): %w", err)
	case sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM, sqlite3.SQLITE_AUTH:
		return fmt.Errorf("the database or its directory is read-only: %w", err)
	case sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT:
		return fmt.Errorf("the file is not a SQLite database: %w", err)
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
		return fmt.Errorf("the database is locked by another process: %w", err)
	}
	return err
}

// sqliteCode is the primary SQLite result code of err, 0 when it has none.
func sqliteCode(err error) int {
	var e *sqlitedriver.Error
	if errors.As(err, &e) {
		return e.Code() & 0xff
	}
	return 0
}

// explain says what happened when a write failed for want of a usable
// file, and that the write is refused rather than lost.
func (b *Broker) explain(err error) error {
	switch sqliteCode(err) {
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
		return fmt.Errorf("database %s is locked by another process (waited %s): %w", b.cfg.path, b.cfg.busy, err)
	case sqlite3.SQLITE_FULL:
		return fmt.Errorf("database %s: the disk is full; nothing was stored, and writes are refused until there is room: %w", b.cfg.path, err)
	case sqlite3.SQLITE_IOERR:
		return fmt.Errorf("database %s: the disk failed to read or write (full, failing or gone?); nothing was stored: %w", b.cfg.path, err)
	case sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM:
		return fmt.Errorf("database %s cannot be written to now; nothing was stored: %w", b.cfg.path, err)
	}
	return err
}

// Connected reports whether the broker can store and acknowledge
// messages now (see Health).
func (b *Broker) Connected() bool { return b.Health() == nil }

// Close ends every subscription (their unacked messages go back to their
// queues), flushes acks, and closes the database.
func (b *Broker) Close() error {
	if !b.open.CompareAndSwap(true, false) {
		return nil
	}
	for _, s := range b.subs.all() {
		s.Close()
	}
	close(b.stop)
	b.bg.Wait()
	b.flushAcks()
	b.releaseAll()
	b.forget()
	return b.closeDBs()
}

func (b *Broker) closeDBs() error {
	var errs []error
	b.wmu.Lock()
	if b.w != nil {
		errs = append(errs, b.w.close())
		b.w = nil
	}
	b.wmu.Unlock()
	if b.wdb != nil {
		errs = append(errs, b.wdb.Close())
	}
	for _, st := range b.reads {
		errs = append(errs, st.Close())
	}
	if b.rdb != nil {
		errs = append(errs, b.rdb.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close sqlite database %s: %w", b.cfg.path, err)
	}
	return nil
}

// now is the clock of visibility: unix nanoseconds, shared by every process
// on the machine.
func now() int64 { return time.Now().UnixNano() }
