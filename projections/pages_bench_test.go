package projections

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// BenchmarkListMachines pages through DMGR_BENCH_MACHINES (30,000)
// registered machines, projected by the projector from their commits:
// each op is one page of 100 (GET /machines?limit=100) after a random
// host, or the first page. Target (issue [7]): p99 < 50 ms.
//
//	go test -run '^$' -bench BenchmarkListMachines -benchtime 200x ./projections/
func BenchmarkListMachines(b *testing.B) {
	n := envInt("DMGR_BENCH_MACHINES", 30_000)
	e := newEnv(b, "")
	g := newGenerator(0, 0)
	g.hosts = g.hosts[:0]
	for i := 0; i < n; i++ {
		g.hosts = append(g.hosts, fmt.Sprintf("10.%d.%d.%d", i/62500, i/250%250, 1+i%250))
	}
	publish(b, e.js, g.machines())
	st := e.newStore()
	p := e.start(st)
	e.caughtUp(st, 5*time.Minute)
	e.stop(p)

	rng := rand.New(rand.NewPCG(3, 4))
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		q := ListQuery{Limit: 100}
		if i%10 != 0 {
			q.After = g.hosts[rng.IntN(len(g.hosts))]
		}
		t0 := time.Now()
		page, err := st.ListMachines(e.ctx, q)
		lat = append(lat, time.Since(t0))
		must(b, err, "list machines")
		if len(page.Items) == 0 {
			b.Fatalf("empty page after %q", q.After)
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	at := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(at(0.5), "p50-ms")
	b.ReportMetric(at(0.99), "p99-ms")
}
