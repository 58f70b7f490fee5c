package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/urfave/cli/v2"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/engine"
	"github.com/symphony-go/symphony/starlarklib"
)

// loader loads the daemon's generations: symphony.star, then every task
// file, off to the side, with the command line's flags and environment
// over the file as at start. The engine runs what it returns only when it
// returns no error.
type loader struct {
	c       *cli.Context
	roots   []string
	initial settings
	level   *slog.LevelVar
	log     *slog.Logger
	copies  *snapshots
	// world is what tasks reach outside themselves, kept across reloads
	// (connections, database pools).
	world *starlarklib.World
	// databases are world's pools: a reload's Commit sets them, keeping
	// the pool of every database whose URL did not change.
	databases *starlarklib.DatabasePools
}

func (l *loader) load(context.Context) (engine.Generation, error) {
	file, err := starlarklib.LoadConfig(l.roots)
	if err != nil {
		return engine.Generation{}, err
	}
	s, err := resolve(l.c, file)
	if err != nil {
		return engine.Generation{}, err
	}
	if err := fixedSettings(l.initial, s, file); err != nil {
		return engine.Generation{}, err
	}
	dbs, err := file.Databases()
	if err != nil {
		return engine.Generation{}, err
	}
	src := sources{}
	ts, err := starlarklib.Load(l.roots, starlarklib.Options{Logger: l.log, Sources: src.add, World: l.world, QueueType: s.QueueType,
		Databases: file.DatabaseNames()})
	if err == nil {
		ts, err = selectTasks(ts, s.Tasks)
	}
	if err != nil {
		return engine.Generation{}, err
	}
	var unsupported []error
	for _, t := range ts {
		unsupported = append(unsupported, engine.CheckPlatform(t.Spec))
	}
	if err := errors.Join(unsupported...); err != nil {
		return engine.Generation{}, err
	}
	if err := l.copies.keep(src, ts); err != nil {
		return engine.Generation{}, err
	}
	return engine.Generation{
		Tasks: ts,
		Tuning: engine.Tuning{ScalingInterval: s.ScalingInterval, ShutdownTimeout: s.ShutdownTimeout,
			ThrottleMax: s.ThrottleMax, ThrottleFactor: s.ThrottleFactor},
		Commit: func() {
			l.level.Set(s.LogLevel)
			l.databases.Set(dbs)
		},
	}, nil
}

// fixedSettings refuses a change to a setting that cannot change while
// the daemon runs.
func fixedSettings(was, now settings, file starlarklib.Config) error {
	for _, f := range []struct {
		name     string
		was, now string
	}{
		{"broker", was.Broker, now.Broker},
		{"exchange", was.Exchange, now.Exchange},
		{"admin-addr", was.AdminAddr, now.AdminAddr},
		{"log-format", was.LogFormat, now.LogFormat},
		{"no-watch", fmt.Sprint(was.NoWatch), fmt.Sprint(now.NoWatch)},
		{"secrets-dir", was.SecretsDir, now.SecretsDir},
		{"timezone", was.Timezone.String(), now.Timezone.String()},
		{"queue-type", string(was.QueueType), string(now.QueueType)},
	} {
		if f.was == f.now {
			continue
		}
		where := ""
		if pos := file[f.name].Pos; pos != "" {
			where = pos + ": "
		}
		was, now := f.was, f.now
		if f.name == "broker" {
			// Compared whole, shown without the password.
			was, now = broker.Redact(was), broker.Redact(now)
			if was == now {
				now += " with another password"
			}
		}
		return fmt.Errorf("%s%s cannot change while the daemon runs (it runs with %q, now %q): restart the daemon to change it",
			where, f.name, was, now)
	}
	return nil
}

// reloads feeds every trigger (SIGHUP, file changes) to the engine, one
// reload at a time, until ctx ends.
func reloads(ctx context.Context, eng *engine.Engine, triggers <-chan string, notify *notifier, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case trigger := <-triggers:
			if err := notify.reloading(); err != nil {
				log.Warn("tell the service manager of a reload", "err", err)
			}
			// The engine logs the result and keeps it for status.
			status := "consuming"
			if err := eng.Reload(ctx, trigger); err != nil {
				status = "consuming; the last reload failed, the running tasks stay"
			}
			if ctx.Err() == nil {
				if err := notify.ready(status); err != nil {
					log.Warn("tell the service manager of a reload", "err", err)
				}
			}
		}
	}
}
