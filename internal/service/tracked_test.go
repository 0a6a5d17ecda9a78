package service_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/service"
	"github.com/dmgr/dmgr/internal/testenv"
)

// A tracked cluster folds its own appends and reads only newer commits,
// decides again on a conflict, and always equals a full read of the
// cluster.
func TestTrackedClusterStaysEqualToAFullRead(t *testing.T) {
	f := newService(t)
	ctx := testenv.Context(t, time.Minute)
	acc, err := f.svc.DeployCluster(ctx, service.Meta{Actor: "admin"}, service.DeployClusterRequest{Name: "c1", Version: "v8.1.0",
		Topology: "master_servers:\n  - host: 198.18.0.11\nworker_servers:\n  - host: 198.18.0.12\n"})
	if err != nil {
		t.Fatal(err)
	}
	op := acc.OperationID
	same := func(tr *service.TrackedCluster) {
		t.Helper()
		got, ok := tr.State()
		want, seq, _, err := f.svc.ClusterState(ctx, "c1")
		if err != nil || !ok {
			t.Fatalf("state: %v %v", ok, err)
		}
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(want)
		if string(g) != string(w) || tr.LastSeq() != seq {
			t.Fatalf("tracked state (seq %d)\n%s\nfull read (seq %d)\n%s", tr.LastSeq(), g, seq, w)
		}
	}

	tr := f.svc.TrackCluster("c1")
	if _, ok := tr.State(); ok {
		t.Fatal("a cluster tracked from nothing has a state before its first refresh")
	}
	if n, err := tr.Refresh(ctx); err != nil || n != 2 {
		t.Fatalf("first refresh = %d events, %v; want the deploy's 2", n, err)
	}
	same(tr)

	check := "check/198.18.0.11"
	if _, rec, err := tr.ReportStep(ctx, domain.StepReport{Operation: op, Step: check, Attempt: 1, Agent: "a1"}, 0); err != nil || !rec {
		t.Fatalf("report: %v %v", rec, err)
	}
	if n, err := tr.Refresh(ctx); err != nil || n != 0 {
		t.Fatalf("refresh after its own append read %d events (%v); want none", n, err)
	}
	same(tr)

	// Someone else commits: the next decision conflicts, reads that
	// commit, and decides on it (the cancel makes the report settle the
	// operation).
	if _, err := f.svc.CancelOperation(ctx, service.Meta{Actor: "admin"}, op); err != nil {
		t.Fatal(err)
	}
	_, rec, err := tr.ReportStep(ctx, domain.StepReport{Operation: op, Step: check, Attempt: 1, Agent: "a1", Finished: true, OK: true}, 0)
	if err != nil || !rec {
		t.Fatalf("report after a commit of someone else: %v %v", rec, err)
	}
	same(tr)
	if c, _ := tr.State(); c.FindOperation(op).Status != domain.OperationStatusCancelled {
		t.Fatalf("operation %s, want cancelled", c.FindOperation(op).Status)
	}
	// A report that changes nothing appends nothing.
	before := tr.LastSeq()
	if _, rec, err := tr.ReportStep(ctx, domain.StepReport{Operation: op, Step: check, Attempt: 1, Agent: "a1", Finished: true, OK: true}, 0); err != nil || rec || tr.LastSeq() != before {
		t.Fatalf("a repeated report: recorded %v, %v, seq %d → %d", rec, err, before, tr.LastSeq())
	}

	// A second tracker of the same cluster starts from the whole history.
	tr2 := f.svc.TrackCluster("c1")
	if _, err := tr2.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	same(tr2)

	// An unknown cluster is not found, and nothing is appended.
	none := f.svc.TrackCluster("nope")
	if _, err := none.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := none.SettleOperation(ctx, "x", 0); domain.ErrorCode(err) != domain.NotFound {
		t.Fatalf("settle on an unknown cluster: %v", err)
	}
}
