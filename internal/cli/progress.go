package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
)

// An operation's view as the API answers it (GET /api/v1/operations/{id}).
type operationView struct {
	ID        string     `json:"id"`
	Kind      string     `json:"kind"`
	Status    string     `json:"status"`
	Cluster   string     `json:"cluster,omitempty"`
	Actor     string     `json:"actor"`
	CreatedAt time.Time  `json:"created_at"`
	CommitSeq uint64     `json:"commit_seq"`
	Attempt   int        `json:"attempt,omitempty"`
	Error     string     `json:"error,omitempty"`
	Steps     []stepView `json:"steps,omitempty"`
}

type stepView struct {
	ID         string   `json:"id"`
	Kind       string   `json:"kind"`
	Host       string   `json:"host"`
	Instance   string   `json:"instance,omitempty"`
	Needs      []string `json:"needs,omitempty"`
	Status     string   `json:"status"`
	Attempt    int      `json:"attempt,omitempty"`
	Agent      string   `json:"agent,omitempty"`
	Error      string   `json:"error,omitempty"`
	DurationMS int64    `json:"duration_ms,omitempty"`
}

// Operation statuses.
const (
	statusSucceeded = "succeeded"
	statusFailed    = "failed"
	statusCancelled = "cancelled"
)

func ended(status string) bool {
	return status == statusSucceeded || status == statusFailed || status == statusCancelled || status == "rolled_back"
}

// minSeq is the header that makes a query wait for a command's commit.
func minSeq(seq uint64) http.Header {
	if seq == 0 {
		return nil
	}
	return http.Header{"X-Dmgr-Min-Seq": {strconv.FormatUint(seq, 10)}}
}

// getOperation reads an operation once the projections hold commit seq.
func getOperation(ctx context.Context, c *Client, id string, seq uint64) (operationView, error) {
	op, _, err := getOperationDoc(ctx, c, id, seq)
	return op, err
}

// getOperationDoc is getOperation with the document as the API sent it.
func getOperationDoc(ctx context.Context, c *Client, id string, seq uint64) (operationView, json.RawMessage, error) {
	var op operationView
	raw, err := getDoc(ctx, c, Request{Method: http.MethodGet, Path: pathf("/api/v1/operations/%s", id), Header: minSeq(seq)}, &op)
	if err != nil {
		return op, nil, fmt.Errorf("operation %s: %w", id, err)
	}
	return op, raw, nil
}

// followOptions say how an operation is followed.
type followOptions struct {
	// What names the operation in messages: "deploy of prod-a".
	What string
	// FromAttempt: step events of earlier attempts are history (a retry
	// shows only its own); 0 shows them all.
	FromAttempt int
	// Want is the status that counts as success (succeeded, or cancelled
	// for dmgr operation cancel).
	Want string
}

