package eventstore_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/internal/testenv"
)

// An atomic append stores every commit, at consecutive sequences in the
// order given, each on its own subject.
func TestAppendAtomicStoresEveryCommitOrNone(t *testing.T) {
	s, _ := openStore(t)
	ctx := testenv.Context(t, 30*time.Second)
	m1, err := s.Append(ctx, commit("machine", "10.0.0.1", "MachineRegistered"), eventstore.Expect{})
	if err != nil {
		t.Fatal(err)
	}
	c := commit("cluster", "a", "ClusterDeployRequested", "OperationRequested")
	p := commit("machine", "10.0.0.1", "MachinePlaced")
	seqs, err := s.AppendAtomic(ctx, []eventstore.Conditional{
		{Commit: c, Expect: eventstore.Expect{}},
		{Commit: p, Expect: eventstore.Expect{LastSeq: m1, Version: 1}},
	})
	if err != nil {
		t.Fatalf("append atomic: %v", err)
	}
	if len(seqs) != 2 || seqs[0] != m1+1 || seqs[1] != m1+2 {
		t.Fatalf("sequences %v, want [%d %d]", seqs, m1+1, m1+2)
	}
	st, err := s.Load(ctx, "machine", "10.0.0.1")
	if err != nil || len(st.Events) != 2 || st.Events[1].Type != "MachinePlaced" || st.Events[1].AggregateVersion != 2 || st.LastSeq != seqs[1] {
		t.Fatalf("machine after the batch: %+v %v", st, err)
	}

	// A batch whose second condition fails stores nothing: not even the
	// first commit, whose own condition held.
	before, _ := s.LastSeq(ctx)
	_, err = s.AppendAtomic(ctx, []eventstore.Conditional{
		{Commit: commit("cluster", "b", "ClusterDeployRequested"), Expect: eventstore.Expect{}},
		{Commit: commit("machine", "10.0.0.1", "MachinePlaced"), Expect: eventstore.Expect{LastSeq: m1, Version: 1}}, // stale
	})
	if !errors.Is(err, eventstore.ErrConflict) {
		t.Fatalf("stale condition: %v, want ErrConflict", err)
	}
	after, _ := s.LastSeq(ctx)
	b, _ := s.Load(ctx, "cluster", "b")
	if after != before || len(b.Events) != 0 {
		t.Fatalf("a refused batch stored something: last seq %d → %d, cluster b %d events", before, after, len(b.Events))
	}

	// Sent again (its answer lost), the stored batch answers its sequences.
	again, err := s.AppendAtomic(ctx, []eventstore.Conditional{
		{Commit: c, Expect: eventstore.Expect{}},
		{Commit: p, Expect: eventstore.Expect{LastSeq: m1, Version: 1}},
	})
	if err != nil || len(again) != 2 || again[0] != seqs[0] || again[1] != seqs[1] {
		t.Fatalf("retried batch: %v %v, want %v", again, err, seqs)
	}
	if n, _ := s.LastSeq(ctx); n != after {
		t.Fatalf("a retried batch was stored twice: last seq %d, want %d", n, after)
	}
	// Two commits on one subject cannot go in one batch.
	if _, err := s.AppendAtomic(ctx, []eventstore.Conditional{
		{Commit: commit("cluster", "c", "X")}, {Commit: commit("cluster", "c", "Y")},
	}); err == nil {
		t.Fatal("two commits on one subject were accepted in one batch")
	}
}

// Of many batches racing for one aggregate, each expecting what it read,
// exactly one is stored.
func TestAppendAtomicRacingBatchesStoreOne(t *testing.T) {
	s, _ := openStore(t)
	ctx := testenv.Context(t, 30*time.Second)
	m1, err := s.Append(ctx, commit("machine", "h", "MachineRegistered"), eventstore.Expect{})
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, conflicts := 0, 0
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.AppendAtomic(ctx, []eventstore.Conditional{
				{Commit: commit("cluster", "race-"+string(rune('a'+i)), "ClusterDeployRequested")},
				{Commit: commit("machine", "h", "MachinePlaced"), Expect: eventstore.Expect{LastSeq: m1, Version: 1}},
			})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, eventstore.ErrConflict):
				conflicts++
			default:
				t.Errorf("batch %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	st, err := s.Load(ctx, "machine", "h")
	if ok != 1 || conflicts != n-1 || err != nil || len(st.Events) != 2 {
		t.Fatalf("%d stored, %d conflicts, machine has %d events (%v); want 1, %d, 2", ok, conflicts, len(st.Events), err, n-1)
	}
	clusters, err := s.Subjects(ctx, eventstore.TypeSubjects("cluster"))
	if err != nil || len(clusters) != 1 {
		t.Fatalf("cluster subjects %v (%v): the refused batches' cluster commits were stored", clusters, err)
	}
}
