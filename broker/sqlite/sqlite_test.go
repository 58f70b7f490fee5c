package sqlite_test

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/broker/sqlite"
)

const patience = 20 * time.Second

// Child processes of these tests (see TestMain).
const (
	envChild = "SYMPHONY_SQLITE_TEST_CHILD"
	envDSN   = "SYMPHONY_SQLITE_TEST_DSN"
	// modeLoop publishes "0", "1", ... one Publish each, printing "ok N"
	// after each returned nil, until killed.
	modeLoop = "publish-loop"
	// modeBatch prints "start", publishes batchSize messages in one call,
	// prints "done" and waits to be killed.
	modeBatch = "publish-batch"
	batchSize = 20000
	// modeHold consumes queue "q" with a prefetch of 3, prints "held"
	// once a message is in its hands and never acks it.
	modeHold = "hold"
)

func child(mode string) int {
	b, err := sqlite.Open(context.Background(), os.Getenv(envDSN), sqlite.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		return 1
	}
	switch mode {
	case modeLoop:
		for i := 0; ; i++ {
			if err := b.Publish("k", msg(strconv.Itoa(i))); err != nil {
				fmt.Fprintln(os.Stderr, "publish:", err)
				return 1
			}
			fmt.Println("ok", i)
		}
	case modeHold:
		s, err := b.Subscriber(broker.ConsumeOptions{Prefetch: 3})
		if err != nil {
			fmt.Fprintln(os.Stderr, "subscriber:", err)
			return 1
		}
		ch, err := s.Subscribe(context.Background(), "q")
		if err != nil {
			fmt.Fprintln(os.Stderr, "subscribe:", err)
			return 1
		}
		<-ch
		fmt.Println("held")
	case modeBatch:
		msgs := make([]*message.Message, batchSize)
		for i := range msgs {
			msgs[i] = msg(strconv.Itoa(i))
		}
		fmt.Println("start")
		if err := b.Publish("k", msgs...); err != nil {
			fmt.Fprintln(os.Stderr, "publish:", err)
			return 1
		}
		fmt.Println("done")
	}
	time.Sleep(5 * patience)
	return 2
}

func msg(body string) *message.Message {
	m := message.NewMessage(watermill.NewUUID(), []byte(body))
	m.Metadata.Set(broker.MetaContentType, "text/plain")
	return m
}

// spawn starts a child and returns its output lines.
func spawn(t *testing.T, mode, dsn string) (*exec.Cmd, <-chan string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"="+mode, envDSN+"="+dsn)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		close(lines)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if cmd.ProcessState != nil {
			return
		}
		if err := cmd.Wait(); err != nil && !strings.Contains(err.Error(), "killed") {
			t.Errorf("child: %v; stderr:\n%s", err, stderr.String())
		}
	})
	return cmd, lines
}

func await(t *testing.T, lines <-chan string, want string) {
	t.Helper()
	timeout := time.After(patience)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("child ended before saying %q", want)
			}
			if l == want {
				return
			}
		case <-timeout:
			t.Fatalf("child did not say %q within %s", want, patience)
		}
	}
}