// follow follows operation id until it ends, drawing its progress: bars
// per host redrawn in place when stdout is a terminal (and the output is
// a table; a terminal narrower than 60 columns, or of no size, gets plain
// lines), one plain line per step event otherwise. It answers nil when
// the operation ends as wanted, an *ExitError 1 with the operation's
// error when it does not, and an *ExitError 130 when ctx ends first (the
// operation goes on; the message says how to follow it again).
func (a *App) follow(ctx context.Context, c *Client, id string, seq uint64, o followOptions) error {
	if o.Want == "" {
		o.Want = statusSucceeded
	}
	op, err := getOperation(ctx, c, id, seq)
	var ae *APIError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return a.detachedOr(ctx, id, err)
	case errors.As(err, &ae) && ae.Status != http.StatusServiceUnavailable && ae.Status < 500:
		return err // not there, or not ours to read: the stream would say the same
	default:
		// The plan could not be read (the queries are behind): follow the
		// stream alone, whose OperationRequested has the plan.
		fmt.Fprintf(a.Stderr, "dmgr: warning: operation %s: %v; following its events without it\n", id, err)
		op = operationView{ID: id}
	}
	if o.What == "" {
		o.What = describeOperation(op)
	}
	out := a.Stdout
	if a.output != OutputTable {
		out = a.Stderr // stdout keeps the document
	}
	var view progressView
	if a.output == OutputTable && len(op.Steps) > 0 && drawsBars(a.Stdout) {
		view = newBarsView(out, op.Steps)
	} else {
		view = &plainView{w: out, fromAttempt: o.FromAttempt}
	}
	t := newTracker(op)
	var end *Event
	stream := &eventStream{c: c, path: pathf("/api/v1/operations/%s/events", id),
		onReconnect: func(err error, wait time.Duration) {
			view.note(fmt.Sprintf("the event stream dropped (%v); resuming in %s", err, wait.Round(time.Millisecond)))
		}}
	err = stream.run(ctx, func(ev Event) (bool, error) {
		if ev.Operation != "" && ev.Operation != id && ev.ID != id {
			return false, nil // another operation's event (cluster streams)
		}
		t.apply(ev)
		view.event(ev, t)
		if ev.isEnd() && t.isCurrentEnd(ev) {
			end = &ev
			return true, nil
		}
		return false, nil
	})
	if errors.Is(err, errStreamOver) {
		// The operation had ended before the last event we got: its end
		// is in its state.
		if op, gerr := getOperation(ctx, c, id, 0); gerr == nil && ended(op.Status) {
			end, err = &Event{Type: map[string]string{statusSucceeded: evOperationSucceeded, statusCancelled: evOperationCancelled}[op.Status],
				Error: op.Error, Attempt: op.Attempt}, nil
			if end.Type == "" {
				end.Type = evOperationFailed
			}
		}
	}
	view.close(t)
	if err != nil {
		if ctx.Err() == nil {
			err = fmt.Errorf("following operation %s: %w (the operation goes on; re-attach with: dmgr operation watch %s)", id, err, id)
		}
		return a.detachedOr(ctx, id, err)
	}
	if a.output != OutputTable {
		_, final, err := getOperationDoc(ctx, c, id, end.Seq)
		if err != nil {
			return err
		}
		if err := a.print(final, nil); err != nil {
			return err
		}
	}
	took := ""
	if !op.CreatedAt.IsZero() && !end.Time.IsZero() && end.Time.After(op.CreatedAt) {
		took = " in " + formatDuration(end.Time.Sub(op.CreatedAt))
	}
	status := endStatus(*end)
	if status == o.Want {
		fmt.Fprintf(out, "%s %s%s (operation %s)\n", o.What, status, took, id)
		return nil
	}
	t.writeFailures(a.Stderr)
	msg := end.Error
	if msg == "" {
		msg = "the operation " + status
	}
	return &ExitError{Code: 1, Err: fmt.Errorf("%s %s%s: %s (operation %s; dmgr operation show %s)", o.What, status, took, msg, id, id)}
}

// detachedOr: when ctx ended (Ctrl-C), the operation goes on without us;
// otherwise err.
func (a *App) detachedOr(ctx context.Context, id string, err error) error {
	if ctx.Err() != nil || errors.Is(err, context.Canceled) {
		fmt.Fprintf(a.Stderr, "detached: the operation goes on; re-attach with: dmgr operation watch %s\n", id)
		return &ExitError{Code: 130, Err: context.Canceled, Silent: true}
	}
	return err
}

func endStatus(ev Event) string {
	switch ev.Type {
	case evOperationSucceeded:
		return statusSucceeded
	case evOperationCancelled:
		return statusCancelled
	default:
		return statusFailed
	}
}

func describeOperation(op operationView) string {
	if op.Kind == "" {
		return "operation " + op.ID
	}
	if op.Cluster != "" {
		return op.Kind + " of " + op.Cluster
	}
	return op.Kind
}

// tracker folds an operation's events: each step's last state, the
// attempt running.
type tracker struct {
	mu      sync.Mutex
	attempt int
	retried int // OperationRetried events seen
	plan    []PlanStep
	steps   map[string]Event // step id → its last event
}

func newTracker(op operationView) *tracker {
	t := &tracker{attempt: max(op.Attempt, 1), steps: map[string]Event{}}
	for _, s := range op.Steps {
		t.plan = append(t.plan, PlanStep{ID: s.ID, Kind: s.Kind, Host: s.Host, Instance: s.Instance, Needs: s.Needs})
	}
	return t
}

