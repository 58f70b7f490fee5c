package cli

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"os"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/urfave/cli/v2"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/starlarklib"
	"github.com/symphony-go/symphony/tasks"
)

// publishBatch is how many lines of --file go into one Publish call; the
// embedded broker writes each call in one transaction.
const publishBatch = 1000

func publishCommand() *cli.Command {
	return &cli.Command{
		Name:      "publish",
		Usage:     "publish one message, or one per line of --file",
		ArgsUsage: "ROUTING_KEY [PAYLOAD]",
		Description: "The payload comes from the argument, else from standard input. " +
			"JSON payloads (the default content type) are checked before anything is sent. " +
			"Exits 3 when no queue is bound to the routing key.",
		Flags: append(globalFlags(),
			&cli.StringFlag{Name: "content-type", Value: "application/json", EnvVars: []string{envName("content-type")},
				Usage: "content type of the payload"},
			&cli.StringSliceFlag{Name: "header", EnvVars: []string{envName("header")},
				Usage: "header as key=value (repeatable)"},
			&cli.StringFlag{Name: "file", EnvVars: []string{envName("file")},
				Usage: "publish every non-empty line of this file as one payload ('-' for standard input)"},
			&cli.StringFlag{Name: "delay", EnvVars: []string{envName("delay")},
				Usage: "hold the message back this long (30s, 1m30s, or seconds)"},
			&cli.StringFlag{Name: "at", EnvVars: []string{envName("at")},
				Usage: "hold the message back until this time (2026-05-01T09:00:00Z, \"2026-05-01 09:00\", or 09:00 today, local time)"},
			&cli.IntFlag{Name: "priority", EnvVars: []string{envName("priority")},
				Usage: fmt.Sprintf("priority from 0 to %d, for the queues of tasks with max_priority (higher first)", tasks.PriorityLimit)},
			tasksFlag(),
		),
		Action: publish,
	}
}

func publish(c *cli.Context) error {
	if c.NArg() < 1 || c.NArg() > 2 {
		return usagef("publish takes ROUTING_KEY [PAYLOAD]")
	}
	key := c.Args().Get(0)
	if err := tasks.ValidateRoutingKey(key); err != nil {
		return usageError{err}
	}
	file := c.String("file")
	if file != "" && c.NArg() == 2 {
		return usagef("give the payload as an argument or with --file, not both")
	}
	headers := map[string]any{}
	for _, h := range c.StringSlice("header") {
		k, v, ok := strings.Cut(h, "=")
		if !ok || k == "" {
			return usagef("--header %q: use key=value", h)
		}
		headers[k] = v
	}
	priority := c.Int("priority")
	if err := tasks.ValidatePriority(priority); err != nil {
		return usagef("--priority: %w", err)
	}
	delay, err := publishDelay(c.String("delay"), c.String("at"), time.Now())
	if err != nil {
		return err
	}
	contentType := c.String("content-type")
	mediaType, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return usagef("--content-type %q: %w", contentType, err)
	}
	check := func(body []byte) error { return checkPayload(contentType, mediaType, body) }

	s, err := commandSettings(c)
	if err != nil {
		return err
	}
	log := newLogger(s, nil, c.App.ErrWriter)

	var payloads payloadSource
	if file != "" {
		if payloads, err = openLines(file, c.App.Reader, check); err != nil {
			return err
		}
	} else {
		body := []byte(c.Args().Get(1))
		if c.NArg() == 1 {
			if body, err = io.ReadAll(c.App.Reader); err != nil {
				return fmt.Errorf("read payload from standard input: %w", err)
			}
		}
		if err := check(body); err != nil {
			return usageError{err}
		}
		payloads = single(body)
	}
	defer payloads.Close()

	ctx := context.Background()
	b, err := openBroker(ctx, s.Broker, s.Exchange, s.QueueType, log, nil, true)
	if err != nil {
		return err
	}
	defer b.Close()

	progress := newProgress(c.App.ErrWriter, payloads.Total(), file != "")
	start := time.Now()
	sent := 0
	for {
		batch, err := payloads.Next(publishBatch)
		if err != nil {
			return err
		}
		if len(batch) == 0 {
			break
		}
		msgs := make([]*message.Message, 0, len(batch))
		for _, body := range batch {
			msg, err := broker.NewMessage(tasks.Publication{RoutingKey: key, Body: body, ContentType: contentType, Headers: headers,
				Priority: priority, Delay: delay})
			if err != nil {
				return err
			}
			msgs = append(msgs, msg)
		}
		if err := b.Publish(key, msgs...); err != nil {
			progress.done()
			if sent > 0 {
				return fmt.Errorf("%w (the %d messages before these were published)", err, sent)
			}
			return err
		}
		sent += len(msgs)
		progress.update(sent)
		if len(msgs) == 1 && file == "" {
			held := ""
			if delay > 0 {
				held = fmt.Sprintf(", held until %s", start.Add(delay).Local().Format(time.DateTime))
			}
			fmt.Fprintf(c.App.ErrWriter, "published message %s to %s%s\n", msgs[0].UUID, key, held)
		}
	}
	progress.done()
	if file != "" {
		took := time.Since(start)
		fmt.Fprintf(c.App.ErrWriter, "published %d messages to %s in %s (%.0f/s)\n",
			sent, key, took.Round(time.Millisecond), float64(sent)/took.Seconds())
	}
	return nil
}

