package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/domain"
)

// GuardConfig bounds what one request may take from the server.
type GuardConfig struct {
	// MaxInFlight is how many requests are served at once (streams not
	// counted); one more answers 503 with Retry-After at once.
	MaxInFlight int
	// MaxStreams is how many long-lived streams (server-sent events) are
	// served at once; one more answers 503 with Retry-After.
	MaxStreams int
	// RetryAfter is what a 503 asks the client to wait (default 1 s).
	RetryAfter time.Duration
	// RequestTimeout is the deadline of a request's context: no handler
	// waits longer on NATS, etcd or ClickHouse. Streams have none.
	RequestTimeout time.Duration
	// ReadTimeout and WriteTimeout are the server's (http.Server), which
	// a package upload extends and a stream lifts, per request.
	ReadTimeout, WriteTimeout time.Duration
	// MaxJSONBody bounds the body of every request but an upload; a
	// larger Content-Length is refused with 413 before a byte is read.
	MaxJSONBody int64
	// MaxUploadBody bounds a package upload's body (413 past it).
	MaxUploadBody int64
	// MinUploadRate is the slowest upload, in bytes per second, that
	// still gets through MaxUploadBody: an upload's read deadline is
	// ReadTimeout + MaxUploadBody/MinUploadRate.
	MinUploadRate int64
	// Log gets a debug line per refused request.
	Log zerolog.Logger
}

// Request classes: how Guard bounds a request.
const (
	classPlain  = iota // a deadline, a slot of MaxInFlight, the server's timeouts
	classUpload        // as plain, with read and write deadlines scaled to MaxUploadBody
	classStream        // no deadline, no read or write timeout (the handler sets one per write), a slot of MaxStreams
	classProbe         // /healthz: no slot, answered even when the server is full
)

// classOf names the long-lived routes explicitly: the event streams of
// an operation and of a cluster (GET /api/v1/operations/{id}/events,
// GET /api/v1/clusters/{name}/events) and the package upload (POST
// /api/v1/packages). Every other request is plain.
func classOf(r *http.Request) int {
	p := r.URL.Path
	switch {
	case r.Method == http.MethodGet && p == "/healthz":
		return classProbe
	case r.Method == http.MethodPost && p == "/api/v1/packages":
		return classUpload
	case r.Method == http.MethodGet && (isEventStream(p, "/api/v1/operations/") || isEventStream(p, "/api/v1/clusters/")):
		return classStream
	}
	return classPlain
}

// isEventStream reports whether path is prefix + one segment + "/events".
func isEventStream(path, prefix string) bool {
	rest, ok := strings.CutPrefix(path, prefix)
	if !ok {
		return false
	}
	id, ok := strings.CutSuffix(rest, "/events")
	return ok && id != "" && !strings.Contains(id, "/")
}

// Guard bounds every request: at most MaxInFlight at once (503 with
// Retry-After and a problem document beyond, never a wait), a context
// deadline of RequestTimeout, bodies larger than their limit refused with
// 413 from their Content-Length, and the server's read and write
// timeouts set per request where a route needs others (see classOf).
// Every 503 the handlers answer gets a Retry-After too.
func Guard(c GuardConfig) func(http.Handler) http.Handler {
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 256
	}
	if c.MaxStreams <= 0 {
		c.MaxStreams = 256
	}
	if c.RetryAfter <= 0 {
		c.RetryAfter = time.Second
	}
	if c.MaxJSONBody <= 0 {
		c.MaxJSONBody = 1 << 20
	}
	if c.MinUploadRate <= 0 {
		c.MinUploadRate = 1 << 20
	}
	retryAfter := strconv.Itoa(max(1, int((c.RetryAfter+time.Second-1)/time.Second)))
	plain := make(chan struct{}, c.MaxInFlight)
	streams := make(chan struct{}, c.MaxStreams)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			class := classOf(r)
			if class == classProbe {
				next.ServeHTTP(w, r)
				return
			}
			slots, what := plain, fmt.Sprintf("%d requests", c.MaxInFlight)
			if class == classStream {
				slots, what = streams, fmt.Sprintf("%d event streams", c.MaxStreams)
			}
			select {
			case slots <- struct{}{}:
				defer func() { <-slots }()
			default:
				c.Log.Debug().Str("method", r.Method).Str("path", r.URL.Path).Msg("server full: request refused with 503")
				w.Header().Set("Retry-After", retryAfter)
				writeProblem(w, r, http.StatusServiceUnavailable, domain.Unavailable,
					fmt.Sprintf("the server is serving %s at once, its limit; retry after %s s", what, retryAfter))
				return
			}
			limit := c.MaxJSONBody
			if class == classUpload {
				limit = c.MaxUploadBody
			}
			if limit > 0 && r.ContentLength > limit {
				// Do not keep reading what will be refused.
				w.Header().Set("Connection", "close")
				writeError(w, r, domain.Errorf(domain.TooLarge, "request body of %d bytes is larger than the limit of %d bytes",
					r.ContentLength, limit))
				return
			}
			ctx, rc := r.Context(), http.NewResponseController(w)
			var cancel context.CancelFunc = func() {}
			switch class {
			case classStream:
				// A stream lives as long as its client: no deadline, and no
				// server timeout may end it (a read deadline passing would
				// cancel its context).
				_ = rc.SetReadDeadline(time.Time{})
				_ = rc.SetWriteDeadline(time.Time{})
			case classUpload:
				read := c.ReadTimeout + time.Duration(float64(c.MaxUploadBody)/float64(c.MinUploadRate)*float64(time.Second))
				now := time.Now()
				if c.ReadTimeout > 0 {
					_ = rc.SetReadDeadline(now.Add(read))
				}
				if c.WriteTimeout > 0 {
					_ = rc.SetWriteDeadline(now.Add(read + c.WriteTimeout))
				}
				if c.RequestTimeout > 0 {
					ctx, cancel = context.WithTimeout(ctx, read+c.RequestTimeout)
				}
			default:
				if c.RequestTimeout > 0 {
					ctx, cancel = context.WithTimeout(ctx, c.RequestTimeout)
				}
			}
			defer cancel()
			if class != classStream {
				w = &retryAfterWriter{ResponseWriter: w, retryAfter: retryAfter}
			}
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}

// retryAfterWriter adds Retry-After to a 503 that has none.
type retryAfterWriter struct {
	http.ResponseWriter
	retryAfter string
}

func (w *retryAfterWriter) WriteHeader(status int) {
	if status == http.StatusServiceUnavailable && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", w.retryAfter)
	}
	w.ResponseWriter.WriteHeader(status)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *retryAfterWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
