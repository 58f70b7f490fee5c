// Package amqp is the RabbitMQ broker: it owns the durable topic exchange,
// each task's queue with its bindings, its dead-letter queue <queue>.dead
// and its binding record <queue>.bindings, the delay queues that hold
// retries and delayed publishes, and the two connections (one publishes,
// one consumes) that it keeps up across drops and broker restarts. It
// implements broker.Broker and gives every operation the meaning the
// embedded broker gives it (broker/brokertest proves it).
//
// # Why not watermill-amqp
//
// It is built directly on github.com/rabbitmq/amqp091-go and exposes
// Watermill's message.Subscriber and message.Message as the embedded broker
// does. watermill-amqp v3.1.0 cannot report an unroutable publish (it sets no
// mandatory flag and ignores basic.return), fails on non-string headers,
// declares a non-durable exchange, panics on a nil logger, races in its
// reconnect wrapper (watermill#693, which breaks go test -race) and handles
// one delivery per subscription with no prefetch pipeline, which measured
// about half the plain client's rate.
//
// # Topology
//
// Open declares the exchange (type topic, durable) and fails with an error
// naming it when one of that name exists with other settings. Declare
// declares the task queue (durable, or auto-delete when Queue.Durable is
// false), its dead-letter queue <queue>.dead (always durable), binds every
// pattern and unbinds the patterns applied before that are no longer
// listed. What was applied before is known from this process (reloads) and
// from the binding record: a durable queue <queue>.bindings holding one
// persistent message per exchange, a JSON list of the patterns applied last.
// Declare reads it with basic.get (holding the messages unacked, so a crash
// leaves the record as it was), applies the bindings, publishes the new
// record with a confirm and only then acks the old one. RabbitMQ's
// management API is not needed. Non-durable queues have no record: they do
// not outlive the process that consumes them.
//
// # Delays
//
// A retry (Requeue with a delay) and a delayed publish (broker.MetaDelay)
// wait in RabbitMQ, not in this process, so they survive a restart and block
// no consumer. For each distinct delay (in milliseconds) there is a fanout
// exchange and a durable queue with x-message-ttl = the delay, named
// <exchange>.retry.<ms> for retries and <exchange>.delay.<ms> for delayed
// publishes. A message expiring there is dead-lettered: a retry to the
// default exchange with the target queue as its routing key (it was published
// with that key), a delayed publish to the topic exchange with its own
// routing key. The original routing key travels in the x-symphony-routing-key
// header, and the x-death entries that the delay queues add are removed
// before a handler sees the message (entries from the user's own
// dead-lettering stay). The delay queues have x-expires = 2 × delay + 10
// minutes and are declared again (which counts as use) whenever this process
// last did so more than a quarter of that ago, so a queue never expires with
// a message in it; their exchanges are auto-delete and go with them.
//
// Limit: RabbitMQ routes a delayed publish when its delay ends, and
// dead-lettering has no mandatory flag, so a delayed publish cannot report
// broker.ErrUnroutable; a message whose key nothing is bound to by then is
// dropped by RabbitMQ.
//
// # Headers
//
// Application headers reach handlers as JSON (broker.MetaHeaders) with
// their types: tables become objects, arrays arrays, integers of every width
// integers, floats numbers with a fraction or exponent, booleans booleans,
// strings strings, byte arrays strings when they are UTF-8 and base64
// otherwise, timestamps RFC 3339 strings, decimals numbers. On publish,
// JSON integers become 64-bit integers, other numbers doubles, objects
// tables. Headers whose names start with x-symphony- are this package's own
// and are not shown to handlers: the attempt (x-symphony-attempt, so that
// it holds across restarts and hosts), the original routing key, the
// timestamp with nanoseconds (AMQP's has seconds), the message's UUID when it
// differs from its message id, Watermill metadata of other names, and the
// dead-letter fields.
//
// # Consumption
//
// Each Subscribe call is one AMQP channel with basic.qos(prefetch) and one
// consumer in manual-ack mode; it hands out one message at a time. AutoAck
// acks each message as it is handed out, rather than consuming in no-ack
// mode: RabbitMQ ignores the prefetch of a no-ack consumer and would push
// the whole queue into the process, and messages held but not yet handed
// out would be lost on shutdown. A consumer the broker cancels (its queue
// was deleted) declares the queue again with its bindings, when this process
// declared it, and resumes.
//
// # Faults
//
// A dropped connection is dialled again with exponential backoff and jitter
// (Options.ReconnectMin to ReconnectMax); the exchange and every durable
// queue this process declared are declared again with their bindings, and
// every subscription resumes on a new channel. Messages that were unacked
// when the connection dropped, the one in flight included, are redelivered
// by RabbitMQ, marked redelivered (at-least-once); the ack of the one in
// flight fails and is logged. Connected is false while either connection is
// down; Publish waits for the connection at most Options.PublishTimeout.
//
// A connection whose packets stop while its socket stays open (a dead
// route, a NAT that forgot the flow) is found by heartbeats: amqp091-go
// gives up on a connection that sent nothing for three heartbeat intervals
// (Options.Heartbeat, or heartbeat=N seconds in the URL's query, which wins).
//
// # Clusters
//
// The URL may name several nodes of a RabbitMQ cluster, comma-separated
// (amqp://u:p@a:5672/v,amqp://u:p@b:5672/v). Each connection dials them in
// turn, starting with the one after the node it last lost, so that a lost
// node is tried last; a round in which every node fails counts as one
// failed attempt of the backoff. Quorum queues (broker.Queue.Type) survive
// the loss of a minority of the nodes; their dead-letter queue and binding
// record are quorum queues too, and their retries wait in quorum delay
// queues (<exchange>.retry.<ms>.quorum: a queue-wide x-message-ttl, which
// quorum queues take, and at-least-once dead-lettering, so that a retry is
// not dropped when the node that expires it cannot reach the target).
// Delayed publishes wait in quorum delay queues when Options.QueueType is
// quorum.
package amqp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/tasks"
)