func (t *tracker) apply(ev Event) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case ev.Type == evOperationRequested && len(t.plan) == 0:
		t.plan = ev.Plan
	case ev.Type == evOperationRetried:
		t.retried++
		t.attempt = max(t.attempt, ev.Attempt, t.retried+1)
	case ev.isStepEvent():
		t.steps[ev.Step] = ev
	}
}

// isCurrentEnd: the end event is of the attempt the operation is at
// (an earlier attempt's failure is history once it was retried): by the
// attempt it names, or else by the retries seen before it.
func (t *tracker) isCurrentEnd(ev Event) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if ev.Attempt > 0 {
		return ev.Attempt >= t.attempt
	}
	return t.retried+1 >= t.attempt
}

// writeFailures prints each failed step of the attempt with its error
// and the tail of its output.
func (t *tracker) writeFailures(w io.Writer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var failed []Event
	for _, ev := range t.steps {
		if ev.Type == evStepFailed && (ev.Attempt == 0 || ev.Attempt >= t.attempt) {
			failed = append(failed, ev)
		}
	}
	sort.Slice(failed, func(i, j int) bool { return failed[i].Seq < failed[j].Seq })
	for _, ev := range failed {
		fmt.Fprintf(w, "Error: step %s on %s failed", ev.Step, ev.Host)
		if ev.ExitCode != 0 {
			fmt.Fprintf(w, " (exit %d)", ev.ExitCode)
		}
		fmt.Fprintf(w, ": %s\n", oneLine(ev.Error))
		for _, o := range []struct{ name, text string }{{"stdout", ev.Stdout}, {"stderr", ev.Stderr}} {
			if tail := tailLines(o.text, 20); tail != "" {
				fmt.Fprintf(w, "  %s (last lines):\n", o.name)
				for line := range strings.SplitSeq(tail, "\n") {
					fmt.Fprintf(w, "    %s\n", line)
				}
			}
		}
	}
}

// tailLines is the last n lines of s, without trailing blank lines.
func tailLines(s string, n int) string {
	s = strings.TrimRight(s, "\n \t\r")
	if s == "" {
		return ""
	}
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	s = strings.ReplaceAll(s, "\r\n", "; ")
	return strings.ReplaceAll(s, "\n", "; ")
}

// progressView draws an operation's progress.
type progressView interface {
	event(ev Event, t *tracker)
	note(msg string) // a remark between the events (reconnection)
	close(t *tracker)
}

// plainView prints one line per step event (CI logs, pipes).
type plainView struct {
	w           io.Writer
	fromAttempt int
}

func (v *plainView) event(ev Event, _ *tracker) {
	if !ev.isStepEvent() || (v.fromAttempt > 0 && ev.Attempt > 0 && ev.Attempt < v.fromAttempt) {
		return
	}
	fmt.Fprintln(v.w, plainLine(ev))
}

func (v *plainView) note(msg string) { fmt.Fprintln(v.w, "# "+msg) }

func (v *plainView) close(*tracker) {}

// plainLine is a step event as one line:
//
//	2026-12-06T04:31:02Z  start/10.0.0.1:8261  10.0.0.1  dm-master-8261  succeeded  1.2s
//
// the commit's time (UTC), the step, its host, its instance (role-port),
// what happened, and for a result its duration (and for a failure the
// exit status and the error).
func plainLine(ev Event) string {
	status := map[string]string{evStepStarted: "started", evStepSucceeded: "succeeded", evStepFailed: "failed"}[ev.Type]
	if status == "" {
		status = ev.Type
	}
	host := ev.Host
	if host == "" {
		host = "-"
	}
	fields := []string{ev.Time.UTC().Format(time.RFC3339), ev.Step, host, instanceLabel(ev.Role, ev.Instance), status}
	if ev.Type == evStepStarted && ev.Attempt > 1 {
		fields = append(fields, "attempt "+strconv.Itoa(ev.Attempt))
	}
	if ev.Type != evStepStarted {
		fields = append(fields, formatDuration(time.Duration(ev.DurationMS)*time.Millisecond))
	}
	if ev.Type == evStepFailed {
		e := oneLine(ev.Error)
		if ev.ExitCode != 0 {
			e = "exit " + strconv.Itoa(ev.ExitCode) + ": " + e
		}
		fields = append(fields, e)
	}
	return strings.Join(fields, "  ")
}

