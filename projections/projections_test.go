package projections

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
)

// A package without a doc comment is a defect.
func TestPackageHasADocComment(t *testing.T) {
	b, err := readFile("doc.go")
	must(t, err, "read doc.go")
	if !strings.Contains(b, "// Package projections ") {
		t.Fatal("doc.go has no package comment")
	}
}

// The projector reads the stream itself and decodes with
// eventstore.DecodeCommit: it gets what Load gets.
func TestWireFormatMatchesTheEventStore(t *testing.T) {
	e := newEnvWithoutClickHouse(t)
	c := eventstore.Commit{CommitID: uuid.NewString(), AggregateType: "cluster", AggregateID: "a.b", Time: time.Date(2030, 1, 2, 3, 4, 5, 6789, time.UTC),
		Actor: "alice", OperationID: "op-1", CorrelationID: "corr", CausationID: "cause",
		Events: []eventstore.NewEvent{{Type: "X", SchemaVersion: 2, Payload: json.RawMessage(`{"a":1}`)}, {Type: "Y", Payload: json.RawMessage(`{}`)}}}
	seq, err := e.events.Append(e.ctx, c, eventstore.Expect{})
	must(t, err, "append")
	want, err := e.events.Load(e.ctx, "cluster", "a.b")
	must(t, err, "load")
	st, err := e.js.Stream(e.ctx, eventstore.StreamName)
	must(t, err, "stream")
	m, err := st.GetMsg(e.ctx, seq)
	must(t, err, "get")
	got, err := eventstore.DecodeCommit(seq, m.Data)
	must(t, err, "decode")
	if w, g := jsonOf(t, want.Events), jsonOf(t, got); w != g {
		t.Fatalf("decoded commit differs:\neventstore:  %s\nprojections: %s", w, g)
	}
}

// Acceptance 1 (in part): after a scenario of commands, ClickHouse has as
// many events as the stream, the audit trail shows each once, and every
// query answers as the service's own fold of the stream does.
func TestProjectionsAnswerAsTheEventStoreFold(t *testing.T) {
	e := newEnv(t, "")
	e.start(e.store)
	newScenario(e).run()
	e.caughtUp(e.store, 30*time.Second)

	n, commits := e.streamEvents()
	got, err := e.store.EventCount(e.ctx)
	must(t, err, "count")
	if got != uint64(n) {
		t.Fatalf("ClickHouse has %d events, the stream %d (in %d commits)", got, n, commits)
	}
	all := e.allAudit(e.store, AuditQuery{Limit: 7})
	if len(all) != n {
		t.Fatalf("audit pages show %d events, the stream has %d", len(all), n)
	}
	e.sameAnswers(e.store)

	// The instances view: per host, existing clusters only.
	insts, err := e.store.Instances(e.ctx, "", "198.18.0.11")
	must(t, err, "instances")
	if len(insts) != 2 || insts[0].Cluster != "prod-a" || insts[0].Host != "198.18.0.11" {
		t.Fatalf("instances on 198.18.0.11: %s", jsonOf(t, insts))
	}
	insts, err = e.store.Instances(e.ctx, "prod.b", "")
	must(t, err, "instances")
	if len(insts) != 2 || insts[0].Role != domain.RoleMaster {
		t.Fatalf("instances of prod.b: %s", jsonOf(t, insts))
	}
}