// publishDelay reads --delay or --at as how long to hold a message back.
func publishDelay(delay, at string, now time.Time) (time.Duration, error) {
	switch {
	case delay != "" && at != "":
		return 0, usagef("give --delay or --at, not both")
	case delay != "":
		d, err := parseDuration(delay)
		if err != nil {
			return 0, usagef("--delay: %w", err)
		}
		return d, nil
	case at != "":
		t, err := parseAt(at, now)
		if err != nil {
			return 0, usagef("--at: %w", err)
		}
		if !t.After(now) {
			return 0, usagef("--at %s is in the past (%s)", at, t.Format(time.RFC3339))
		}
		return t.Sub(now), nil
	}
	return 0, nil
}

// parseAt reads a time: RFC 3339, a local date and time, or a local time
// of day, which is today's.
func parseAt(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	for _, layout := range []string{"2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02T15:04", "2006-01-02 15:04"} {
		if t, err := time.ParseInLocation(layout, s, now.Location()); err == nil {
			return t, nil
		}
	}
	for _, layout := range []string{"15:04:05", "15:04"} {
		if t, err := time.ParseInLocation(layout, s, now.Location()); err == nil {
			y, m, d := now.Date()
			return time.Date(y, m, d, t.Hour(), t.Minute(), t.Second(), 0, now.Location()), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time: use 2026-05-01T09:00:00Z, \"2026-05-01 09:00\" or 09:00 (local time)", s)
}

// checkPayload refuses a payload the daemon's decoder would refuse (with
// its limits: a JSON document nested 5000 deep is one), and an empty one
// under a JSON type.
func checkPayload(contentType, mediaType string, body []byte) error {
	isJSON := starlarklib.IsJSON(mediaType)
	if isJSON && len(bytes.TrimSpace(body)) == 0 {
		return errors.New("payload is empty, which is not valid JSON; use --content-type to send something else")
	}
	if err := starlarklib.CheckPayload(contentType, body); err != nil {
		what := mediaType
		if isJSON {
			what = "JSON"
		}
		return fmt.Errorf("payload is not valid %s (%s): a task would dead-letter it; use --content-type to send something else",
			what, strings.TrimSuffix(err.Error(), ": "+tasks.ErrDecode.Error()))
	}
	return nil
}

// payloadSource hands out payloads in batches.
type payloadSource interface {
	// Next returns up to n payloads; none at the end.
	Next(n int) ([][]byte, error)
	// Total is how many payloads there are.
	Total() int
	Close() error
}

type singlePayload struct {
	body []byte
	sent bool
}

func single(body []byte) payloadSource { return &singlePayload{body: body} }

func (s *singlePayload) Next(int) ([][]byte, error) {
	if s.sent {
		return nil, nil
	}
	s.sent = true
	return [][]byte{s.body}, nil
}
func (s *singlePayload) Total() int   { return 1 }
func (s *singlePayload) Close() error { return nil }

// linePayloads reads one payload per non-empty line. A file is read twice:
// once to count and check every line, so that a bad line stops the command
// before anything is sent, and once to publish.
type linePayloads struct {
	f       *os.File
	scanner *bufio.Scanner
	total   int
	line    int
}

func openLines(name string, stdin io.Reader, check func([]byte) error) (payloadSource, error) {
	var f *os.File
	if name == "-" {
		// Standard input cannot be read twice: spool it to a file.
		tmp, err := os.CreateTemp("", "symphony-publish-*")
		if err != nil {
			return nil, fmt.Errorf("spool standard input: %w", err)
		}
		os.Remove(tmp.Name())
		if _, err := io.Copy(tmp, stdin); err != nil {
			tmp.Close()
			return nil, fmt.Errorf("spool standard input: %w", err)
		}
		f = tmp
	} else {
		var err error
		if f, err = os.Open(name); err != nil {
			return nil, fmt.Errorf("open --file: %w", err)
		}
	}
	lp := &linePayloads{f: f}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("read --file %s: %w", name, err)
	}
	sc := newLineScanner(f)
	line := 0
	for sc.Scan() {
		line++
		b := sc.Bytes()
		if len(strings.TrimSpace(string(b))) == 0 {
			continue
		}
		if err := check(b); err != nil {
			f.Close()
			return nil, usagef("--file %s line %d: %w; nothing was published", name, line, err)
		}
		lp.total++
	}
	if err := sc.Err(); err != nil {
		f.Close()
		return nil, fmt.Errorf("read --file %s line %d: %w", name, line+1, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("read --file %s: %w", name, err)
	}
	lp.scanner = newLineScanner(f)
	return lp, nil
}

// newLineScanner reads lines of up to 64 MiB.
func newLineScanner(r io.Reader) *bufio.Scanner {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 64<<20)
	return sc
}