func open(t *testing.T, dsn string, opts sqlite.Options) *sqlite.Broker {
	t.Helper()
	b, err := sqlite.Open(context.Background(), dsn, opts)
	if err != nil {
		t.Fatalf("open %s: %v", dsn, err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func declare(t *testing.T, b broker.Broker, queue string, patterns ...string) {
	t.Helper()
	if err := b.Declare(context.Background(), broker.Queue{Name: queue, Patterns: patterns, Durable: true}); err != nil {
		t.Fatal(err)
	}
}

func subscribe(t *testing.T, b broker.Broker, queue string, prefetch int) (message.Subscriber, <-chan *message.Message) {
	t.Helper()
	s, err := b.Subscriber(broker.ConsumeOptions{Prefetch: prefetch})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := s.Subscribe(context.Background(), queue)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, ch
}

func next(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("subscription closed")
		}
		return m
	case <-time.After(patience):
		t.Fatalf("no message within %s", patience)
	}
	return nil
}

// rows counts the messages stored in the file, leased or not, with a
// connection of its own.
func rows(t *testing.T, path string) int {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM messages`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A message whose Publish returned nil is in the file even when the
// publisher is killed right after.
func TestCrashDurability(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	b := open(t, path, sqlite.Options{})
	declare(t, b, "q", "k")
	cmd, lines := spawn(t, modeLoop, path)
	await(t, lines, "ok 30")
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, ch := subscribe(t, b, "q", 50)
	seen := map[string]bool{}
	for i := 0; i <= 30; {
		m := next(t, ch)
		seen[string(m.Payload)] = true
		m.Ack()
		for seen[strconv.Itoa(i)] {
			i++
		}
	}
}

// One Publish call is one transaction: a publisher killed in the middle of
// a large batch leaves all of it or none of it.
func TestPublishBatchIsAtomic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	b := open(t, path, sqlite.Options{})
	declare(t, b, "q", "k")
	cmd, lines := spawn(t, modeBatch, path)
	await(t, lines, "start")
	// Somewhere in the middle of the transaction, or before or after it:
	// whichever, the outcome must be all or nothing.
	time.Sleep(time.Duration(rand.Int64N(int64(400 * time.Millisecond))))
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil {
		t.Fatal("the child was not killed")
	}
	n := rows(t, path)
	if n != 0 && n != batchSize {
		t.Fatalf("%d of %d messages stored; a batch must be all or nothing", n, batchSize)
	}
	t.Logf("the kill left %d messages", n)
}

// Another process holding the write lock makes Publish fail with a clear
// error after busy, and consumers wait it out: nothing is lost, an ack
// given meanwhile is written afterwards.
func TestLockedDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	var logs syncBuffer
	b := open(t, path+"?busy=200ms&lease=1s", sqlite.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	declare(t, b, "q", "k")
	if err := b.Publish("k", msg("before")); err != nil {
		t.Fatal(err)
	}
	_, ch := subscribe(t, b, "q", 1)
	first := next(t, ch)

	locker, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Close()
	conn, err := locker.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(context.Background(), "BEGIN EXCLUSIVE"); err != nil {
		t.Fatal(err)
	}
	first.Ack() // its write waits for the lock
	start := time.Now()
	err = b.Publish("k", msg("during"))
	if err == nil {
		t.Fatal("publish succeeded while another process held the lock")
	}
	if !strings.Contains(err.Error(), "locked by another process") || !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not say the database is locked", err)
	}
	if waited := time.Since(start); waited < 200*time.Millisecond {
		t.Errorf("publish gave up after %s, before busy", waited)
	}
	// Hold the lock past the lease: the consumer must not lose its
	// footing (it logs and retries), and the held message must not be
	// delivered twice.
	time.Sleep(1500 * time.Millisecond)
	if _, err := conn.ExecContext(context.Background(), "COMMIT"); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish("k", msg("after")); err != nil {
		t.Fatalf("publish after the lock was released: %v", err)
	}
	m := next(t, ch)
	if string(m.Payload) != "after" {
		t.Fatalf("got %q after the lock; the ack of %q was lost", m.Payload, first.Payload)
	}
	m.Ack()
	b.Close()
	if n := rows(t, path); n != 0 {
		t.Errorf("%d messages left", n)
	}
	if !strings.Contains(logs.String(), "failed") {
		t.Errorf("nothing logged about the lock:\n%s", logs.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestBadPaths(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	notDB := filepath.Join(dir, "notdb")
	if err := os.WriteFile(notDB, bytes.Repeat([]byte("not a database "), 100), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ dsn, want string }{
		{filepath.Join(dir, "missing", "x.db"), "does not exist"},
		{filepath.Join(file, "x.db"), "is not a directory"},
		{dir, "is a directory"},
		{notDB, "not a SQLite database"},
		{"", "path is empty"},
		{filepath.Join(dir, "x.db") + "?lease=soon", "lease"},
		{filepath.Join(dir, "x.db") + "?colour=blue", "unknown parameter"},
		{filepath.Join(dir, "x.db") + "?sync=sometimes", "sync"},
	} {
		b, err := sqlite.Open(context.Background(), c.dsn, sqlite.Options{})
		if err == nil {
			b.Close()
			t.Errorf("open %q succeeded", c.dsn)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("open %q: %q does not say %q", c.dsn, err, c.want)
		}
		if path, _, _ := strings.Cut(c.dsn, "?"); path != "" && !strings.Contains(err.Error(), path) {
			t.Errorf("open %q: %q does not name the path", c.dsn, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("open created the missing directory")
	}
}

// A directory nobody may write to. Permission bits do not stop root, so
// as root the directory is made immutable (chattr +i), which does.
func TestReadOnlyDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ro")
	if err := os.Mkdir(dir, 0o555); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if out, err := exec.Command("chattr", "+i", dir).CombinedOutput(); err != nil {
			t.Skipf("running as root and cannot make a directory immutable (chattr +i: %v %s); permission bits do not stop root", err, out)
		}
		t.Cleanup(func() { _ = exec.Command("chattr", "-i", dir).Run() })
	}
	path := filepath.Join(dir, "x.db")
	b, err := sqlite.Open(context.Background(), path, sqlite.Options{})
	if err == nil {
		b.Close()
		t.Fatal("open in a read-only directory succeeded")
	}
	if !strings.Contains(err.Error(), "not writable") || !strings.Contains(err.Error(), dir) {
		t.Errorf("error %q does not say the directory is not writable", err)
	}
}

// Acks are batched; Close writes the pending ones, so that nothing acked
// comes back.
func TestAcksFlushOnClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	b, err := sqlite.Open(context.Background(), path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	declare(t, b, "q", "k")
	msgs := make([]*message.Message, 300)
	for i := range msgs {
		msgs[i] = msg(strconv.Itoa(i))
	}
	if err := b.Publish("k", msgs...); err != nil {
		t.Fatal(err)
	}
	s, err := b.Subscriber(broker.ConsumeOptions{Prefetch: 100})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := s.Subscribe(context.Background(), "q")
	if err != nil {
		t.Fatal(err)
	}
	for range msgs {
		next(t, ch).Ack()
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if n := rows(t, path); n != 0 {
		t.Errorf("%d acked messages still stored after Close", n)
	}
	if b.Connected() {
		t.Error("connected after Close")
	}
}

// A handler that runs for several leases keeps its message: the heartbeat
// renews the lease, so a competing consumer does not get it.
func TestHeartbeatKeepsLongHandlersLease(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	b := open(t, path+"?lease=300ms&poll=10ms", sqlite.Options{})
	declare(t, b, "q", "k")
	if err := b.Publish("k", msg("slow")); err != nil {
		t.Fatal(err)
	}
	_, a := subscribe(t, b, "q", 1)
	slow := next(t, a)
	_, other := subscribe(t, b, "q", 1)
	// The passing of time is what is under test: four leases.
	time.Sleep(1200 * time.Millisecond)
	if err := b.Publish("k", msg("marker")); err != nil {
		t.Fatal(err)
	}
	if m := next(t, other); string(m.Payload) != "marker" {
		t.Fatalf("another consumer got %q while its handler still ran", m.Payload)
	} else {
		m.Ack()
	}
	slow.Ack()
}

// An ack that comes after the lease was lost and the message was taken by
// another consumer does not delete the other's delivery.
func TestLateAckKeepsOthersDelivery(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	var logs syncBuffer
	b := open(t, path+"?poll=10ms", sqlite.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	declare(t, b, "q", "k")
	if err := b.Publish("k", msg("contested")); err != nil {
		t.Fatal(err)
	}
	_, a := subscribe(t, b, "q", 1)
	first := next(t, a)
	// Expire the lease behind the broker's back, as a stalled process
	// would see it.
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE messages SET visible_at = 0`); err != nil {
		t.Fatal(err)
	}
	_, other := subscribe(t, b, "q", 1)
	second := next(t, other)
	if second.Metadata.Get(broker.MetaRedelivered) != "true" {
		t.Errorf("the message taken over is not marked redelivered")
	}
	first.Ack()
	// A marker behind it shows the late ack has been processed.
	if err := b.Publish("k", msg("marker")); err != nil {
		t.Fatal(err)
	}
	m := next(t, a)
	if string(m.Payload) != "marker" {
		t.Fatalf("got %q, want the marker", m.Payload)
	}
	m.Ack()
	if n := rows(t, path); n < 1 {
		t.Fatalf("the late ack deleted the other consumer's delivery")
	}
	second.Ack()
	b.Close()
	if n := rows(t, path); n != 0 {
		t.Errorf("%d messages left after the second ack", n)
	}
	if !strings.Contains(logs.String(), "ack after the lease was lost") {
		t.Errorf("the late ack was not logged:\n%s", logs.String())
	}
}

