package httpapi_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dmgr/dmgr/httpapi"
	"github.com/dmgr/dmgr/internal/pkgstore"
	"github.com/dmgr/dmgr/internal/service"
)

// /readyz runs its check once for the callers of one TTL, concurrent or
// not (that concurrent callers join one computation is shown by
// TestReadyCacheSharesOneComputation).
func TestReadyzIsCached(t *testing.T) {
	var calls atomic.Int32
	release := make(chan struct{})
	entered := make(chan struct{}, 100)
	s := newStackWith(t, pkgstore.DefaultLimits(), func(_ *service.Config, hc *httpapi.Config) {
		hc.ReadyTTL = time.Hour // "cached" must not depend on how fast this machine is
		hc.Ready = func(ctx context.Context) error {
			calls.Add(1)
			entered <- struct{}{}
			<-release
			return nil
		}
	})
	const n = 20
	var wg sync.WaitGroup
	statuses := make([]int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = s.do("GET", "/readyz", nil, noToken()).status
		}()
	}
	<-entered // the one computation runs; the other callers wait for it or find its result
	close(release)
	wg.Wait()
	for i, st := range statuses {
		if st != http.StatusOK {
			t.Fatalf("caller %d: %d", i, st)
		}
	}
	for range 10 {
		if r := s.do("GET", "/readyz", nil, noToken()); r.status != 200 {
			t.Fatalf("cached readyz: %d %s", r.status, r.body)
		}
	}
	if got := calls.Load(); got != 1 {
		t.Fatalf("the readiness check ran %d times for %d calls within its TTL, want once", got, n+10)
	}
}

// /readyz computes with a deadline: a check that hangs makes it answer 503
// (not hang), the answer names no address, and an expired result is
// computed again.
func TestReadyzHasADeadlineAndExpires(t *testing.T) {
	var calls atomic.Int32
	var fail atomic.Bool
	s := newStackWith(t, pkgstore.DefaultLimits(), func(_ *service.Config, hc *httpapi.Config) {
		hc.ReadyTTL = time.Nanosecond // every call finds the last result expired
		hc.ReadyTimeout = 50 * time.Millisecond
		hc.Ready = func(ctx context.Context) error {
			calls.Add(1)
			if fail.Load() {
				return errors.New("clickhouse: dial tcp 10.1.2.3:9000: connection refused")
			}
			<-ctx.Done() // hangs until its deadline
			return ctx.Err()
		}
	})
	r := s.do("GET", "/readyz", nil, noToken())
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Fatalf("hanging check: %d %s", r.status, r.body)
	}
	fail.Store(true)
	r = s.do("GET", "/readyz", nil, noToken())
	p := r.problem(t)
	if r.status != http.StatusServiceUnavailable || p.Detail != "not ready: clickhouse does not answer (see the server log)" || strings.Contains(string(r.body), "10.1.2.3") {
		t.Fatalf("failing check: %d %s", r.status, r.body)
	}
	if got := calls.Load(); got != 2 {
		t.Fatalf("the check ran %d times, want 2 (the first result expired)", got)
	}
	if !strings.Contains(s.logs.String(), "10.1.2.3") {
		t.Fatal("the log does not have the readiness error's details")
	}
}

// /metrics needs the metrics token when one is set (bearer scheme in any
// case), and only that token; without one it is open.
func TestMetricsToken(t *testing.T) {
	const metricsToken = "metrics-token-0123456789"
	s := newStackWith(t, pkgstore.DefaultLimits(), func(_ *service.Config, hc *httpapi.Config) { hc.MetricsToken = metricsToken })
	for _, tc := range []struct {
		name   string
		auth   string
		status int
	}{
		{"no token", "", 401},
		{"the admin token", "Bearer " + token, 401},
		{"a wrong token", "Bearer nope", 401},
		{"another scheme", "Basic " + metricsToken, 401},
		{"the metrics token", "Bearer " + metricsToken, 200},
		{"the metrics token, scheme in lower case", "bearer " + metricsToken, 200},
		{"the metrics token, scheme in upper case", "BEARER " + metricsToken, 200},
	} {
		opts := []reqOpt{noToken()}
		if tc.auth != "" {
			opts = []reqOpt{withHeader("Authorization", tc.auth)}
		}
		r := s.do("GET", "/metrics", nil, opts...)
		if r.status != tc.status {
			t.Errorf("%s: %d, want %d (%s)", tc.name, r.status, tc.status, r.body)
		}
		if tc.status == 200 && !strings.Contains(string(r.body), "dmgr_projection_up") {
			t.Errorf("%s: body %s", tc.name, r.body)
		}
		if tc.status == 401 && r.header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: no WWW-Authenticate", tc.name)
		}
	}
	// The metrics token is no admin token.
	if r := s.do("GET", "/api/v1/machines", nil, withHeader("Authorization", "Bearer "+metricsToken)); r.status != 401 {
		t.Fatalf("the metrics token on the API: %d", r.status)
	}
	open := newStack(t, pkgstore.DefaultLimits())
	if r := open.do("GET", "/metrics", nil, noToken()); r.status != 200 {
		t.Fatalf("without a metrics token /metrics is open: %d", r.status)
	}
}
