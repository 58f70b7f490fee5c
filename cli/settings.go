package cli

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/symphony-go/symphony/starlarklib"
	"github.com/symphony-go/symphony/tasks"
)

// settings are the daemon-wide options after merging, in order of
// precedence: flags, environment, symphony.star, defaults.
type settings struct {
	Broker          string
	Exchange        string
	AdminAddr       string
	AdminToken      string
	AdminHistory    time.Duration
	OTLPEndpoint    string
	LogFormat       string
	LogLevel        slog.Level
	ShutdownTimeout time.Duration
	ScalingInterval time.Duration
	ThrottleMax     int
	ThrottleFactor  float64
	Tasks           []string
	NoWatch         bool
	SecretsDir      string
	// Timezone is the zone of schedules; nil until resolved (local).
	Timezone *time.Location
	// QueueType is the queue_type of tasks that set none.
	QueueType tasks.QueueType
}

// option is one global flag: its name, default and how to read a value.
type option struct {
	name, value, usage string
	list, boolean      bool
	apply              func(s *settings, values []string) error
	// inFile, if set, reads a value set in symphony.star, given the
	// file's directory.
	inFile func(dir, value string) string
}

var options = []option{
	{name: "broker", value: "sqlite:symphony.db", usage: "broker URL: sqlite:PATH or amqp://user:pass@host:port/vhost",
		apply:  func(s *settings, v []string) error { s.Broker = v[0]; return nil },
		inFile: sqliteRelativeTo},
	{name: "exchange", value: "symphony", usage: "topic exchange to consume from and publish to",
		apply: func(s *settings, v []string) error { s.Exchange = v[0]; return nil }},
	{name: "admin-addr", value: "127.0.0.1:9780", usage: "address of /metrics, /healthz, /readyz and /status; empty disables",
		apply: func(s *settings, v []string) error { s.AdminAddr = v[0]; return nil }},
	{name: "admin-token", usage: "token the admin server's actions require (publish, dead-letter replay and purge); without one it takes none",
		apply: func(s *settings, v []string) error { s.AdminToken = v[0]; return nil }},
	{name: "admin-history", value: "15m", usage: "how much rate and backlog history the dashboard's charts show",
		apply: func(s *settings, v []string) (err error) {
			if s.AdminHistory, err = parseDuration(v[0]); err == nil && s.AdminHistory < 10*time.Second {
				err = fmt.Errorf("%s is under 10s: the history is sampled every 2s", v[0])
			}
			return
		}},
	{name: "otlp-endpoint", usage: "export a span per delivery over OTLP/HTTP to this URL (http://collector:4318)",
		apply: func(s *settings, v []string) error { s.OTLPEndpoint = v[0]; return nil }},
	{name: "log-format", value: "text", usage: "log format: text or json",
		apply: func(s *settings, v []string) error {
			if v[0] != "text" && v[0] != "json" {
				return fmt.Errorf("log format %q: use text or json", v[0])
			}
			s.LogFormat = v[0]
			return nil
		}},
	{name: "log-level", value: "info", usage: "log level: debug, info, warn or error",
		apply: func(s *settings, v []string) error {
			return s.LogLevel.UnmarshalText([]byte(v[0]))
		}},
	{name: "shutdown-timeout", value: "30s", usage: "how long in-flight messages may finish after INT/TERM/QUIT",
		apply: func(s *settings, v []string) (err error) { s.ShutdownTimeout, err = parseDuration(v[0]); return }},
	{name: "scaling-interval", value: "0.1s", usage: "how often pools sample their queue",
		apply: func(s *settings, v []string) (err error) { s.ScalingInterval, err = parseDuration(v[0]); return }},
	{name: "throttle-max", value: "16", usage: "upper bound of the worker restart throttle",
		apply: func(s *settings, v []string) (err error) { s.ThrottleMax, err = strconv.Atoi(v[0]); return }},
	{name: "throttle-factor", value: "1", usage: "seconds per ln(n) of the worker restart throttle",
		apply: func(s *settings, v []string) (err error) {
			s.ThrottleFactor, err = strconv.ParseFloat(v[0], 64)
			return
		}},
	{name: "task", list: true, usage: "run only this task (repeatable)",
		apply: func(s *settings, v []string) error {
			// Task names hold no comma, so "a,b" (SYMPHONY_TASK=a,b) is two.
			for _, names := range v {
				s.Tasks = append(s.Tasks, strings.Split(names, ",")...)
			}
			return nil
		}},
	{name: "secrets-dir", usage: "directory of secret files (one per secret, named after it) that secret(name) reads before the environment",
		apply: func(s *settings, v []string) error { s.SecretsDir = v[0]; return nil }},
	{name: "timezone", value: "Local", usage: "time zone of schedules, e.g. Europe/Paris or UTC (default: the machine's)",
		apply: func(s *settings, v []string) (err error) {
			if s.Timezone, err = time.LoadLocation(v[0]); err != nil {
				return fmt.Errorf("time zone %q: use a name of the tz database, such as UTC or Europe/Paris", v[0])
			}
			return nil
		}},
	{name: "queue-type", value: string(tasks.Classic), usage: "RabbitMQ queue type of tasks that set no queue_type: classic, or quorum (replicated across a cluster)",
		apply: func(s *settings, v []string) error {
			switch t := tasks.QueueType(v[0]); t {
			case tasks.Classic, tasks.Quorum:
				s.QueueType = t
				return nil
			}
			return fmt.Errorf("queue type %q: use classic or quorum", v[0])
		}},
	{name: "no-watch", boolean: true, value: "false", usage: "do not reload when task files change (HUP still reloads)",
		apply: func(s *settings, v []string) (err error) { s.NoWatch, err = strconv.ParseBool(v[0]); return }},
}

