package starlarklib

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"

	"go.starlark.net/starlark"
	"go.starlark.net/syntax"
)

// secretValue is what secret(name) returns: a value that http, exec, sql
// and hash.hmac use as its text, and that everything else (str(), print,
// log.*, json.encode, publish, errors) shows as <secret NAME>. secret +
// str and str + secret are secrets too, so "Bearer " + secret("TOKEN")
// stays one.
type secretValue struct {
	name, value string
}

var (
	_ starlark.HasBinary = secretValue{}
	_ json.Marshaler     = secretValue{}
)

func (s secretValue) String() string        { return "<secret " + s.name + ">" }
func (s secretValue) Type() string          { return "secret" }
func (s secretValue) Freeze()               {}
func (s secretValue) Truth() starlark.Bool  { return s.value != "" }
func (s secretValue) Hash() (uint32, error) { return 0, errors.New("unhashable type: secret") }

// MarshalJSON is json.encode's view of a secret: its placeholder. Names
// hold no character JSON escapes.
func (s secretValue) MarshalJSON() ([]byte, error) { return []byte(`"` + s.String() + `"`), nil }

// Binary is concatenation with strings and other secrets.
func (s secretValue) Binary(op syntax.Token, y starlark.Value, side starlark.Side) (starlark.Value, error) {
	if op != syntax.PLUS {
		return nil, nil
	}
	var name, value string
	switch y := y.(type) {
	case starlark.String:
		name, value = s.name, string(y)
	case secretValue:
		name, value = s.name+"+"+y.name, y.value
		if side == starlark.Right {
			name = y.name + "+" + s.name
		}
	default:
		return nil, nil
	}
	// Left: the secret is the left operand.
	if side == starlark.Left {
		return secretValue{name: name, value: s.value + value}, nil
	}
	return secretValue{name: name, value: value + s.value}, nil
}

// textOf reads a str or a secret as the text to send; ok is false for
// other types.
func textOf(v starlark.Value) (string, bool) {
	switch x := v.(type) {
	case starlark.String:
		return string(x), true
	case secretValue:
		return x.value, true
	}
	return "", false
}

// dataOf reads a str, bytes or secret as bytes to send.
func dataOf(v starlark.Value) ([]byte, bool) {
	if b, ok := v.(starlark.Bytes); ok {
		return []byte(b), true
	}
	s, ok := textOf(v)
	return []byte(s), ok
}

