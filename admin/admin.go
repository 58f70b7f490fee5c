// Package admin is the daemon's admin HTTP server: /metrics, /healthz,
// /readyz and /status, the live dashboard at / (plain HTML, CSS and
// JavaScript embedded from web/), the rate and backlog history behind its
// charts, and the actions an operator takes with the admin token
// (publish, replay and purge dead letters). It reads the engine's status
// and calls its actions; the engine never sees it.
package admin

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/engine"
	"github.com/symphony-go/symphony/tasks"
)

//go:embed web
var webFiles embed.FS

// Daemon is what the admin server reads and acts on: the engine.
type Daemon interface {
	Status() engine.Status
	// Health is nil when the broker can store and deliver messages.
	Health() error
	// Ready is closed once every task's workers consume.
	Ready() <-chan struct{}
	Publish(pub tasks.Publication) (string, error)
	DeadLetters() broker.DeadLetters
}

var _ Daemon = (*engine.Engine)(nil)

// Config is what the admin server needs.
type Config struct {
	// Daemon is the engine it reports on. Required.
	Daemon Daemon
	// Gatherer serves /metrics. Defaults to an empty registry.
	Gatherer prometheus.Gatherer
	// Token, when set, lets the server take actions for requests that
	// carry it (Authorization: Bearer TOKEN); without it nothing on the
	// server changes state.
	Token string
	// Logger receives the server's logs. Defaults to discarding them.
	Logger *slog.Logger
	// CheckPayload is the daemon's decoder: POST /publish refuses a
	// payload it refuses. Nil accepts every payload.
	CheckPayload func(contentType string, body []byte) error
	// Every is how often the history samples each task's rate and
	// backlog. Defaults to 2s.
	Every time.Duration
	// Keep is how much history the server keeps. Defaults to 15 minutes.
	Keep time.Duration
	// Push is how often the dashboard's event stream sends the status.
	// Defaults to 1s.
	Push time.Duration
}

// Server is a listening admin server.
type Server struct {
	cfg     Config
	log     *slog.Logger
	ln      net.Listener
	history *history
}

// New makes an admin server on ln, which the caller opened so that a busy
// address stops a daemon before it starts anything; Run serves it.
func New(ln net.Listener, cfg Config) *Server {
	if cfg.Gatherer == nil {
		cfg.Gatherer = prometheus.NewRegistry()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Every <= 0 {
		cfg.Every = 2 * time.Second
	}
	if cfg.Keep <= 0 {
		cfg.Keep = 15 * time.Minute
	}
	if cfg.Push <= 0 {
		cfg.Push = time.Second
	}
	return &Server{cfg: cfg, log: cfg.Logger, ln: ln, history: newHistory(cfg.Every, cfg.Keep)}
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Loopback reports whether the server is reachable from this machine
// only.
func (s *Server) Loopback() bool {
	a, ok := s.ln.Addr().(*net.TCPAddr)
	return ok && a.IP.IsLoopback()
}

// Run serves until ctx is done, sampling the history meanwhile; open
// event streams end then, so that a stopping daemon does not wait on
// its dashboards.
func (s *Server) Run(ctx context.Context) error {
	streams, endStreams := context.WithCancel(context.Background())
	defer endStreams()
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return streams },
	}
	go s.sample(streams)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("admin server: %w", err)
	case <-ctx.Done():
	}
	endStreams()
	shutdown, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		_ = srv.Close()
	}
	return nil
}

// sample records every task's rate and backlog into the history until
// ctx ends.
func (s *Server) sample(ctx context.Context) {
	s.history.add(s.cfg.Daemon.Status(), time.Now())
	tick := time.NewTicker(s.cfg.Every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			s.history.add(s.cfg.Daemon.Status(), now)
		}
	}
}

// Handler serves every route of the admin server.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.cfg.Daemon.Status())
	})
	mux.HandleFunc("GET /history", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.history.snapshot())
	})
	mux.HandleFunc("GET /events", s.events)

	// Actions need the token, and refuse a cross-site request whatever
	// it carries. The dead letters' list is open, like /status; their
	// bodies are open only while no token is set: a token guards the
	// messages' contents too.
	guard := http.NewCrossOriginProtection()
	action := func(h http.HandlerFunc) http.Handler { return guard.Handler(s.authorized(h)) }
	mux.HandleFunc("GET /dead", s.deadList)
	mux.Handle("GET /dead/{id...}", s.readable(s.deadShow))
	mux.Handle("POST /dead/replay", action(func(w http.ResponseWriter, r *http.Request) { s.deadChange(w, r, "replay") }))
	mux.Handle("POST /dead/purge", action(func(w http.ResponseWriter, r *http.Request) { s.deadChange(w, r, "purge") }))
	mux.Handle("POST /publish", action(s.publish))

	web, _ := fs.Sub(webFiles, "web")
	files := http.FileServerFS(web)
	mux.Handle("GET /", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy",
			"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		if r.URL.Path == "/" {
			w.Header().Set("Cache-Control", "no-cache")
		}
		files.ServeHTTP(w, r)
	}))
	return mux
}

// readyz asks neither for the status nor for anything a reload holds, so
// that it answers at once whatever the daemon does.
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if err := s.cfg.Daemon.Health(); err != nil {
		http.Error(w, "not ready: broker: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	select {
	case <-s.cfg.Daemon.Ready():
		io.WriteString(w, "ready\n")
	default:
		http.Error(w, "not ready: workers are still subscribing", http.StatusServiceUnavailable)
	}
}