// Two exchanges in one file are two separate brokers.
func TestExchangesAreSeparate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	x := open(t, path, sqlite.Options{Exchange: "x"})
	y := open(t, path, sqlite.Options{Exchange: "y"})
	declare(t, x, "q", "k")
	if err := y.Publish("k", msg("y")); !errors.Is(err, broker.ErrUnroutable) {
		t.Fatalf("publish on y saw x's binding: %v", err)
	}
	if _, err := y.Depth(context.Background(), "q"); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("y sees x's queue: %v", err)
	}
	declare(t, y, "q", "k")
	if err := x.Publish("k", msg("x")); err != nil {
		t.Fatal(err)
	}
	if n, err := y.Depth(context.Background(), "q"); err != nil || n != 0 {
		t.Errorf("y's queue: %d messages (%v), want none of x's", n, err)
	}
	if n, err := x.Depth(context.Background(), "q"); err != nil || n != 1 {
		t.Errorf("x's queue has %d messages (%v), want 1", n, err)
	}
}

func TestDeadLetterUnknownIDsChangeNothing(t *testing.T) {
	ctx := context.Background()
	b := open(t, filepath.Join(t.TempDir(), "db"), sqlite.Options{})
	declare(t, b, "q", "k")
	if err := b.Bury(ctx, "q", msg("dead"), broker.Grave{Task: "t", Reason: "failed"}); err != nil {
		t.Fatal(err)
	}
	list, err := b.DeadLetters().List(ctx, "q", 0)
	if err != nil || len(list) != 1 {
		t.Fatalf("list: %v %v", list, err)
	}
	if list[0].Attempt != 1 {
		t.Errorf("attempt %d, want 1 (the message's, as the grave gave none)", list[0].Attempt)
	}
	for _, ids := range [][]string{{list[0].ID, "999"}, {"nope"}} {
		if _, err := b.DeadLetters().Replay(ctx, "q", ids); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("replay %v: %v, want ErrNotFound", ids, err)
		}
		if _, err := b.DeadLetters().Purge(ctx, "", ids); !errors.Is(err, broker.ErrNotFound) {
			t.Errorf("purge %v: %v, want ErrNotFound", ids, err)
		}
	}
	if _, err := b.DeadLetters().Replay(ctx, "other", []string{list[0].ID}); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("replay of q's dead letter named under another queue: %v", err)
	}
	if n, err := b.DeadLetters().Count(ctx, "q"); err != nil || n != 1 {
		t.Errorf("count %d (%v) after failed replays and purges, want 1", n, err)
	}
	if n, err := b.Depth(ctx, "q"); err != nil || n != 0 {
		t.Errorf("a failed replay enqueued %d messages (%v)", n, err)
	}
}

