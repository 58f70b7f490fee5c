package cli

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/urfave/cli/v2"

	"github.com/symphony-go/symphony/broker"
	"github.com/symphony-go/symphony/broker/amqp"
	"github.com/symphony-go/symphony/starlarklib"
)

func deadCommand() *cli.Command {
	flags := func(extra ...cli.Flag) []cli.Flag { return append(append(globalFlags(), tasksFlag()), extra...) }
	selectFlags := func() []cli.Flag {
		return flags(
			&cli.StringSliceFlag{Name: "id", Usage: "only this dead letter (repeatable)"},
			&cli.BoolFlag{Name: "all", Usage: "every dead letter of every queue"},
		)
	}
	return &cli.Command{
		Name:  "dead",
		Usage: "inspect, replay and purge dead letters",
		Description: "TASK is the task's queue name, which is the task's name unless its task() sets queue. " +
			"Replay puts messages back on their own queue as first attempts; other tasks do not see them again.",
		Subcommands: []*cli.Command{
			{
				Name: "list", Usage: "list dead letters, oldest first", ArgsUsage: "[TASK]",
				Flags: flags(
					&cli.IntFlag{Name: "limit", Value: 100, Usage: "list at most this many"},
					&cli.BoolFlag{Name: "json", Usage: "print JSON lines"},
				),
				Action: deadList,
			},
			{
				Name: "show", Usage: "show one dead letter with its body", ArgsUsage: "ID",
				Flags:  flags(&cli.BoolFlag{Name: "json", Usage: "print JSON"}),
				Action: deadShow,
			},
			{
				Name: "replay", Usage: "put dead letters back on their queues", ArgsUsage: "[TASK]",
				Flags:  selectFlags(),
				Action: func(c *cli.Context) error { return deadChange(c, "replay") },
			},
			{
				Name: "purge", Usage: "delete dead letters for good", ArgsUsage: "[TASK]",
				Flags:  selectFlags(),
				Action: func(c *cli.Context) error { return deadChange(c, "purge") },
			},
		},
	}
}

// withDeadLetters opens the broker named by the settings and hands its dead
// letters to f. every: f covers every queue, which on RabbitMQ are those of
// the tasks under the tasks root.
func withDeadLetters(c *cli.Context, every bool, f func(context.Context, broker.DeadLetters) error) error {
	s, err := commandSettings(c)
	if err != nil {
		return err
	}
	log := newLogger(s, nil, c.App.ErrWriter)
	ctx := context.Background()
	var queues func() []string
	if every {
		queues = func() []string { return knownQueues(c, log) }
	}
	b, err := openBroker(ctx, s.Broker, s.Exchange, s.QueueType, log, queues, true)
	if err != nil {
		return err
	}
	defer b.Close()
	return f(ctx, b.DeadLetters())
}

func deadList(c *cli.Context) error {
	if c.NArg() > 1 {
		return usagef("dead list takes at most one TASK")
	}
	queue := c.Args().First()
	return withDeadLetters(c, queue == "", func(ctx context.Context, dl broker.DeadLetters) error {
		list, err := dl.List(ctx, queue, c.Int("limit"))
		if err != nil {
			return deadError(err)
		}
		w := c.App.Writer
		if c.Bool("json") {
			enc := json.NewEncoder(w)
			for _, d := range list {
				if err := enc.Encode(deadJSON(d)); err != nil {
					return err
				}
			}
			return nil
		}
		total, err := dl.Count(ctx, queue)
		if err != nil {
			return deadError(err)
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tQUEUE\tROUTING KEY\tREASON\tATTEMPT\tDEAD AT\tERROR")
		for _, d := range list {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", d.ID, d.Queue, d.RoutingKey, d.Reason, d.Attempt,
				d.DeadAt.Local().Format(time.DateTime), clip(errorMessage(d.Error), 60))
		}
		tw.Flush()
		fmt.Fprintf(c.App.ErrWriter, "%d of %d dead letters\n", len(list), total)
		return nil
	})
}

func deadShow(c *cli.Context) error {
	if c.NArg() != 1 {
		return usagef("dead show takes one ID")
	}
	return withDeadLetters(c, false, func(ctx context.Context, dl broker.DeadLetters) error {
		d, err := dl.Show(ctx, c.Args().First())
		if errors.Is(err, broker.ErrNotFound) {
			return fmt.Errorf("no dead letter with id %s", c.Args().First())
		}
		if err != nil {
			return deadError(err)
		}
		w := c.App.Writer
		if c.Bool("json") {
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			return enc.Encode(deadJSON(d))
		}
		headers, _ := json.Marshal(d.Headers)
		fmt.Fprintf(w, "id:           %s\nqueue:        %s\ntask:         %s\nrouting key:  %s\n", d.ID, d.Queue, d.Task, d.RoutingKey)
		fmt.Fprintf(w, "content type: %s\nmessage id:   %s\nheaders:      %s\n", d.ContentType, d.MessageID, headers)
		fmt.Fprintf(w, "reason:       %s\nattempt:      %d\ndead at:      %s\n", d.Reason, d.Attempt, d.DeadAt.Local().Format(time.RFC3339))
		fmt.Fprintf(w, "error:\n%s\n", indent(d.Error))
		body, encoding := bodyText(d.Body)
		fmt.Fprintf(w, "body (%d bytes%s):\n%s\n", len(d.Body), encoding, body)
		return nil
	})
}

