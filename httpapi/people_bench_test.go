package httpapi_test

import (
	"net/http"
	"sort"
	"testing"
	"time"

	"github.com/dmgr/dmgr/internal/pkgstore"
)

// BenchmarkAuthenticatedRequest: GET /api/v1/clusters (from the event
// store, 2 clusters) with a session token, and with the bootstrap admin
// token; the difference is what authentication costs. Reports p50/p99.
func BenchmarkAuthenticatedRequest(b *testing.B) {
	s := newStack(b, pkgstore.DefaultLimits())
	if r := s.do("POST", "/api/v1/users", map[string]any{"name": "bench", "password": "bench-password-1", "super_admin": true}); r.status != http.StatusCreated {
		b.Fatalf("user: %d %s", r.status, r.body)
	}
	var login struct{ Token string }
	s.do("POST", "/api/v1/login", map[string]any{"user": "bench", "password": "bench-password-1"}, noToken()).json(s.t, &login)
	for name, tok := range map[string]string{"session": login.Token, "admin-token": token} {
		b.Run(name, func(b *testing.B) {
			lat := make([]time.Duration, 0, b.N)
			for b.Loop() {
				start := time.Now()
				if r := s.do("GET", "/api/v1/clusters", nil, as(tok)); r.status != http.StatusOK {
					b.Fatalf("%d %s", r.status, r.body)
				}
				lat = append(lat, time.Since(start))
			}
			reportPercentiles(b, lat)
		})
	}
}

// BenchmarkLogin: POST /api/v1/login with the default argon2id
// parameters, one at a time. Reports p50/p99.
func BenchmarkLogin(b *testing.B) {
	s := newStack(b, pkgstore.DefaultLimits())
	if r := s.do("POST", "/api/v1/users", map[string]any{"name": "bench", "password": "bench-password-1"}); r.status != http.StatusCreated {
		b.Fatalf("user: %d %s", r.status, r.body)
	}
	lat := make([]time.Duration, 0, b.N)
	for b.Loop() {
		start := time.Now()
		if r := s.do("POST", "/api/v1/login", map[string]any{"user": "bench", "password": "bench-password-1"}, noToken()); r.status != http.StatusOK {
			b.Fatalf("%d %s", r.status, r.body)
		}
		lat = append(lat, time.Since(start))
	}
	reportPercentiles(b, lat)
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	at := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	b.ReportMetric(float64(at(0.50).Microseconds()), "p50-µs")
	b.ReportMetric(float64(at(0.99).Microseconds()), "p99-µs")
}