// Defaults of Options.
const (
	DefaultExchange       = "symphony"
	DefaultConnectTimeout = 10 * time.Second
	DefaultReconnectMin   = 100 * time.Millisecond
	DefaultReconnectMax   = 10 * time.Second
	DefaultPublishTimeout = 10 * time.Second
	DefaultHeartbeat      = 10 * time.Second
	DefaultName           = "symphony"
)

// Options are the broker's settings besides its URL.
type Options struct {
	// Exchange names the durable topic exchange. Default "symphony".
	Exchange string
	// Logger receives the broker's warnings; nil discards them.
	Logger *slog.Logger
	// ConnectTimeout is how long Open keeps trying an unreachable broker
	// before giving up. Default 10s.
	ConnectTimeout time.Duration
	// ReconnectMin and ReconnectMax bound the pause between attempts to
	// reconnect (it doubles, with jitter). Defaults 100ms and 10s.
	ReconnectMin, ReconnectMax time.Duration
	// PublishTimeout bounds a Publish: waiting for the connection and for
	// the broker's confirms. Requeue, Bury and Declare are bounded by it
	// too, besides their context. Default 10s.
	PublishTimeout time.Duration
	// Heartbeat is the AMQP heartbeat interval; a silent connection is
	// declared dead after three of them. heartbeat=N (seconds) in the
	// URL's query wins. Default 10s.
	Heartbeat time.Duration
	// Name is the connection name RabbitMQ shows (with " publish" and
	// " consume" appended). Default "symphony".
	Name string
	// Queues are task queues whose dead letters DeadLetters covers when
	// asked about every queue (""), besides those declared through this
	// Broker. RabbitMQ cannot list queues without its management plugin.
	Queues []string
	// QueueType is the type of the delay queues of delayed publishes, and
	// of retries to a queue this Broker did not declare. Default classic.
	QueueType tasks.QueueType
}