// Migrations are recorded per generation, run once, and a second start
// (or a second server) changes nothing.
func TestMigrationsAreVersionedAndIdempotent(t *testing.T) {
	e := newEnv(t, "")
	// A generation made by an older dmgr: migration 1 only.
	for _, stmt := range bootstrap {
		must(t, e.conn.Exec(e.ctx, expand(stmt, e.db, 0)), "bootstrap")
	}
	_, err := applyMigrations(e.ctx, e.conn, e.db, 1, migrations[:1])
	must(t, err, "migration 1")
	must(t, e.store.setGeneration(e.ctx, 1), "generation")
	hasColumn := func(table, col string) bool {
		var n uint64
		must(t, e.conn.QueryRow(e.ctx, "SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = ?", e.db, table, col).Scan(&n), "columns")
		return n == 1
	}
	if hasColumn("events_g1", "fencing_token") {
		t.Fatal("migration 1 has the column of migration 2")
	}
	// This dmgr starts: the rest runs; two more starts (or servers), one
	// with a later migration, change nothing else.
	gen, err := e.store.EnsureSchema(e.ctx)
	must(t, err, "ensure schema")
	if gen != 1 || !hasColumn("events_g1", "fencing_token") {
		t.Fatalf("after the upgrade: generation %d, fencing_token %v", gen, hasColumn("events_g1", "fencing_token"))
	}
	extra := append(append([]Migration(nil), migrations...), Migration{Version: 4, Name: "test: a table and a column",
		Statements: []string{"CREATE TABLE IF NOT EXISTS {db}.extra{g} (x UInt8) ENGINE = MergeTree() ORDER BY x"},
		AddColumns: []AddColumn{{Table: "extra", Column: "y", Type: "String", After: "x"}}})
	for i := 0; i < 2; i++ {
		gen, err = e.newStore().ensureSchema(e.ctx, extra)
		must(t, err, "ensure schema again")
		if gen != 1 {
			t.Fatalf("generation after a restart: %d", gen)
		}
	}
	var versions []uint32
	rows, err := e.conn.Query(e.ctx, "SELECT version FROM "+e.db+".schema_migrations FINAL WHERE generation = 1 ORDER BY version")
	must(t, err, "read migrations")
	for rows.Next() {
		var v uint32
		must(t, rows.Scan(&v), "scan")
		versions = append(versions, v)
	}
	rows.Close()
	if jsonOf(t, versions) != "[1,2,3,4]" || !hasColumn("extra_g1", "y") {
		t.Fatalf("recorded migrations: %v", versions)
	}
	// Running a migration's steps again (a crash before it was recorded)
	// is harmless.
	for _, m := range extra {
		for _, c := range m.AddColumns {
			must(t, addColumn(e.ctx, e.conn, e.db, 1, c), "add column again")
		}
	}
	// A migration list out of order is refused.
	bad := []Migration{{Version: 2, Name: "b"}, {Version: 1, Name: "a"}}
	if _, err := applyMigrations(e.ctx, e.conn, e.db, 1, bad); err == nil || !strings.Contains(err.Error(), "out of order") {
		t.Fatalf("out-of-order migrations: %v", err)
	}
	if _, err := New(e.conn, Options{Database: "x; DROP DATABASE default"}); err == nil {
		t.Fatal("a database name that is not an identifier was accepted")
	}
}

// A projector that starts late on a stream that already has history folds
// each aggregate it meets mid-way from the stream, and answers the same.
func TestProjectorStartedLateLoadsAggregatesFromTheStream(t *testing.T) {
	e := newEnv(t, "")
	s := newScenario(e)
	s.run()
	// Project the first half, stop, then the rest with a fresh projector.
	p := e.start(e.store, func(c *ProjectorConfig) { c.MaxBatch = 3 })
	half := e.head() / 2
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	_, err := e.store.WaitFor(ctx, half)
	cancel()
	must(t, err, "wait for half")
	e.stop(p)
	at, err := e.store.progress(e.ctx, 1)
	must(t, err, "progress")
	if at >= e.head() {
		t.Logf("the first projector finished before it was stopped (at %d)", at)
	}
	p = e.start(e.newStore())
	e.caughtUp(e.store, 30*time.Second)
	e.sameAnswers(e.store)
	n, _ := e.streamEvents()
	got, err := e.store.EventCount(e.ctx)
	must(t, err, "count")
	if got != uint64(n) {
		t.Fatalf("ClickHouse has %d events, the stream %d", got, n)
	}
	_ = p
}

