package starlarklib

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/symphony-go/symphony/tasks"
)

// work is a valid handler; task() calls in the cases below start on line 3.
const work = "def work(payload, meta):\n    return True\n"

// loadError is one expected error: its exact position and a part of its
// message.
type loadError struct{ pos, msg string }

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		files map[string]string
		opts  Options
		want  []loadError
	}{
		// Argument names.
		{"unknown argument with a suggestion",
			map[string]string{"a.star": work + `task(nme = "a", subscribe_to = ["x"], work = work)`},
			Options{}, []loadError{{"a.star:3:1", "task: unknown argument nme (did you mean name?)"}}},
		{"unknown argument without a suggestion",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, zzzzzzzz = 1)`},
			Options{}, []loadError{{"a.star:3:1", "task: unknown argument zzzzzzzz; the arguments are name, subscribe_to, work,"}}},
		{"a suggestion for a late argument",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, file_roots = "x")`},
			Options{}, []loadError{{"a.star:3:1", "task: unknown argument file_roots (did you mean file_root?)"}}},
		{"positional arguments",
			map[string]string{"a.star": work + `task("a", subscribe_to = ["x"], work = work)`},
			Options{}, []loadError{{"a.star:3:1", "task: takes keyword arguments only, as in task(name = value, ...); got 1 positional"}}},

		// Names and queues.
		{"name of the wrong type",
			map[string]string{"a.star": work + `task(name = 3, subscribe_to = ["x"], work = work)`},
			Options{}, []loadError{{"a.star:3:1", "task: name must be a string, got int 3"}}},
		{"invalid name",
			map[string]string{"a.star": work + `task(name = "Bad Name", subscribe_to = ["x"], work = work)`},
			Options{}, []loadError{{"a.star:3:1", `task: name: "Bad Name" is not a valid name: use lower-case letters`}}},
		{"invalid name from the file",
			map[string]string{"Thumbs Up.star": work + `task(subscribe_to = ["x"], work = work)`},
			Options{}, []loadError{{"Thumbs Up.star:3:1", `task: the task is named after its file, "Thumbs Up", which is not a valid name (use lower-case letters, digits, '_', '.' and '-'): pass name = "thumbs_up"`}}},
		{"invalid queue",
			map[string]string{"a.star": work + `task(queue = "a/b", subscribe_to = ["x"], work = work)`},
			Options{}, []loadError{{"a.star:3:1", `task: queue: "a/b" is not a valid name`}}},
		{"duplicate task name across files",
			map[string]string{
				"a.star":     work + `task(name = "same", subscribe_to = ["x"], work = work)`,
				"sub/b.star": work + "\n" + `task(name = "same", queue = "other", subscribe_to = ["x"], work = work)`,
			},
			Options{}, []loadError{{"sub/b.star:4:1", `task: name "same" is already used by the task at ` + "ROOT/a.star:3:1"}}},
		{"duplicate task name in one file",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work)
