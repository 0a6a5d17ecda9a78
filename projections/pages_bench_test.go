package projections

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/dmgr/dmgr/domain"
)

// BenchmarkListMachines pages through DMGR_BENCH_MACHINES (30,000)
// registered machines, projected by the projector from their commits:
// each op is one page of 100 (GET /machines?limit=100) after a random
// host, or the first page. Target (issue [7]): p99 < 50 ms.
//
//	go test -run '^$' -bench BenchmarkListMachines -benchtime 200x ./projections/
func BenchmarkListMachines(b *testing.B) {
	benchmarkListMachines(b, nil, nil)
}

// BenchmarkListMachinesOfAGroup is BenchmarkListMachines for a member of
// group g1, which owns one machine in 100 (the others are the default
// group's): each op is one page of 100 of g1's machines after a random
// one of them, or the first page.
func BenchmarkListMachinesOfAGroup(b *testing.B) {
	benchmarkListMachines(b, func(i int) string {
		if i%100 == 0 {
			return "g1"
		}
		return domain.DefaultGroup
	}, []string{"g1"})
}

// benchmarkListMachines pages through the machines that groups see, each
// machine i owned by groupOf(i) (nil: every machine the default group's).
func benchmarkListMachines(b *testing.B, groupOf func(int) string, groups []string) {
	n := envInt("DMGR_BENCH_MACHINES", 30_000)
	e := newEnv(b, "")
	g := newGenerator(0, 0)
	g.hosts = g.hosts[:0]
	owner := map[string]string{}
	var seen []string // the hosts the caller sees
	for i := 0; i < n; i++ {
		h := fmt.Sprintf("10.%d.%d.%d", i/62500, i/250%250, 1+i%250)
		g.hosts = append(g.hosts, h)
		if groupOf != nil {
			owner[h] = groupOf(i)
		}
		if groups == nil || slices.Contains(groups, owner[h]) {
			seen = append(seen, h)
		}
	}
	if groupOf != nil {
		g.groupOf = func(_, id string) string { return owner[id] }
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
		q := ListQuery{Limit: 100, Groups: groups}
		if i%10 != 0 {
			q.After = seen[rng.IntN(len(seen)-1)] // not the last: the page after it is empty
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
