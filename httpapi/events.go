package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/service"
)

// Server-sent events (text/event-stream): the live progress of one
// operation, GET /api/v1/operations/{id}/events, and every commit of one
// cluster, GET /api/v1/clusters/{name}/events, read from the event
// stream as they are committed (service.WatchOperation, WatchCluster).
// Each event is
//
//	id: <stream seq>.<index of the event in its commit>
//	event: <domain event type>
//	data: <one line of JSON>
//
// A client resumes strictly after the last event it got with the
// Last-Event-ID header (or ?last_event_id=). A stream lives at most
// Config.StreamMaxLife; Guard bounds how many run at once.

// HeaderLastEventID is the header a reconnecting client names the last
// event it got with.
const HeaderLastEventID = "Last-Event-ID"

// Defaults and bounds of a stream.
const (
	// DefaultStreamMaxLife is how long a stream lives at most: then the
	// server closes it and the client reconnects with Last-Event-ID.
	DefaultStreamMaxLife = 30 * time.Minute
	// DefaultStreamKeepAlive is how often a quiet stream sends a comment,
	// so that proxies keep it open.
	DefaultStreamKeepAlive = 15 * time.Second
	// streamWriteWait is how long one write to a stream may take: a
	// client that does not read is cut off after it (the server's write
	// timeout is moved on per write, never applied to the whole stream).
	streamWriteWait = 30 * time.Second
	// streamSetupWait bounds what a stream checks before its first byte
	// (authorization, the operation or cluster).
	streamSetupWait = 30 * time.Second
	// streamRetryMS is the reconnection delay a stream asks of clients.
	streamRetryMS = 2000
)

func (a *api) operationEvents(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	after, err := resumePos(r)
	if err != nil {
		writeError(w, r, err)
		return
	}
	if !a.mayReadStream(w, r, "operation", id) {
		return
	}
	var pos service.EventPos
	if after != nil {
		pos = *after
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.streamLife)
	defer cancel()
	watch, err := a.svc.WatchOperation(ctx, id, pos)
	a.serveEvents(ctx, cancel, w, r, watch, err, zerolog.Ctx(r.Context()).With().Str("operation", id).Logger())
}

func (a *api) clusterEvents(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	after, err := resumePos(r)
	if err != nil {
		writeError(w, r, err)
		return
	}
	if v := r.URL.Query().Get("since"); v != "" {
		since, err := strconv.ParseUint(v, 10, 64)
		if err != nil || since == 0 {
			writeError(w, r, domain.Errorf(domain.Invalid, "query parameter since=%.32q: want a stream sequence, an integer from 1", v))
			return
		}
		if after == nil { // a reconnect's Last-Event-ID wins
			after = &service.EventPos{Seq: since, Index: -1}
		}
	}
	if !a.mayReadStream(w, r, "cluster", name) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.streamLife)
	defer cancel()
	watch, err := a.svc.WatchCluster(ctx, name, after)
	a.serveEvents(ctx, cancel, w, r, watch, err, zerolog.Ctx(r.Context()).With().Str("cluster", name).Logger())
}

// mayReadStream is mayRead (viewer in the group of the operation or
// cluster, as GET of it) under a deadline: a stream's own context has
// none.
func (a *api) mayReadStream(w http.ResponseWriter, r *http.Request, kind, id string) bool {
	ctx, cancel := context.WithTimeout(r.Context(), streamSetupWait)
	defer cancel()
	return a.mayRead(w, r.WithContext(ctx), kind, id)
}

// resumePos is the event a client resumes after: the Last-Event-ID
// header, else the last_event_id query parameter (for clients that set no
// header), else none.
func resumePos(r *http.Request) (*service.EventPos, error) {
	v, from := r.Header.Get(HeaderLastEventID), HeaderLastEventID
	if len(r.Header.Values(HeaderLastEventID)) > 1 {
		return nil, domain.Errorf(domain.Invalid, "%s is given more than once: send the id of the last event received", HeaderLastEventID)
	}
	if v == "" {
		v, from = r.URL.Query().Get("last_event_id"), "query parameter last_event_id"
	}
	if v == "" {
		return nil, nil
	}
	p, err := service.ParseEventPos(v)
	if err != nil {
		return nil, domain.Errorf(domain.Invalid, "%s: %s", from, domain.ErrorMessage(err))
	}
	return &p, nil
}

