package sqlite

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"time"

	sqlite3 "modernc.org/sqlite/lib"
)

// probeAfter is how old the outcome of the last write may be before
// Health writes again to find out whether the broker can still store.
const probeAfter = time.Second

// ErrFileMoved is returned by every write once the database file is not
// the one the broker opened: removed, or replaced by another file at the
// same path. Writing on would store messages where no process will look
// for them again, so the broker refuses until it is restarted.
var ErrFileMoved = errors.New("the database file was removed or replaced while in use")

// errNotWritable: the database file or its journal cannot be written to.
var errNotWritable = errors.New("is read-only")

// health is whether the broker can store and acknowledge messages now, as
// the writes of this process found out.
type health struct {
	mu  sync.Mutex
	err error     // why the last write failed; nil after one succeeded
	at  time.Time // when the last write finished
	// moved, once set, fails every write for good (ErrFileMoved).
	moved atomic.Pointer[error]
}

// checkFile refuses to write to a database file that is no longer the one
// at the path, or that was made read-only. It costs two system calls, so
// that every write, not only some, is checked.
func (b *Broker) checkFile() error {
	if err := b.checkMoved(); err != nil {
		return err
	}
	for _, p := range []string{b.cfg.path, b.cfg.path + "-wal"} {
		if err := writableFile(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("database %s: %s %w (%v); writes are refused until it is writable again", b.cfg.path, p, errNotWritable, err)
		}
	}
	return nil
}

// checkMoved fails, for good, once the path no longer leads to the file
// the broker opened.
func (b *Broker) checkMoved() error {
	if err := b.health.moved.Load(); err != nil {
		return *err
	}
	st, err := os.Stat(b.cfg.path)
	var moved error
	switch {
	case errors.Is(err, fs.ErrNotExist):
		moved = fmt.Errorf("database %s: %w: the file is gone; writes are refused because they would be lost with it; restart symphony to start on a new file", b.cfg.path, ErrFileMoved)
	case err != nil:
		return fmt.Errorf("database %s: inspect the file: %w", b.cfg.path, err)
	case !os.SameFile(st, b.file):
		moved = fmt.Errorf("database %s: %w: another file is at the path now; writes are refused because no process would see them; restart symphony to use the file that is there now", b.cfg.path, ErrFileMoved)
	}
	if moved != nil {
		if b.health.moved.CompareAndSwap(nil, &moved) {
			b.log.Error("database file removed or replaced; refusing to write", "err", moved)
		}
		return *b.health.moved.Load()
	}
	return nil
}

// noteWrite records the outcome of a write: a failure that says the
// database cannot store now (a full disk, an I/O error, a read-only or
// moved file, a lock held too long) makes the broker unhealthy; any
// success makes it healthy again.
func (b *Broker) noteWrite(err error) {
	if err != nil && !storageFailure(err) {
		return
	}
	b.health.mu.Lock()
	was := b.health.err
	b.health.err = err
	b.health.at = time.Now()
	b.health.mu.Unlock()
	switch {
	case was == nil && err != nil:
		b.log.Error("the broker cannot store messages; publishes are refused and acks wait", "err", err)
	case was != nil && err == nil:
		b.log.Info("the broker stores messages again", "after", was.Error())
	}
}

// storageFailure reports whether err says the database cannot be written
// now, as opposed to a refusal of what was asked (an unknown queue, an
// unroutable key) or a cancelled context.
func storageFailure(err error) bool {
	if errors.Is(err, ErrFileMoved) || errors.Is(err, errNotWritable) {
		return true
	}
	switch sqliteCode(err) {
	case sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN,
		sqlite3.SQLITE_PERM, sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_CORRUPT,
		sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_AUTH:
		return true
	}
	return false
}

// Health says whether the broker can store and acknowledge messages now:
// nil, or why not. When no write has finished in the last second it writes
// (it renews this process's record) to find out.
func (b *Broker) Health() error {
	if !b.open.Load() {
		return errors.New("the broker is closed")
	}
	if err := b.health.moved.Load(); err != nil {
		return *err
	}
	b.health.mu.Lock()
	err, at := b.health.err, b.health.at
	b.health.mu.Unlock()
	if time.Since(at) < probeAfter {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.busy+time.Second)
	defer cancel()
	return b.probe(ctx)
}

// probe writes this process's record, which is a real write: it needs
// room in the file and its journal.
func (b *Broker) probe(ctx context.Context) error {
	err := b.write(ctx, false, false, func(ctx context.Context, w *writer) error {
		return b.renew(ctx, w)
	})
	if err != nil && !storageFailure(err) {
		// The probe itself went wrong (its context ended): that says
		// nothing about the file; report the last write's outcome.
		b.health.mu.Lock()
		defer b.health.mu.Unlock()
		return b.health.err
	}
	return err
}