// secretName is what a secret may be called: a file name in --secrets-dir
// and an environment variable alike.
var secretName = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`)

// secretBuiltin is secret(name): the named secret from the World's store.
func secretBuiltin(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var name string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "name", &name); err != nil {
		return nil, err
	}
	if !secretName.MatchString(name) {
		return nil, fmt.Errorf("%s: %q is not a secret name: use letters, digits, '_', '.' and '-'", b.Name(), name)
	}
	w := stateOf(th).world()
	if w.Secrets == nil {
		return nil, fmt.Errorf("%s: no secret store", b.Name())
	}
	v, err := w.Secrets.Secret(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	w.Redactor.Add(name, v)
	return secretValue{name: name, value: v}, nil
}

// MaxSecretBytes bounds a secret read from a file.
const MaxSecretBytes = 1 << 20

// SecretFiles is the daemon's SecretStore: a file named after the secret
// in Dir (as Kubernetes and Docker mount secrets), else the environment
// variable of that name. Variables named SYMPHONY_* are the daemon's own
// settings and are not secrets tasks may read.
type SecretFiles struct {
	// Dir is --secrets-dir; empty: the environment only.
	Dir string
	// LookupEnv reads the environment; nil means os.LookupEnv.
	LookupEnv func(string) (string, bool)
}

// Secret implements SecretStore. One trailing newline of a file is
// dropped, as `echo value > file` writes one.
func (s SecretFiles) Secret(name string) (string, error) {
	if !secretName.MatchString(name) {
		return "", fmt.Errorf("%q is not a secret name", name)
	}
	if s.Dir != "" {
		f, err := os.Open(filepath.Join(s.Dir, name))
		switch {
		case err == nil:
			defer f.Close()
			b, err := io.ReadAll(io.LimitReader(f, MaxSecretBytes+1))
			if err != nil {
				return "", fmt.Errorf("read secret %s: %w", name, err)
			}
			if len(b) > MaxSecretBytes {
				return "", fmt.Errorf("secret %s in %s is larger than %d bytes", name, s.Dir, MaxSecretBytes)
			}
			b = bytes.TrimSuffix(b, []byte("\n"))
			b = bytes.TrimSuffix(b, []byte("\r"))
			return string(b), nil
		case !errors.Is(err, fs.ErrNotExist):
			return "", fmt.Errorf("read secret %s: %w", name, err)
		}
	}
	lookup := s.LookupEnv
	if lookup == nil {
		lookup = os.LookupEnv
	}
	if !strings.HasPrefix(strings.ToUpper(name), "SYMPHONY_") {
		if v, ok := lookup(name); ok {
			return v, nil
		}
	}
	if s.Dir != "" {
		return "", fmt.Errorf("no secret named %s: write it to %s or set the environment variable %s",
			name, filepath.Join(s.Dir, name), name)
	}
	if strings.HasPrefix(strings.ToUpper(name), "SYMPHONY_") {
		return "", fmt.Errorf("no secret named %s: SYMPHONY_* variables are the daemon's settings, not secrets", name)
	}
	return "", fmt.Errorf("no secret named %s: set the environment variable %s, or give the daemon --secrets-dir with a file %s in it",
		name, name, name)
}

// minRedacted is the shortest secret value scrubbed from free text: a
// shorter one would blank out ordinary words and digits. (A secret value
// itself always prints as <secret NAME>, however short.)
const minRedacted = 4

// Redactor knows the secret values read so far and replaces them in
// text with <secret NAME>. Safe for concurrent use.
type Redactor struct {
	mu       sync.RWMutex
	names    map[string]string // value → name
	replacer *strings.Replacer
}

// NewRedactor returns an empty Redactor.
func NewRedactor() *Redactor { return &Redactor{names: map[string]string{}} }

// Add makes value a secret called name. Values shorter than 4 bytes are
// not scrubbed from text.
func (r *Redactor) Add(name, value string) {
	if r == nil || len(value) < minRedacted {
		return
	}
	r.mu.RLock()
	_, known := r.names[value]
	r.mu.RUnlock()
	if known {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.names[value] = name
	values := make([]string, 0, len(r.names))
	for v := range r.names {
		values = append(values, v)
	}
	// Longest first: a secret that contains another is replaced whole.
	slices.SortFunc(values, func(a, b string) int { return len(b) - len(a) })
	pairs := make([]string, 0, 2*len(values))
	for _, v := range values {
		pairs = append(pairs, v, "<secret "+r.names[v]+">")
	}
	r.replacer = strings.NewReplacer(pairs...)
}

// Redact returns s with every known secret value replaced.
func (r *Redactor) Redact(s string) string {
	if r == nil {
		return s
	}
	r.mu.RLock()
	rep := r.replacer
	r.mu.RUnlock()
	if rep == nil {
		return s
	}
	return rep.Replace(s)
}

// RedactBytes is Redact for bytes; b itself is returned when it holds no
// secret.
func (r *Redactor) RedactBytes(b []byte) []byte {
	if r == nil {
		return b
	}
	r.mu.RLock()
	rep := r.replacer
	r.mu.RUnlock()
	if rep == nil {
		return b
	}
	s := string(b)
	if out := rep.Replace(s); out != s {
		return []byte(out)
	}
	return b
}

// Handler wraps a log handler so that no record it writes holds a known
// secret value: the message and every attribute are scrubbed.
func (r *Redactor) Handler(h slog.Handler) slog.Handler { return &redactingHandler{r: r, next: h} }

type redactingHandler struct {
	r    *Redactor
	next slog.Handler
}

func (h *redactingHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h *redactingHandler) Handle(ctx context.Context, rec slog.Record) error {
	h.r.mu.RLock()
	active := h.r.replacer != nil
	h.r.mu.RUnlock()
	if !active {
		return h.next.Handle(ctx, rec)
	}
	out := slog.NewRecord(rec.Time, rec.Level, h.r.Redact(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.attr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h *redactingHandler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, h.r.Redact(v.String()))
	case slog.KindGroup:
		group := v.Group()
		out := make([]slog.Attr, len(group))
		for i, g := range group {
			out[i] = h.attr(g)
		}
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(out...)}
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return slog.String(a.Key, h.r.Redact(x.Error()))
		case fmt.Stringer:
			return slog.String(a.Key, h.r.Redact(x.String()))
		case []byte:
			return slog.String(a.Key, h.r.Redact(string(x)))
		case string:
			return slog.String(a.Key, h.r.Redact(x))
		default:
			b, err := json.Marshal(x)
			if err == nil && h.r.Redact(string(b)) != string(b) {
				return slog.String(a.Key, h.r.Redact(string(b)))
			}
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}

func (h *redactingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	out := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		out[i] = h.attr(a)
	}
	return &redactingHandler{r: h.r, next: h.next.WithAttrs(out)}
}

func (h *redactingHandler) WithGroup(name string) slog.Handler {
	return &redactingHandler{r: h.r, next: h.next.WithGroup(name)}
}
