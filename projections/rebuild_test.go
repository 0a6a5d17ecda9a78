package projections

import (
	"context"
	"strings"
	"testing"
	"time"
)

// answers are every query's answer, as JSON.
func (e *env) answers(st *Store) map[string]string {
	e.t.Helper()
	out := map[string]string{}
	put := func(k string, v any, err error) {
		e.t.Helper()
		must(e.t, err, k)
		out[k] = jsonOf(e.t, v)
	}
	cs, err := st.Clusters(e.ctx)
	put("clusters", cs, err)
	for _, c := range cs {
		v, err := st.Cluster(e.ctx, c.Name)
		put("cluster "+c.Name, v, err)
		is, err := st.Instances(e.ctx, c.Name, "")
		put("instances "+c.Name, is, err)
	}
	ms, err := st.Machines(e.ctx)
	put("machines", ms, err)
	ps, err := st.Packages(e.ctx)
	put("packages", ps, err)
	ops, err := st.Operations(e.ctx)
	put("operations", ops, err)
	for _, o := range ops {
		v, err := st.Operation(e.ctx, o.ID)
		put("operation "+o.ID, v, err)
	}
	out["audit"] = jsonOf(e.t, e.allAudit(st, AuditQuery{Limit: 10}))
	out["audit prod-a"] = jsonOf(e.t, e.allAudit(st, AuditQuery{Cluster: "prod-a", Limit: 10}))
	return out
}

// Acceptance 5: a rebuild gives the same answers as the live projections;
// a rebuild while commands arrive and the live projector runs switches
// the live projector to the new generation without losing a commit.
func TestRebuildAnswersAsTheLiveProjections(t *testing.T) {
	e := newEnv(t, "")
	live := e.start(e.store)
	s := newScenario(e)
	s.run()
	e.caughtUp(e.store, 30*time.Second)
	before := e.answers(e.store)

	// A rebuild from another process (a Store of its own).
	res, err := Rebuild(e.ctx, e.projectorConfig(e.newStore()))
	must(t, err, "rebuild")
	if res.From != 1 || res.To != 2 || res.Seq != e.head() {
		t.Fatalf("rebuild: %+v (stream at %d)", res, e.head())
	}
	rebuilt := e.newStore()
	if g, _ := rebuilt.Generation(e.ctx); g != 2 {
		t.Fatalf("current generation after the rebuild: %d", g)
	}
	after := e.answers(rebuilt)
	for k, v := range before {
		if after[k] != v {
			t.Fatalf("%s differs after the rebuild:\nlive:    %s\nrebuilt: %s", k, v, after[k])
		}
	}
	if len(after) != len(before) {
		t.Fatalf("%d answers before, %d after", len(before), len(after))
	}

	// Again, while commands keep arriving.
	stop := make(chan struct{})
	loaded := e.load(20*time.Millisecond, stop)
	time.Sleep(300 * time.Millisecond)
	res, err = Rebuild(e.ctx, e.projectorConfig(e.newStore()))
	must(t, err, "rebuild under load")
	time.Sleep(300 * time.Millisecond)
	close(stop)
	t.Logf("rebuild under load: %+v; %d commands arrived meanwhile", res, loaded())
	if res.To != 3 {
		t.Fatalf("second rebuild made generation %d", res.To)
	}
	// The live projector follows the switch and carries the new
	// generation on: everything reaches generation 3.
	s.run2()
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	for {
		if g, _ := e.store.Generation(ctx); g == 3 && live.m.generation.Load() == 3 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the live projector did not switch to generation 3 (at %d)", live.m.generation.Load())
		case <-time.After(50 * time.Millisecond):
		}
	}
	e.caughtUp(e.store, 30*time.Second)
	n, _ := e.streamEvents()
	if got, err := e.store.EventCount(e.ctx); err != nil || got != uint64(n) {
		t.Fatalf("generation 3 has %d events (%v), the stream %d", got, err, n)
	}
	if all := e.allAudit(e.store, AuditQuery{Limit: 100}); len(all) != n {
		t.Fatalf("audit shows %d events, the stream has %d", len(all), n)
	}
	e.sameAnswers(e.store)

	// Generation 1 is dropped, 2 is kept; old consumers are gone.
	var tables []string
	rows, err := e.conn.Query(e.ctx, "SELECT name FROM system.tables WHERE database = ? ORDER BY name", e.db)
	must(t, err, "tables")
	for rows.Next() {
		var n string
		must(t, rows.Scan(&n), "scan")
		tables = append(tables, n)
	}
	rows.Close()
	joined := " " + strings.Join(tables, " ") + " "
	if strings.Contains(joined, "_g1 ") || !strings.Contains(joined, " events_g2 ") || !strings.Contains(joined, " events_g3 ") {
		t.Fatalf("tables after two rebuilds: %v", tables)
	}
	for _, g := range []uint32{1, 2} {
		if _, err := e.js.Consumer(e.ctx, "DMGR_EVENTS", ConsumerName(g)); err == nil {
			t.Errorf("consumer %s still exists", ConsumerName(g))
		}
	}
}
