package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
)

// expectedAudit filters the stream's events the way the audit trail is
// specified, independently of the projector's code, newest first.
func expectedAudit(t *testing.T, evs []eventstore.Event, keep func(eventstore.Event, int) bool) []string {
	t.Helper()
	var out []string
	idx := 0
	for i, e := range evs {
		if i > 0 && evs[i-1].Seq == e.Seq {
			idx++
		} else {
			idx = 0
		}
		if keep(e, idx) {
			out = append(out, fmt.Sprintf("%d.%d", e.Seq, idx))
		}
	}
	slices.Reverse(out)
	return out
}

func keysOf(evs []AuditEvent) []string {
	out := []string{}
	for _, e := range evs {
		out = append(out, fmt.Sprintf("%d.%d", e.Seq, e.Index))
	}
	return out
}

// concerns reports whether an event concerns a machine: the machine's own
// events, steps on it, deploys that place instances on it.
func concerns(t *testing.T, e eventstore.Event, host string) bool {
	if e.AggregateType == domain.AggregateMachine && e.AggregateID == host {
		return true
	}
	de, err := domain.DecodeEvent(e.Type, e.SchemaVersion, e.Payload)
	if err != nil {
		return strings.Contains(string(e.Payload), `"host":"`+host+`"`)
	}
	switch ev := de.(type) {
	case domain.StepStarted:
		return ev.Host == host
	case domain.StepSucceeded:
		return ev.Host == host
	case domain.StepFailed:
		return ev.Host == host
	case domain.ClusterDeployRequested:
		for _, in := range ev.Instances {
			if in.Host == host {
				return true
			}
		}
	}
	return false
}