task(subscribe_to = ["y"], work = work)`},
			Options{}, []loadError{{"a.star:4:1", `task: name "a" is already used by the task at ROOT/a.star:3:1`}}},
		{"two tasks on one queue",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work)
task(name = "b", queue = "a", subscribe_to = ["y"], work = work)`},
			Options{}, []loadError{{"a.star:4:1", `task: queue "a" is already consumed by task "a" at ROOT/a.star:3:1`}}},

		// What runs.
		{"neither work nor routes",
			map[string]string{"a.star": `task(subscribe_to = ["x"])`},
			Options{}, []loadError{{"a.star:1:1", "task: missing work: pass work = a function taking (payload, meta), or routes = {pattern: function}"}}},
		{"both work and routes",
			map[string]string{"a.star": work + `task(work = work, routes = {"x": work})`},
			Options{}, []loadError{{"a.star:3:1", "task: give either work or routes, not both"}}},
		{"work is not callable",
			map[string]string{"a.star": `task(subscribe_to = ["x"], work = "work")`},
			Options{}, []loadError{{"a.star:1:1", `task: work must be a function taking (payload, meta), got string "work"`}}},
		{"work takes one parameter",
			map[string]string{"a.star": "def w(payload):\n    pass\n" + `task(subscribe_to = ["x"], work = w)`},
			Options{}, []loadError{{"a.star:3:1", "task: work: function w takes 1 parameter; it must take two: def w(payload, meta)"}}},
		{"work requires three parameters",
			map[string]string{"a.star": "def w(a, b, c):\n    pass\n" + `task(subscribe_to = ["x"], work = w)`},
			Options{}, []loadError{{"a.star:3:1", "task: work: function w requires 3 parameters; it must take two"}}},
		{"work has a required keyword-only parameter",
			map[string]string{"a.star": "def w(a, b, *, c):\n    pass\n" + `task(subscribe_to = ["x"], work = w)`},
			Options{}, []loadError{{"a.star:3:1", "task: work: function w has a required keyword-only parameter c; give it a default"}}},
		{"work is a lambda with one parameter",
			map[string]string{"a.star": `task(subscribe_to = ["x"], work = lambda p: True)`},
			Options{}, []loadError{{"a.star:1:1", "task: work: function lambda takes 1 parameter; it must take two: lambda payload, meta: ..."}}},

		// Subscriptions.
		{"missing subscribe_to",
			map[string]string{"a.star": work + `task(work = work)`},
			Options{}, []loadError{{"a.star:3:1", `task: missing subscribe_to: list the routing patterns the task consumes, such as subscribe_to = ["user.created"]`}}},
		{"empty subscribe_to",
			map[string]string{"a.star": work + `task(subscribe_to = [], work = work)`},
			Options{}, []loadError{{"a.star:3:1", "task: subscribe_to is empty: list at least one routing pattern"}}},
		{"subscribe_to is a string",
			map[string]string{"a.star": work + `task(subscribe_to = "a.b", work = work)`},
			Options{}, []loadError{{"a.star:3:1", `task: subscribe_to must be a list of strings, got string "a.b": write subscribe_to = ["a.b"]`}}},
		{"subscribe_to holds a number",
			map[string]string{"a.star": work + `task(subscribe_to = ["a", 3], work = work)`},
			Options{}, []loadError{{"a.star:3:1", "task: subscribe_to[1] must be a string, got int 3"}}},
		{"pattern with an empty word",
			map[string]string{"a.star": work + `task(subscribe_to = ["a..b"], work = work)`},
			Options{}, []loadError{{"a.star:3:1", `task: subscribe_to[0]: pattern "a..b" has an empty word at position 2`}}},
		{"pattern with a glued wildcard",
			map[string]string{"a.star": work + `task(subscribe_to = ["ok", "a*"], work = work)`},
			Options{}, []loadError{{"a.star:3:1", `task: subscribe_to[1]: pattern "a*" has word "a*" mixing a wildcard with text`}}},
		{"empty pattern",
			map[string]string{"a.star": work + `task(subscribe_to = [""], work = work)`},
			Options{}, []loadError{{"a.star:3:1", `task: subscribe_to[0]: pattern is empty; use "#" to match every routing key`}}},
		{"pattern listed twice",
			map[string]string{"a.star": work + `task(subscribe_to = ["a", "a"], work = work)`},
			Options{}, []loadError{{"a.star:3:1", `task: subscribe_to lists "a" twice`}}},
		{"routes is a list",
			map[string]string{"a.star": work + `task(routes = [work])`},
			Options{}, []loadError{{"a.star:3:1", "task: routes must be a dict of pattern: function, got list [<function work>]"}}},
		{"routes is empty",
			map[string]string{"a.star": work + `task(routes = {})`},
			Options{}, []loadError{{"a.star:3:1", "task: routes is empty"}}},
		{"routes key is not a string",
			map[string]string{"a.star": work + `task(routes = {1: work})`},
			Options{}, []loadError{{"a.star:3:1", "task: routes key 1 must be a string pattern, got int"}}},
		{"routes pattern with an empty word",
			map[string]string{"a.star": work + `task(routes = {"a.": work})`},
			Options{}, []loadError{{"a.star:3:1", `task: routes["a."]: pattern "a." has an empty word at position 2`}}},
		{"routes value is not callable",
			map[string]string{"a.star": work + `task(routes = {"a": 1})`},
			Options{}, []loadError{{"a.star:3:1", `task: routes["a"] must be a function taking (payload, meta), got int 1`}}},

		// Settings.
		{"unknown work model",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, work_model = "forever")`},
			Options{}, []loadError{{"a.star:3:1", `task: unknown work_model "forever": use "longlived", "oneshot" or scaler(decide = fn)`}}},
		{"work_model \"scaler\" as a string",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, work_model = "scaler")`},
			Options{}, []loadError{{"a.star:3:1", `task: work_model "scaler" needs a function that decides the pool size: write work_model = scaler(decide = fn)`}}},

		// scaler(decide, interval): errors point at the scaler() call.
		{"scaler decide is not callable",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, work_model = scaler(decide = 3))`},
			Options{}, []loadError{{"a.star:3:54", "scaler: decide must be a function taking (stats), got int 3"}}},
		{"scaler decide takes no parameter",
			map[string]string{"a.star": "\ns = scaler(decide = lambda: 1)\n"},
			Options{}, []loadError{{"a.star:2:5", "scaler: decide: function lambda takes 0 parameters; it must take one: lambda stats: ..."}}},
		{"scaler decide requires two parameters",
			map[string]string{"a.star": "def d(stats, pool):\n    return 1\ns = scaler(decide = d)\n"},
			Options{}, []loadError{{"a.star:3:5", "scaler: decide: function d requires 2 parameters; it must take one: def d(stats)"}}},
		{"scaler decide has a required keyword-only parameter",
			map[string]string{"a.star": "def d(stats, *, pool):\n    return 1\ns = scaler(d)\n"},
			Options{}, []loadError{{"a.star:3:5", "scaler: decide: function d has a required keyword-only parameter pool; give it a default"}}},
		{"scaler without decide",
			map[string]string{"a.star": "s = scaler(interval = 5)\n"},
			Options{}, []loadError{{"a.star:1:5", "scaler: missing argument for decide"}}},
		{"scaler with an unknown argument",
			map[string]string{"a.star": "s = scaler(decide = lambda s: 1, every = 5)\n"},
			Options{}, []loadError{{"a.star:1:5", `scaler: unexpected keyword argument "every"`}}},
		{"scaler interval zero",
			map[string]string{"a.star": "s = scaler(decide = lambda s: 1, interval = 0)\n"},
			Options{}, []loadError{{"a.star:1:5", "scaler: interval must be positive, got 0: it is how often the pool decides; leave it out to use the daemon's scaling_interval"}}},
		{"scaler interval negative",
			map[string]string{"a.star": "s = scaler(decide = lambda s: 1, interval = \"-5s\")\n"},
			Options{}, []loadError{{"a.star:1:5", `scaler: interval must be positive, got "-5s"`}}},
		{"scaler interval not a duration",
			map[string]string{"a.star": "s = scaler(decide = lambda s: 1, interval = \"5 minutes\")\n"},
			Options{}, []loadError{{"a.star:1:5", `scaler: interval: "5 minutes" is not a duration (time: unknown unit " minutes" in duration "5 minutes"): give seconds (90) or a duration string ("1m30s")`}}},
		{"scaler interval of the wrong type",
			map[string]string{"a.star": "s = scaler(decide = lambda s: 1, interval = [5])\n"},
			Options{}, []loadError{{"a.star:1:5", `scaler: interval: got list [5], want seconds (90) or a duration string ("1m30s")`}}},
		{"scaler while a library loads points into the library",
			map[string]string{
				"a.star":         `load("lib/scale.star", "s")`,
				"lib/scale.star": "\ns = scaler(decide = 1)\n",
			},
			Options{}, []loadError{
				{"a.star:1:1", "cannot load lib/scale.star: ROOT/lib/scale.star:2:5: scaler: decide must be a function taking (stats), got int 1"},
				{"lib/scale.star:2:5", "scaler: decide must be a function taking (stats), got int 1"},
			}},
		{"work model of the wrong type",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, work_model = 1)`},
			Options{}, []loadError{{"a.star:3:1", `task: work_model must be "longlived", "oneshot" or scaler(decide = fn), got int 1`}}},
		{"unknown isolation",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, isolation = "vm")`},
			Options{}, []loadError{{"a.star:3:1", `task: unknown isolation "vm": use "thread" or "process"`}}},
		{"unknown timeout action",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, timeout_action = "drop")`},
			Options{}, []loadError{{"a.star:3:1", `task: unknown timeout_action "drop": use "reject" or "retry"`}}},
		{"min_workers above max_workers",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, min_workers = 3, max_workers = 2)`},
			Options{}, []loadError{{"a.star:3:1", "task: min_workers (3) is greater than max_workers (2)"}}},
		{"min_workers above the default max_workers",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, min_workers = 3)`},
			Options{}, []loadError{{"a.star:3:1", "task: min_workers (3) is greater than max_workers (default 1): raise max_workers too"}}},
		{"no workers",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, max_workers = 0)`},
			Options{}, []loadError{{"a.star:3:1", "task: max_workers must be at least 1, got 0 (a pool of no workers would never consume its queue)"}}},
		{"min_workers zero",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, min_workers = 0)`},
			Options{}, []loadError{{"a.star:3:1", "task: min_workers must be at least 1, got 0"}}},
		{"negative prefetch",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, prefetch = -1)`},
			Options{}, []loadError{{"a.star:3:1", "task: prefetch must be at least 1, got -1"}}},
		{"zero prefetch",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, prefetch = 0)`},
			Options{}, []loadError{{"a.star:3:1", "task: prefetch must be at least 1, got 0"}}},
		{"zero max_attempts",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, max_attempts = 0)`},
			Options{}, []loadError{{"a.star:3:1", "task: max_attempts must be at least 1, got 0 (1 means no retries)"}}},
		{"workers as a string",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, max_workers = "3")`},
			Options{}, []loadError{{"a.star:3:1", `task: max_workers must be an int, got string "3"`}}},
		{"workers as a float",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, max_workers = 2.5)`},
			Options{}, []loadError{{"a.star:3:1", "task: max_workers must be an int, got float 2.5"}}},
		{"duration without a unit",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, timeout = "1m30")`},
			Options{}, []loadError{{"a.star:3:1", `task: timeout: "1m30" is not a duration (time: missing unit in duration "1m30"): give seconds (90) or a duration string ("1m30s")`}}},
		{"negative timeout",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, timeout = -1)`},
			Options{}, []loadError{{"a.star:3:1", "task: timeout must not be negative, got -1"}}},
		{"timeout as a list",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, timeout = [1])`},
			Options{}, []loadError{{"a.star:3:1", `task: timeout: got list [1], want seconds (90) or a duration string ("1m30s")`}}},
		{"zero retry delay",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, retry_delay = 0)`},
			Options{}, []loadError{{"a.star:3:1", "task: retry_delay must be positive: a retry is a delayed redelivery, not a hot requeue"}}},
		{"retry delay above its maximum",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, retry_delay = "10m")`},
			Options{}, []loadError{{"a.star:3:1", "task: retry_delay (10m0s) is longer than max_retry_delay (5m0s)"}}},
		{"negative idle timeout",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, idle_timeout = "-1s")`},
			Options{}, []loadError{{"a.star:3:1", `task: idle_timeout must not be negative, got "-1s"`}}},
		{"acknowledge as a string",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, acknowledge = "yes")`},
			Options{}, []loadError{{"a.star:3:1", `task: acknowledge must be True or False, got string "yes"`}}},
		{"persistent as an int",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, persistent = 1)`},
			Options{}, []loadError{{"a.star:3:1", "task: persistent must be True or False, got int 1"}}},
		{"negative max_steps",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, max_steps = -5)`},
			Options{}, []loadError{{"a.star:3:1", "task: max_steps must be a non-negative int (0 means no limit), got -5"}}},
		{"max_steps as a string",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, max_steps = "5")`},
			Options{}, []loadError{{"a.star:3:1", `task: max_steps must be an int, got string "5"`}}},
		{"max_memory without process isolation",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, max_memory = "256MiB")`},
			Options{}, []loadError{{"a.star:3:1", `task: max_memory limits a worker process: it needs isolation = "process"`}}},
		{"max_memory with an unknown unit",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, isolation = "process", max_memory = "256 parsecs")`},
			Options{}, []loadError{{"a.star:3:1", `task: max_memory: "256 parsecs" has an unknown unit "parsecs": use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB`}}},
		{"max_memory without a number",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, isolation = "process", max_memory = "lots")`},
			Options{}, []loadError{{"a.star:3:1", `task: max_memory: "lots" is not a size`}}},
		{"unknown capability",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, allow = ["http", "net"])`},
			Options{}, []loadError{{"a.star:3:1", `task: allow: unknown capability "net": use "http", "exec", "file" or "sql"`}}},
		{"exec without allow_commands",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, allow = ["exec"])`},
			Options{}, []loadError{{"a.star:3:1", `task: allow = ["exec"] needs allow_commands`}}},
		{"allow_commands without exec",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, allow_commands = ["ls"])`},
			Options{}, []loadError{{"a.star:3:1", `task: allow_commands limits exec: it needs "exec" in allow`}}},
		{"file without file_root",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, allow = ["file"])`},
			Options{}, []loadError{{"a.star:3:1", `task: allow = ["file"] needs file_root`}}},
		{"sql without databases",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, allow = ["sql"])`},
			Options{}, []loadError{{"a.star:3:1", `task: allow = ["sql"] needs databases`}}},
		{"a database config() does not name",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, allow = ["sql"], databases = ["main", "other"])`},
			Options{Databases: []string{"main"}}, []loadError{{"a.star:3:1", `task: databases: no database "other" in config(databases = ...); the databases are main`}}},
		{"a database without config",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, allow = ["sql"], databases = ["main"])`},
			Options{}, []loadError{{"a.star:3:1", `task: databases: no database "main": name it in symphony.star with config(databases = {"main": "postgres://..."})`}}},
		{"a module used without its grant",
			map[string]string{"a.star": `def helper(url):
    return http.get(url)
