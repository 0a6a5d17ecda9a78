package cli

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// These tests drive eventStream's side of the protocol (reconnection with
// Last-Event-ID, keepalives, refusals) with a local HTTP server that
// drops connections on purpose, which the real server cannot be made to
// do on cue; the real server's stream is followed by the end-to-end tests
// in cmd/dmgr.

func stepData(seq int, typ, step string, attempt int) string {
	return fmt.Sprintf(`{"seq":%d,"index":0,"type":%q,"time":"2026-12-06T04:31:02Z","operation":"op1","step":%q,"attempt":%d,"host":"h1"}`, seq, typ, step, attempt)
}

func writeEvent(w http.ResponseWriter, seq int, typ, data string) {
	fmt.Fprintf(w, "id: %d.0\nevent: %s\ndata: %s\n\n", seq, typ, data)
	w.(http.Flusher).Flush()
}

func TestCLIEventStreamResumesWithLastEventID(t *testing.T) {
	var (
		mu      sync.Mutex
		lastIDs []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		lastIDs = append(lastIDs, r.Header.Get("Last-Event-ID"))
		n := len(lastIDs)
		mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer tok" || r.Header.Get("Accept") != "text/event-stream" {
			http.Error(w, "bad request headers", 400)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		switch n {
		case 1: // two events, a keepalive, then the connection drops mid-message
			fmt.Fprint(w, "retry: 50\n\n")
			writeEvent(w, 1, "StepStarted", stepData(1, "StepStarted", "s1", 1))
			fmt.Fprint(w, ": keepalive\n\n")
			writeEvent(w, 2, "StepSucceeded", stepData(2, "StepSucceeded", "s1", 1))
			fmt.Fprint(w, "id: 3.0\ndata: {\"seq\":3,")
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // the connection is cut
		case 2: // the server is briefly unavailable
			w.Header().Set("Retry-After", "0")
			http.Error(w, `{"detail":"busy"}`, http.StatusServiceUnavailable)
		default: // resumed after the last whole event
			writeEvent(w, 3, "StepStarted", stepData(3, "StepStarted", "s2", 1))
			writeEvent(w, 4, "OperationSucceeded", `{"seq":4,"type":"OperationSucceeded","operation":"op1","attempt":1}`)
		}
	}))
	defer srv.Close()
	c := newClient(srv.URL, "tok", 5*time.Second)
	var got []string
	var reconnects int
	s := &eventStream{c: c, path: "/api/v1/operations/op1/events", onReconnect: func(error, time.Duration) { reconnects++ }}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := s.run(ctx, func(ev Event) (bool, error) {
		got = append(got, fmt.Sprintf("%d %s %s", ev.Seq, ev.Type, ev.Step))
		return ev.isEnd(), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"1 StepStarted s1", "2 StepSucceeded s1", "3 StepStarted s2", "4 OperationSucceeded "}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("events %q, want %q", got, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(lastIDs, ",") != ",2.0,2.0" {
		t.Errorf("Last-Event-ID sent: %q, want none, then 2.0 twice", lastIDs)
	}
	if reconnects != 2 {
		t.Errorf("%d reconnections, want 2", reconnects)
	}
}

// A connection that brings nothing, not even keepalives, is dropped and
// made again.
func TestCLIEventStreamIdleConnectionIsRemade(t *testing.T) {
	var (
		mu    sync.Mutex
		calls int
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		w.(http.Flusher).Flush()
		if n == 1 {
			<-r.Context().Done() // silent until the client gives up on it
			return
		}
		writeEvent(w, 9, "OperationFailed", `{"seq":9,"type":"OperationFailed","error":"boom","attempt":1}`)
	}))
	defer srv.Close()
	s := &eventStream{c: newClient(srv.URL, "tok", 5*time.Second), path: "/x", idle: 200 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var end Event
	if err := s.run(ctx, func(ev Event) (bool, error) { end = ev; return ev.isEnd(), nil }); err != nil {
		t.Fatal(err)
	}
	if end.Type != "OperationFailed" || end.Error != "boom" || calls != 2 {
		t.Fatalf("end %+v after %d connections", end, calls)
	}
}

// A refusal (404, 401, 403) is not asked again: its detail is the error.
func TestCLIEventStreamRefusalIsFinal(t *testing.T) {
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"status":404,"code":"not_found","detail":"operation op9 not found"}`)
	}))
	defer srv.Close()
	s := &eventStream{c: newClient(srv.URL, "tok", 5*time.Second), path: "/x"}
	err := s.run(context.Background(), func(Event) (bool, error) { return false, nil })
	if err == nil || err.Error() != "operation op9 not found" || calls != 1 {
		t.Fatalf("err %v after %d calls", err, calls)
	}
}

// A server that keeps failing is given up on after giveUp, with why.
func TestCLIEventStreamGivesUp(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusBadGateway)
	}))
	defer srv.Close()
	s := &eventStream{c: newClient(srv.URL, "tok", time.Second), path: "/x", giveUp: 300 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := s.run(ctx, func(Event) (bool, error) { return false, nil })
	if err == nil || !strings.Contains(err.Error(), "could not be resumed") || !strings.Contains(err.Error(), "502") {
		t.Fatalf("err %v", err)
	}
}

// An end event of an attempt that was retried is history: following goes
// on to the current attempt's end, whether the events name their attempt
// or not.
func TestCLITrackerCurrentEnd(t *testing.T) {
	for _, named := range []bool{true, false} {
		tr := newTracker(operationView{Attempt: 2})
		attempt := func(n int) int {
			if named {
				return n
			}
			return 0
		}
		old := Event{Type: evOperationFailed, Attempt: attempt(1)}
		tr.apply(old)
		if tr.isCurrentEnd(old) {
			t.Errorf("named=%v: the first attempt's failure ended the follow of attempt 2", named)
		}
		tr.apply(Event{Type: evOperationRetried, Attempt: attempt(2)})
		now := Event{Type: evOperationSucceeded, Attempt: attempt(2)}
		if !tr.isCurrentEnd(now) {
			t.Errorf("named=%v: attempt 2's end did not end the follow", named)
		}
	}
}
