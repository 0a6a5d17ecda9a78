package eventstore_test

import (
	"strings"
	"testing"
	"time"

	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/internal/testenv"
)

// LoadSince reads only what was committed to one aggregate after a
// sequence, across batches and with other aggregates' commits in between.
func TestLoadSinceReadsOnlyTheAggregatesNewCommits(t *testing.T) {
	s, _ := openStore(t)
	ctx := testenv.Context(t, 60*time.Second)

	var seqs []uint64
	var last, version, lastB, versionB uint64
	// 600 commits, so that a full read takes three batches, interleaved
	// with another cluster's commits.
	for i := range 600 {
		seq, err := s.Append(ctx, commit("cluster", "a", "E"), eventstore.Expect{LastSeq: last, Version: version})
		if err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		last, version = seq, version+1
		seqs = append(seqs, seq)
		if i%3 == 0 {
			seqB, err := s.Append(ctx, commit("cluster", "b", "X"), eventstore.Expect{LastSeq: lastB, Version: versionB})
			if err != nil {
				t.Fatalf("append to b: %v", err)
			}
			lastB, versionB = seqB, versionB+1
		}
	}

	all, err := s.LoadSince(ctx, "cluster", "a", 0)
	if err != nil {
		t.Fatalf("load since 0: %v", err)
	}
	if len(all.Events) != 600 || all.LastSeq != seqs[599] || all.Version() != 600 {
		t.Fatalf("full read: %d events, last seq %d (want %d), version %d", len(all.Events), all.LastSeq, seqs[599], all.Version())
	}
	for i, e := range all.Events {
		if e.Seq != seqs[i] || e.AggregateID != "a" {
			t.Fatalf("event %d: seq %d aggregate %q, want seq %d of a", i, e.Seq, e.AggregateID, seqs[i])
		}
	}

	tail, err := s.LoadSince(ctx, "cluster", "a", seqs[596])
	if err != nil {
		t.Fatalf("load since %d: %v", seqs[596], err)
	}
	if len(tail.Events) != 3 || tail.Events[0].Seq != seqs[597] || tail.LastSeq != seqs[599] {
		t.Fatalf("tail read: %d events from seq %d, last %d; want 3 from %d, last %d",
			len(tail.Events), tail.Events[0].Seq, tail.LastSeq, seqs[597], seqs[599])
	}

	none, err := s.LoadSince(ctx, "cluster", "a", seqs[599])
	if err != nil || len(none.Events) != 0 || none.LastSeq != seqs[599] {
		t.Fatalf("read at the end: %d events, last seq %d, err %v; want none, last %d", len(none.Events), none.LastSeq, err, seqs[599])
	}
	missing, err := s.LoadSince(ctx, "cluster", "nobody", 0)
	if err != nil || len(missing.Events) != 0 || missing.LastSeq != 0 {
		t.Fatalf("read of an aggregate without commits: %+v, %v", missing, err)
	}
}

// A commit whose header fields (commit, aggregate and operation ids) hold
// a control character is refused before anything is written: a message
// header would carry them mangled, and readers of the headers (the
// operation index) would be misled.
func TestAppendRefusesHeaderFieldsAHeaderCannotCarry(t *testing.T) {
	s, _ := openStore(t)
	ctx := testenv.Context(t, 30*time.Second)
	for name, mod := range map[string]func(*eventstore.Commit){
		"operation id": func(c *eventstore.Commit) { c.OperationID = "op\n-1" },
		"aggregate id": func(c *eventstore.Commit) { c.AggregateID = "a\rb" },
		"commit id":    func(c *eventstore.Commit) { c.CommitID = "c\x00" },
	} {
		c := commit("cluster", "a", "E")
		mod(&c)
		if _, err := s.Append(ctx, c, eventstore.Expect{}); err == nil || !strings.Contains(err.Error(), name+" ") {
			t.Errorf("%s with a control character: %v", name, err)
		}
	}
	if seq, err := s.LastSeq(ctx); err != nil || seq != 0 {
		t.Fatalf("after the refusals the stream is at %d (%v), want empty", seq, err)
	}
}