// Acceptance 4: every filter, their combinations, the time range, and
// pagination — stable while events arrive — against the stream itself.
func TestAuditFiltersAndPagination(t *testing.T) {
	e := newEnv(t, "")
	e.start(e.store)
	s := newScenario(e)
	s.run()
	e.caughtUp(e.store, 30*time.Second)
	st, err := e.events.LoadFilter(e.ctx, eventstore.AllSubjects)
	must(t, err, "load stream")
	evs := st.Events
	mid := evs[len(evs)/3].Time
	late := evs[2*len(evs)/3].Time
	host := s.machines[0]
	opA := s.ops[6] // the deploy of prod-a

	cases := []struct {
		name string
		q    AuditQuery
		keep func(eventstore.Event, int) bool
	}{
		{"all", AuditQuery{}, func(eventstore.Event, int) bool { return true }},
		// A cluster's trail: its own events, and the reservations its
		// deploys and scale-outs made on machines (which name it).
		{"cluster", AuditQuery{Cluster: "prod-a"}, func(e eventstore.Event, _ int) bool {
			return (e.AggregateType == domain.AggregateCluster && e.AggregateID == "prod-a") || placedBy(t, e, "prod-a")
		}},
		{"cluster with a dot", AuditQuery{Cluster: "prod.b"}, func(e eventstore.Event, _ int) bool {
			return (e.AggregateType == domain.AggregateCluster && e.AggregateID == "prod.b") || placedBy(t, e, "prod.b")
		}},
		{"machine", AuditQuery{Machine: host}, func(e eventstore.Event, _ int) bool { return concerns(t, e, host) }},
		{"actor", AuditQuery{Actor: "bob"}, func(e eventstore.Event, _ int) bool { return e.Actor == "bob" }},
		{"operation", AuditQuery{Operation: opA}, func(e eventstore.Event, _ int) bool { return e.OperationID == opA || placedIn(t, e, opA) }},
		{"type", AuditQuery{Types: []string{domain.TypeStepFailed}}, func(e eventstore.Event, _ int) bool { return e.Type == domain.TypeStepFailed }},
		{"types", AuditQuery{Types: []string{domain.TypeOperationFailed, domain.TypeOperationRetried, domain.TypeMachineRemoved}}, func(e eventstore.Event, _ int) bool {
			return e.Type == domain.TypeOperationFailed || e.Type == domain.TypeOperationRetried || e.Type == domain.TypeMachineRemoved
		}},
		{"since", AuditQuery{Since: mid}, func(e eventstore.Event, _ int) bool { return !e.Time.Before(mid) }},
		{"until", AuditQuery{Until: mid}, func(e eventstore.Event, _ int) bool { return e.Time.Before(mid) }},
		{"since and until", AuditQuery{Since: mid, Until: late}, func(e eventstore.Event, _ int) bool {
			return !e.Time.Before(mid) && e.Time.Before(late)
		}},
		{"cluster, actor, type and time", AuditQuery{Cluster: "prod-a", Actor: "dmgr-coordinator", Types: []string{domain.TypeStepSucceeded}, Since: mid},
			func(e eventstore.Event, _ int) bool {
				return e.AggregateID == "prod-a" && e.Actor == "dmgr-coordinator" && e.Type == domain.TypeStepSucceeded && !e.Time.Before(mid)
			}},
		{"machine and operation", AuditQuery{Machine: host, Operation: opA}, func(e eventstore.Event, _ int) bool {
			return concerns(t, e, host) && (e.OperationID == opA || placedIn(t, e, opA))
		}},
		{"nothing matches", AuditQuery{Cluster: "prod-a", Actor: "nobody"}, func(eventstore.Event, int) bool { return false }},
	}
	for _, window := range []uint64{0, 3} {
		// Window 3: queries without a cluster look back 3, 48, 768, …
		// sequences at a time, as they do on large trails.
		e.store.auditWindow = window
		for _, c := range cases {
			want := expectedAudit(t, evs, c.keep)
			if len(want) == 0 && c.name != "nothing matches" {
				t.Fatalf("%s: the scenario has no such events; the test is wrong", c.name)
			}
			for _, limit := range []int{1, 4, 1000} {
				q := c.q
				q.Limit = limit
				if got := keysOf(e.allAudit(e.store, q)); strings.Join(got, " ") != strings.Join(want, " ") {
					t.Fatalf("%s (limit %d, window %d):\n got %v\nwant %v", c.name, limit, window, got, want)
				}
			}
		}
	}
	e.store.auditWindow = 0

	// One page in full: fields as committed.
	p, err := e.store.Audit(e.ctx, AuditQuery{Types: []string{domain.TypeStepFailed}, Limit: 1})
	must(t, err, "audit")
	got := p.Events[0]
	var orig eventstore.Event
	for _, ev := range evs {
		if ev.Type == domain.TypeStepFailed {
			orig = ev
		}
	}
	if got.EventID != orig.EventID || got.CommitID != orig.CommitID || !got.Time.Equal(orig.Time) || got.Actor != orig.Actor ||
		got.Cluster != "prod-a" || got.Outcome != "failed" || got.Step == "" || len(got.Machines) != 1 || got.OperationID != opA ||
		string(got.Payload) != string(orig.Payload) || got.AggregateVersion != orig.AggregateVersion {
		t.Fatalf("audit event:\n got %s\nfrom %s", jsonOf(t, got), jsonOf(t, orig))
	}

	// The coordinator's fencing token is in the trail.
	p, err = e.store.Audit(e.ctx, AuditQuery{Cluster: "prod-c", Types: []string{domain.TypeClusterLeaderElected, domain.TypeOperationCancelled}})
	must(t, err, "audit")
	if len(p.Events) != 2 || p.Events[0].Outcome != "cancelled" || p.Events[0].FencingToken != 7 || p.Events[1].FencingToken != 7 {
		t.Fatalf("leadership and cancel in the audit trail: %s", jsonOf(t, p.Events))
	}

	// Paging is stable while events arrive: the pages after the first are
	// the ones the first page's moment had.
	want := expectedAudit(t, evs, func(eventstore.Event, int) bool { return true })
	q := AuditQuery{Limit: 5}
	first, err := e.store.Audit(e.ctx, q)
	must(t, err, "audit")
	for i := 0; i < 5; i++ {
		s.registerMachine("late")
	}
	e.caughtUp(e.store, 30*time.Second)
	paged := keysOf(first.Events)
	q.Cursor = first.NextCursor
	paged = append(paged, keysOf(e.allAudit(e.store, q))...)
	if strings.Join(paged, " ") != strings.Join(want, " ") {
		t.Fatalf("pages while events arrived:\n got %v\nwant %v", paged, want)
	}
	fresh, err := e.store.Audit(e.ctx, AuditQuery{Limit: 5})
	must(t, err, "audit")
	if fresh.Events[0].Actor != "late" {
		t.Fatalf("a new first page does not start with the newest events: %s", jsonOf(t, fresh.Events[0]))
	}

	// Bad limits, time ranges and cursors are refused with what is wrong.
	for _, q := range []AuditQuery{{Limit: -1}, {Limit: MaxAuditLimit + 1}, {Since: late, Until: mid}, {Cursor: "nope"},
		{Cursor: cursor{1, 0}.String() + "x"}, {Cursor: "djEuMSBPUiAxPTEuMA"}} {
		if _, err := e.store.Audit(e.ctx, q); domain.ErrorCode(err) != domain.Invalid {
			t.Errorf("audit %+v: %v, want an invalid-input error", q, err)
		}
	}
}

