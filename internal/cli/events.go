package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// Event is one event of an operation's or a cluster's event stream
// (GET /api/v1/operations/{id}/events): the commit's metadata and the
// event's own fields, flattened.
type Event struct {
	Seq       uint64    `json:"seq"`
	Index     int       `json:"index"`
	Type      string    `json:"type"`
	Time      time.Time `json:"time"`
	Actor     string    `json:"actor,omitempty"`
	Cluster   string    `json:"cluster,omitempty"`
	Operation string    `json:"operation,omitempty"`

	// Step events.
	Step       string `json:"step,omitempty"`
	Attempt    int    `json:"attempt,omitempty"`
	Host       string `json:"host,omitempty"`
	Agent      string `json:"agent,omitempty"`
	Instance   string `json:"instance,omitempty"`
	Role       string `json:"role,omitempty"`
	Kind       string `json:"kind,omitempty"`
	DurationMS int64  `json:"duration_ms,omitempty"`
	ExitCode   int    `json:"exit_code,omitempty"`
	Error      string `json:"error,omitempty"`
	Stdout     string `json:"stdout,omitempty"`
	Stderr     string `json:"stderr,omitempty"`

	// Operation events.
	ID          string     `json:"id,omitempty"`
	Plan        []PlanStep `json:"plan,omitempty"`
	FailedSteps []string   `json:"failed_steps,omitempty"`
	Status      string     `json:"status,omitempty"`
}

// PlanStep is the part of a plan's step the command line shows.
type PlanStep struct {
	ID       string   `json:"id"`
	Kind     string   `json:"kind"`
	Host     string   `json:"host"`
	Instance string   `json:"instance,omitempty"`
	Role     string   `json:"role,omitempty"`
	Needs    []string `json:"needs,omitempty"`
}

// Event types the command line acts on.
const (
	evOperationRequested = "OperationRequested"
	evOperationRetried   = "OperationRetried"
	evStepStarted        = "StepStarted"
	evStepSucceeded      = "StepSucceeded"
	evStepFailed         = "StepFailed"
	evOperationSucceeded = "OperationSucceeded"
	evOperationFailed    = "OperationFailed"
	evOperationCancelled = "OperationCancelled"
)

// isStepEvent: a step started, succeeded or failed.
func (e Event) isStepEvent() bool {
	return e.Type == evStepStarted || e.Type == evStepSucceeded || e.Type == evStepFailed
}

// isEnd: the operation (of the attempt the event names) ended.
func (e Event) isEnd() bool {
	return e.Type == evOperationSucceeded || e.Type == evOperationFailed || e.Type == evOperationCancelled
}

// eventStream follows one event stream, reconnecting with Last-Event-ID
// when the connection drops before the caller has seen what it waits for.
type eventStream struct {
	c    *Client
	path string
	// lastID resumes the stream after this event id ("" from the start).
	lastID string
	// idle: a connection that brings nothing, not even a keepalive
	// comment, for this long is dropped and made again.
	idle time.Duration
	// giveUp: reconnections fail for this long in a row, and following
	// stops with the last error.
	giveUp time.Duration
	// onReconnect, when set, is told of each reconnection and why.
	onReconnect func(err error, wait time.Duration)
}

// defaults of eventStream
const (
	streamIdle   = 60 * time.Second
	streamGiveUp = 2 * time.Minute
	streamRetry  = time.Second // before the stream says otherwise
)

