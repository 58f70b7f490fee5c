package admin

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/tasks"
)

// maxBody bounds a request body: a payload of up to 16 MiB with room for
// its JSON escaping.
const maxBody = 20 << 20

// apiError is every error's JSON body.
type apiError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func fail(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, apiError{Error: fmt.Sprintf(format, args...)})
}

// authorized lets a request through only with the admin token, compared
// in constant time; without a configured token nothing gets through.
// A JSON body is required of a POST: a cross-site form cannot send one
// without asking first, which the server never allows.
func (s *Server) authorized(next http.HandlerFunc) http.HandlerFunc {
	want := sha256.Sum256([]byte(s.cfg.Token))
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Token == "" {
			fail(w, http.StatusForbidden, "this daemon takes no actions: start it with --admin-token (or SYMPHONY_ADMIN_TOKEN)")
			return
		}
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		got := sha256.Sum256([]byte(token))
		if !ok || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="symphony"`)
			fail(w, http.StatusUnauthorized, "missing or wrong admin token: send Authorization: Bearer TOKEN")
			s.log.Warn("admin request refused: wrong token", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
			return
		}
		if r.Method == http.MethodPost {
			if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
				fail(w, http.StatusUnsupportedMediaType, "send the request as Content-Type: application/json")
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		}
		next(w, r)
	}
}

// readable lets any request read while no token is set, and only those
// with the token once one is.
func (s *Server) readable(next http.HandlerFunc) http.HandlerFunc {
	guarded := s.authorized(next)
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Token == "" {
			next(w, r)
			return
		}
		guarded(w, r)
	}
}

// decode reads a JSON request body strictly: an unknown field is a
// mistake to report, not to ignore.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			fail(w, http.StatusRequestEntityTooLarge, "request body over %d bytes", tooBig.Limit)
			return false
		}
		fail(w, http.StatusBadRequest, "read request: %v", err)
		return false
	}
	return true
}

// publishRequest is POST /publish's body (SPEC §7).
type publishRequest struct {
	RoutingKey  string          `json:"routing_key"`
	Payload     json.RawMessage `json:"payload"`
	Headers     map[string]any  `json:"headers"`
	ContentType string          `json:"content_type"`
	// Delay is a duration ("30s", "1m30s") or a number of seconds.
	Delay    json.RawMessage `json:"delay"`
	Priority *int            `json:"priority"`
}

func (s *Server) publish(w http.ResponseWriter, r *http.Request) {
	var req publishRequest
	if !decode(w, r, &req) {
		return
	}
	if req.RoutingKey == "" {
		fail(w, http.StatusBadRequest, "routing_key is required")
		return
	}
	if err := tasks.ValidateRoutingKey(req.RoutingKey); err != nil {
		fail(w, http.StatusBadRequest, "routing_key: %v", err)
		return
	}
	priority := 0
	if req.Priority != nil {
		if err := tasks.ValidatePriority(*req.Priority); err != nil {
			fail(w, http.StatusBadRequest, "priority: %v", err)
			return
		}
		priority = *req.Priority
	}
	contentType := req.ContentType
	if contentType == "" {
		contentType = "application/json"
	}
	mediaType, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		fail(w, http.StatusBadRequest, "content_type %q: %v", contentType, err)
		return
	}
	body, err := payloadBody(req.Payload, mediaType)
	if err != nil {
		fail(w, http.StatusBadRequest, "payload: %v", err)
		return
	}
	if s.cfg.CheckPayload != nil {
		if err := s.cfg.CheckPayload(contentType, body); err != nil {
			fail(w, http.StatusBadRequest, "payload: the daemon would refuse it: %v", err)
			return
		}
	}
	delay, err := readDelay(req.Delay)
	if err != nil {
		fail(w, http.StatusBadRequest, "delay: %v", err)
		return
	}
	id, err := s.cfg.Daemon.Publish(tasks.Publication{RoutingKey: req.RoutingKey, Body: body, ContentType: contentType,
		Headers: req.Headers, Delay: delay, Priority: priority})
	switch {
	case errors.Is(err, broker.ErrNoPriority):
		fail(w, http.StatusBadRequest, "priority: %v; nothing was published", err)
		return
	case errors.Is(err, broker.ErrUnroutable):
		fail(w, http.StatusNotFound, "no queue is bound to the routing key %s: nothing was published", req.RoutingKey)
		return
	case err != nil:
		fail(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	s.log.Info("published over HTTP", "message_id", id, "routing_key", req.RoutingKey, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusAccepted, map[string]string{"message_id": id, "routing_key": req.RoutingKey})
}

// payloadBody is the message body of a request's payload: its JSON as it
// is under a JSON content type; under any other, the text of a JSON
// string.
func payloadBody(raw json.RawMessage, mediaType string) ([]byte, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	if mediaType == "application/json" || strings.HasSuffix(mediaType, "+json") || mediaType == "text/javascript" {
		return bytes.TrimSpace(raw), nil
	}
	var text string
	if err := json.Unmarshal(raw, &text); err != nil {
		return nil, fmt.Errorf("under content type %s, give the payload as a JSON string of its text", mediaType)
	}
	return []byte(text), nil
}

// readDelay reads "30s" or 30.
func readDelay(raw json.RawMessage) (time.Duration, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	var d time.Duration
	var text string
	if err := json.Unmarshal(raw, &text); err == nil {
		if d, err = time.ParseDuration(text); err != nil {
			f, ferr := strconv.ParseFloat(text, 64)
			if ferr != nil {
				return 0, fmt.Errorf("%q is not a duration: use seconds or a form like 1m30s", text)
			}
			d = time.Duration(f * float64(time.Second))
		}
	} else {
		var f float64
		if err := json.Unmarshal(raw, &f); err != nil {
			return 0, fmt.Errorf("%s is not a duration: use seconds or a form like \"1m30s\"", raw)
		}
		d = time.Duration(f * float64(time.Second))
	}
	if d < 0 {
		return 0, fmt.Errorf("%s is negative", raw)
	}
	return d, nil
}

// deadLetter is a dead letter as the API shows it: the body as text when
// it is UTF-8, else base64.
type deadLetter struct {
	ID           string         `json:"id"`
	Queue        string         `json:"queue"`
	Task         string         `json:"task"`
	RoutingKey   string         `json:"routing_key"`
	ContentType  string         `json:"content_type"`
	MessageID    string         `json:"message_id"`
	Headers      map[string]any `json:"headers"`
	Reason       string         `json:"reason"`
	Error        string         `json:"error"`
	Attempt      int            `json:"attempt"`
	DeadAt       time.Time      `json:"dead_at"`
	Size         int            `json:"size"`
	Body         *string        `json:"body,omitempty"`
	BodyEncoding string         `json:"body_encoding,omitempty"`
}

func newDeadLetter(d broker.DeadLetter, withBody bool) deadLetter {
	out := deadLetter{ID: d.ID, Queue: d.Queue, Task: d.Task, RoutingKey: d.RoutingKey, ContentType: d.ContentType,
		MessageID: d.MessageID, Headers: d.Headers, Reason: d.Reason, Error: d.Error, Attempt: d.Attempt,
		DeadAt: d.DeadAt, Size: len(d.Body)}
	if withBody {
		text := string(d.Body)
		if !utf8.Valid(d.Body) {
			text, out.BodyEncoding = base64.StdEncoding.EncodeToString(d.Body), "base64"
		}
		out.Body = &text
	}
	return out
}

// deadList answers GET /dead?queue=Q&limit=N: the queue's dead letters,
// oldest first, without their bodies, and how many there are.
func (s *Server) deadList(w http.ResponseWriter, r *http.Request) {
	queue := r.URL.Query().Get("queue")
	if queue == "" {
		fail(w, http.StatusBadRequest, "name the task's queue: /dead?queue=NAME")
		return
	}
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			fail(w, http.StatusBadRequest, "limit %q: give a positive number", v)
			return
		}
		limit = min(n, 1000)
	}
	dl := s.cfg.Daemon.DeadLetters()
	list, err := dl.List(r.Context(), queue, limit)
	if err != nil {
		fail(w, http.StatusServiceUnavailable, "list dead letters of %s: %v", queue, err)
		return
	}
	total, err := dl.Count(r.Context(), queue)
	if err != nil {
		fail(w, http.StatusServiceUnavailable, "count dead letters of %s: %v", queue, err)
		return
	}
	out := struct {
		Total   int          `json:"total"`
		Letters []deadLetter `json:"letters"`
	}{Total: total, Letters: make([]deadLetter, 0, len(list))}
	for _, d := range list {
		out.Letters = append(out.Letters, newDeadLetter(d, false))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) deadShow(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	d, err := s.cfg.Daemon.DeadLetters().Show(r.Context(), id)
	switch {
	case errors.Is(err, broker.ErrNotFound):
		fail(w, http.StatusNotFound, "no dead letter with id %s", id)
		return
	case err != nil:
		fail(w, http.StatusServiceUnavailable, "show dead letter %s: %v", id, err)
		return
	}
	writeJSON(w, http.StatusOK, newDeadLetter(d, true))
}

// deadChangeRequest names dead letters: the ids, or all of a queue's.
type deadChangeRequest struct {
	Queue string   `json:"queue"`
	IDs   []string `json:"ids"`
}

func (s *Server) deadChange(w http.ResponseWriter, r *http.Request, verb string) {
	var req deadChangeRequest
	if !decode(w, r, &req) {
		return
	}
	if req.Queue == "" && len(req.IDs) == 0 {
		fail(w, http.StatusBadRequest, "name the dead letters: a queue (all of its dead letters) or ids")
		return
	}
	dl := s.cfg.Daemon.DeadLetters()
	change, past := dl.Replay, "replayed"
	if verb == "purge" {
		change, past = dl.Purge, "purged"
	}
	n, err := change(r.Context(), req.Queue, req.IDs)
	if err != nil {
		fail(w, http.StatusServiceUnavailable, "%s dead letters: %v", verb, err)
		return
	}
	s.log.Info("dead letters "+past+" over HTTP", "queue", req.Queue, "ids", len(req.IDs), "count", n, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, map[string]int{past: n})
}

// events streams the status every Push interval and each history sample
// as it is taken, as server-sent events. The browser reconnects by itself
// when the stream breaks (a restarted daemon); retry asks it to try every
// second.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		fail(w, http.StatusInternalServerError, "streaming is not supported here")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(event string, v any) bool {
		b, err := json.Marshal(v)
		if err != nil {
			return false
		}
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b); err != nil {
			return false
		}
		flusher.Flush()
		return true
	}
	fmt.Fprint(w, "retry: 1000\n\n")
	if !send("status", s.cfg.Daemon.Status()) {
		return
	}
	_, changed := s.history.last()
	tick := time.NewTicker(s.cfg.Push)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
			if !send("status", s.cfg.Daemon.Status()) {
				return
			}
		case <-changed:
			var latest map[string]Point
			latest, changed = s.history.last()
			if !send("sample", latest) {
				return
			}
		}
	}
}
