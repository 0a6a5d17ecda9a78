package httpapi

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestClassOfNamesTheLongLivedRoutes(t *testing.T) {
	tests := []struct {
		method, path string
		want         int
	}{
		{"GET", "/api/v1/operations/0190/events", classStream},
		{"GET", "/api/v1/operations//events", classPlain},
		{"GET", "/api/v1/operations/a/b/events", classPlain},
		{"POST", "/api/v1/operations/0190/events", classPlain},
		{"GET", "/api/v1/operations/0190", classPlain},
		{"GET", "/api/v1/clusters/prod-a/events", classStream},
		{"GET", "/api/v1/clusters//events", classPlain},
		{"GET", "/api/v1/clusters/prod-a/x/events", classPlain},
		{"PUT", "/api/v1/clusters/prod-a/events", classPlain},
		{"GET", "/api/v1/clusters/events", classPlain},
		{"GET", "/api/v1/clusters/prod-a/eventsx", classPlain},
		{"POST", "/api/v1/packages", classUpload},
		{"GET", "/api/v1/packages", classPlain},
		{"POST", "/api/v1/packages/x", classPlain},
		{"GET", "/healthz", classProbe},
		{"POST", "/healthz", classPlain},
		{"GET", "/readyz", classPlain},
	}
	for _, tt := range tests {
		if got := classOf(httptest.NewRequest(tt.method, tt.path, nil)); got != tt.want {
			t.Errorf("%s %s: class %d, want %d", tt.method, tt.path, got, tt.want)
		}
	}
}

// guarded serves h behind Guard on a real server with the given timeouts.
func guarded(t *testing.T, c GuardConfig, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(Guard(c)(h))
	srv.Config.ReadTimeout, srv.Config.WriteTimeout = c.ReadTimeout, c.WriteTimeout
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// Each class gets its own deadline: a plain request RequestTimeout, an
// upload one scaled to MaxUploadBody, a stream none.
func TestGuardGivesEachRequestItsDeadline(t *testing.T) {
	c := GuardConfig{RequestTimeout: 3 * time.Second, ReadTimeout: 5 * time.Second, WriteTimeout: 10 * time.Second,
		MaxUploadBody: 100 << 20, MinUploadRate: 1 << 20}
	srv := guarded(t, c, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dl, ok := r.Context().Deadline()
		if !ok {
			fmt.Fprint(w, "none")
			return
		}
		fmt.Fprintf(w, "%d", time.Until(dl).Round(time.Second)/time.Second)
	}))
	for _, tt := range []struct{ method, path, want string }{
		{"GET", "/api/v1/clusters", "3"},
		{"POST", "/api/v1/packages", "108"}, // read 5 s + 100 MiB at 1 MiB/s, then 3 s
		{"GET", "/api/v1/operations/x/events", "none"},
	} {
		req, _ := http.NewRequest(tt.method, srv.URL+tt.path, nil)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != tt.want {
			t.Errorf("%s %s: deadline in %s s, want %s", tt.method, tt.path, b, tt.want)
		}
	}
}

// When every slot is taken, a request answers 503 with Retry-After and a
// problem document at once and never reaches the handler; /healthz still
// answers; a handler's own 503 gets a Retry-After.
func TestGuardRefusesPastTheCapAtOnce(t *testing.T) {
	hold, release := make(chan struct{}), make(chan struct{})
	var reached atomic.Int32
	srv := guarded(t, GuardConfig{MaxInFlight: 2, MaxStreams: 1, RequestTimeout: time.Minute, RetryAfter: 2 * time.Second},
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/hold", "/api/v1/operations/x/events":
				hold <- struct{}{}
				<-release
			case "/busy":
				writeProblem(w, r, http.StatusServiceUnavailable, "unavailable", "busy")
				return
			}
			reached.Add(1)
			w.WriteHeader(http.StatusNoContent)
		}))
	get := func(path string) *http.Response {
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Error(err)
			return nil
		}
		return resp
	}
	done := make(chan struct{})
	for range 2 {
		go func() { get("/hold"); done <- struct{}{} }()
		<-hold
	}
	go func() { get("/api/v1/operations/x/events"); done <- struct{}{} }()
	<-hold
	for _, path := range []string{"/plain", "/api/v1/operations/y/events"} {
		resp := get(path)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var p Problem
		if err := json.Unmarshal(b, &p); err != nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "2" ||
			resp.Header.Get("Content-Type") != "application/problem+json" || p.Code != "unavailable" || !strings.Contains(p.Detail, "at once, its limit") {
			t.Fatalf("%s when full: %d %v %s", path, resp.StatusCode, resp.Header, b)
		}
	}
	if resp := get("/healthz"); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("/healthz when full: %d", resp.StatusCode)
	}
	if n := reached.Load(); n != 1 { // /healthz only
		t.Fatalf("the handler ran %d times while the server was full", n)
	}
	close(release)
	for range 3 {
		<-done
	}
	resp := get("/busy")
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "2" {
		t.Fatalf("a handler's 503: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

// A body whose Content-Length is past its limit is refused before it is
// read; the upload has its own limit.
func TestGuardRefusesALargeContentLength(t *testing.T) {
	srv := guarded(t, GuardConfig{MaxJSONBody: 100, MaxUploadBody: 1000}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, n)
	}))
	for _, tt := range []struct {
		path string
		size int
		want int
	}{{"/api/v1/clusters", 100, 200}, {"/api/v1/clusters", 101, 413}, {"/api/v1/packages", 1000, 200}, {"/api/v1/packages", 1001, 413}} {
		resp, err := srv.Client().Post(srv.URL+tt.path, "application/json", strings.NewReader(strings.Repeat("x", tt.size)))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.want || tt.want == 413 && !strings.Contains(string(b), `"code":"too_large"`) {
			t.Errorf("POST %s of %d bytes: %d %s, want %d", tt.path, tt.size, resp.StatusCode, b, tt.want)
		}
	}
}

// An event stream outlives the server's read and write timeouts, which
// cut a plain request that streams as long.
func TestGuardLetsAStreamOutliveTheServerTimeouts(t *testing.T) {
	c := GuardConfig{RequestTimeout: 200 * time.Millisecond, ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond}
	srv := guarded(t, c, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 8 {
			if _, err := fmt.Fprintf(w, "data: %d\n\n", i); err != nil {
				return
			}
			if err := http.NewResponseController(w).Flush(); err != nil {
				return
			}
			select {
			case <-r.Context().Done():
				return
			case <-time.After(150 * time.Millisecond):
			}
		}
		fmt.Fprint(w, "data: end\n\n")
	}))
	read := func(path string) string {
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path)
		b, _ := io.ReadAll(bufio.NewReader(conn))
		return string(b)
	}
	if got := read("/api/v1/operations/x/events"); !strings.Contains(got, "data: end") {
		t.Fatalf("the stream was cut:\n%s", got)
	}
	if got := read("/api/v1/clusters"); strings.Contains(got, "data: end") {
		t.Fatalf("a plain request streamed past its deadline and the write timeout:\n%s", got)
	}
}