func deadChange(c *cli.Context, verb string) error {
	if c.NArg() > 1 {
		return usagef("dead %s takes at most one TASK", verb)
	}
	queue, ids, all := c.Args().First(), c.StringSlice("id"), c.Bool("all")
	if queue == "" && len(ids) == 0 && !all {
		return usagef("dead %s: name a TASK, give --id, or say --all", verb)
	}
	if all && (queue != "" || len(ids) > 0) {
		return usagef("dead %s: --all goes alone", verb)
	}
	return withDeadLetters(c, all, func(ctx context.Context, dl broker.DeadLetters) error {
		if verb == "replay" && len(ids) == 0 {
			return replayWithProgress(ctx, c, dl, queue)
		}
		change := dl.Replay
		if verb == "purge" {
			change = dl.Purge
		}
		n, err := change(ctx, queue, ids)
		if err != nil {
			return deadError(err)
		}
		past := map[string]string{"replay": "replayed", "purge": "purged"}[verb]
		fmt.Fprintf(c.App.Writer, "%s %d dead letters\n", past, n)
		return nil
	})
}

// replayWithProgress replays every dead letter of queue ("" for all),
// showing on a terminal how far it got, as publish --file does: the
// broker replays in one operation, and the count of what is left says
// how far it is.
func replayWithProgress(ctx context.Context, c *cli.Context, dl broker.DeadLetters, queue string) error {
	total, err := dl.Count(ctx, queue)
	if err != nil {
		return deadError(err)
	}
	progress := newProgress(c.App.ErrWriter, total, total > 0)
	start := time.Now()
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := dl.Replay(ctx, queue, nil)
		done <- result{n, err}
	}()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	moved := 0
	for {
		select {
		case r := <-done:
			if r.err != nil {
				progress.done()
				return deadError(r.err)
			}
			progress.update(max(r.n, moved))
			progress.done()
			took := time.Since(start)
			fmt.Fprintf(c.App.Writer, "replayed %d dead letters\n", r.n)
			if r.n > 0 {
				fmt.Fprintf(c.App.ErrWriter, "replayed %d dead letters in %s (%.0f/s)\n", r.n, took.Round(time.Millisecond),
					float64(r.n)/took.Seconds())
			}
			return nil
		case <-tick.C:
			if !progress.on {
				continue
			}
			// Letters replayed and dead again count as left: the bar
			// never moves back.
			if left, err := dl.Count(ctx, queue); err == nil {
				moved = max(moved, min(total-left, total))
				progress.update(moved)
			}
		}
	}
}

// deadError adds what to do to an error of the dead-letter commands.
func deadError(err error) error {
	if errors.Is(err, amqp.ErrAllQueues) {
		return fmt.Errorf("%w, or give --tasks DIR so that symphony knows the task queues", err)
	}
	return err
}

// knownQueues are the queues of the tasks under the command's tasks root,
// for brokers that cannot list their queues. A root whose tasks do not load
// gives none: dead letters must stay reachable while task files are broken.
func knownQueues(c *cli.Context, log *slog.Logger) []string {
	roots := configRoots(c)
	if roots == nil {
		return nil
	}
	ts, err := starlarklib.Load(roots, starlarklib.Options{Logger: log})
	if err != nil {
		log.Warn("task files do not load; name the TASK to reach its dead letters", "err", err)
		return nil
	}
	queues := make([]string, 0, len(ts))
	for _, t := range ts {
		queues = append(queues, t.Spec.Queue)
	}
	return queues
}

// deadJSON is a dead letter as scripts read it: the body as text when it
// is UTF-8, else base64.
func deadJSON(d broker.DeadLetter) map[string]any {
	body, encoding := bodyText(d.Body)
	return map[string]any{
		"id": d.ID, "queue": d.Queue, "task": d.Task, "routing_key": d.RoutingKey,
		"content_type": d.ContentType, "message_id": d.MessageID, "headers": d.Headers,
		"reason": d.Reason, "error": d.Error, "message": errorMessage(d.Error), "attempt": d.Attempt, "dead_at": d.DeadAt,
		"body": body, "body_encoding": strings.TrimPrefix(encoding, ", "),
	}
}

func bodyText(b []byte) (string, string) {
	if utf8.Valid(b) {
		return string(b), ""
	}
	return base64.StdEncoding.EncodeToString(b), ", base64"
}

func firstLine(s string, n int) string {
	s, _, _ = strings.Cut(s, "\n")
	return clip(s, n)
}

// clip shortens s to n bytes, on a character boundary, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n-3]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "..."
}

// errorMessage is the message of a dead letter's error: after a Starlark
// backtrace's stack, the first line of its "Error: ..." without that word
// ("Error in NAME: NAME: ...", as older versions wrote it, said NAME
// twice); otherwise the first line.
func errorMessage(text string) string {
	const header = "Traceback (most recent call last):\n"
	rest, ok := strings.CutPrefix(text, header)
	if !ok {
		line, _, _ := strings.Cut(text, "\n")
		return line
	}
	for {
		line, more, _ := strings.Cut(rest, "\n")
		if !strings.HasPrefix(line, "  ") {
			rest = line
			break
		}
		rest = more
	}
	if msg, ok := strings.CutPrefix(rest, "Error: "); ok {
		return msg
	}
	if after, ok := strings.CutPrefix(rest, "Error in "); ok {
		if name, msg, ok := strings.Cut(after, ": "); ok && !strings.HasPrefix(msg, name+": ") {
			return after
		} else if ok {
			return msg
		}
	}
	return rest
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}
