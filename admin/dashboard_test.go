package admin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/symphony-go/symphony/engine"
	"github.com/symphony-go/symphony/internal/symphonytest"
)

// The dashboard is tested in a real browser (Debian's chromium) against a
// running daemon, the real binary. Set SYMPHONY_UPDATE_SCREENSHOTS=1 to
// write the screenshots of docs/ again, after a minute of traffic that
// fills the charts.

const token = "dashboard-test-token"

func TestMain(m *testing.M) { symphonytest.Main(m) }

var dashboardTasks = map[string]string{
	"greet.star": `
def work(payload, meta):
    log.info("hello", name = payload.get("name", "world"))
    return True

task(name = "greet", subscribe_to = ["greeting.*"], work = work, min_workers = 1, max_workers = 4)
`,
	"orders.star": `
def work(payload, meta):
    publish("invoice.create", {"order": payload["id"]})
    return True

task(name = "orders", subscribe_to = ["order.placed"], work = work, max_workers = 2)
`,
	"invoices.star": `
def work(payload, meta):
    sleep(0.02)
    return True

task(name = "invoices", subscribe_to = ["invoice.#"], work = work, isolation = "process", min_workers = 2, max_workers = 2)
`,
	"flaky.star": `
def work(payload, meta):
    if payload.get("boom"):
        fail("boom: the payload asked for it")
    return True

task(name = "flaky", subscribe_to = ["flaky.#"], work = work, max_attempts = 2, retry_delay = "50ms")
`,
}

// browser starts a headless Chromium with a fresh profile; with CI=true a
// missing browser fails the test.
func browser(t *testing.T) context.Context {
	t.Helper()
	path := "/usr/bin/chromium"
	if _, err := os.Stat(path); err != nil {
		if path, err = exec.LookPath("chromium"); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatal("chromium is not installed and CI=true (apt-get install chromium)")
			}
			t.Skip("chromium is not installed (apt-get install chromium)")
		}
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

