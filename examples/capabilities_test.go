package examples_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/symphony-go/symphony/internal/symphonytest"
)

// The webhooks example against a receiver on loopback: an event is
// delivered signed, again after the receiver answered 503, and
// dead-lettered at once when it answers 410.
func TestWebhooks(t *testing.T) {
	t.Parallel()
	symphonytest.OnEachBroker(t, webhooks)
}

func webhooks(t *testing.T, env *symphonytest.Env) {
	const key = "webhook-key-e2e-7c1d"
	var mu sync.Mutex
	seen := map[string]int{} // deliveries by X-Symphony-Delivery
	var badSignatures int
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mac := hmac.New(sha256.New, []byte(key))
		mac.Write(body)
		mu.Lock()
		defer mu.Unlock()
		if r.Header.Get("X-Symphony-Signature") != "sha256="+hex.EncodeToString(mac.Sum(nil)) ||
			r.Header.Get("Content-Type") != "application/json" {
			badSignatures++
		}
		id := r.Header.Get("X-Symphony-Delivery")
		seen[id]++
		switch {
		case r.URL.Path == "/gone":
			http.Error(w, "gone for good", http.StatusGone)
		case seen[id] == 1:
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			fmt.Fprint(w, "thanks")
		}
	}))
	t.Cleanup(recv.Close)
	env.Vars = append(env.Vars, "WEBHOOK_KEY="+key, "WEBHOOK_HOSTS=127.0.0.1")
	d := env.Start(example(t, "webhooks"))

	event := `{"type": "user.created", "id": 7}`
	id := published(t, env.MustRun("", "publish", "webhook.send", fmt.Sprintf(`{"url": %q, "event": %s}`, recv.URL+"/in", event)))
	retried := d.WaitFor("message will be retried", map[string]string{"message_id": id})
	if want := recv.URL + "/in answered 503"; retried.Str("reason") != want {
		t.Errorf("retry: %v, want reason %q", retried, want)
	}
	delivered := d.WaitFor("webhook delivered", map[string]string{"url": recv.URL + "/in"})
	if delivered.Str("status") != "200" || delivered.Str("attempt") != "2" {
		t.Errorf("delivered: %v", delivered)
	}

	gone := published(t, env.MustRun("", "publish", "webhook.send", fmt.Sprintf(`{"url": %q, "event": %s}`, recv.URL+"/gone", event)))
	dead := d.WaitFor("message dead-lettered", map[string]string{"message_id": gone})
	if dead.Str("reason") != "error" || !strings.Contains(dead.Str("error"), "rejected the event with status 410: gone for good") {
		t.Errorf("refused: %v", dead)
	}
	d.Stop()
	mu.Lock()
	defer mu.Unlock()
	if badSignatures != 0 || seen[id] != 2 || seen[gone] != 1 {
		t.Errorf("the receiver saw %d bad signatures, deliveries %v", badSignatures, seen)
	}
	if strings.Contains(d.Log(), key) {
		t.Error("the key shows in the log")
	}
}

// The audit example appends a line per event to its log in AUDIT_DIR.
func TestAudit(t *testing.T) {
	t.Parallel()
	symphonytest.OnEachBroker(t, audit)
}

func audit(t *testing.T, env *symphonytest.Env) {
	dir := t.TempDir()
	env.Vars = append(env.Vars, "AUDIT_DIR="+dir)
	d := env.Start(example(t, "audit"))
	a := published(t, env.MustRun("", "publish", "order.placed", `{"id": 7}`))
	b := published(t, env.MustRun("\x00\x01", "publish", "--content-type", "application/octet-stream", "blob.stored"))
	d.WaitFor("message acked", map[string]string{"message_id": a})
	d.WaitFor("message acked", map[string]string{"message_id": b})
	d.Stop()

	logs, err := filepath.Glob(filepath.Join(dir, "events-*.log"))
	if err != nil || len(logs) == 0 {
		t.Fatalf("no log in %s: %v", dir, err)
	}
	var lines []map[string]any
	for _, p := range logs {
		text, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(strings.TrimSuffix(string(text), "\n"), "\n") {
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("%s: line %q: %v", p, l, err)
			}
			lines = append(lines, m)
		}
	}
	if len(lines) != 2 || lines[0]["message_id"] != a || lines[0]["routing_key"] != "order.placed" ||
		fmt.Sprint(lines[0]["payload"]) != "map[id:7]" || lines[1]["message_id"] != b ||
		fmt.Sprint(lines[1]["payload"]) != "map[base64:AAE=]" {
		t.Errorf("the audit log: %v", lines)
	}
}

// realConvert tells whether convert is ImageMagick's; CI must have it.
func realConvert(t *testing.T) {
	out, err := exec.Command("convert", "-version").CombinedOutput()
	if err == nil && strings.Contains(string(out), "ImageMagick") {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("convert is not ImageMagick's (%v: %s), and CI=true: .ci/run installs imagemagick", err, out)
	}
	t.Skipf("convert is not ImageMagick's here (%v): apt-get install imagemagick", err)
}

// The thumbnails example runs ImageMagick on an upload in its
// THUMBNAILS_DIR and announces the thumbnail.
func TestThumbnails(t *testing.T) {
	t.Parallel()
	realConvert(t)
	symphonytest.OnEachBroker(t, thumbnails)
}

func thumbnails(t *testing.T, env *symphonytest.Env) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "uploads"), 0o755); err != nil {
		t.Fatal(err)
	}
	img := image.NewRGBA(image.Rect(0, 0, 200, 100))
	for x := range 200 {
		for y := range 100 {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), 128, 255})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "uploads", "cat.png"), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	env.Vars = append(env.Vars, "THUMBNAILS_DIR="+dir)
	d := env.Start(example(t, "thumbnails"))
	env.MustRun("", "publish", "image.uploaded", `{"path": "uploads/cat.png"}`)
	ready := d.WaitFor("thumbnail ready", map[string]string{"source": "uploads/cat.png", "thumbnail": "thumbs/cat-64.png"})
	missing := published(t, env.MustRun("", "publish", "image.uploaded", `{"path": "uploads/dog.png"}`))
	dead := d.WaitFor("message dead-lettered", map[string]string{"message_id": missing})
	d.Stop()

	f, err := os.Open(filepath.Join(dir, "thumbs", "cat-64.png"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	cfg, err := png.DecodeConfig(f)
	if err != nil || cfg.Width != 64 || cfg.Height != 32 {
		t.Errorf("thumbnail: %+v, %v; want 64x32", cfg, err)
	}
	if ready.Str("bytes") != fmt.Sprint(fi.Size()) {
		t.Errorf("announced %s bytes, the file has %d", ready.Str("bytes"), fi.Size())
	}
	if !strings.Contains(dead.Str("error"), "no such upload: uploads/dog.png") {
		t.Errorf("a missing upload: %v", dead)
	}
}
