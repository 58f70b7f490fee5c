package main

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"
)

// riverRun is one pass of River through its SQLite driver.
type riverRun struct {
	insert time.Duration // every InsertMany batch
	// workStart: from Client.Start until the n-th completion; workReady:
	// from Start returning.
	workStart, workReady time.Duration
}

// riverSetup is one configuration of River to measure.
type riverSetup struct {
	n, workers int
	dir        string
	// synchronous is SQLite's PRAGMA synchronous for River's connection;
	// empty leaves SQLite's default (FULL).
	synchronous string
	profile     string // CPU profile of the work phase (this process)
	// fetchCooldown and fetchPollInterval override River's defaults when
	// set.
	fetchCooldown, fetchPollInterval time.Duration
}

// insertBatch is how many jobs go into one InsertMany: the same as
// `symphony publish --file` puts in one transaction.
const insertBatch = 1000

type noopArgs struct {
	ID   int    `json:"id"`
	Name string `json:"name"`
}

func (noopArgs) Kind() string { return "noop" }

type noopWorker struct {
	river.WorkerDefaults[noopArgs]
}

func (noopWorker) Work(context.Context, *river.Job[noopArgs]) error { return nil }

// openRiverDB opens the database as River's own test suite does for
// SQLite: modernc.org/sqlite, WAL, one connection (River's driver
// documentation asks for SetMaxOpenConns(1) to avoid SQLITE_BUSY).
func openRiverDB(s riverSetup) (*sql.DB, error) {
	dsn := "file:" + filepath.Join(s.dir, "river.sqlite3") + "?_pragma=journal_mode(WAL)"
	if s.synchronous != "" {
		dsn += "&_pragma=synchronous(" + s.synchronous + ")"
	}
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	return db, nil
}

// runRiver migrates a fresh database, inserts n no-op jobs with InsertMany
// in batches, then starts a client with one queue of the given workers and
// times it until n jobs completed.
func runRiver(ctx context.Context, s riverSetup) (riverRun, error) {
	var r riverRun
	db, err := openRiverDB(s)
	if err != nil {
		return r, err
	}
	defer db.Close()
	driver := riversqlite.New(db)
	migrator, err := rivermigrate.New(driver, nil)
	if err != nil {
		return r, fmt.Errorf("river migrator: %w", err)
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return r, fmt.Errorf("river migrate: %w", err)
	}

	workers := river.NewWorkers()
	if err := river.AddWorkerSafely(workers, &noopWorker{}); err != nil {
		return r, err
	}
	client, err := river.NewClient(driver, &river.Config{
		// Only River's own logging is turned down, as symphony's is with
		// --log-level warn. Every other knob is River's default.
		Logger:  slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Queues:  map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: s.workers}},
		Workers: workers,
		// Zero is River's default.
		FetchCooldown:     s.fetchCooldown,
		FetchPollInterval: s.fetchPollInterval,
	})
	if err != nil {
		return r, fmt.Errorf("river client: %w", err)
	}

	// Insert.
	t := time.Now()
	for sent := 0; sent < s.n; {
		k := min(insertBatch, s.n-sent)
		params := make([]river.InsertManyParams, k)
		for i := range params {
			params[i] = river.InsertManyParams{Args: noopArgs{ID: sent + i, Name: "a small json payload"}}
		}
		res, err := client.InsertMany(ctx, params)
		if err != nil {
			return r, fmt.Errorf("river InsertMany: %w", err)
		}
		if len(res) != k {
			return r, fmt.Errorf("river InsertMany inserted %d of %d", len(res), k)
		}
		sent += k
	}
	r.insert = time.Since(t)
	if got, err := countJobs(ctx, db, ""); err != nil {
		return r, err
	} else if got != s.n {
		return r, fmt.Errorf("after inserting %d jobs River's table holds %d", s.n, got)
	}

	// Work. The subscription holds every event, so none is dropped.
	events, cancel := client.SubscribeConfig(&river.SubscribeConfig{
		ChanSize: s.n + 16,
		Kinds: []river.EventKind{river.EventKindJobCompleted, river.EventKindJobFailed,
			river.EventKindJobCancelled, river.EventKindJobSnoozed},
	})
	defer cancel()
	if s.profile != "" {
		f, err := os.Create(s.profile)
		if err != nil {
			return r, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return r, err
		}
		defer pprof.StopCPUProfile()
	}
	started := time.Now()
	if err := client.Start(ctx); err != nil {
		return r, fmt.Errorf("river start: %w", err)
	}
	ready := time.Now()
	stopClient := func() error {
		sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer scancel()
		return client.Stop(sctx)
	}
	completed := 0
	progress := time.NewTimer(30 * time.Second)
	defer progress.Stop()
	for completed < s.n {
		select {
		case ev := <-events:
			if ev.Kind != river.EventKindJobCompleted {
				stopClient()
				return r, fmt.Errorf("river job %d: event %s, want only completions", ev.Job.ID, ev.Kind)
			}
			completed++
			progress.Reset(30 * time.Second)
		case <-progress.C:
			stopClient()
			return r, fmt.Errorf("river: no completion for 30s, %d of %d completed", completed, s.n)
		case <-ctx.Done():
			stopClient()
			return r, ctx.Err()
		}
	}
	done := time.Now()
	r.workStart, r.workReady = done.Sub(started), done.Sub(ready)
	if err := stopClient(); err != nil {
		return r, fmt.Errorf("river stop: %w", err)
	}
	if got, err := countJobs(ctx, db, "completed"); err != nil {
		return r, err
	} else if got != s.n {
		return r, fmt.Errorf("river reported %d completions but its table has %d completed jobs", s.n, got)
	}
	if got, err := countJobs(ctx, db, ""); err != nil {
		return r, err
	} else if got != s.n {
		return r, fmt.Errorf("river's table holds %d jobs, %d were inserted", got, s.n)
	}
	return r, nil
}

// countJobs counts River's jobs, of one state or all.
func countJobs(ctx context.Context, db *sql.DB, state string) (int, error) {
	q, args := "SELECT count(*) FROM river_job", []any{}
	if state != "" {
		q, args = q+" WHERE state = ?", []any{state}
	}
	var n int
	if err := db.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count river jobs: %w", err)
	}
	return n, nil
}
