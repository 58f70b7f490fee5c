package starlarklib

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestLoadConfig(t *testing.T) {
	t.Parallel()
	root := writeTree(t, map[string]string{
		"lib/defaults.star": "EXCHANGE = \"events\"\n",
		"symphony.star": `load("lib/defaults.star", "EXCHANGE")
config(
    broker = env("BROKER", "sqlite:dev.db"),
    exchange = EXCHANGE,
    admin_addr = "",
    log_format = "json",
    log_level = "debug",
    shutdown_timeout = 45,
    scaling_interval = "250ms",
    throttle_max = 8,
    throttle_factor = 0.5,
    task = ["thumbnails", "billing.charge"],
    no_watch = True,
)
`,
		"a.star": "this file is not read by LoadConfig",
	})
	lookup := func(k string) (string, bool) {
		if k == "BROKER" {
			return "amqp://guest:guest@localhost/", true
		}
		return "", false
	}
	got, err := LoadConfigOptions([]string{root}, Options{LookupEnv: lookup})
	if err != nil {
		t.Fatalf("LoadConfigOptions() = %v", err)
	}
	pos := filepath.Join(root, "symphony.star") + ":2:1"
	dir := realPath(t, root)
	want := Config{
		"broker":           {Values: []string{"amqp://guest:guest@localhost/"}, Pos: pos, Dir: dir},
		"exchange":         {Values: []string{"events"}, Pos: pos, Dir: dir},
		"admin-addr":       {Values: []string{""}, Pos: pos, Dir: dir},
		"log-format":       {Values: []string{"json"}, Pos: pos, Dir: dir},
		"log-level":        {Values: []string{"debug"}, Pos: pos, Dir: dir},
		"shutdown-timeout": {Values: []string{"45s"}, Pos: pos, Dir: dir},
		"scaling-interval": {Values: []string{"250ms"}, Pos: pos, Dir: dir},
		"throttle-max":     {Values: []string{"8"}, Pos: pos, Dir: dir},
		"throttle-factor":  {Values: []string{"0.5"}, Pos: pos, Dir: dir},
		"task":             {Values: []string{"thumbnails", "billing.charge"}, Pos: pos, Dir: dir},
		"no-watch":         {Values: []string{"true"}, Pos: pos, Dir: dir},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("config =\n %v\nwant\n %v", got, want)
	}

	// No symphony.star: nothing set. A file as the root reads its directory.
	empty := writeTree(t, map[string]string{"a.star": ""})
	if got, err := LoadConfig([]string{empty}); err != nil || len(got) != 0 {
		t.Errorf("LoadConfig(no symphony.star) = %v, %v", got, err)
	}
	got, err = LoadConfigOptions([]string{filepath.Join(root, "a.star")}, Options{LookupEnv: noEnv})
	if err != nil || got["broker"].Values[0] != "sqlite:dev.db" {
		t.Errorf("LoadConfig(a file) = %v, %v", got, err)
	}
	// The same root twice is read once.
	if _, err := LoadConfigOptions([]string{root, root + "/"}, Options{LookupEnv: noEnv}); err != nil {
		t.Errorf("LoadConfig(the same root twice) = %v", err)
	}
}

func TestLoadConfigErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		files map[string]string
		want  []loadError
	}{
		{"unknown key with a suggestion",
			map[string]string{"symphony.star": `config(log_levle = "debug")`},
			[]loadError{{"symphony.star:1:1", "config: unknown argument log_levle (did you mean log_level?)"}}},
		{"unknown key",
			map[string]string{"symphony.star": `config(colour = "blue")`},
			[]loadError{{"symphony.star:1:1", "config: unknown argument colour; the arguments are admin_addr, broker, databases, exchange, log_format, log_level, no_watch, queue_type, scaling_interval, secrets_dir, shutdown_timeout, task, throttle_factor, throttle_max"}}},
		{"positional argument",
			map[string]string{"symphony.star": `config("sqlite:x.db")`},
			[]loadError{{"symphony.star:1:1", "config: takes keyword arguments only"}}},
		{"databases not a dict",
			map[string]string{"symphony.star": `config(databases = ["main"])`},
			[]loadError{{"symphony.star:1:1", `config: databases must be a dict of name: URL, as {"main": env("DATABASE_URL")}, got list ["main"]`}}},
		{"a database URL that is not set",
			map[string]string{"symphony.star": `config(databases = {"main": None})`},
			[]loadError{{"symphony.star:1:1", `config: databases: the URL of "main" must be a str, got NoneType (is its environment variable set?)`}}},
		{"a database URL of no known kind",
			map[string]string{"symphony.star": `config(databases = {"main": "oracle://app:hunter22@db/x"})`},
			[]loadError{{"symphony.star:1:1", `config: databases: main: unsupported database URL "oracle://app:xxxxx@db/x": use postgres://user:pass@host/db, mysql://user:pass@host/db or sqlite:PATH`}}},
		{"a string of the wrong type",
			map[string]string{"symphony.star": `config(broker = 5)`},
			[]loadError{{"symphony.star:1:1", "config: broker must be a string, got int 5"}}},
		{"an unknown log format",
			map[string]string{"symphony.star": `config(log_format = "xml")`},
			[]loadError{{"symphony.star:1:1", `config: unknown log_format "xml": use "text" or "json"`}}},
		{"a bad duration",
			map[string]string{"symphony.star": `config(shutdown_timeout = "soon")`},
			[]loadError{{"symphony.star:1:1", `config: shutdown_timeout: "soon" is not a duration`}}},
		{"a negative duration",
			map[string]string{"symphony.star": `config(scaling_interval = -1)`},
			[]loadError{{"symphony.star:1:1", "config: scaling_interval must not be negative, got -1"}}},
		{"an int of the wrong type",
			map[string]string{"symphony.star": `config(throttle_max = "16")`},
			[]loadError{{"symphony.star:1:1", `config: throttle_max must be an int, got string "16"`}}},
		{"throttle_max zero",
			map[string]string{"symphony.star": `config(throttle_max = 0)`},
			[]loadError{{"symphony.star:1:1", "config: throttle_max must be at least 1, got 0"}}},
		{"a number of the wrong type",
			map[string]string{"symphony.star": `config(throttle_factor = True)`},
			[]loadError{{"symphony.star:1:1", "config: throttle_factor must be a number, got bool True"}}},
		{"a bool of the wrong type",
			map[string]string{"symphony.star": `config(no_watch = "true")`},
			[]loadError{{"symphony.star:1:1", `config: no_watch must be True or False, got string "true"`}}},
		{"task as a string",
			map[string]string{"symphony.star": `config(task = "thumbnails")`},
			[]loadError{{"symphony.star:1:1", `config: task must be a list of strings, got string "thumbnails": write task = ["thumbnails"]`}}},
		{"an invalid task name",
			map[string]string{"symphony.star": `config(task = ["Thumbs"])`},
			[]loadError{{"symphony.star:1:1", `config: task: "Thumbs" is not a valid name`}}},
		{"config called twice",
			map[string]string{"symphony.star": "config(log_level = \"debug\")\nconfig(broker = \"x\")\n"},
			[]loadError{{"symphony.star:2:1", "config: called twice (first at ROOT/symphony.star:1:1): set every option in one config() call"}}},
		{"task() in symphony.star",
			map[string]string{"symphony.star": "task(subscribe_to = [\"a\"], work = lambda p, m: True)\n"},
			[]loadError{{"symphony.star:1:1", "task: not allowed in symphony.star, which only configures the daemon with config(...): put tasks in their own .star files"}}},
		{"config() in a library loaded by symphony.star",
			map[string]string{"symphony.star": "load(\"lib/c.star\", \"x\")\n", "lib/c.star": "config(broker = \"x\")\nx = 1\n"},
			[]loadError{{"symphony.star:1:1", "cannot load lib/c.star: lib/c.star:1:1: config: only allowed in symphony.star at the tasks root"}}},
		{"config() through a function of a library",
			map[string]string{"symphony.star": "load(\"lib/c.star\", \"setup\")\nsetup()\n", "lib/c.star": "def setup():\n    config(broker = \"x\")\n"},
			[]loadError{{"lib/c.star:2:5", "config: only allowed in symphony.star itself, not in a file it loads"}}},
		{"publish in symphony.star",
			map[string]string{"symphony.star": "publish(\"a\", 1)\n"},
			[]loadError{{"symphony.star:1:1", "publish: not available in symphony.star"}}},
		{"scaler in symphony.star",
			map[string]string{"symphony.star": "s = scaler(decide = lambda s: 1)\n"},
			[]loadError{{"symphony.star:1:5", "scaler: not allowed in symphony.star: use it in a task file, as task(work_model = scaler(decide = fn))"}}},
		{"syntax error",
			map[string]string{"symphony.star": "config(\n"},
			[]loadError{{"symphony.star:2:1", "got end of file, want ')'"}}},
		{"runtime error",
			map[string]string{"symphony.star": "config(broker = env(\"X\") + \"/vhost\")\n"},
			[]loadError{{"symphony.star:1:26", "unknown binary op: NoneType + string"}}},
		{"several mistakes in one call",
			map[string]string{"symphony.star": "config(broker = 1, no_watch = 1)\n"},
			[]loadError{
				{"symphony.star:1:1", "config: broker must be a string"},
				{"symphony.star:1:1", "config: no_watch must be True or False"},
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			root := writeTree(t, c.files)
			got, err := LoadConfigOptions([]string{root}, Options{LookupEnv: noEnv})
			if err == nil {
				t.Fatalf("LoadConfig() = %v, no error", got)
			}
			wantErrors(t, "LoadConfig()", err, root, c.want)
		})
	}
}

