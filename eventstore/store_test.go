package eventstore_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/internal/testenv"
)

func openStore(t *testing.T) (*eventstore.Store, jetstream.JetStream) {
	t.Helper()
	n := testenv.NATS(t)
	_, js := testenv.JetStream(t, n)
	s, err := eventstore.Open(testenv.Context(t, 30*time.Second), js, eventstore.Config{Replicas: 1})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return s, js
}

func commit(aggType, id string, types ...string) eventstore.Commit {
	c := eventstore.Commit{
		CommitID: uuid.NewString(), AggregateType: aggType, AggregateID: id,
		Time: time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC), Actor: "admin",
		OperationID: "op-1", CorrelationID: "corr-1", CausationID: "cause-1",
	}
	for _, ty := range types {
		c.Events = append(c.Events, eventstore.NewEvent{Type: ty, Payload: json.RawMessage(`{"k":"v"}`)})
	}
	return c
}

func TestAppendAndLoadKeepEnvelopeAndVersions(t *testing.T) {
	s, _ := openStore(t)
	ctx := testenv.Context(t, 30*time.Second)

	seq1, err := s.Append(ctx, commit("cluster", "prod.a", "A", "B"), eventstore.Expect{})
	if err != nil {
		t.Fatalf("first append: %v", err)
	}
	c2 := commit("cluster", "prod.a", "C")
	seq2, err := s.Append(ctx, c2, eventstore.Expect{LastSeq: seq1, Version: 2})
	if err != nil {
		t.Fatalf("second append: %v", err)
	}
	st, err := s.Load(ctx, "cluster", "prod.a")
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if st.LastSeq != seq2 || st.Version() != 3 || len(st.Events) != 3 {
		t.Fatalf("load: last seq %d version %d events %d, want %d 3 3", st.LastSeq, st.Version(), len(st.Events), seq2)
	}
	e := st.Events[2]
	if e.Type != "C" || e.CommitID != c2.CommitID || e.AggregateType != "cluster" || e.AggregateID != "prod.a" ||
		e.AggregateVersion != 3 || e.SchemaVersion != 1 || e.Actor != "admin" || e.OperationID != "op-1" ||
		e.CorrelationID != "corr-1" || e.CausationID != "cause-1" || !e.Time.Equal(c2.Time) || string(e.Payload) != `{"k":"v"}` {
		t.Fatalf("envelope not kept: %+v", e)
	}
	id, err := uuid.Parse(e.EventID)
	if err != nil || id.Version() != 7 {
		t.Fatalf("event id %q is not a UUIDv7 (%v)", e.EventID, err)
	}
	if st.Events[0].Seq != seq1 || st.Events[1].Seq != seq1 {
		t.Fatalf("events of one commit must share its sequence: %+v", st.Events[:2])
	}
	// A cluster whose name has a dot is one subject token: "prod" is a different aggregate.
	other, err := s.Load(ctx, "cluster", "prod")
	if err != nil || len(other.Events) != 0 || other.LastSeq != 0 {
		t.Fatalf("load of unrelated aggregate: %+v %v", other, err)
	}
}

func TestAppendWithStaleSequenceIsAConflict(t *testing.T) {
	s, _ := openStore(t)
	ctx := testenv.Context(t, 30*time.Second)
	seq, err := s.Append(ctx, commit("machine", "10.0.0.1", "A"), eventstore.Expect{})
	if err != nil {
		t.Fatal(err)
	}
	for _, exp := range []eventstore.Expect{{LastSeq: 0}, {LastSeq: seq + 5}, {LastSeq: seq - 1}} {
		_, err := s.Append(ctx, commit("machine", "10.0.0.1", "B"), exp)
		if !errors.Is(err, eventstore.ErrConflict) {
			t.Fatalf("expect %+v: got %v, want ErrConflict", exp, err)
		}
	}
	st, _ := s.Load(ctx, "machine", "10.0.0.1")
	if len(st.Events) != 1 {
		t.Fatalf("a conflicting append left %d events, want 1", len(st.Events))
	}
}

func TestAppendWithFilterGuardsEveryMatchedSubject(t *testing.T) {
	s, _ := openStore(t)
	ctx := testenv.Context(t, 30*time.Second)
	if _, err := s.Append(ctx, commit("machine", "h1", "A"), eventstore.Expect{}); err != nil {
		t.Fatal(err)
	}
	world, err := s.LoadFilter(ctx, eventstore.AllSubjects)
	if err != nil {
		t.Fatal(err)
	}
	// Someone else changes another aggregate after our read...
	if _, err := s.Append(ctx, commit("machine", "h2", "A"), eventstore.Expect{}); err != nil {
		t.Fatal(err)
	}
	// ...so a decision that read the whole world must be refused.
	_, err = s.Append(ctx, commit("cluster", "c1", "X"), eventstore.Expect{LastSeq: world.LastSeq, Filter: eventstore.AllSubjects})
	if !errors.Is(err, eventstore.ErrConflict) {
		t.Fatalf("got %v, want ErrConflict", err)
	}
	world, _ = s.LoadFilter(ctx, eventstore.AllSubjects)
	if _, err := s.Append(ctx, commit("cluster", "c1", "X"), eventstore.Expect{LastSeq: world.LastSeq, Filter: eventstore.AllSubjects}); err != nil {
		t.Fatalf("append after reload: %v", err)
	}
}

