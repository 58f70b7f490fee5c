package sqlite_test

import (
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/broker/sqlite"
	"github.com/symphony-go/symphony/internal/symphonytest"
)

// drain takes n messages from ch, acks each and returns their payloads.
func drain(t *testing.T, ch <-chan *message.Message, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		m := next(t, ch)
		got[string(m.Payload)]++
		m.Ack()
	}
	return got
}

// A full disk refuses publishes with an error that says so, stores none of
// them, keeps the acks that cannot be written until there is room, and
// works again as soon as there is, without reopening.
func TestDiskFull(t *testing.T) {
	dir := symphonytest.Tmpfs(t, 8<<20)
	path := filepath.Join(dir, "db")
	var logs syncBuffer
	b := open(t, path, sqlite.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	declare(t, b, "q", "k")
	stored := map[string]bool{}
	publish := func(body string) error {
		err := b.Publish("k", msg(body))
		if err == nil {
			stored[body] = true
		}
		return err
	}
	for i := range 10 {
		if err := publish(fmt.Sprint("before-", i)); err != nil {
			t.Fatal(err)
		}
	}
	_, ch := subscribe(t, b, "q", 1)
	first := next(t, ch)

	free := symphonytest.Fill(t, dir)
	// The journal may have room left: publish until a write needs more.
	big := strings.Repeat("x", 32<<10)
	var refused error
	for i := 0; refused == nil && i < 1000; i++ {
		refused = publish(fmt.Sprintf("full-%d-%s", i, big))
	}
	if refused == nil {
		t.Fatal("1000 publishes of 32 KiB to a full 8 MiB disk all succeeded")
	}
	if !strings.Contains(refused.Error(), "disk is full") || !strings.Contains(refused.Error(), path) {
		t.Errorf("the refusal %q does not say the disk of %s is full", refused, path)
	}
	if err := b.Health(); err == nil {
		t.Error("Health is nil while the disk is full")
	}
	if b.Connected() {
		t.Error("Connected while the disk is full")
	}
	first.Ack() // not written yet: it waits for room

	free()
	if err := publish("after"); err != nil {
		t.Fatalf("publish once there is room again: %v", err)
	}
	if err := b.Health(); err != nil {
		t.Errorf("Health after recovery: %v", err)
	}
	got := drain(t, ch, len(stored)-1)
	for body, n := range got {
		if !stored[body] || n > 1 || body == string(first.Payload) {
			t.Errorf("message %.20q delivered %d times; stored: %v, the acked one: %v", body, n, stored[body], body == string(first.Payload))
		}
	}
	b.Close()
	if n := rows(t, path); n != 0 {
		t.Errorf("%d messages left after every stored one was acked", n)
	}
	for _, want := range []string{"the broker cannot store messages", "the broker stores messages again"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("the log does not say %q:\n%s", want, logs.String())
		}
	}
}

// A database file removed or replaced under the broker is noticed: every
// write after it is refused (ErrFileMoved), so nothing is stored where no
// process would find it, and nothing is acked.
func TestDatabaseFileMoved(t *testing.T) {
	for _, c := range []struct {
		name string
		move func(t *testing.T, path string)
	}{
		{"removed", func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}},
		{"replaced", func(t *testing.T, path string) {
			copyFile(t, path, path+".new")
			if err := os.Rename(path+".new", path); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "db")
			var logs syncBuffer
			b := open(t, path, sqlite.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			declare(t, b, "q", "k")
			for i := range 3 {
				if err := b.Publish("k", msg(fmt.Sprint(i))); err != nil {
					t.Fatal(err)
				}
			}
			_, ch := subscribe(t, b, "q", 1)
			held := next(t, ch)

			c.move(t, path)
			err := b.Publish("k", msg("after"))
			if !errors.Is(err, sqlite.ErrFileMoved) || !strings.Contains(err.Error(), path) {
				t.Fatalf("publish after the file was %s: %v; want ErrFileMoved naming %s", c.name, err, path)
			}
			if err := b.Health(); !errors.Is(err, sqlite.ErrFileMoved) {
				t.Errorf("Health = %v, want ErrFileMoved", err)
			}
			held.Ack()
			b.Close()
			if !strings.Contains(logs.String(), "database file removed or replaced") {
				t.Errorf("nothing logged:\n%s", logs.String())
			}
			if c.name == "replaced" {
				// The file now at the path is as it was copied: the
				// ack and the refused publish went nowhere.
				if n := rows(t, path); n != 3 {
					t.Errorf("the file at the path has %d messages, want the 3 it was copied with", n)
				}
			}
		})
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	// A consistent copy, as an operator restoring a backup would make.
	db, err := sql.Open("sqlite", from)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`VACUUM INTO ?1`, to); err != nil {
		t.Fatal(err)
	}
}

