package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client sends requests to a dmgr server with a bearer token.
type Client struct {
	base    string // http(s)://host:port, no trailing slash
	token   string
	http    *http.Client
	timeout time.Duration // of one request (not of a stream)
}

// APIError is a request the server refused: its message is the problem
// document's detail, as the user should read it.
type APIError struct {
	Status int    // HTTP status
	Code   string // dmgr's error code (invalid, not_found, conflict, …)
	Detail string
	// RetryAfter is the server's Retry-After, when it sent one.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	if e.Detail != "" {
		return e.Detail
	}
	return fmt.Sprintf("the server answered %d %s", e.Status, http.StatusText(e.Status))
}

// client is the Client of the command's server and token; a command that
// needs no login (dmgr login itself) builds its own.
func (a *App) client() (*Client, error) {
	server, token, err := a.endpoint()
	if err != nil {
		return nil, err
	}
	if token == "" {
		return nil, usageError("not logged in to %s: run dmgr login --server %s --user NAME, or pass --token or set DMGR_TOKEN", server, server)
	}
	return newClient(server, token, a.timeout), nil
}

func newClient(server, token string, timeout time.Duration) *Client {
	if timeout <= 0 {
		timeout = time.Minute
	}
	return &Client{base: normalizeServer(server), token: token, timeout: timeout,
		http: &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}}
}

// Request is one API call.
type Request struct {
	Method string
	Path   string     // /api/v1/…; path segments already escaped (use pathf)
	Query  url.Values // may be nil
	// Body is sent as JSON unless it is an io.Reader (sent as is, with
	// ContentType).
	Body        any
	ContentType string
	// ContentLength of a Body that is an io.Reader, when known (a file):
	// sent as Content-Length instead of a chunked body.
	ContentLength int64
	Header        http.Header
	// Idempotent commands (POST, DELETE that start something) carry an
	// Idempotency-Key, so a retry after a lost answer is not a second
	// command.
	Idempotent bool
	// NoTimeout: the request's own deadline is the caller's (uploads).
	NoTimeout bool
}

// pathf builds an API path, escaping each argument as one path segment.
func pathf(format string, args ...string) string {
	esc := make([]any, len(args))
	for i, s := range args {
		esc[i] = url.PathEscape(s)
	}
	return fmt.Sprintf(format, esc...)
}

// Do sends req and decodes a 2xx JSON answer into out (unless out is nil);
// any other answer is an *APIError with the problem's detail.
func (c *Client) Do(ctx context.Context, req Request, out any) (*http.Response, error) {
	if !req.NoTimeout {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	resp, err := c.send(ctx, req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return resp, fmt.Errorf("%s %s: read the answer: %w", req.Method, req.Path, err)
	}
	if resp.StatusCode/100 != 2 {
		return resp, problemOf(resp, body)
	}
	if out != nil && len(body) > 0 {
		if raw, ok := out.(*json.RawMessage); ok {
			*raw = append((*raw)[:0], body...)
			return resp, nil
		}
		if err := json.Unmarshal(body, out); err != nil {
			return resp, fmt.Errorf("%s %s: the answer is not what this dmgr expects (%w); is the server the same version?", req.Method, req.Path, err)
		}
	}
	return resp, nil
}

// Stream sends req and answers the open 2xx response, whose body the
// caller reads and closes (event streams, downloads); the request lives as
// long as ctx.
func (c *Client) Stream(ctx context.Context, req Request) (*http.Response, error) {
	resp, err := c.send(ctx, req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return nil, problemOf(resp, body)
	}
	return resp, nil
}

func (c *Client) send(ctx context.Context, req Request) (*http.Response, error) {
	u := c.base + req.Path
	if len(req.Query) > 0 {
		u += "?" + req.Query.Encode()
	}
	var body io.Reader
	contentType := req.ContentType
	switch b := req.Body.(type) {
	case nil:
	case io.Reader:
		body = b
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", req.Method, req.Path, err)
		}
		body, contentType = bytes.NewReader(j), "application/json"
	}
	hr, err := http.NewRequestWithContext(ctx, req.Method, u, body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.Path, err)
	}
	if req.ContentLength > 0 {
		hr.ContentLength = req.ContentLength
	}
	for k, vs := range req.Header {
		hr.Header[k] = vs
	}
	if contentType != "" {
		hr.Header.Set("Content-Type", contentType)
	}
	if c.token != "" {
		hr.Header.Set("Authorization", "Bearer "+c.token)
	}
	hr.Header.Set("User-Agent", "dmgr-cli")
	if req.Idempotent && hr.Header.Get("Idempotency-Key") == "" {
		hr.Header.Set("Idempotency-Key", newKey())
	}
	resp, err := c.http.Do(hr)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) && !errors.Is(err, context.Canceled) {
			return nil, fmt.Errorf("cannot reach the dmgr server at %s: %w", c.base, ue.Err)
		}
		return nil, err
	}
	return resp, nil
}

// problemOf is the error of a non-2xx answer: its problem document's
// detail, or the status line when the body is not one.
func problemOf(resp *http.Response, body []byte) error {
	e := &APIError{Status: resp.StatusCode}
	var p struct {
		Detail string `json:"detail"`
		Code   string `json:"code"`
		Title  string `json:"title"`
	}
	if json.Unmarshal(body, &p) == nil {
		e.Detail, e.Code = p.Detail, p.Code
		if e.Detail == "" {
			e.Detail = p.Title
		}
	}
	if e.Detail == "" {
		if s := strings.TrimSpace(string(body)); s != "" && len(s) < 300 {
			e.Detail = fmt.Sprintf("%d %s: %s", resp.StatusCode, http.StatusText(resp.StatusCode), s)
		}
	}
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		if d, err := time.ParseDuration(ra + "s"); err == nil {
			e.RetryAfter = d
		}
	}
	return e
}

// newKey is a random Idempotency-Key.
func newKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Accepted is the answer to a command: the operation it started (or the
// approval it filed when the group's policy holds it).
type Accepted struct {
	OperationID   string `json:"operation_id,omitempty"`
	CommitSeq     uint64 `json:"commit_seq,omitempty"`
	ApprovalID    string `json:"approval_id,omitempty"`
	ApprovalState string `json:"state,omitempty"`
}