func (o *Options) defaults() {
	if o.Exchange == "" {
		o.Exchange = DefaultExchange
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.ReconnectMin <= 0 {
		o.ReconnectMin = DefaultReconnectMin
	}
	if o.ReconnectMax < o.ReconnectMin {
		o.ReconnectMax = max(DefaultReconnectMax, o.ReconnectMin)
	}
	if o.PublishTimeout <= 0 {
		o.PublishTimeout = DefaultPublishTimeout
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	if o.Name == "" {
		o.Name = DefaultName
	}
}

// Broker is the RabbitMQ broker. It implements broker.Broker.
type Broker struct {
	nodes    []string // URLs of the nodes, with their passwords; never logged
	shown    []string // the same without passwords
	redacted string
	opts     Options
	exchange string
	log      *slog.Logger

	// pub carries publishes and topology; sub carries consumers, so that
	// RabbitMQ's flow control of a publishing connection never holds back
	// the acks that would relieve it.
	pub, sub *link

	pool  pubPool
	admin admin

	// declareMu serialises Declare with the re-declaration after a
	// reconnect.
	declareMu sync.Mutex

	mu       sync.Mutex
	declared map[string]broker.Queue // by name: as last applied
	delays   map[string]delayState   // by delay queue name
	subs     map[*subscriber]struct{}
	// consumers counts this process's subscriptions per queue: its
	// share of a rate limit.
	consumers map[string]int
	splits    map[string]*split // rate limits by task

	closed atomic.Bool
	stop   chan struct{}
	bg     sync.WaitGroup
}

var _ broker.Broker = (*Broker)(nil)

// Open connects to the broker at rawURL (amqp:// or amqps://; several,
// comma-separated, for the nodes of a cluster), declares the durable topic
// exchange, and keeps the connection up. An unreachable broker is tried
// again until opts.ConnectTimeout or ctx ends.
func Open(ctx context.Context, rawURL string, opts Options) (*Broker, error) {
	opts.defaults()
	nodes := Nodes(rawURL)
	shown := make([]string, len(nodes))
	for i, n := range nodes {
		shown[i] = broker.Redact(n)
	}
	b := &Broker{
		nodes:     nodes,
		shown:     shown,
		redacted:  strings.Join(shown, ","),
		opts:      opts,
		exchange:  opts.Exchange,
		declared:  map[string]broker.Queue{},
		delays:    map[string]delayState{},
		subs:      map[*subscriber]struct{}{},
		consumers: map[string]int{},
		splits:    map[string]*split{},
		stop:      make(chan struct{}),
	}
	b.log = opts.Logger.With("broker", "amqp", "url", b.redacted, "exchange", b.exchange)
	if len(nodes) == 0 {
		return nil, errors.New("open broker: the URL is empty; give amqp://user:pass@host:port/vhost")
	}
	for i, n := range nodes {
		if _, err := amqp.ParseURI(n); err != nil {
			return nil, fmt.Errorf("open broker %s: node %d (%s): %w", b.redacted, i+1, shown[i], uriError(err))
		}
	}
	b.pub = &link{b: b, role: "publish", wake: make(chan struct{})}
	b.sub = &link{b: b, role: "consume", wake: make(chan struct{})}

	ctx, cancel := context.WithTimeout(ctx, opts.ConnectTimeout)
	defer cancel()
	pub, err := b.pub.dialUntil(ctx)
	if err != nil {
		return nil, fmt.Errorf("open broker %s: %w", b.redacted, err)
	}
	if err := b.declareExchange(pub.conn); err != nil {
		pub.conn.Close()
		return nil, fmt.Errorf("open broker %s: %w", b.redacted, err)
	}
	sub, err := b.sub.dialUntil(ctx)
	if err != nil {
		pub.conn.Close()
		return nil, fmt.Errorf("open broker %s: %w", b.redacted, err)
	}
	b.bg.Add(2)
	go b.pub.run(pub)
	go b.sub.run(sub)
	return b, nil
}

// Nodes splits a broker URL into the URLs of its nodes: several,
// comma-separated, name the nodes of a cluster.
func Nodes(raw string) []string {
	var nodes []string
	for _, n := range strings.Split(raw, ",") {
		if n = strings.TrimSpace(n); n != "" {
			nodes = append(nodes, n)
		}
	}
	return nodes
}

// uriError is a URL parsing error without the URL, which may hold a
// password.
func uriError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		// ue.Err quotes the part that failed, which may be a piece of
		// the password.
		return errors.New("the URL does not parse: percent-encode the characters % # / ? @ : and space " +
			"in the user name and password (p%25ss for p%ss)")
	}
	return err
}

// Connected reports whether both connections are up.
func (b *Broker) Connected() bool { return b.Health() == nil }