def work(p, m):
    return helper(p["url"])
task(subscribe_to = ["x"], work = work)`},
			Options{}, []loadError{{"a.star:2:12", `task a uses http here, but its allow does not grant it: add allow = ["http"] to its task() at ROOT/a.star:5:1`}}},
		{"a module used by one route without its grant",
			map[string]string{"a.star": `def ok(p, m):
    return True
def run(p, m):
    return exec.run(["ls"])
task(routes = {"a": ok, "b": run}, allow = ["http"])`},
			Options{}, []loadError{{"a.star:4:12", `task a uses exec here, but its allow does not grant it: add allow = ["exec"] to its task() at ROOT/a.star:5:1`}}},
		{"a module member that does not exist",
			map[string]string{"a.star": `def work(p, m):
    return hash.sha265(p)
task(subscribe_to = ["x"], work = work)`},
			Options{}, []loadError{{"a.star:2:17", `hash has no member sha265 (did you mean hash.sha256?)`}}},
		{"a misspelt member of every module",
			map[string]string{"a.star": `def work(p, m):
    return [json.encod(p), log.inf, re.fnd_all, base64.encoder, uuid.v5, url.parser, template.rendr, hex.encod]
task(subscribe_to = ["x"], work = work)`},
			Options{}, []loadError{
				{"a.star:2:18", `json has no member encod (did you mean json.encode?)`},
				{"a.star:2:32", `log has no member inf (did you mean log.info?)`},
				{"a.star:2:40", `re has no member fnd_all (did you mean re.find_all?)`},
				{"a.star:2:56", `base64 has no member encoder (did you mean base64.encode?)`},
				{"a.star:2:70", `uuid has no member v5; its members are v4, v7`},
				{"a.star:2:78", `url has no member parser (did you mean url.parse?)`},
				{"a.star:2:95", `template has no member rendr (did you mean template.render?)`},
				{"a.star:2:106", `hex has no member encod (did you mean hex.encode?)`},
			}},
		{"allow_hosts without http",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, allow_hosts = ["api.example.com"])`},
			Options{}, []loadError{{"a.star:3:1", `task: allow_hosts limits http: it needs "http" in allow`}}},
		{"allow_hosts with a URL",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, allow = ["http"], allow_hosts = ["https://x.com/"])`},
			Options{}, []loadError{{"a.star:3:1", `task: allow_hosts: "https://x.com/" is not a host: write the host without a scheme`}}},
		{"allow_hosts with a misplaced wildcard",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, allow = ["http"], allow_hosts = ["api.*.com", "x.com:99999"])`},
			Options{}, []loadError{
				{"a.star:3:1", `task: allow_hosts: "api.*.com" is not a host: a wildcard stands only at the start`},
				{"a.star:3:1", `task: allow_hosts: "x.com:99999" is not a host: the port must be a number from 1 to 65535`}}},
		{"file_root without file",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, file_root = "data")`},
			Options{}, []loadError{{"a.star:3:1", `task: file_root confines file: it needs "file" in allow`}}},
		{"an int out of range",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, prefetch = 1 << 40)`},
			Options{}, []loadError{{"a.star:3:1", "task: prefetch is out of range: 1099511627776"}}},
		{"seconds out of range",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, timeout = 1e300)`},
			Options{}, []loadError{{"a.star:3:1", "task: timeout: 1e+300 seconds is out of range"}}},
		{"subscribe_to as a number",
			map[string]string{"a.star": work + `task(subscribe_to = 3, work = work)`},
			Options{}, []loadError{{"a.star:3:1", "task: subscribe_to must be a list of strings, got int 3"}}},
		{"subscribe_to as a tuple is fine, a dict is not",
			map[string]string{"a.star": work + `task(subscribe_to = ("x",), work = work)