// The audit fields read from a decoded event are the ones decoding its
// payload gives, for every event of a scenario.
func TestAuditFieldsOfDecodedEventsMatchTheirPayloads(t *testing.T) {
	e := newEnvWithClickHouseUnused(t)
	newScenario(e).run()
	st, err := e.events.LoadFilter(e.ctx, eventstore.AllSubjects)
	must(t, err, "load")
	types := map[string]bool{}
	for _, ev := range st.Events {
		de, err := domain.DecodeEvent(ev.Type, ev.SchemaVersion, ev.Payload)
		must(t, err, "decode")
		var want auditFields
		must(t, json.Unmarshal(ev.Payload, &want), "unmarshal")
		if got := fieldsOf(de); jsonOf(t, got) != jsonOf(t, want) {
			t.Fatalf("%s: fields %s, payload says %s", ev.Type, jsonOf(t, got), jsonOf(t, want))
		}
		types[ev.Type] = true
	}
	if len(types) < 12 {
		t.Fatalf("the scenario has only %d event types: %v", len(types), types)
	}
}

// TestStepStateJSONDecodesAsEncodingJSON: the step state written into a
// step row by hand decodes to what encoding/json's encoding decodes to,
// whatever the text holds.
func TestStepStateJSONDecodesAsEncodingJSON(t *testing.T) {
	for _, s := range []domain.StepState{
		{},
		{Status: domain.StepStatusRunning, Attempt: 2, Agent: "agent-1"},
		{Status: domain.StepStatusFailed, Attempt: 1, Agent: "a", Error: "exit 2: \"quoted\" <tag> & \\ back\nline \u2028 ☃ \x01", ExitCode: -1, DurationMS: 1234},
		{Status: "x\xffy", Error: "bad \xfe utf-8"},
	} {
		got := stepStateJSON(s)
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var g, w domain.StepState
		if err := json.Unmarshal([]byte(got), &g); err != nil {
			t.Fatalf("%q is not JSON: %v", got, err)
		}
		if err := json.Unmarshal(want, &w); err != nil {
			t.Fatal(err)
		}
		if g != w {
			t.Errorf("%q decodes to %+v, encoding/json's %s to %+v", got, g, want, w)
		}
	}
}

func TestNewCommitsLeavesRedeliveriesOutAndRefusesAGap(t *testing.T) {
	seqs := func(cs []commit) []uint64 {
		var out []uint64
		for _, c := range cs {
			out = append(out, c.seq)
		}
		return out
	}
	batch := func(seqs ...uint64) []commit {
		var cs []commit
		for _, s := range seqs {
			cs = append(cs, commit{seq: s})
		}
		return cs
	}
	for _, tc := range []struct {
		name         string
		batch        []commit
		folded, next uint64
		want         []uint64
		wantNext     uint64
		wantErr      string
		sameSlice    bool
	}{
		{name: "all new, in order", batch: batch(5, 6, 7), folded: 4, next: 5, want: []uint64{5, 6, 7}, wantNext: 8, sameSlice: true},
		{name: "first batch after positioning", batch: batch(9, 10), folded: 4, want: []uint64{9, 10}, wantNext: 11, sameSlice: true},
		{name: "redeliveries first", batch: batch(3, 4, 5, 6), folded: 4, next: 5, want: []uint64{5, 6}, wantNext: 7},
		{name: "a redelivery in between", batch: batch(5, 3, 6), folded: 4, next: 5, want: []uint64{5, 6}, wantNext: 7},
		{name: "first and last look consecutive, one is old", batch: batch(5, 3, 7), folded: 4, next: 5, wantErr: "commit 7 arrived where 6 was expected"},
		{name: "a commit twice", batch: batch(5, 5, 6), folded: 4, next: 5, wantErr: "commit 5 arrived where 6 was expected"},
		{name: "a gap", batch: batch(5, 7), folded: 4, next: 5, wantErr: "commit 7 arrived where 6 was expected"},
		{name: "starts past next", batch: batch(6, 7), folded: 4, next: 5, wantErr: "commit 6 arrived where 5 was expected"},
		{name: "only redeliveries", batch: batch(2, 3), folded: 4, next: 5, want: nil, wantNext: 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next := tc.next
			got, err := newCommits(tc.batch, tc.folded, &next)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(seqs(got), tc.want) || next != tc.wantNext {
				t.Fatalf("got %v next %d, want %v next %d", seqs(got), next, tc.want, tc.wantNext)
			}
			if same := len(got) > 0 && &got[0] == &tc.batch[0]; same != tc.sameSlice {
				t.Fatalf("returned the batch's own slice: %v, want %v", same, tc.sameSlice)
			}
		})
	}
}