func (l *linePayloads) Next(n int) ([][]byte, error) {
	var out [][]byte
	for len(out) < n && l.scanner.Scan() {
		l.line++
		b := l.scanner.Bytes()
		if len(strings.TrimSpace(string(b))) == 0 {
			continue
		}
		out = append(out, append([]byte(nil), b...))
	}
	if err := l.scanner.Err(); err != nil {
		return nil, fmt.Errorf("read --file line %d: %w", l.line+1, err)
	}
	return out, nil
}
func (l *linePayloads) Total() int   { return l.total }
func (l *linePayloads) Close() error { return l.f.Close() }

// progress draws a one-line progress bar on a terminal, at most ten times
// a second; elsewhere it stays silent.
type progress struct {
	w     io.Writer
	total int
	on    bool
	start time.Time
	last  time.Time
}

func newProgress(w io.Writer, total int, wanted bool) *progress {
	return &progress{w: w, total: total, on: wanted && isTerminal(w), start: time.Now()}
}

func (p *progress) update(n int) {
	if !p.on || (time.Since(p.last) < 100*time.Millisecond && n < p.total) {
		return
	}
	p.last = time.Now()
	const width = 30
	frac := float64(n) / float64(max(p.total, 1))
	filled := int(frac * width)
	rate := float64(n) / max(time.Since(p.start).Seconds(), 1e-9)
	fmt.Fprintf(p.w, "\r[%s%s] %d/%d %3.0f%% %.0f/s", strings.Repeat("=", filled), strings.Repeat(" ", width-filled), n, p.total, frac*100, rate)
}

func (p *progress) done() {
	if p.on {
		fmt.Fprintln(p.w)
		p.on = false
	}
}