func TestRetriedCommitIsDeduplicated(t *testing.T) {
	s, _ := openStore(t)
	ctx := testenv.Context(t, 30*time.Second)
	c := commit("package", "dm-v1.0.0-amd64", "A")
	seq1, err := s.Append(ctx, c, eventstore.Expect{})
	if err != nil {
		t.Fatal(err)
	}
	seq2, err := s.Append(ctx, c, eventstore.Expect{})
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	if seq1 != seq2 {
		t.Fatalf("retried commit got seq %d, first %d", seq2, seq1)
	}
	st, _ := s.Load(ctx, "package", "dm-v1.0.0-amd64")
	if len(st.Events) != 1 {
		t.Fatalf("retried commit stored %d times", len(st.Events))
	}
}

func TestStreamRefusesDeleteAndPurge(t *testing.T) {
	s, js := openStore(t)
	ctx := testenv.Context(t, 30*time.Second)
	seq, err := s.Append(ctx, commit("cluster", "c", "A"), eventstore.Expect{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, eventstore.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMsg(ctx, seq); err == nil {
		t.Fatal("deleting a commit succeeded")
	}
	if err := st.SecureDeleteMsg(ctx, seq); err == nil {
		t.Fatal("secure-deleting a commit succeeded")
	}
	if err := st.Purge(ctx); err == nil {
		t.Fatal("purging the stream succeeded")
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSubject(eventstore.Subject("cluster", "c"))); err == nil {
		t.Fatal("purging a subject succeeded")
	}
	// Opening again (as every start-up does) keeps the protection and the data.
	if _, err := eventstore.Open(ctx, js, eventstore.Config{Replicas: 1}); err != nil {
		t.Fatalf("second open: %v", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !info.Config.DenyDelete || !info.Config.DenyPurge || info.State.Msgs != 1 {
		t.Fatalf("stream config or state changed: deny delete %v deny purge %v msgs %d",
			info.Config.DenyDelete, info.Config.DenyPurge, info.State.Msgs)
	}
}

func TestConcurrentAppendsOnOneAggregateOneWins(t *testing.T) {
	s, _ := openStore(t)
	ctx := testenv.Context(t, 30*time.Second)
	const n = 50
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, conflicts := 0, 0
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Append(ctx, commit("cluster", "race", "Deployed"), eventstore.Expect{})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, eventstore.ErrConflict):
				conflicts++
			default:
				t.Errorf("unexpected error: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 || conflicts != n-1 {
		t.Fatalf("wins %d conflicts %d, want 1 and %d", wins, conflicts, n-1)
	}
}

func TestEscapeTokenKeepsIdsOneToken(t *testing.T) {
	for in, want := range map[string]string{
		"prod":     "prod",
		"prod.a":   "prod%2Ea",
		"10.0.0.1": "10%2E0%2E0%2E1",
		"a*b>c":    "a%2Ab%3Ec",
		"50%":      "50%25",
		"a b":      "a%20b",
	} {
		if got := eventstore.EscapeToken(in); got != want {
			t.Errorf("EscapeToken(%q) = %q, want %q", in, got, want)
		}
	}
	if eventstore.EscapeToken("a.b") == eventstore.EscapeToken("a%2Eb") {
		t.Fatal("escaping is not injective")
	}
	_ = fmt.Sprint()
}

// Loads leave no consumer behind: the server allows 1,000 consumers per
// stream by default, and a busy server loads far more often than that.
func TestLoadsLeaveNoConsumerBehind(t *testing.T) {
	s, js := openStore(t)
	ctx := testenv.Context(t, 2*time.Minute)
	if _, err := s.Append(ctx, commit("machine", "198.18.0.11", "MachineRegistered"), eventstore.Expect{}); err != nil {
		t.Fatal(err)
	}
	for i := range 1100 {
		if st, err := s.Load(ctx, "machine", "198.18.0.11"); err != nil || len(st.Events) != 1 {
			t.Fatalf("load %d: %d events, %v", i, len(st.Events), err)
		}
	}
	info, err := js.Stream(ctx, eventstore.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if n := info.CachedInfo().State.Consumers; n > 5 {
		t.Errorf("%d consumers left on the stream after 1,100 loads", n)
	}
}