// Health is nil while both connections are up, and otherwise says which
// is down and why.
func (b *Broker) Health() error {
	if b.closed.Load() {
		return errClosed
	}
	for _, l := range []*link{b.pub, b.sub} {
		if l.current() == nil {
			err := "connecting"
			if e := l.lastErr.Load(); e != nil {
				err = (*e).Error()
			}
			return fmt.Errorf("the %s connection to %s is down (%s); reconnecting", l.role, b.redacted, err)
		}
	}
	return nil
}

// Close ends every subscription (their unacked messages go back to their
// queues) and closes the connections.
func (b *Broker) Close() error {
	if !b.closed.CompareAndSwap(false, true) {
		return nil
	}
	b.mu.Lock()
	subs := make([]*subscriber, 0, len(b.subs))
	for s := range b.subs {
		subs = append(subs, s)
	}
	b.mu.Unlock()
	for _, s := range subs {
		s.Close()
	}
	close(b.stop)
	b.bg.Wait()
	b.admin.close()
	b.pool.close()
	var errs []error
	for _, l := range []*link{b.pub, b.sub} {
		if s := l.current(); s != nil {
			if err := s.conn.Close(); err != nil && !errors.Is(err, amqp.ErrClosed) {
				errs = append(errs, err)
			}
		}
		l.set(nil)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close broker %s: %w", b.redacted, err)
	}
	return nil
}

// session is one connection of a link, from dial to loss.
type session struct {
	conn *amqp.Connection
	node int // index into Broker.nodes
	gen  uint64
	lost chan struct{} // closed when the connection closes
	err  error         // why; read after lost is closed
}

// link is one connection to RabbitMQ that is kept up: while it is down,
// current is nil, and a supervisor dials it again.
type link struct {
	b    *Broker
	role string
	gen  atomic.Uint64
	// next is the node to dial first; only the link's own goroutine
	// (Open, then run) dials.
	next int
	// lastErr is why the link went down or could not come up.
	lastErr atomic.Pointer[error]

	mu   sync.Mutex
	cur  *session
	wake chan struct{} // closed and replaced whenever cur changes
}

func (l *link) current() *session {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cur
}

func (l *link) set(s *session) {
	l.mu.Lock()
	l.cur = s
	close(l.wake)
	l.wake = make(chan struct{})
	l.mu.Unlock()
}

// await returns the current session, waiting for one while the link is
// down, until ctx ends, stop closes or the broker closes.
func (l *link) await(ctx context.Context, stop <-chan struct{}) (*session, error) {
	for {
		l.mu.Lock()
		s, wake := l.cur, l.wake
		l.mu.Unlock()
		if l.b.closed.Load() {
			return nil, errClosed
		}
		if s != nil {
			select {
			case <-s.lost:
			default:
				return s, nil
			}
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for the connection to %s: %w", l.b.redacted, context.Cause(ctx))
		case <-stop:
			return nil, errStopped
		case <-l.b.stop:
			return nil, errClosed
		}
	}
}

var (
	errClosed  = errors.New("the broker is closed")
	errStopped = errors.New("the subscriber is closed")
)

// dial connects to the first node that answers, trying each once,
// starting with l.next. It returns the last node's error when none does,
// together with whether every node refused for a reason that retrying
// cannot fix (bad credentials, an unknown vhost).
func (l *link) dial() (*session, bool, error) {
	n := len(l.b.nodes)
	fatal := true
	var errs []error
	for i := range n {
		node := (l.next + i) % n
		s, err := l.dialNode(node)
		if err == nil {
			l.next = node
			return s, false, nil
		}
		var ae *amqp.Error
		if !errors.As(err, &ae) || (ae.Code != amqp.AccessRefused && ae.Code != amqp.NotAllowed) {
			fatal = false
		}
		if n > 1 {
			err = fmt.Errorf("node %s: %w", l.b.shown[node], err)
		}
		errs = append(errs, err)
	}
	err := errors.Join(errs...)
	l.lastErr.Store(&err)
	return nil, fatal, err
}

