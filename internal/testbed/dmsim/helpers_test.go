package dmsim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startProc runs f in the background; the returned stop cancels it and waits.
func startProc(t *testing.T, f func(ctx context.Context) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("process returned: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("process did not stop")
		}
	}
	t.Cleanup(stop)
	return stop
}

func httpDo(method, url string) (int, []byte, error) {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return 0, nil, err
	}
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func getJSON(addr, path string, out any) error {
	code, b, err := httpDo("GET", "http://"+addr+path)
	if err != nil {
		return err
	}
	if code != 200 {
		return fmt.Errorf("GET %s: %d %s", path, code, b)
	}
	return json.Unmarshal(b, out)
}

func waitFor(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, d, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func getMembers(addr string) (listMemberResponse, error) {
	var r listMemberResponse
	err := getJSON(addr, "/apis/v1alpha1/members?leader=true&master=true&worker=true", &r)
	return r, err
}

// summary reduces a members answer to "leader|m1+,m2-|w1:free".
func summary(r listMemberResponse) string {
	s := ""
	for _, m := range r.Members {
		switch {
		case m.Leader != nil:
			s += m.Leader.Name + "|"
		case m.Master != nil:
			for i, mi := range m.Master.Masters {
				if i > 0 {
					s += ","
				}
				a := "-"
				if mi.Alive {
					a = "+"
				}
				s += mi.Name + a
			}
			s += "|"
		case m.Worker != nil:
			for i, w := range m.Worker.Workers {
				if i > 0 {
					s += ","
				}
				s += w.Name + ":" + w.Stage
			}
		}
	}
	return s
}

func wantSummary(t *testing.T, addrs []string, want string) {
	t.Helper()
	waitFor(t, 20*time.Second, "members "+want, func() error {
		for _, a := range addrs {
			r, err := getMembers(a)
			if err != nil {
				return err
			}
			if got := summary(r); got != want {
				return fmt.Errorf("master %s: got %q", a, got)
			}
		}
		return nil
	})
}