func writeTasks(t *testing.T, dir string) {
	t.Helper()
	for name, text := range dashboardTasks {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func status(t *testing.T, addr string) engine.Status {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st engine.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

func taskOf(st engine.Status, name string) engine.TaskStatus {
	for _, t := range st.Tasks {
		if t.Name == name {
			return t
		}
	}
	return engine.TaskStatus{}
}

// eventually retries check until it returns "" or the wait is over, and
// fails with its last complaint.
func eventually(t *testing.T, what string, check func() string) {
	t.Helper()
	deadline := time.Now().Add(symphonytest.Wait)
	for {
		complaint := check()
		if complaint == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s", what, complaint)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// pageTasks are the numbers the page shows per task.
type pageTask struct {
	Name, Workers, Busy, Depth, Ack, Retry, Dead, Model, Isolation, Points, PIDs string
}

const readTasks = `JSON.stringify([...document.querySelectorAll('#tasks > .task')].map(el => {
  const f = n => el.querySelector('[data-field="' + n + '"]').textContent;
  return {Name: el.dataset.task, Workers: f('workers'), Busy: f('busy'), Depth: f('depth'), Ack: f('ack'),
    Retry: f('retry'), Dead: f('dead'), Model: f('model'), Isolation: f('isolation'),
    Points: el.querySelector('svg').dataset.points || '0',
    PIDs: [...el.querySelectorAll('.procs tbody tr')].map(r => r.cells[0].textContent).sort().join(',')};
}))`

func readPage(t *testing.T, ctx context.Context) map[string]pageTask {
	t.Helper()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[string](readTasks))
	if err != nil {
		t.Fatal(err)
	}
	var list []pageTask
	if err := json.Unmarshal([]byte(raw), &list); err != nil {
		t.Fatalf("%v: %s", err, raw)
	}
	out := map[string]pageTask{}
	for _, p := range list {
		out[p.Name] = p
	}
	return out
}

// do runs browser steps with a deadline, so that a page that never shows
// what a step waits for fails the test rather than hanging it.
func do(ctx context.Context, steps ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(ctx, symphonytest.Wait)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		html, _ := chromedp.Run(context.WithoutCancel(ctx), chromedp.Evaluate[string](`document.body.outerHTML`))
		return fmt.Errorf("%w; the page:\n%s", err, html)
	}
	return nil
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return v
}

func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

func publishHTTP(t *testing.T, addr, body string) {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+addr+"/publish", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /publish %s = %d %s", body, resp.StatusCode, b)
	}
}

func TestDashboard(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the dashboard's daemon runs a process-isolated task")
	}
	ctx := browser(t)
	env := symphonytest.NewEnv(t)
	tasksDir := filepath.Join(env.Dir, "tasks")
	if err := os.Mkdir(tasksDir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeTasks(t, tasksDir)
	env.Vars = append(env.Vars, "SYMPHONY_ADMIN_TOKEN="+token)
	update := os.Getenv("SYMPHONY_UPDATE_SCREENSHOTS") == "1"
	if update {
		// Paths as a user would type them, in the pictures.
		env.Vars = append(env.Vars, "SYMPHONY_ADMIN_HISTORY=2m", "SYMPHONY_BROKER=sqlite:symphony.db")
	}
	d := env.Start("tasks")
	addr := d.WaitFor("admin server listening", nil).Str("addr")

	publishHTTP(t, addr, `{"routing_key": "greeting.en", "payload": {"name": "Ada"}}`)
	publishHTTP(t, addr, `{"routing_key": "greeting.fr", "payload": {"name": "Blaise"}}`)
	publishHTTP(t, addr, `{"routing_key": "order.placed", "payload": {"id": 1}}`)
	publishHTTP(t, addr, `{"routing_key": "flaky.job", "payload": {"boom": true}}`)
	eventually(t, "traffic handled", func() string {
		st := status(t, addr)
		if g, i, f := taskOf(st, "greet"), taskOf(st, "invoices"), taskOf(st, "flaky"); g.Messages["ack"] != 2 || i.Messages["ack"] != 1 || f.Messages["dead"] != 1 {
			return fmt.Sprintf("greet %v, invoices %v, flaky %v", g.Messages, i.Messages, f.Messages)
		}
		return ""
	})

	if err := do(ctx,
		chromedp.Navigate("http://"+addr+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#conn[data-state="live"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-task="flaky"]`)),
	); err != nil {
		t.Fatal(err)
	}

	t.Run("numbers match /status", func(t *testing.T) {
		eventually(t, "the page shows what /status says", func() string {
			st := status(t, addr)
			page := readPage(t, ctx)
			if len(page) != len(st.Tasks) {
				return fmt.Sprintf("page shows %d tasks, status %d", len(page), len(st.Tasks))
			}
			for _, s := range st.Tasks {
				p := page[s.Name]
				var pids []string
				for _, pr := range s.Processes {
					pids = append(pids, strconv.Itoa(pr.PID))
				}
				slices.Sort(pids)
				want := pageTask{Name: s.Name, Workers: strconv.Itoa(s.Workers.Now), Busy: strconv.Itoa(s.Workers.Busy),
					Depth: strconv.FormatInt(s.QueueDepth, 10), Ack: strconv.Itoa(s.Messages["ack"]),
					Retry: strconv.Itoa(s.Messages["retry"]), Dead: strconv.Itoa(s.Messages["dead"]),
					Model: s.WorkModel, Isolation: s.Isolation, Points: p.Points, PIDs: strings.Join(pids, ",")}
				if p != want {
					return fmt.Sprintf("task %s: page %+v, status %+v", s.Name, p, want)
				}
			}
			if len(taskOf(st, "invoices").Processes) != 2 {
				return "the process-isolated task shows no processes"
			}
			return ""
		})
		// The last failure, with its backtrace a click away.
		if err := do(ctx,
			chromedp.Click(chromedp.CSS(`[data-task="flaky"] .failure summary`)),
			chromedp.WaitVisible(chromedp.CSS(`[data-task="flaky"] [data-field="failure-text"]`)),
		); err != nil {
			t.Fatal(err)
		}
		summary := text(t, ctx, `[data-task="flaky"] [data-field="failure-line"]`)
		text := text(t, ctx, `[data-task="flaky"] [data-field="failure-text"]`)
		if !strings.Contains(summary, "boom: the payload asked for it") || !strings.Contains(text, "flaky.star:4") {
			t.Errorf("failure shows %q, backtrace %q", summary, text)
		}
	})

	t.Run("the chart grows as messages flow", func(t *testing.T) {
		eventually(t, "a first point", func() string {
			if p := readPage(t, ctx)["greet"].Points; p == "0" {
				return "no point yet"
			}
			return ""
		})
		before := readPage(t, ctx)["greet"].Points
		n, _ := strconv.Atoi(before)
		for i := range 20 {
			publishHTTP(t, addr, fmt.Sprintf(`{"routing_key": "greeting.en", "payload": {"n": %d}}`, i))
		}
		eventually(t, "the chart grows and shows the rate", func() string {
			peak := text(t, ctx, `[data-task="greet"] [data-field="chart-max"]`)
			now, _ := strconv.Atoi(readPage(t, ctx)["greet"].Points)
			if now <= n+1 || !strings.HasPrefix(peak, "peak ") || strings.HasPrefix(peak, "peak 0/s") {
				return fmt.Sprintf("points %d then %d, %q; history %s", n, now, peak,
					eval[string](t, ctx, `JSON.stringify([Date.now(), state.keep, state.history.greet])`))
			}
			return ""
		})
	})

	t.Run("a replay button replays a dead letter", func(t *testing.T) {
		if err := do(ctx,
			chromedp.Click(chromedp.CSS(`[data-task="flaky"] [data-action="dead"]`)),
			chromedp.WaitVisible(chromedp.CSS(`#dead-dialog .dead-item`)),
			chromedp.Click(chromedp.CSS(`#dead-dialog .dead-item`)),
			// With a token set, a body is shown to who has it: the page
			// asks for it once, and keeps it for the replay.
			chromedp.WaitVisible(chromedp.CSS(`#token-input`)),
			chromedp.SendKeys(chromedp.CSS(`#token-input`), token),
			chromedp.Click(chromedp.CSS(`#token-submit`)),
			chromedp.WaitVisible(chromedp.CSS(`#dead-detail`)),
			chromedp.Click(chromedp.CSS(`#dead-replay-one`)),
			chromedp.WaitVisible(chromedp.CSS(`#toast`)),
		); err != nil {
			t.Fatal(err)
		}
		toast := text(t, ctx, `#toast`)
		if body := text(t, ctx, `#dead-body`); !strings.Contains(body, `"boom": true`) {
			t.Errorf("the dead letter's body shows as %q", body)
		}
		if toast != "Replayed 1 dead letter" {
			t.Errorf("toast %q", toast)
		}
		// It failed again: flaky handled it a second time.
		eventually(t, "the replayed message runs again", func() string {
			if f := taskOf(status(t, addr), "flaky"); f.Messages["dead"] != 2 {
				return fmt.Sprintf("flaky %v", f.Messages)
			}
			return ""
		})
		stored := eval[string](t, ctx, `sessionStorage.getItem('symphony.admin-token')`)
		if err := do(ctx, chromedp.Click(chromedp.CSS(`#dead-dialog [data-close]`))); err != nil {
			t.Fatal(err)
		}
		if stored != token {
			t.Errorf("the token was not kept for the session: %q", stored)
		}
	})

	t.Run("publish from the page", func(t *testing.T) {
		before := taskOf(status(t, addr), "greet").Messages["ack"]
		if err := do(ctx,
			chromedp.Click(chromedp.CSS(`#publish-open`)),
			chromedp.WaitVisible(chromedp.CSS(`#publish-key`)),
			chromedp.SendKeys(chromedp.CSS(`#publish-key`), "greeting.page"),
			chromedp.SendKeys(chromedp.CSS(`#publish-payload`), `{"name": "from the page"}`),
			chromedp.Click(chromedp.CSS(`#publish-form button[type="submit"]`)),
			chromedp.WaitVisible(chromedp.CSS(`#publish-result`)),
		); err != nil {
			t.Fatal(err)
		}
		if got := text(t, ctx, `#publish-result`); !strings.HasPrefix(got, "Published message ") {
			t.Errorf("the page says %q", got)
		}
		d.WaitFor("hello", map[string]string{"name": "from the page"})
		eventually(t, "the page's message is handled", func() string {
			if n := taskOf(status(t, addr), "greet").Messages["ack"]; n != before+1 {
				return fmt.Sprintf("acked %d, before %d", n, before)
			}
			return ""
		})
		if err := do(ctx, chromedp.Click(chromedp.CSS(`#publish-dialog [data-close]`))); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a failed reload shows", func(t *testing.T) {
		broken := filepath.Join(tasksDir, "greet.star")
		if err := os.WriteFile(broken, []byte("def work(payload, meta)\n    return True\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := do(ctx, chromedp.WaitVisible(chromedp.CSS(`#reload-alert`))); err != nil {
			t.Fatal(err)
		}
		text := text(t, ctx, `#reload-alert-error`)
		if !strings.Contains(text, "greet.star:2:1: got newline") {
			t.Errorf("the alert says %q", text)
		}
		failed := eval[int](t, ctx, `document.querySelectorAll('#reloads li[data-success="false"]').length`)
		if failed != 1 {
			t.Errorf("the reload history shows %d failed reloads", failed)
		}
		// The running tasks stay, on the page as in the daemon.
		if got := readPage(t, ctx)["greet"].Name; got != "greet" {
			t.Error("the page lost the task whose reload failed")
		}
		writeTasks(t, tasksDir)
		if err := do(ctx, chromedp.WaitNotVisible(chromedp.CSS(`#reload-alert`))); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("screenshots", func(t *testing.T) {
		dir := t.TempDir()
		if update {
			_, file, _, _ := runtime.Caller(0)
			dir = filepath.Join(filepath.Dir(file), "..", "docs")
			traffic(t, addr)
		}
		// Each picture in a tab of its own, sized before the page loads.
		shoot := func(name string, width, height int64, dark, whole bool) {
			t.Helper()
			scheme := "light"
			if dark {
				scheme = "dark"
			}
			tab, closeTab := chromedp.NewContext(ctx)
			defer closeTab()
			if err := chromedp.Do(tab); err != nil { // opens the tab, without a deadline
				t.Fatal(err)
			}
			if err := do(tab,
				chromedp.EmulateViewport(width, height),
				chromedp.Func(func(ctx context.Context, tab *chromedp.Target) error {
					_, err := cdp.Call(ctx, tab, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
						Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}}})
					return err
				}),
				chromedp.Navigate("http://"+addr+"/"),
				chromedp.WaitVisible(chromedp.CSS(`#conn[data-state="live"]`)),
				chromedp.Poll[chromedp.Void](`document.querySelector('[data-task="greet"] svg')?.dataset.points > 0`),
			); err != nil {
				t.Fatal(err)
			}
			// Nothing is wider than the screen, a failure's long line
			// included: the page never scrolls sideways.
			if wide := eval[string](t, tab, `(() => {
				const w = document.documentElement.clientWidth;
				const over = [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > w + 1);
				return document.documentElement.scrollWidth > w ? over.slice(0, 5).map(e => e.tagName + '.' + e.className).join(' ') || 'the page' : '';
			})()`); wide != "" {
				t.Errorf("%s: wider than the screen: %s", name, wide)
			}
			if err := do(tab, chromedp.Click(chromedp.CSS(`[data-task="flaky"] .failure summary`))); err != nil {
				t.Fatal(err)
			}
			shot := chromedp.CaptureScreenshot()
			if whole {
				shot = chromedp.FullScreenshot(100) // 100 makes a PNG
			}
			png, err := chromedp.Run(tab, shot)
			if err != nil {
				t.Fatal(err)
			}
			if len(png) < 1000 || string(png[1:4]) != "PNG" {
				t.Fatalf("%s is not a PNG", name)
			}
			if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		shoot("dashboard-desktop.png", 1280, 900, false, true)
		shoot("dashboard-phone.png", 390, 844, true, false)
	})
	d.Stop()
}

// traffic sends a minute of uneven load, so that the screenshots' charts
// have something to show.
func traffic(t *testing.T, addr string) {
	for i := range 30 {
		for j := range 5 + (i%7)*8 {
			publishHTTP(t, addr, fmt.Sprintf(`{"routing_key": "greeting.en", "payload": {"n": %d}}`, j))
			if j%4 == 0 {
				publishHTTP(t, addr, fmt.Sprintf(`{"routing_key": "order.placed", "payload": {"id": %d}}`, j))
			}
		}
		if i%6 == 0 {
			publishHTTP(t, addr, `{"routing_key": "flaky.job", "payload": {"boom": true}}`)
		}
		time.Sleep(2 * time.Second)
	}
}

func TestDashboardReconnects(t *testing.T) {
	ctx := browser(t)
	env := symphonytest.NewEnv(t)
	tasksDir := filepath.Join(env.Dir, "tasks")
	if err := os.Mkdir(tasksDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tasksDir, "greet.star"), []byte(dashboardTasks["greet.star"]), 0o644); err != nil {
		t.Fatal(err)
	}
	d := env.Start(tasksDir)
	addr := d.WaitFor("admin server listening", nil).Str("addr")
	env.MustRun("", "publish", "greeting.en", `{}`)
	eventually(t, "the message is handled", func() string {
		if n := taskOf(status(t, addr), "greet").Messages["ack"]; n != 1 {
			return fmt.Sprintf("acked %d", n)
		}
		return ""
	})
	if err := do(ctx,
		chromedp.Navigate("http://"+addr+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#conn[data-state="live"]`)),
		chromedp.Poll[chromedp.Void](`document.querySelector('[data-task="greet"] [data-field="ack"]')?.textContent === "1"`),
	); err != nil {
		t.Fatal(err)
	}

	d.Stop()
	if err := do(ctx, chromedp.WaitVisible(chromedp.CSS(`#conn[data-state="reconnecting"]`))); err != nil {
		t.Fatal(err)
	}
	// The same daemon again, on the same address: a restart. Its counts
	// start at zero, which is how the page shows it met the new one.
	env.Vars = append(env.Vars, "SYMPHONY_ADMIN_ADDR="+addr)
	d = env.Start(tasksDir)
	if err := do(ctx,
		chromedp.WaitVisible(chromedp.CSS(`#conn[data-state="live"]`)),
		chromedp.Poll[chromedp.Void](`document.querySelector('[data-task="greet"] [data-field="ack"]')?.textContent === "0"`),
	); err != nil {
		t.Fatal(err)
	}
	d.Stop()
}