// config(databases = ...) names the databases; a relative sqlite: path is
// beside symphony.star.
func TestLoadConfigDatabases(t *testing.T) {
	t.Parallel()
	root := writeTree(t, map[string]string{"symphony.star": `config(databases = {"pg": "postgres://app:pw@db/x", "main": "sqlite:data/orders.db"})`})
	got, err := LoadConfig([]string{root})
	if err != nil {
		t.Fatal(err)
	}
	if names := strings.Join(got.DatabaseNames(), ","); names != "main,pg" {
		t.Errorf("names %s", names)
	}
	dbs, err := got.Databases()
	if err != nil {
		t.Fatal(err)
	}
	if dbs["main"].URL != "sqlite:"+filepath.Join(root, "data/orders.db") || dbs["pg"].URL != "postgres://app:pw@db/x" || dbs["pg"].Password != "pw" {
		t.Errorf("databases %+v", dbs)
	}
}

// Two roots setting the same option is an error naming both; different
// options merge.
func TestLoadConfigSeveralRoots(t *testing.T) {
	t.Parallel()
	one := writeTree(t, map[string]string{"symphony.star": "config(broker = \"sqlite:a.db\", log_level = \"info\")\n"})
	two := writeTree(t, map[string]string{"symphony.star": "\nconfig(broker = \"sqlite:b.db\", exchange = \"x\")\n"})
	three := writeTree(t, map[string]string{"symphony.star": "config(exchange = \"x\")\n"})

	_, err := LoadConfig([]string{one, two})
	if err == nil {
		t.Fatal("LoadConfig() merged two brokers")
	}
	want := filepath.Join(two, "symphony.star") + ":2:1: config: broker is also set at " + filepath.Join(one, "symphony.star") + ":1:1"
	if !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error = %v\nwant %s", err, want)
	}

	got, err := LoadConfig([]string{one, three})
	if err != nil {
		t.Fatal(err)
	}
	if got["broker"].Values[0] != "sqlite:a.db" || got["exchange"].Values[0] != "x" || got["log-level"].Values[0] != "info" {
		t.Errorf("merged config = %v", got)
	}
}