// serveEvents sends the events of watch as server-sent events until it
// ends, the stream's life ends or the client goes. An error before the
// first byte is a problem document (503 with Retry-After when the event
// stream failed); a watch that ends with nothing to send (an operation
// that had ended before the event the client resumes after) is 204,
// which tells an EventSource to stop reconnecting.
//
// cancel ends ctx, the watch's context: the watch is ended and waited for
// (its consumer deleted) before serveEvents returns.
func (a *api) serveEvents(ctx context.Context, cancel context.CancelFunc, w http.ResponseWriter, r *http.Request, watch *service.Watch, err error, log zerolog.Logger) {
	if err != nil {
		a.streamError(w, r, err)
		return
	}
	s := &sseWriter{w: w, rc: http.NewResponseController(w)}
	// The request is read: only the client going away ends it, not the
	// server's read timeout.
	_ = s.rc.SetReadDeadline(time.Time{})
	defer func() {
		cancel()
		for range watch.Events {
		}
		log.Debug().Int("events", s.sent).Bool("started", s.started).Msg("event stream ended")
	}()
	keepAlive := time.NewTicker(a.streamKeepAlive)
	defer keepAlive.Stop()
	live := watch.Live
	for {
		var err error
		select {
		case ev, ok := <-watch.Events:
			if !ok {
				a.endEvents(ctx, w, r, s, watch.Err(), log)
				return
			}
			err = s.event(ev, len(watch.Events) == 0)
		case <-live:
			live = nil
			err = s.start()
		case <-keepAlive.C:
			err = s.comment("keepalive")
		case <-ctx.Done():
			return
		}
		if err != nil {
			log.Debug().Err(err).Msg("event stream: write failed; the client is gone or does not read")
			return
		}
	}
}

// endEvents ends a stream whose watch ended.
func (a *api) endEvents(ctx context.Context, w http.ResponseWriter, r *http.Request, s *sseWriter, err error, log zerolog.Logger) {
	switch {
	case s.started:
		if err != nil {
			log.Warn().Err(err).Msg("event stream cut: the client reconnects with Last-Event-ID")
		}
	case err != nil:
		a.streamError(w, r, err)
	case ctx.Err() == nil:
		w.WriteHeader(http.StatusNoContent)
	}
}

func (a *api) streamError(w http.ResponseWriter, r *http.Request, err error) {
	if domain.ErrorCode(err) == domain.Unavailable {
		w.Header().Set("Retry-After", strconv.Itoa(streamRetryMS/1000))
	}
	writeError(w, r, err)
}

// sseWriter writes a text/event-stream, each write under its own
// deadline.
type sseWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	started bool
	sent    int
}

// start sends the headers and the reconnection delay, once.
func (s *sseWriter) start() error {
	if s.started {
		return nil
	}
	s.started = true
	h := s.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	s.w.WriteHeader(http.StatusOK)
	return s.write(fmt.Sprintf("retry: %d\n\n", streamRetryMS), true)
}

// event sends one event; flush when no other follows at once.
func (s *sseWriter) event(ev service.StreamEvent, flush bool) error {
	if err := s.start(); err != nil {
		return err
	}
	s.sent++
	return s.write(fmt.Sprintf("id: %s\nevent: %s\ndata: %s\n\n", ev.Pos, ev.Type, ev.Data), flush)
}

func (s *sseWriter) comment(text string) error {
	if err := s.start(); err != nil {
		return err
	}
	return s.write(": "+text+"\n\n", true)
}

func (s *sseWriter) write(text string, flush bool) error {
	if err := s.rc.SetWriteDeadline(time.Now().Add(streamWriteWait)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	if _, err := s.w.Write([]byte(text)); err != nil {
		return err
	}
	if flush {
		return s.rc.Flush()
	}
	return nil
}