// A database file made read-only under the broker (immutable, which stops
// root too) refuses writes with an error that says so, and the broker
// works again once it is writable, without reopening.
func TestDatabaseFileMadeReadOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	b := open(t, path, sqlite.Options{})
	declare(t, b, "q", "k")
	if err := b.Publish("k", msg("before")); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		symphonytest.Immutable(t, path, true)
	} else if err := os.Chmod(path, 0o444); err != nil {
		t.Fatal(err)
	}
	err := b.Publish("k", msg("refused"))
	if err == nil || !strings.Contains(err.Error(), "read-only") || !strings.Contains(err.Error(), path) {
		t.Fatalf("publish to a read-only file: %v; want an error saying %s is read-only", err, path)
	}
	if b.Health() == nil {
		t.Error("Health is nil while the file is read-only")
	}
	if os.Geteuid() == 0 {
		symphonytest.Immutable(t, path, false)
	} else if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish("k", msg("after")); err != nil {
		t.Fatalf("publish once the file is writable again: %v", err)
	}
	if err := b.Health(); err != nil {
		t.Errorf("Health after recovery: %v", err)
	}
	_, ch := subscribe(t, b, "q", 1)
	got := drain(t, ch, 2)
	if got["before"] != 1 || got["after"] != 1 {
		t.Errorf("delivered %v, want before and after once each", got)
	}
}

// The leases of a consumer process that was killed come back as soon as
// another process of the machine looks, not when they expire: a lease of
// an hour shows it.
func TestLeasesOfAKilledProcessComeBackAtOnce(t *testing.T) {
	for _, c := range []struct {
		name string
		// restart: the other process opens the database after the kill
		// (a daemon restarted); otherwise it was consuming all along.
		restart bool
	}{{"restarted", true}, {"running", false}} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "db")
			dsn := path + "?lease=1h"
			b := open(t, dsn, sqlite.Options{})
			declare(t, b, "q", "k")
			for i := range 3 {
				if err := b.Publish("k", msg(fmt.Sprint(i))); err != nil {
					t.Fatal(err)
				}
			}
			cmd, lines := spawn(t, modeHold, dsn)
			await(t, lines, "held")
			if !c.restart {
				// Another consumer of the queue that is alive all along.
				_, ch := subscribe(t, b, "q", 1)
				killAndCollect(t, cmd, ch)
				return
			}
			b.Close()
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			_ = cmd.Wait()
			again := open(t, dsn, sqlite.Options{})
			_, ch := subscribe(t, again, "q", 1)
			collect(t, ch)
		})
	}
}

func killAndCollect(t *testing.T, cmd *exec.Cmd, ch <-chan *message.Message) {
	t.Helper()
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	collect(t, ch)
}

// collect takes the three messages the killed process held, each marked
// redelivered.
func collect(t *testing.T, ch <-chan *message.Message) {
	t.Helper()
	got := map[string]bool{}
	for range 3 {
		m := next(t, ch)
		if m.Metadata.Get(broker.MetaRedelivered) != "true" {
			t.Errorf("message %q is not marked redelivered", m.Payload)
		}
		got[string(m.Payload)] = true
		m.Ack()
	}
	if len(got) != 3 {
		t.Errorf("got %v, want the three messages", got)
	}
}