func (l *link) dialNode(node int) (*session, error) {
	o := l.b.opts
	cfg := amqp.Config{
		Heartbeat:  o.Heartbeat,
		Properties: amqp.Table{"connection_name": o.Name + " " + l.role},
		// Bounds the TCP connect and the AMQP handshake, so that a
		// server that accepts but does not answer cannot hold Open past
		// its timeout for long.
		Dial: amqp.DefaultDial(min(o.ConnectTimeout, 10*time.Second)),
	}
	conn, err := amqp.DialConfig(l.b.nodes[node], cfg)
	if err != nil {
		return nil, err
	}
	s := &session{conn: conn, node: node, gen: l.gen.Add(1), lost: make(chan struct{})}
	closes := conn.NotifyClose(make(chan *amqp.Error, 1))
	go func() {
		if e, ok := <-closes; ok && e != nil {
			s.err = e
		} else {
			s.err = amqp.ErrClosed
		}
		close(s.lost)
	}()
	return s, nil
}

// dialUntil dials until it succeeds or ctx ends; an error that retrying
// cannot fix (bad credentials, unknown vhost) ends it at once.
func (l *link) dialUntil(ctx context.Context) (*session, error) {
	pause := l.b.opts.ReconnectMin
	for {
		s, fatal, err := l.dial()
		if err == nil {
			return s, nil
		}
		if fatal {
			return nil, fmt.Errorf("connect: %w", err)
		}
		l.b.log.Warn("connect to the broker failed; retrying", "connection", l.role, "err", err, "retry_in", pause.String())
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("connect: gave up after %s: %w", l.b.opts.ConnectTimeout, err)
		}
		pause = l.b.nextPause(pause)
	}
}

// nextPause doubles a reconnect pause within the bounds, with ±20% jitter
// so that many daemons do not reconnect in step.
func (b *Broker) nextPause(p time.Duration) time.Duration {
	p = min(2*p, b.opts.ReconnectMax)
	j := time.Duration(float64(p) * (0.8 + 0.4*rand.Float64()))
	return max(min(j, b.opts.ReconnectMax), b.opts.ReconnectMin)
}

// run supervises the link: it publishes s, waits for it to be lost, and
// dials again until the broker closes.
func (l *link) run(s *session) {
	defer l.b.bg.Done()
	for {
		l.set(s)
		select {
		case <-s.lost:
		case <-l.b.stop:
			return
		}
		l.lastErr.Store(&s.err)
		l.set(nil)
		l.b.log.Warn("connection to the broker lost; reconnecting", "connection", l.role, "node", l.b.shown[s.node], "err", s.err)
		// The node that was lost is tried last.
		l.next = (s.node + 1) % len(l.b.nodes)
		s = l.reconnect()
		if s == nil {
			return
		}
		l.b.log.Info("connection to the broker restored", "connection", l.role, "node", l.b.shown[s.node])
	}
}

func (l *link) reconnect() *session {
	pause := l.b.opts.ReconnectMin
	for {
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-l.b.stop:
			t.Stop()
			return nil
		}
		s, _, err := l.dial()
		if err == nil && l == l.b.pub {
			if err = l.b.restore(s); err != nil {
				s.conn.Close()
			}
		}
		if err == nil {
			return s
		}
		pause = l.b.nextPause(pause)
		l.b.log.Warn("reconnect to the broker failed; retrying", "connection", l.role, "err", err, "retry_in", pause.String())
	}
}

// restore declares the exchange and every durable queue this process
// declared on a new publishing connection, before anyone uses it.
// Non-durable queues are declared again by their consumers, which find
// them gone.
func (b *Broker) restore(s *session) error {
	if err := b.declareExchange(s.conn); err != nil {
		return err
	}
	b.declareMu.Lock()
	defer b.declareMu.Unlock()
	b.mu.Lock()
	queues := make([]broker.Queue, 0, len(b.declared))
	for _, q := range b.declared {
		if q.Durable {
			queues = append(queues, q)
		}
	}
	b.mu.Unlock()
	for _, q := range queues {
		if err := b.apply(s, q); err != nil {
			if errors.Is(err, amqp.ErrClosed) || s.conn.IsClosed() {
				return err
			}
			// Someone changed the queue behind our back; consumers
			// will say so too. Keep the others going.
			b.log.Error("declare queue again after reconnecting failed", "queue", q.Name, "err", err)
		}
	}
	return nil
}

// deadline is ctx bounded by the publish timeout.
func (b *Broker) deadline(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, b.opts.PublishTimeout)
}

// channel opens a channel on s.
func channel(s *session) (*amqp.Channel, error) {
	ch, err := s.conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open channel: %w", err)
	}
	return ch, nil
}