task(name = "b", subscribe_to = {"x": 1}, work = work)`},
			Options{}, []loadError{{"a.star:4:1", `task: subscribe_to must be a list of strings, got dict {"x": 1}`}}},
		{"zero max retry delay",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, max_retry_delay = 0)`},
			Options{}, []loadError{{"a.star:3:1", "task: max_retry_delay must be positive"}}},
		{"max_memory of zero bytes",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, isolation = "process", max_memory = 0)`},
			Options{}, []loadError{{"a.star:3:1", "task: max_memory: 0 bytes is not a positive size"}}},
		{"max_memory of the wrong type",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, isolation = "process", max_memory = [1])`},
			Options{}, []loadError{{"a.star:3:1", `task: max_memory: got list [1], want bytes (an int) or a size string such as "256MiB"`}}},
		{"an invalid cron expression",
			map[string]string{"a.star": work + `task(work = work, schedule = "*/5 * * *")`},
			Options{}, []loadError{{"a.star:3:1", `task: schedule: "*/5 * * *" is not a schedule: expected exactly 5 fields, found 4: [*/5 * * *]; write five fields`}}},
		{"a cron field out of range",
			map[string]string{"a.star": work + `task(work = work, schedule = "0 25 * * *")`},
			Options{}, []loadError{{"a.star:3:1", `task: schedule: "0 25 * * *" is not a schedule: end of range (25) above maximum (23): 25`}}},
		{"a schedule too fine",
			map[string]string{"a.star": work + `task(work = work, schedule = "every 10ms")`},
			Options{}, []loadError{{"a.star:3:1", `task: schedule: "every 10ms": the period must be at least 1s`}}},
		{"a schedule that is not a string",
			map[string]string{"a.star": work + `task(work = work, schedule = 5)`},
			Options{}, []loadError{{"a.star:3:1", `task: schedule must be a string, got int 5`}}},
		{"a schedule on a task with no workers",
			map[string]string{"a.star": work + `task(work = work, schedule = "@hourly", max_workers = 0)`},
			Options{}, []loadError{{"a.star:3:1", "task: max_workers must be at least 1, got 0 (a pool of no workers would never consume its queue)"}}},
		{"max_priority above 10",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, max_priority = 300)`},
			Options{}, []loadError{{"a.star:3:1", "task: max_priority must be at most 10, got 300"}}},
		{"an unknown queue_type",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, queue_type = "mirrored")`},
			Options{}, []loadError{{"a.star:3:1", `task: unknown queue_type "mirrored": use "classic" or "quorum"`}}},
		{"a quorum queue that is not persistent",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, queue_type = "quorum", persistent = False)`},
			Options{}, []loadError{{"a.star:3:1", `task: persistent = False: a quorum queue is always durable (queue_type = "quorum"); drop persistent or set queue_type = "classic"`}}},
		{"priorities on the daemon's default quorum queue",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, max_priority = 3)`},
			Options{QueueType: tasks.Quorum}, []loadError{{"a.star:3:1", `task: max_priority: RabbitMQ's quorum queues take no priorities (the daemon's queue_type (quorum)); set queue_type = "classic" on this task`}}},
		{"max_priority of zero",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, max_priority = 0)`},
			Options{}, []loadError{{"a.star:3:1", "task: max_priority must be at least 1, got 0 (leave it out for a queue without priorities)"}}},
		{"a rate limit of nothing",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, rate_limit = "0/s")`},
			Options{}, []loadError{{"a.star:3:1", `task: rate_limit: "0/s" allows no starts at all: the count must be at least 1`}}},
		{"a rate limit in words",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, rate_limit = "fast")`},
			Options{}, []loadError{{"a.star:3:1", `task: rate_limit: "fast" is not a rate limit: write starts per period, such as "100/s", "20/m" or "5/h"`}}},
		{"a rate limit per day",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, rate_limit = "5/d")`},
			Options{}, []loadError{{"a.star:3:1", `task: rate_limit: "5/d" is not a rate limit`}}},
		{"a rate limit as a number",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, rate_limit = 50)`},
			Options{}, []loadError{{"a.star:3:1", `task: rate_limit must be a string, got int 50`}}},
		{"max_priority as a string",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, max_priority = "5")`},
			Options{}, []loadError{{"a.star:3:1", `task: max_priority must be an int, got string "5"`}}},
		{"an empty file_root",
			map[string]string{"a.star": work + `task(subscribe_to = ["x"], work = work, allow = ["file"], file_root = "")`},
			Options{}, []loadError{{"a.star:3:1", "task: file_root is empty: give a directory"}}},
		{"every mistake of one call",
			map[string]string{"a.star": work + `task(subscribe_to = ["a..b"], work = work, prefetch = 0, work_model = "x")`},
			Options{}, []loadError{
				{"a.star:3:1", "task: subscribe_to[0]: pattern"},
				{"a.star:3:1", `task: unknown work_model "x"`},
				{"a.star:3:1", "task: prefetch must be at least 1"},
			}},
		{"mistakes in several files",
			map[string]string{
				"a.star": work + `task(subscribe_to = ["x"], work = work, prefetch = 0)`,
				"b.star": work + `task(subscribe_to = ["x"], work = work, max_attempts = 0)`,
			},
			Options{}, []loadError{
				{"a.star:3:1", "task: prefetch must be at least 1"},
				{"b.star:3:1", "task: max_attempts must be at least 1"},
			}},

		// Where task() and friends may be called.
		{"task inside a function",
			map[string]string{"a.star": work + "def register():\n    task(subscribe_to = [\"x\"], work = work)\nregister()\n"},
			Options{}, []loadError{{"a.star:4:5", "task: call task() at the top level of the file, not inside a function (here inside register)"}}},
		{"config in a task file",
			map[string]string{"a.star": `config(log_level = "debug")`},
			Options{}, []loadError{{"a.star:1:1", "config: only allowed in symphony.star at the tasks root"}}},
		{"publish at the top level",
			map[string]string{"a.star": `publish("a.b", {})`},
			Options{}, []loadError{{"a.star:1:1", "publish: not available at the top level of a file: it works only while a task handles a message (call it from the work function)"}}},
		{"sleep at the top level",
			map[string]string{"a.star": `sleep(1)`},
			Options{}, []loadError{{"a.star:1:1", "sleep: not available at the top level of a file"}}},
		{"symphony.star in a subdirectory",
			map[string]string{"sub/symphony.star": `config(log_level = "debug")`},
			Options{}, []loadError{{"sub/symphony.star", "symphony.star is only read at the tasks root: move it to ROOT/symphony.star or rename it"}}},

		// Scripts that do not compile or run.
		{"syntax error",
			map[string]string{"a.star": "def work(payload, meta)\n    return True\n"},
			Options{}, []loadError{{"a.star:2:1", "got newline, want ':'"}}},
		{"undefined names, every one",
			map[string]string{"a.star": "x = undefined_one\ny = undefined_two\n"},
			Options{}, []loadError{
				{"a.star:1:5", "undefined: undefined_one"},
				{"a.star:2:5", "undefined: undefined_two"},
			}},
		{"a global assigned twice",
			map[string]string{"a.star": "x = 1\nx = 2\n"},
			Options{}, []loadError{{"a.star:2:1", "cannot reassign global x declared at"}}},
		{"runtime error at the top level",
			map[string]string{"a.star": "x = 1\ny = {}[\"missing\"]\n"},
			Options{}, []loadError{{"a.star:2:7", `key "missing" not in dict`}}},
		{"fail at the top level",
			map[string]string{"a.star": "x = 1\nfail(\"configure me\")\n"},
			Options{}, []loadError{{"a.star:2:1", "fail: configure me"}}},
		{"recursion",
			map[string]string{"a.star": "def f(n):\n    return f(n - 1)\nx = f(3)\n"},
			Options{}, []loadError{{"a.star:2:12", "function f called recursively"}}},
		{"a top level that never ends",
			map[string]string{"a.star": "def spin():\n    while True:\n        pass\nspin()\n"},
			Options{MaxLoadSteps: 10000}, []loadError{{"a.star:1:1", "Starlark computation cancelled: the top level ran more than 10000 steps"}}},

		// load().
		{"load outside the root",
			map[string]string{"a.star": `load("../x.star", "x")`},
			Options{}, []loadError{{"a.star:1:1", `cannot load ../x.star: "../x.star" is outside the tasks root ROOT; loads outside the root are refused`}}},
		{"load through the parent inside the path",
			map[string]string{"a.star": `load("lib/../../x.star", "x")`},
			Options{}, []loadError{{"a.star:1:1", `is outside the tasks root`}}},
		{"load an absolute path",
			map[string]string{"a.star": `load("/etc/x.star", "x")`},
			Options{}, []loadError{{"a.star:1:1", `cannot load /etc/x.star: absolute path "/etc/x.star" is refused: load paths are relative to the tasks root`}}},
		{"load a missing file",
			map[string]string{"a.star": "\n" + `load("lib/nope.star", "x")`},
			Options{}, []loadError{{"a.star:2:1", "cannot load lib/nope.star: ROOT/lib/nope.star does not exist (load paths are relative to the tasks root ROOT)"}}},
		{"load a name the library lacks",
			map[string]string{"a.star": `load("lib/money.star", "cent")`, "lib/money.star": "def cents(x):\n    return x\n"},
			Options{}, []loadError{{"a.star:1:1", "load: name cent not found in module lib/money.star (did you mean cents?)"}}},
		{"load a file that is not .star",
			map[string]string{"a.star": `load("lib/money.py", "x")`},
			Options{}, []loadError{{"a.star:1:1", `cannot load lib/money.py: "lib/money.py" is not a .star file`}}},
		{"load symphony.star",
			map[string]string{"a.star": `load("symphony.star", "x")`, "symphony.star": "x = 1\n"},
			Options{}, []loadError{{"a.star:1:1", "cannot load symphony.star: symphony.star configures the daemon and cannot be loaded"}}},
		{"load a directory",
			map[string]string{"a.star": `load("lib.star", "x")`, "lib.star/x.star": "x = 1\n"},
			Options{}, []loadError{
				{"a.star:1:1", "cannot load lib.star: ROOT/lib.star is a directory"},
			}},
		{"load an empty name",
			map[string]string{"a.star": `load("", "x")`},
			Options{}, []loadError{{"a.star:1:1", `cannot load : empty file name: give a path relative to the tasks root, such as "lib/money.star"`}}},
		{"load a task test",
			map[string]string{"a.star": `load("a_test.star", "x")`, "a_test.star": "x = 1\n"},
			Options{}, []loadError{{"a.star:1:1", `cannot load a_test.star: "a_test.star" is a task test file and cannot be loaded`}}},
		{"load cycle",
			map[string]string{
				"a.star":     `load("lib/b.star", "b")` + "\na = 1\n",
				"lib/b.star": `load("a.star", "a")` + "\nb = 1\n",
			},
			Options{}, []loadError{
				{"a.star:1:1", "cannot load lib/b.star: ROOT/lib/b.star:1:1: cannot load a.star: load cycle: a.star loads lib/b.star loads a.star; move the code they share into a library that neither loads"},
				{"lib/b.star:1:1", "cannot load a.star: load cycle: a.star loads lib/b.star loads a.star"},
			}},
		{"load a file that registers tasks",
			map[string]string{
				"a.star": work + `task(subscribe_to = ["x"], work = work)`,
				"b.star": `load("a.star", "work")`,
			},
			Options{}, []loadError{{"b.star:1:1", "cannot load a.star: a.star registers tasks (task() at ROOT/a.star:3:1), and a file that is load()ed must not"}}},
		{"load a library that fails",
			map[string]string{
				"a.star":       `load("lib/bad.star", "x")`,
				"lib/bad.star": "x = 1 // 0\n",
			},
			Options{}, []loadError{
				{"a.star:1:1", "cannot load lib/bad.star: ROOT/lib/bad.star:1:7: floored division by zero"},
				{"lib/bad.star:1:7", "floored division by zero"},
			}},
		{"a library in a dot directory is loadable but its errors show through",
			map[string]string{
				"a.star":        `load(".lib/bad.star", "x")`,
				".lib/bad.star": "x = y\n",
			},
			Options{}, []loadError{{"a.star:1:1", "cannot load .lib/bad.star: ROOT/.lib/bad.star:1:5: undefined: y"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			root := writeTree(t, c.files)
			opts := c.opts
			opts.LookupEnv = noEnv
			got, err := Load([]string{root}, opts)
			if err == nil {
				t.Fatalf("Load() = %d tasks, no error; want %d errors", len(got), len(c.want))
			}
			if got != nil {
				t.Errorf("Load() returned %d tasks with its errors, want none", len(got))
			}
			wantErrors(t, "Load()", err, root, c.want)
		})
	}
}

