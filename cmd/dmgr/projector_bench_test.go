package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dmgr/dmgr/internal/leadership"
)

// projectorServer answers the server whose projector leads, from the
// projector's election key (its value is host-pid).
func (h *haCluster) projectorServer(tb testing.TB) (string, int64) {
	tb.Helper()
	value, token := "", int64(0)
	for _, c := range h.single {
		if value, token = electedKey(tb, c, leadership.ProjectorLeaderKeys); token != 0 {
			break
		}
	}
	if token == 0 {
		return "", 0
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, s := range h.servers {
		if s.alive() && strings.HasSuffix(value, fmt.Sprintf("-%d", s.cmd.Process.Pid)) {
			return id, token
		}
	}
	return "", token
}

// waitProjector waits until a server other than not runs the projector.
func (h *haCluster) waitProjector(tb testing.TB, not string, timeout time.Duration) string {
	tb.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(20 * time.Millisecond) {
		if id, _ := h.projectorServer(tb); id != "" && id != not {
			return id
		}
		if time.Now().After(deadline) {
			tb.Fatalf("no projector other than %q after %s", not, timeout)
		}
	}
}

// BenchmarkProjectorFailover stops the server that runs the projector, 5
// times by kill -9 and 5 times by SIGTERM, and measures how long until
// another server's projector is elected: about the session TTL
// (--session-ttl, the same lease as a cluster's leader) after a kill, at
// once after a SIGTERM (the term is resigned).
//
//	go test -run '^$' -bench BenchmarkProjectorFailover -benchtime 1x ./cmd/dmgr/
func BenchmarkProjectorFailover(b *testing.B) {
	h := startHA(b, 3)
	first := h.waitProjector(b, "", time.Minute)
	b.Logf("projector on %s", first)
	var killed, stopped []time.Duration
	b.ResetTimer()
	for range b.N {
		for i := range 10 {
			old, _ := h.projectorServer(b)
			s := h.server(old)
			start := time.Now()
			if i%2 == 0 {
				s.kill(b)
			} else {
				s.terminate(b)
			}
			h.waitProjector(b, old, 4*sessionTTL)
			if i%2 == 0 {
				killed = append(killed, time.Since(start))
			} else {
				stopped = append(stopped, time.Since(start))
			}
			h.startServer(b, old, s.endpoint)
		}
	}
	b.StopTimer()
	slices.Sort(killed)
	slices.Sort(stopped)
	b.ReportMetric(float64(killed[len(killed)/2].Milliseconds()), "kill-median-ms")
	b.ReportMetric(float64(killed[len(killed)-1].Milliseconds()), "kill-max-ms")
	b.ReportMetric(float64(stopped[len(stopped)/2].Milliseconds()), "sigterm-median-ms")
	b.ReportMetric(float64(stopped[len(stopped)-1].Milliseconds()), "sigterm-max-ms")
	b.Logf("projector failover (TTL %s): kill -9 %v, SIGTERM %v", sessionTTL, killed, stopped)
}
