package eventstore_test

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/internal/testenv"
)

// The index's tail survives the loss of its consumer (deleted on the
// server, as a restart of a non-replicated server or an operator may do):
// an operation committed afterwards is still found, not declared unknown.
func TestOperationIndexSurvivesTheLossOfItsConsumer(t *testing.T) {
	s, js := openStore(t)
	ctx := testenv.Context(t, time.Minute)
	idx := s.NewOperationIndex("cluster")
	t.Cleanup(idx.Close)
	appendOp := func(cluster string) string {
		t.Helper()
		c := commit("cluster", cluster, "OperationRequested")
		c.OperationID = uuid.NewString()
		last, err := s.Load(ctx, "cluster", cluster)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Append(ctx, c, eventstore.Expect{LastSeq: last.LastSeq, Version: last.Version()}); err != nil {
			t.Fatal(err)
		}
		return c.OperationID
	}
	find := func(op, cluster string) {
		t.Helper()
		// A lookup may fail while the tail is lost; the next one starts
		// it again. It never answers "unknown".
		for {
			ref, ok, err := idx.Lookup(ctx, op)
			switch {
			case err != nil && ctx.Err() == nil:
				t.Logf("lookup while the tail recovers: %v", err)
				continue
			case err != nil:
				t.Fatal(err)
			case !ok || ref.Home != cluster:
				t.Fatalf("operation %s: %+v %v, want cluster %s", op, ref, ok, cluster)
			}
			return
		}
	}
	find(appendOp("prod-a"), "prod-a")
	stream, err := js.Stream(ctx, eventstore.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	names := stream.ConsumerNames(ctx)
	n := 0
	for name := range names.Name() {
		if err := stream.DeleteConsumer(ctx, name); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n == 0 {
		t.Fatal("the index's tail has no consumer on the stream")
	}
	find(appendOp("prod-b"), "prod-b")
	find(appendOp("prod-a"), "prod-a")
}