func TestLoadRefusesASymlinkOutOfTheRoot(t *testing.T) {
	t.Parallel()
	outside := writeTree(t, map[string]string{"secret.star": "x = 1\n"})
	root := writeTree(t, map[string]string{"a.star": `load("lib/secret.star", "x")`})
	if err := os.MkdirAll(filepath.Join(root, "lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "secret.star"), filepath.Join(root, "lib", "secret.star")); err != nil {
		t.Skipf("no symlinks here: %v", err)
	}
	_, err := Load([]string{root}, Options{LookupEnv: noEnv})
	if err == nil {
		t.Fatal("Load() succeeded, want the escaping symlink refused")
	}
	lines := errorLines(t, err, root)
	// The symlink itself is found by the walk, and load() follows it: both
	// are refused.
	want := "a.star:1:1: cannot load lib/secret.star: lib/secret.star is a symlink to " + filepath.Join(outside, "secret.star") + ", outside the tasks root"
	if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, want) }) {
		t.Errorf("Load() errors:\n%s\nwant a line starting\n%s", strings.Join(lines, "\n"), want)
	}
}

func TestLoadBadRoots(t *testing.T) {
	t.Parallel()
	root := writeTree(t, map[string]string{"a_test.star": "", "notes.txt": "", "symphony.star": ""})
	cases := []struct{ root, want string }{
		{filepath.Join(root, "missing"), "read tasks root: stat " + filepath.Join(root, "missing") + ": no such file or directory"},
		{filepath.Join(root, "notes.txt"), "notes.txt is not a task file: task files end in .star"},
		{filepath.Join(root, "a_test.star"), "a_test.star is not a task file: files ending in _test.star are task tests"},
		{filepath.Join(root, "symphony.star"), "symphony.star is not a task file: symphony.star configures the daemon"},
	}
	for _, c := range cases {
		_, err := Load([]string{c.root}, Options{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Load(%s) = %v, want an error containing %q", c.root, err, c.want)
		}
	}
}

func TestLoadSpecValues(t *testing.T) {
	t.Parallel()
	root := writeTree(t, map[string]string{
		"lib/money.star": "def cents(x):\n    return int(x * 100)\n",
		"lib/names.star": "load(\"lib/money.star\", \"cents\")\nPREFIX = \"image\"\n",
		"thumbnails.star": `load("lib/names.star", "PREFIX")
def work(payload, meta):
    return True
task(
    subscribe_to = [PREFIX + ".uploaded.#", "image.*.changed"],
    work = work,
)
`,
		"billing/charge.star": `load("lib/money.star", "cents")
def on_created(payload, meta):
    return True
def on_deleted(payload, meta, extra = None, *rest, **kw):
    return True
task(
    name = "billing.charge",
    routes = {"user.created": on_created, "user.*.deleted": on_deleted},
    subscribe_to = ["user.#", "user.created"],
    queue = "billing",
    work_model = "oneshot",
    min_workers = 2, max_workers = 4,
    prefetch = 3,
    timeout = "1m30s",
    timeout_action = "retry",
    max_attempts = 7,
    retry_delay = 2,
    max_retry_delay = 0.5 * 60,
    acknowledge = False,
    persistent = False,
    isolation = "process",
    idle_timeout = 30,
    max_steps = 1000000,
    max_memory = "256MiB",
    allow = ["http", "file"],
    allow_hosts = ["api.example.com"],
    file_root = "data",
    schedule = "@hourly",
    rate_limit = "20/m",
    max_priority = 5,
)
# Generated tasks: the dialect allows top-level loops.
for kind in ["a", "b"]:
    task(name = "gen." + kind, subscribe_to = ["gen." + kind], work = lambda p, m: True, timeout = None)
`,
		".hidden/skip.star": "this is not starlark",
		"skipped_test.star": "this is not starlark either",
		"symphony.star":     "config(log_level = \"debug\")\n",
		"lib/.dotfile.star": "nor this",
		"lib/helpers.star":  "# a library: no task\n",
		"notes/readme.md":   "not a task",
	})
	got, err := Load([]string{root}, Options{LookupEnv: noEnv})
	if err != nil {
		t.Fatalf("Load() = %v", err)
	}
	specs := map[string]tasks.Spec{}
	var names []string
	for _, tk := range got {
		specs[tk.Spec.Name] = tk.Spec
		names = append(names, tk.Spec.Name)
		if tk.Handler == nil {
			t.Errorf("task %s has no handler", tk.Spec.Name)
		}
	}
	if want := []string{"billing.charge", "gen.a", "gen.b", "thumbnails"}; !slices.Equal(names, want) {
		t.Fatalf("tasks = %v, want %v (in walk order)", names, want)
	}

	thumbs := specs["thumbnails"]
	want := tasks.NewSpec("thumbnails")
	want.File = "thumbnails.star"
	want.Pos = filepath.Join(root, "thumbnails.star") + ":4:1"
	want.Patterns = []string{"image.uploaded.#", "image.*.changed"}
	want.Hash = thumbs.Hash
	if !specEqual(thumbs, want) {
		t.Errorf("thumbnails spec =\n %+v\nwant\n %+v", thumbs, want)
	}
	if thumbs.Timeout != 10*time.Minute {
		t.Errorf("the default timeout is %s, want 10m (SPEC §2)", thumbs.Timeout)
	}

	charge := specs["billing.charge"]
	want = tasks.Spec{
		Name: "billing.charge", File: "billing/charge.star",
		Pos:   filepath.Join(root, "billing", "charge.star") + ":6:1",
		Queue: "billing",
		// routes first, in insertion order, then subscribe_to's others,
		// then the ticks.
		Patterns:  []string{"user.created", "user.*.deleted", "user.#", "schedule.billing.charge"},
		WorkModel: tasks.Oneshot, MinWorkers: 2, MaxWorkers: 4, Prefetch: 3,
		Timeout: 90 * time.Second, TimeoutAction: tasks.TimeoutRetry, MaxAttempts: 7,
		RetryDelay: 2 * time.Second, MaxRetryDelay: 30 * time.Second,
		Acknowledge: false, Persistent: false, Isolation: tasks.Process,
		IdleTimeout: 30 * time.Second, MaxSteps: 1000000, MaxMemory: 256 << 20,
		Allow: []string{"http", "file"}, AllowHosts: []string{"api.example.com"},
		FileRoot: filepath.Join(realPath(t, root), "data"),
		Schedule: "@hourly", MaxPriority: 5, QueueType: tasks.Classic,
		RateLimit: tasks.Rate{N: 20, Per: time.Minute},
		Hash:      charge.Hash,
	}
	if !specEqual(charge, want) {
		t.Errorf("billing.charge spec =\n %+v\nwant\n %+v", charge, want)
	}
	// timeout = None turns the default off.
	if specs["gen.a"].Timeout != 0 || !slices.Equal(specs["gen.b"].Patterns, []string{"gen.b"}) {
		t.Errorf("generated specs = %+v, %+v", specs["gen.a"], specs["gen.b"])
	}
	// Tasks of one file share its hash; files loading different libraries
	// differ.
	if specs["gen.a"].Hash != charge.Hash || thumbs.Hash == charge.Hash || len(thumbs.Hash) != 64 {
		t.Errorf("hashes: charge %s gen.a %s thumbnails %s", charge.Hash, specs["gen.a"].Hash, thumbs.Hash)
	}
}

func realPath(t *testing.T, p string) string {
	t.Helper()
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func specEqual(a, b tasks.Spec) bool {
	return reflect.DeepEqual(a, b)
}

// The hash covers the task file and every library it loads, transitively:
// changing a library two loads away changes it; changing an unrelated
// file does not.
func TestLoadHash(t *testing.T) {
	t.Parallel()
	files := map[string]string{
		"lib/deep.star": "X = 1\n",
		"lib/mid.star":  "load(\"lib/deep.star\", \"X\")\nY = X\n",
		"a.star":        "load(\"lib/mid.star\", \"Y\")\n" + work + "task(subscribe_to = [\"a\"], work = work)\n",
		"b.star":        work + "task(subscribe_to = [\"b\"], work = work)\n",
	}
	hashes := func(files map[string]string) map[string]string {
		root := writeTree(t, files)
		got, err := Load([]string{root}, Options{LookupEnv: noEnv})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, tk := range got {
			out[tk.Spec.Name] = tk.Spec.Hash
		}
		return out
	}
	before := hashes(files)
	again := hashes(files)
	if before["a"] != again["a"] || before["b"] != again["b"] {
		t.Errorf("the same files hash differently: %v, %v", before, again)
	}
	files["lib/deep.star"] = "X = 2\n"
	after := hashes(files)
	if after["a"] == before["a"] {
		t.Error("changing a library two loads away kept the hash of the task that loads it")
	}
	if after["b"] != before["b"] {
		t.Error("changing a library changed the hash of a task that does not load it")
	}
}

// A library loaded by several files runs once, and they share its values.
func TestLoadRunsALibraryOnce(t *testing.T) {
	t.Parallel()
	root := writeTree(t, map[string]string{
		"lib/once.star": "log.info(\"library ran\")\nSHARED = {\"n\": 1}\n",
		"a.star":        "load(\"lib/once.star\", \"SHARED\")\n" + work + "task(subscribe_to = [\"a\"], work = work)\n",
		"b.star":        "load(\"lib/once.star\", \"SHARED\")\n" + work + "task(subscribe_to = [\"b\"], work = work)\n",
		"c.star":        "load(\"lib/once.star\", S = \"SHARED\")\nload(\"./lib/once.star\", \"SHARED\")\n",
	})
	logs := &logBuffer{}
	if _, err := Load([]string{root}, Options{Logger: logs.logger(), LookupEnv: noEnv}); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), "library ran"); n != 1 {
		t.Errorf("the library ran %d times, want once:\n%s", n, logs)
	}
}