// Acceptance 4: values are data, never SQL. Quotes, backslashes, comment
// markers, NUL and statement separators in every filter match exactly the
// events that carry them, and nothing else happens.
func TestAuditFiltersAreBoundNotSpliced(t *testing.T) {
	e := newEnv(t, "")
	e.start(e.store)
	newScenario(e).run()
	hostile := []string{
		`x' OR '1'='1`, `x\' OR 1=1 --`, `'; DROP TABLE events_g1; --`, `x') OR ('1'='1`, `x'])) OR 1=1 --`,
		"x\x00y", `\\'\\`, `%`, `_`, `*`, `?`, `$1`, `@p`, "x\n' OR 1=1", `{db}`, `"`, "ü'é", `) UNION ALL SELECT 1 --`,
	}
	// Events that carry the hostile values as data: an audit-only
	// aggregate type, with the values as actor, cluster, host, operation.
	for i, v := range hostile {
		payload, _ := json.Marshal(map[string]string{"cluster": v, "host": v, "step": v})
		_, err := e.events.Append(e.ctx, eventstore.Commit{CommitID: uuid.NewString(), AggregateType: "note", AggregateID: fmt.Sprintf("n%d", i),
			Time: time.Now().UTC(), Actor: v, OperationID: headerSafe(v), Events: []eventstore.NewEvent{{Type: "Note" + fmt.Sprint(i), Payload: payload}}}, eventstore.Expect{})
		must(t, err, "append")
	}
	e.caughtUp(e.store, 30*time.Second)
	before, err := e.store.EventCount(e.ctx)
	must(t, err, "count")
	for i, v := range hostile {
		for name, q := range map[string]AuditQuery{
			"cluster": {Cluster: v}, "machine": {Machine: v}, "actor": {Actor: v}, "operation": {Operation: headerSafe(v)},
			"type": {Types: []string{v, "Note" + fmt.Sprint(i)}, Actor: v},
		} {
			p, err := e.store.Audit(e.ctx, q)
			if err != nil {
				t.Fatalf("%s %q: %v", name, v, err)
			}
			if len(p.Events) != 1 || p.Events[0].Type != "Note"+fmt.Sprint(i) {
				t.Fatalf("%s %q: %d events %s, want exactly the one that carries it", name, v, len(p.Events), jsonOf(t, p.Events))
			}
		}
		p, err := e.store.Audit(e.ctx, AuditQuery{Types: []string{v}})
		if err != nil || len(p.Events) != 0 {
			t.Fatalf("type %q: %v %d events", v, err, len(p.Events))
		}
	}
	after, err := e.store.EventCount(e.ctx)
	must(t, err, "count")
	n, _ := e.streamEvents()
	if before != after || after != uint64(n) {
		t.Fatalf("events before %d, after %d, stream %d", before, after, n)
	}
	e.sameAnswers(e.store)
}

// A batch written twice (a replay after a crash between insert and ack)
// is shown once by every read.
func TestReplayedBatchIsShownOnce(t *testing.T) {
	e := newEnv(t, "")
	newScenario(e).run()
	gen, err := e.store.EnsureSchema(e.ctx)
	must(t, err, "schema")
	st, err := e.events.LoadFilter(e.ctx, eventstore.AllSubjects)
	must(t, err, "load")
	var commits []commit
	for i := 0; i < len(st.Events); {
		j := i
		for j < len(st.Events) && st.Events[j].Seq == st.Events[i].Seq {
			j++
		}
		commits = append(commits, commit{seq: st.Events[i].Seq, events: st.Events[i:j]})
		i = j
	}
	p := NewProjector(e.projectorConfig(e.store))
	for round := 0; round < 2; round++ {
		f := newFolder(func(ctx2 context.Context, typ, id string) ([]eventstore.Event, error) {
			s, err := e.events.Load(ctx2, typ, id)
			return s.Events, err
		}, e.log, func(eventstore.Event, error) {})
		rows, err := f.project(e.ctx, commits)
		must(t, err, "project")
		must(t, p.insert(e.ctx, &insertPlan{rows: rows}, gen), "insert")
		must(t, recordProgress(e.ctx, e.conn, e.db, gen, rows.maxSeq), "progress")
	}
	if raw := e.rawEventRows(e.store); raw != 2*uint64(len(st.Events)) {
		t.Logf("%d rows for %d events: ClickHouse merged some duplicates already", raw, len(st.Events))
	}
	if n, err := e.store.EventCount(e.ctx); err != nil || n != uint64(len(st.Events)) {
		t.Fatalf("distinct events %d (%v), want %d", n, err, len(st.Events))
	}
	if all := e.allAudit(e.store, AuditQuery{Limit: 3}); len(all) != len(st.Events) {
		t.Fatalf("audit shows %d events, want %d", len(all), len(st.Events))
	}
	e.sameAnswers(e.store)
}

// headerSafe is v with its control characters replaced: an operation id
// travels in a message header as well, and the event store refuses one
// that a header cannot carry.
func headerSafe(v string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, v)
}

// placedBy reports whether e is a machine's reservation for cluster.
func placedBy(t *testing.T, e eventstore.Event, cluster string) bool {
	p, ok := placement(t, e)
	return ok && p.Cluster == cluster
}

// placedIn reports whether e is a machine's reservation made by operation.
func placedIn(t *testing.T, e eventstore.Event, operation string) bool {
	p, ok := placement(t, e)
	return ok && p.Operation == operation
}

func placement(t *testing.T, e eventstore.Event) (domain.InstancesPlaced, bool) {
	t.Helper()
	if e.Type != domain.TypeInstancesPlaced {
		return domain.InstancesPlaced{}, false
	}
	de, err := domain.DecodeEvent(e.Type, e.SchemaVersion, e.Payload)
	if err != nil {
		t.Fatal(err)
	}
	return de.(domain.InstancesPlaced), true
}