// run reads events and hands each to handle until handle answers done,
// handle fails, ctx ends, or the stream cannot be resumed for giveUp.
func (s *eventStream) run(ctx context.Context, handle func(Event) (done bool, err error)) error {
	if s.idle <= 0 {
		s.idle = streamIdle
	}
	if s.giveUp <= 0 {
		s.giveUp = streamGiveUp
	}
	retry := streamRetry
	var failingSince time.Time
	for {
		done, delay, progressed, err := s.once(ctx, handle)
		if done {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var he *handlerError
		if errors.As(err, &he) {
			return he.err
		}
		if errors.Is(err, errStreamOver) {
			return err
		}
		var ae *APIError
		if errors.As(err, &ae) && ae.Status != http.StatusServiceUnavailable && ae.Status != http.StatusTooManyRequests && ae.Status < 500 {
			return err // refused: asking again changes nothing
		}
		if delay > 0 {
			retry = delay
		}
		wait := retry
		if ae != nil && ae.RetryAfter > wait {
			wait = ae.RetryAfter
		}
		if progressed {
			failingSince = time.Time{} // it brought events: count again from now
		}
		if failingSince.IsZero() {
			failingSince = time.Now()
		} else if time.Since(failingSince) > s.giveUp {
			return fmt.Errorf("the event stream %s dropped and could not be resumed for %s: %w", s.path, s.giveUp, err)
		}
		if s.onReconnect != nil {
			s.onReconnect(err, wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// handlerError is the handler's own error, which ends run.
type handlerError struct{ err error }

func (e *handlerError) Error() string { return e.err.Error() }

var (
	// errEnded: the connection ended before the caller saw what it waits
	// for.
	errEnded = errors.New("the event stream ended before the operation did")
	// errStreamOver: the server has nothing more to send (204: what the
	// stream follows had ended before the event it resumes after).
	errStreamOver = errors.New("the event stream has nothing more to send")
)

// once makes one connection and reads it until it ends. It answers done
// when handle said so, the retry delay the stream asked for, whether the
// connection brought events, and why it ended.
func (s *eventStream) once(ctx context.Context, handle func(Event) (bool, error)) (done bool, retry time.Duration, progressed bool, err error) {
	h := http.Header{"Accept": {"text/event-stream"}, "Cache-Control": {"no-cache"}}
	if s.lastID != "" {
		h.Set("Last-Event-ID", s.lastID)
	}
	// Connecting has the request deadline; the stream then lives as long
	// as it brings something (an event or a keepalive) within idle.
	connCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	timer := time.AfterFunc(s.c.timeout, cancel)
	resp, err := s.c.Stream(connCtx, Request{Method: http.MethodGet, Path: s.path, Header: h})
	timer.Stop()
	if err != nil {
		return false, 0, false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNoContent {
		return false, 0, false, errStreamOver
	}
	body := &idleReader{r: resp.Body, idle: s.idle, cancel: cancel}
	body.arm()
	defer body.stop()
	rd := newSSEReader(body, s.lastID)
	for {
		m, err := rd.Next()
		if rd.Retry > 0 {
			retry = rd.Retry
		}
		if err != nil {
			switch {
			case body.timedOut():
				err = fmt.Errorf("the event stream brought nothing for %s", s.idle)
			case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
				err = errEnded
			}
			return false, retry, progressed, err
		}
		s.lastID = rd.LastID()
		if m.Data == "" {
			continue
		}
		var ev Event
		if err := json.Unmarshal([]byte(m.Data), &ev); err != nil {
			return false, retry, progressed, &handlerError{fmt.Errorf("event %s is not what this dmgr expects (%w); is the server the same version?", m.ID, err)}
		}
		if ev.Type == "" {
			ev.Type = m.Event
		}
		progressed = true
		done, err := handle(ev)
		if err != nil {
			return false, retry, progressed, &handlerError{err}
		}
		if done {
			return true, retry, progressed, nil
		}
	}
}

// idleReader cancels the connection when a read waits longer than idle.
type idleReader struct {
	r      io.Reader
	idle   time.Duration
	cancel context.CancelFunc

	mu    sync.Mutex
	t     *time.Timer
	fired bool
}

func (r *idleReader) arm() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.t = time.AfterFunc(r.idle, func() {
		r.mu.Lock()
		r.fired = true
		r.mu.Unlock()
		r.cancel()
	})
}

func (r *idleReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.mu.Lock()
		if !r.fired {
			r.t.Reset(r.idle)
		}
		r.mu.Unlock()
	}
	return n, err
}

func (r *idleReader) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.t.Stop()
}

func (r *idleReader) timedOut() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fired
}