// TestDiffStepsWritesWhatChanged: diffSteps gives a row for each step
// whose state changed, for states outside the plan, and a deleted row for
// each step that is gone, and nothing else.
func TestDiffStepsWritesWhatChanged(t *testing.T) {
	plan := []domain.Step{{ID: "a", Kind: domain.StepStart}, {ID: "b", Kind: domain.StepStart, Needs: []string{"a"}}}
	op := func(p []domain.Step, steps map[string]domain.StepState) *domain.Operation {
		return &domain.Operation{ID: "op", Plan: p, Steps: steps}
	}
	running := domain.StepState{Status: "running", Attempt: 1}
	done := domain.StepState{Status: "succeeded", Attempt: 1}
	type row struct {
		id      string
		status  string
		deleted uint8
		inPlan  uint8
	}
	rows := func(out *rowSet) []row {
		var r []row
		for _, s := range out.steps {
			r = append(r, row{s.ID, s.Status, s.Deleted, s.InPlan})
		}
		return r
	}
	for _, tc := range []struct {
		name      string
		before    *domain.Operation
		after     *domain.Operation
		want      []row
		wantPlans int
	}{
		{"a new operation: its plan, no rows for pending steps", nil, op(plan, map[string]domain.StepState{}), nil, 1},
		{"a new operation with a started step", nil, op(plan, map[string]domain.StepState{"a": running}), []row{{"a", "running", 0, 1}}, 1},
		{"one step changed", op(plan, map[string]domain.StepState{"a": running}), op(plan, map[string]domain.StepState{"a": done}),
			[]row{{"a", "succeeded", 0, 1}}, 0},
		{"one step changed, the other started", op(plan, map[string]domain.StepState{"a": running}),
			op(plan, map[string]domain.StepState{"a": done, "b": running}), []row{{"a", "succeeded", 0, 1}, {"b", "running", 0, 1}}, 0},
		{"a state outside the plan appears", op(plan, map[string]domain.StepState{"a": done}),
			op(plan, map[string]domain.StepState{"a": done, "x": running}), []row{{"x", "running", 0, 0}}, 0},
		{"a state outside the plan goes", op(plan, map[string]domain.StepState{"a": done, "x": running}),
			op(plan, map[string]domain.StepState{"a": done}), []row{{"x", "", 1, 0}}, 0},
		{"a plan step's state goes", op(plan, map[string]domain.StepState{"a": done}),
			op(plan, map[string]domain.StepState{}), []row{{"a", "pending", 0, 1}}, 0},
		{"the plan loses a step", op(plan, map[string]domain.StepState{"a": done}),
			op(plan[:1], map[string]domain.StepState{"a": done}), []row{{"a", "succeeded", 0, 1}, {"b", "", 1, 0}}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := &rowSet{}
			if err := diffSteps(out, tc.before, tc.after, 9); err != nil {
				t.Fatal(err)
			}
			if got := rows(out); !slices.Equal(got, tc.want) || len(out.plans) != tc.wantPlans {
				t.Fatalf("rows %+v and %d plan rows, want %+v and %d", got, len(out.plans), tc.want, tc.wantPlans)
			}
		})
	}
}
