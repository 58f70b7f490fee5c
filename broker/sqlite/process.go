package sqlite

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// identity names a process that may hold leases: who it is (pid and start
// time) and where that means something (machine: the boot and pid
// namespace, "" when unknown).
type identity struct {
	host    string
	machine string
	pid     int
	started string
}

// reapInterval is how often a consuming process looks for processes of
// its machine that died holding leases.
const reapInterval = time.Second

// newOwner is a process's number in the processes and consumers tables.
// It fills the high half of every lease token the process takes, so that
// the leases of a process that died can be found and released at once
// rather than waited out; it stays below 2^31 so that tokens stay
// positive.
func newOwner() int64 { return 1 + rand.Int64N(1<<31-1) }

// token is a fresh lease token: the owner, and 32 random bits that tell
// this lease from the process's others.
func (b *Broker) token() int64 { return b.owner<<32 | int64(rand.Uint32()) }

// register records this process in the processes table, once, before it
// takes its first lease, and releases the leases of processes that are
// provably gone. A failure is logged and tried again at the next reap:
// the leases of an unregistered process are only waited out.
func (b *Broker) register(ctx context.Context) {
	if b.registered.Load() {
		return
	}
	err := b.write(ctx, false, false, func(ctx context.Context, w *writer) error {
		return b.renew(ctx, w)
	})
	if err != nil {
		b.log.Warn("record this process for lease recovery failed; will retry", "err", err)
		return
	}
	if b.registered.CompareAndSwap(false, true) {
		b.bg.Add(1)
		go b.reapLoop()
	}
	b.reap(ctx)
}

// renew writes this process's row: who it is and until when it counts as
// alive without a check (two leases, as it renews every third of one).
func (b *Broker) renew(ctx context.Context, w *writer) error {
	t := now()
	_, err := w.conn.ExecContext(ctx, `INSERT INTO processes (owner, host, machine, pid, started, seen_at, expires_at)
		VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
		ON CONFLICT (owner) DO UPDATE SET seen_at = excluded.seen_at, expires_at = excluded.expires_at`,
		b.owner, b.me.host, b.me.machine, b.me.pid, b.me.started, t, t+2*b.cfg.lease.Nanoseconds())
	if err != nil {
		return fmt.Errorf("record this process: %w", err)
	}
	return nil
}

func (b *Broker) reapLoop() {
	defer b.bg.Done()
	t := time.NewTicker(reapInterval)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
		}
		b.reap(context.Background())
	}
}

// reap releases the leases of processes of this machine that are gone,
// and forgets processes nobody has heard of for two of their leases.
// Looking costs a read and a few /proc files; only a find writes.
func (b *Broker) reap(ctx context.Context) {
	if b.me.machine == "" {
		return
	}
	rs, err := b.rdb.QueryContext(ctx, `SELECT owner, host, pid, started FROM processes WHERE machine = ?1 AND owner != ?2`,
		b.me.machine, b.owner)
	if err != nil {
		b.log.Warn("look for processes that died failed", "err", err)
		return
	}
	type dead struct {
		owner int64
		id    identity
	}
	var found []dead
	for rs.Next() {
		d := dead{id: identity{machine: b.me.machine}}
		if err := rs.Scan(&d.owner, &d.id.host, &d.id.pid, &d.id.started); err != nil {
			rs.Close()
			b.log.Warn("look for processes that died failed", "err", err)
			return
		}
		if b.me.gone(d.id) {
			found = append(found, d)
		}
	}
	// A scan cut short by its context ends without an error
	// from Next or Close: only Err tells.
	if err := errors.Join(rs.Err(), rs.Close()); err != nil {
		b.log.Warn("look for processes that died failed", "err", err)
		return
	}
	if len(found) == 0 {
		return
	}
	for _, d := range found {
		var n int64
		err := b.write(ctx, false, false, func(ctx context.Context, w *writer) error {
			res, err := w.conn.ExecContext(ctx, `UPDATE messages SET lease = 0, visible_at = 0
				WHERE lease >= ?1 AND lease < ?2`, d.owner<<32, (d.owner+1)<<32)
			if err != nil {
				return fmt.Errorf("release leases: %w", err)
			}
			n, _ = res.RowsAffected()
			if _, err := w.conn.ExecContext(ctx, `UPDATE consumers SET expires_at = 0 WHERE owner = ?1`, d.owner); err != nil {
				return fmt.Errorf("end consumers: %w", err)
			}
			if _, err := w.conn.ExecContext(ctx, `DELETE FROM processes WHERE owner = ?1`, d.owner); err != nil {
				return fmt.Errorf("forget process: %w", err)
			}
			return b.sweep(ctx, w)
		})
		if err != nil {
			b.log.Warn("release the leases of a process that died failed; they come back when they expire", "pid", d.id.pid, "err", err)
			continue
		}
		b.log.Info("released the leases of a process that died", "pid", d.id.pid, "host", d.id.host, "messages", n)
		if n > 0 {
			b.notify.wakeAll()
		}
	}
}

// forget deletes this process's row as it closes, after its leases were
// released.
func (b *Broker) forget() {
	if !b.registered.Load() {
		return
	}
	err := b.write(context.Background(), false, false, func(ctx context.Context, w *writer) error {
		_, err := w.conn.ExecContext(ctx, `DELETE FROM processes WHERE owner = ?1`, b.owner)
		return err
	})
	if err != nil {
		b.log.Warn("forget this process failed", "err", err)
	}
}