// Several roots, a single file as a root, and overlapping roots.
func TestLoadRoots(t *testing.T) {
	t.Parallel()
	one := writeTree(t, map[string]string{
		"a.star": work + "task(subscribe_to = [\"a\"], work = work)\n",
		"b.star": work + "task(subscribe_to = [\"b\"], work = work)\n",
	})
	two := writeTree(t, map[string]string{
		"lib/l.star": "X = 1\n",
		"c.star":     "load(\"lib/l.star\", \"X\")\n" + work + "task(subscribe_to = [\"c\"], work = work)\n",
	})
	names := func(roots ...string) []string {
		got, err := Load(roots, Options{LookupEnv: noEnv})
		if err != nil {
			t.Fatalf("Load(%v) = %v", roots, err)
		}
		var out []string
		for _, tk := range got {
			out = append(out, tk.Spec.Name)
		}
		return out
	}
	if got := names(one, two); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("two roots: %v", got)
	}
	if got := names(filepath.Join(one, "b.star")); !slices.Equal(got, []string{"b"}) {
		t.Errorf("a file as root: %v", got)
	}
	if got := names(filepath.Join(two, "c.star")); !slices.Equal(got, []string{"c"}) {
		t.Errorf("a file as root loading a library: %v", got)
	}
	if got := names(one, filepath.Join(one, "a.star"), one); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("overlapping roots: %v", got)
	}
}