// instanceLabel names an instance as its service is named,
// "dm-master-8261"; "-" for a step of no instance.
func instanceLabel(role, instance string) string {
	if instance == "" {
		return "-"
	}
	if role == "" {
		return instance
	}
	i := strings.LastIndexByte(instance, ':')
	if i < 0 {
		return role + "-" + instance
	}
	return role + "-" + instance[i+1:]
}

// formatDuration: 850ms, 1.2s, 1m3s.
func formatDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
	case d < time.Minute:
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
	default:
		return d.Round(time.Second).String()
	}
}

// barsView draws one line per host, redrawn in place: the host, a bar of
// its steps done out of its steps in the plan, the count, and what runs
// on it now.
type barsView struct {
	p     *mpb.Progress
	mu    sync.Mutex
	hosts map[string]*hostLine
	order []string
}

type hostLine struct {
	bar   *mpb.Bar
	steps []string // the host's steps in plan order
	done  int
	text  string
}

// clusterWide names the line of steps with no host.
const clusterWide = "(cluster)"

func newBarsView(w io.Writer, steps []stepView) *barsView {
	v := &barsView{hosts: map[string]*hostLine{},
		p: mpb.New(mpb.WithOutput(w), mpb.WithWidth(32), mpb.WithRefreshRate(100*time.Millisecond))}
	for _, s := range steps {
		v.line(s.Host).steps = append(v.line(s.Host).steps, s.ID)
	}
	for _, h := range v.order {
		v.addBar(h)
	}
	return v
}

func (v *barsView) line(host string) *hostLine {
	if host == "" {
		host = clusterWide
	}
	l, ok := v.hosts[host]
	if !ok {
		l = &hostLine{text: "waiting"}
		v.hosts[host] = l
		v.order = append(v.order, host)
	}
	return l
}

func (v *barsView) addBar(host string) {
	l := v.hosts[host]
	l.bar = v.p.AddBar(int64(max(len(l.steps), 1)),
		mpb.PrependDecorators(decor.Name(host, decor.WCSyncSpaceR)),
		mpb.AppendDecorators(decor.Any(func(decor.Statistics) string {
			v.mu.Lock()
			defer v.mu.Unlock()
			return fmt.Sprintf("%d/%d  %s", l.done, len(l.steps), l.text)
		}, decor.WCSyncSpaceR)),
	)
}

func (v *barsView) event(ev Event, t *tracker) {
	if !ev.isStepEvent() {
		return
	}
	host := ev.Host
	if host == "" {
		host = clusterWide
	}
	v.mu.Lock()
	_, known := v.hosts[host]
	if !known { // a step the plan we read did not have: show it anyway
		v.line(host).steps = append(v.line(host).steps, ev.Step)
	}
	v.mu.Unlock()
	if !known {
		v.addBar(host)
	}
	// The bars call the decorators, which take v.mu, from their own
	// goroutines: never wait on a bar while holding v.mu.
	v.mu.Lock()
	l := v.hosts[host]
	var running, failed []string
	t.mu.Lock()
	l.done = 0
	for _, id := range l.steps {
		switch e := t.steps[id]; e.Type {
		case evStepSucceeded:
			l.done++
		case evStepStarted:
			running = append(running, id)
		case evStepFailed:
			failed = append(failed, id)
		}
	}
	t.mu.Unlock()
	switch {
	case len(failed) > 0:
		l.text = "failed: " + strings.Join(failed, ", ")
	case len(running) > 0:
		l.text = strings.Join(running, ", ")
	case l.done == len(l.steps):
		l.text = statusSucceeded
	default:
		l.text = "waiting"
	}
	done, bar := l.done, l.bar
	v.mu.Unlock()
	bar.SetCurrent(int64(done))
}

func (v *barsView) note(msg string) {
	fmt.Fprintln(v.p, msg) // printed above the bars
}

// close ends the drawing: lines not complete stay as they are.
func (v *barsView) close(*tracker) {
	v.mu.Lock()
	var bars []*mpb.Bar
	for _, h := range v.order {
		bars = append(bars, v.hosts[h].bar)
	}
	v.mu.Unlock()
	for _, b := range bars {
		if b != nil && !b.Completed() {
			b.Abort(false)
		}
	}
	v.p.Wait()
}