func TestDeclareValidates(t *testing.T) {
	b := open(t, filepath.Join(t.TempDir(), "db"), sqlite.Options{})
	for _, q := range []broker.Queue{
		{Name: "", Patterns: []string{"a"}},
		{Name: "q", Patterns: []string{"a..b"}},
		{Name: "q", Patterns: []string{""}},
		{Name: strings.Repeat("q", 256), Patterns: []string{"a"}},
	} {
		if err := b.Declare(context.Background(), q); err == nil {
			t.Errorf("declare %q %q succeeded", q.Name, q.Patterns)
		}
	}
	if err := b.Publish(strings.Repeat("k", 256), msg("x")); err == nil {
		t.Error("publish with a 256-byte routing key succeeded")
	}
	if _, err := b.Subscriber(broker.ConsumeOptions{}); err != nil {
		t.Fatal(err)
	}
	s, _ := b.Subscriber(broker.ConsumeOptions{})
	if _, err := s.Subscribe(context.Background(), "undeclared"); !errors.Is(err, broker.ErrNotFound) {
		t.Errorf("subscribe to an undeclared queue: %v, want ErrNotFound", err)
	}
}

// recorder keeps the warnings a broker logs.
type recorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	if rec.Level >= slog.LevelWarn {
		r.mu.Lock()
		r.msgs = append(r.msgs, rec.Message)
		r.mu.Unlock()
	}
	return nil
}

// A oneshot worker takes one message, acks it and stops its subscription
// at once, while the subscription is already leasing the next. Stopping
// must never cost an ack already made nor leave a lease behind: every
// message is delivered once, and what is left is ready at once, not after
// its lease.
func TestStoppingWhileLeasingLosesNothing(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	path := filepath.Join(t.TempDir(), "db")
	b := open(t, path, sqlite.Options{Logger: slog.New(rec)})
	declare(t, b, "q", "k")
	const total, rounds = 400, 150
	msgs := make([]*message.Message, total)
	for i := range msgs {
		msgs[i] = msg(strconv.Itoa(i))
	}
	if err := b.Publish("k", msgs...); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for range rounds {
		s, err := b.Subscriber(broker.ConsumeOptions{Prefetch: 1})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		ch, err := s.Subscribe(ctx, "q")
		if err != nil {
			t.Fatal(err)
		}
		m := next(t, ch)
		seen[string(m.Payload)]++
		m.Ack()
		cancel()
		for m := range ch { // handed out as intake stopped: give it back
			m.Nack()
		}
		s.Close()
	}
	for p, n := range seen {
		if n != 1 {
			t.Errorf("message %s delivered %d times", p, n)
		}
	}
	if n, err := b.Depth(context.Background(), "q"); err != nil || n != total-rounds {
		t.Errorf("depth %d (%v) after %d of %d were acked; want every other one ready now", n, err, rounds, total)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.msgs) > 0 {
		t.Errorf("warnings: %q", rec.msgs)
	}
}