// A copy written from what Sources reports loads to the same tasks, hashes
// included, and Shown names the original root in positions.
func TestSourcesMakeACopyThatLoadsTheSame(t *testing.T) {
	t.Parallel()
	root := filepath.Join(t.TempDir(), "tasks")
	for name, src := range map[string]string{
		"a.star":         "load(\"lib/util.star\", \"ok\")\ntask(subscribe_to = [\"a\"], work = ok)\n",
		"sub/b.star":     "load(\"lib/util.star\", \"ok\")\ntask(subscribe_to = [\"b\"], work = ok)\n",
		"lib/util.star":  "def ok(payload, meta):\n    return True\n",
		"notes/.x.star":  "this is not starlark",
		"symphony.star":  "config(log_level = \"debug\")\n",
		"a_test.star":    "this is not loaded",
		"lib/other.star": "def unused():\n    pass\n",
	} {
		p := filepath.Join(root, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(src), 0o644)
	}
	copyRoot := filepath.Join(t.TempDir(), "copy")
	seen := map[string]bool{}
	orig, err := Load([]string{root}, Options{Sources: func(r, rel string, src []byte) {
		if r != root {
			t.Errorf("Sources root %q, want %q", r, root)
		}
		seen[rel] = true
		p := filepath.Join(copyRoot, filepath.FromSlash(rel))
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, src, 0o644)
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"a.star", "lib/other.star", "lib/util.star", "sub/b.star"}
	var got []string
	for rel := range seen {
		got = append(got, rel)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("Sources told of %v, want %v", got, want)
	}
	copied, err := Load([]string{copyRoot}, Options{Shown: map[string]string{copyRoot: root}})
	if err != nil {
		t.Fatal(err)
	}
	if len(copied) != len(orig) {
		t.Fatalf("%d tasks from the copy, %d from the original", len(copied), len(orig))
	}
	for i := range orig {
		o, c := orig[i].Spec, copied[i].Spec
		if o.Hash != c.Hash || o.Pos != c.Pos || o.File != c.File {
			t.Errorf("task %s: original (%s, %s, %s), copy (%s, %s, %s)", o.Name, o.Hash, o.Pos, o.File, c.Hash, c.Pos, c.File)
		}
	}
}

// queue_type comes from the task, else from the daemon's default, else
// classic.
func TestLoadQueueType(t *testing.T) {
	t.Parallel()
	root := writeTree(t, map[string]string{
		"plain.star":   work + `task(subscribe_to = ["p"], work = work)`,
		"classic.star": work + `task(subscribe_to = ["c"], work = work, queue_type = "classic")`,
		"quorum.star":  work + `task(subscribe_to = ["q"], work = work, queue_type = "quorum")`,
	})
	for _, c := range []struct {
		def  tasks.QueueType
		want map[string]tasks.QueueType
	}{
		{"", map[string]tasks.QueueType{"plain": tasks.Classic, "classic": tasks.Classic, "quorum": tasks.Quorum}},
		{tasks.Quorum, map[string]tasks.QueueType{"plain": tasks.Quorum, "classic": tasks.Classic, "quorum": tasks.Quorum}},
	} {
		ts, err := Load([]string{root}, Options{QueueType: c.def})
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range ts {
			if got := task.Spec.QueueType; got != c.want[task.Spec.Name] {
				t.Errorf("default %q: task %s has queue type %q, want %q", c.def, task.Spec.Name, got, c.want[task.Spec.Name])
			}
		}
	}
}