// sqliteRelativeTo reads a relative sqlite: path in symphony.star as
// relative to the file's directory, wherever the command runs.
func sqliteRelativeTo(dir, url string) string {
	path, ok := strings.CutPrefix(url, "sqlite:")
	if !ok || path == "" || filepath.IsAbs(path) {
		return url
	}
	return "sqlite:" + filepath.Join(dir, path)
}

// envName is the environment variable of a flag: SYMPHONY_LOG_FORMAT for
// --log-format.
func envName(flag string) string {
	return "SYMPHONY_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// globalCategory heads the global flags in a command's help; cli sorts
// categories by name, and the command's own flags have none.
const globalCategory = "GLOBAL OPTIONS"

// globalFlags returns fresh flags for every option; each command gets its
// own so that every flag is accepted after the command's name.
func globalFlags() []cli.Flag {
	var flags []cli.Flag
	for _, o := range options {
		env := []string{envName(o.name)}
		// The category lists them after the command's own flags in help.
		switch {
		case o.list:
			flags = append(flags, &cli.StringSliceFlag{Name: o.name, Usage: o.usage, EnvVars: env, Category: globalCategory})
		case o.boolean:
			flags = append(flags, &cli.BoolFlag{Name: o.name, Usage: o.usage, EnvVars: env, Category: globalCategory})
		default:
			flags = append(flags, &cli.StringFlag{Name: o.name, Usage: o.usage, EnvVars: env, Value: o.value, Category: globalCategory})
		}
	}
	return flags
}

// resolve merges flags and environment (c) over symphony.star (file) over
// the defaults. A bad flag or environment value is a usage error; a bad
// symphony.star value names its position.
func resolve(c *cli.Context, file starlarklib.Config) (settings, error) {
	var s settings
	for _, o := range options {
		var values []string
		source := ""
		switch {
		case c.IsSet(o.name):
			switch {
			case o.list:
				values = c.StringSlice(o.name)
			case o.boolean:
				values = []string{strconv.FormatBool(c.Bool(o.name))}
			default:
				values = []string{c.String(o.name)}
			}
		case file[o.name].Pos != "":
			values = file[o.name].Values
			source = file[o.name].Pos
			if o.inFile != nil {
				values = slices.Clone(values)
				for i, v := range values {
					values[i] = o.inFile(file[o.name].Dir, v)
				}
			}
		case o.list:
			continue
		default:
			values = []string{o.value}
		}
		if len(values) == 0 && !o.list {
			values = []string{""}
		}
		if err := o.apply(&s, values); err != nil {
			if source != "" {
				return s, fmt.Errorf("%s: config %s: %w", source, strings.ReplaceAll(o.name, "-", "_"), err)
			}
			return s, usagef("--%s (or %s): %w", o.name, envName(o.name), err)
		}
	}
	return s, nil
}

// parseDuration reads "1m30s" or a number of seconds.
func parseDuration(s string) (time.Duration, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if f < 0 {
			return 0, fmt.Errorf("duration %q is negative", s)
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration: use seconds or a form like 1m30s", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("duration %q is negative", s)
	}
	return d, nil
}

// newLogger builds the process's logger on w, at level (a reload may
// change it), or at the settings' level when level is nil. With a
// redactor, no line it writes holds a secret a task has read.
func newLogger(s settings, level slog.Leveler, w io.Writer, redactor ...*starlarklib.Redactor) *slog.Logger {
	if level == nil {
		level = s.LogLevel
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if s.LogFormat == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	for _, r := range redactor {
		h = r.Handler(h)
	}
	return slog.New(traceHandler{h})
}

// configRoots are the directories whose symphony.star applies to commands
// that take no tasks path: --tasks if given, else the working directory.
func configRoots(c *cli.Context) []string {
	if dir := c.String("tasks"); dir != "" {
		return []string{dir}
	}
	if _, err := os.Stat("symphony.star"); err == nil {
		return []string{"."}
	}
	return nil
}

// tasksFlag names the tasks root whose symphony.star publish, dead and
// status read.
func tasksFlag() cli.Flag {
	return &cli.StringFlag{Name: "tasks", EnvVars: []string{"SYMPHONY_TASKS"},
		Usage: "tasks root whose symphony.star to read (default: the working directory's, if any)"}
}

// commandSettings loads symphony.star for a command without a tasks path
// and resolves the settings.
func commandSettings(c *cli.Context) (settings, error) {
	var file starlarklib.Config
	if roots := configRoots(c); roots != nil {
		var err error
		if file, err = starlarklib.LoadConfig(roots); err != nil {
			return settings{}, err
		}
	}
	return resolve(c, file)
}
