package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/symphony-go/symphony/engine"
)

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "what the running daemon reports, from its admin server (--admin-addr)",
		Flags: append(globalFlags(), tasksFlag(),
			&cli.BoolFlag{Name: "json", Usage: "print the daemon's JSON as it is"},
			&cli.BoolFlag{Name: "watch", Aliases: []string{"w"}, Usage: "refresh in place until interrupted"},
			&cli.StringFlag{Name: "interval", Value: "2s", Usage: "how often --watch refreshes"}),
		Action: showStatus,
	}
}

// clearScreen moves a terminal's cursor home and clears it, so that a
// watched status is redrawn in place.
const clearScreen = "\x1b[H\x1b[2J"

func showStatus(c *cli.Context) error {
	if c.NArg() > 0 {
		return usagef("status takes no arguments")
	}
	s, err := commandSettings(c)
	if err != nil {
		return err
	}
	if s.AdminAddr == "" {
		return usagef("status needs the daemon's --admin-addr")
	}
	if !c.Bool("watch") {
		return printStatus(c, s, c.App.Writer)
	}
	every, err := parseDuration(c.String("interval"))
	if err != nil || every < 100*time.Millisecond {
		return usagef("--interval %q: give a duration of at least 0.1s", c.String("interval"))
	}
	// Interrupting the watch is how it ends, not an error.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	w := c.App.Writer
	terminal := isTerminal(w)
	for {
		// The whole screen is drawn first and written at once: no flicker.
		var frame bytes.Buffer
		if terminal {
			frame.WriteString(clearScreen)
		}
		fmt.Fprintf(&frame, "%s (every %s; ^C to stop)\n", time.Now().Format(time.TimeOnly), every)
		if err := printStatus(c, s, &frame); err != nil {
			// A daemon restarting is a moment to wait out, not the end.
			fmt.Fprintf(&frame, "%v\n", err)
		}
		if !terminal {
			frame.WriteString("\n")
		}
		if _, err := w.Write(frame.Bytes()); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		}
	}
}

// printStatus asks the daemon for its status and writes it to w.
func printStatus(c *cli.Context, s settings, w io.Writer) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	url := "http://" + s.AdminAddr + "/status"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return usagef("--admin-addr %q: %w", s.AdminAddr, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		hint := "is it running, with this --admin-addr?"
		if path, ok := strings.CutPrefix(s.Broker, "sqlite:"); ok {
			path, _, _ = strings.Cut(path, "?")
			if _, serr := os.Stat(path); errors.Is(serr, fs.ErrNotExist) {
				hint = fmt.Sprintf("no daemon has run with %s here: it does not exist; give --broker, or --tasks DIR, or run this in the daemon's directory", s.Broker)
			}
		}
		return fmt.Errorf("ask the daemon at %s: %w (%s)", s.AdminAddr, err, hint)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read the daemon's status: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the daemon at %s answered %s", s.AdminAddr, resp.Status)
	}
	if c.Bool("json") {
		_, err := w.Write(body)
		return err
	}
	var st engine.Status
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("read the daemon's status: %w", err)
	}
	ready := "ready"
	if !st.Ready {
		ready = "not ready"
	}
	if !st.Connected {
		ready += ", broker disconnected"
	}
	fmt.Fprintf(w, "symphony %s: %s, exchange %s, %s, up %s, generation %d\n", st.Version, st.Broker, st.Exchange, ready,
		time.Since(st.StartedAt).Round(time.Second), st.Generation)
	if r := st.LastReload; r != nil {
		result := "succeeded"
		if !r.Success {
			result = "failed: " + firstLine(r.Error, 100)
		}
		fmt.Fprintf(w, "last reload (%s) %s ago %s\n", r.Trigger, time.Since(r.At).Round(time.Second), result)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TASK\tMODEL\tISOLATION\tWORKERS\tBUSY\tDEPTH\tACK\tRETRY\tDEAD\tTHROTTLE\tLAST FAILURE")
	for _, t := range st.Tasks {
		last := ""
		if f := t.LastError; f != nil {
			last = fmt.Sprintf("%s (%s) %s ago", f.Reason, f.Outcome, time.Since(f.At).Round(time.Second))
		}
		if t.ScalerError != "" {
			last = "scaler: " + firstLine(t.ScalerError, 60)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d (%d..%d)\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", t.Name, t.WorkModel, t.Isolation,
			t.Workers.Now, t.Workers.Min, t.Workers.Max, t.Workers.Busy, t.QueueDepth,
			t.Messages["ack"], t.Messages["retry"], t.Messages["dead"], throttleText(t.Throttle), last)
	}
	header := false
	for _, t := range st.Tasks {
		if t.RateLimit == "" {
			continue
		}
		if !header {
			fmt.Fprintln(tw, "\nRATE LIMIT OF\tLIMIT\tTHROTTLED HERE")
			header = true
		}
		fmt.Fprintf(tw, "%s\t%s\t%d waiting to start\n", t.Name, t.RateLimit, t.Throttled)
	}
	header = false
	for _, t := range st.Tasks {
		sc := t.Schedule
		if sc == nil {
			continue
		}
		if !header {
			fmt.Fprintln(tw, "\nSCHEDULE OF\tEXPRESSION\tNEXT TICK\tLAST TICK\tFIRED HERE")
			header = true
		}
		leading := "no (another daemon leads)"
		if sc.Leading {
			leading = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.Name, sc.Expression, tickText(sc.Next), tickText(sc.Last), leading)
	}
	return tw.Flush()
}

// tickText shows a tick in the local zone with how far it is from now.
func tickText(t *time.Time) string {
	if t == nil {
		return "-"
	}
	d := time.Until(*t).Round(time.Second)
	when := "in " + d.String()
	if d < 0 {
		when = (-d).String() + " ago"
	}
	return t.Local().Format(time.DateTime) + " (" + when + ")"
}

func throttleText(seconds float64) string {
	if seconds == 0 {
		return "-"
	}
	return strings.TrimSuffix(fmt.Sprintf("%.2fs", seconds), ".00s")
}
