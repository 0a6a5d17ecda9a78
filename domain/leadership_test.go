package domain

import (
	"strings"
	"testing"
)

// reportAs decides a report as the coordinator with token writer and
// folds its events.
func reportAs(t *testing.T, c Cluster, r StepReport, writer int64) (Cluster, []Event) {
	t.Helper()
	evs, err := DecideStepReport(&c, r, writer)
	if err != nil {
		t.Fatalf("report %+v as %d: %v", r, writer, err)
	}
	for _, e := range evs {
		c = EvolveCluster(c, e)
	}
	return c, evs
}

func elect(t *testing.T, c Cluster, token int64, who string) Cluster {
	t.Helper()
	evs, err := DecideLeadership(&c, token, who)
	if err != nil {
		t.Fatalf("leadership %d: %v", token, err)
	}
	for _, e := range evs {
		c = EvolveCluster(c, e)
	}
	return c
}

func withToken(r StepReport, token int64) StepReport {
	r.Token = token
	return r
}

func TestANewLeaderFencesTheOldOne(t *testing.T) {
	c := elect(t, deployingProdA(t), 100, "server-a")
	if c.LeaderToken != 100 {
		t.Fatalf("leader token %d", c.LeaderToken)
	}
	if evs, err := DecideLeadership(&c, 100, "server-a"); err != nil || len(evs) != 0 {
		t.Errorf("the same leader again: %v %v, want nothing", evs, err)
	}
	check := "check/198.18.0.11"
	c, _ = reportAs(t, c, withToken(started(check, "agent-1", 1), 100), 100)
	if c.FindOperation("op-deploy-prod-a").Steps[check].Status != StepStatusRunning {
		t.Fatal("step not running")
	}

	// server-b takes over: the step that ran under server-a is dispatched
	// again, and nothing from server-a's token counts any more.
	c = elect(t, c, 250, "server-b")
	op := c.FindOperation("op-deploy-prod-a")
	if _, still := op.Steps[check]; still {
		t.Errorf("a step running under the old leader is still running: %+v", op.Steps[check])
	}
	if p := op.Progress(); len(p.Ready) != 3 {
		t.Errorf("ready after takeover: %v, want the three host checks again", stepIDs(p.Ready))
	}
	if _, err := DecideStepReport(&c, withToken(succeeded(check, "agent-1", 1), 100), 100); ErrorCode(err) != Conflict ||
		!strings.Contains(ErrorMessage(err), "token 100 is stale") {
		t.Errorf("the old leader writing after the takeover: %v, want a stale-token conflict", err)
	}
	if evs, err := DecideStepReport(&c, withToken(succeeded(check, "agent-1", 1), 100), 250); err != nil || len(evs) != 0 {
		t.Errorf("a result of the old leader's dispatch recorded by the new leader: %v %v, want nothing", evs, err)
	}
	if _, err := DecideLeadership(&c, 100, "server-a"); ErrorCode(err) != Conflict {
		t.Errorf("an older leader taking over again: %v, want conflict", err)
	}
	c, evs := reportAs(t, c, withToken(succeeded(check, "agent-2", 1), 250), 250)
	if len(evs) != 1 {
		t.Errorf("the new leader's result: %v", evs)
	}
}

func TestCancelStopsDispatchingAndEndsWhenRunningStepsHave(t *testing.T) {
	c := deployingProdA(t)
	c, _ = report(t, c, started("check/198.18.0.11", "agent-1", 1))
	evs, err := DecideCancelOperation(&c, CancelOperation{ID: "op-deploy-prod-a"})
	if err != nil || len(evs) != 1 {
		t.Fatalf("cancel with a running step: %v %v, want OperationCancelRequested only", evs, err)
	}
	c = EvolveCluster(c, evs[0])
	op := c.FindOperation("op-deploy-prod-a")
	if p := op.Progress(); len(p.Ready) != 0 || p.Done {
		t.Errorf("while cancelling: ready %v, done %t; want nothing ready, not done", stepIDs(p.Ready), p.Done)
	}
	if _, err := DecideCancelOperation(&c, CancelOperation{ID: "op-deploy-prod-a"}); ErrorCode(err) != Conflict ||
		!strings.Contains(ErrorMessage(err), "already being cancelled") {
		t.Errorf("second cancel: %v", err)
	}
	c, evs = report(t, c, succeeded("check/198.18.0.11", "agent-1", 1))
	if _, ok := evs[len(evs)-1].(OperationCancelled); !ok {
		t.Fatalf("last running step finished: %v, want OperationCancelled", evs)
	}
	if op := c.FindOperation("op-deploy-prod-a"); op.Status != OperationStatusCancelled || c.Status != ClusterStatusDeployCancelled {
		t.Errorf("operation %s, cluster %s", op.Status, c.Status)
	}
	if _, err := DecideCancelOperation(&c, CancelOperation{ID: "op-deploy-prod-a"}); ErrorCode(err) != Conflict ||
		!strings.Contains(ErrorMessage(err), "is cancelled: there is nothing to cancel") {
		t.Errorf("cancel of a cancelled operation: %v", err)
	}
	if _, err := DecideCancelOperation(&c, CancelOperation{ID: "op-x"}); ErrorCode(err) != NotFound {
		t.Errorf("cancel of an unknown operation: %v", err)
	}
	// A cancelled operation can be resumed.
	evs, err = DecideRetryOperation(&c, RetryOperation{ID: "op-deploy-prod-a"})
	if err != nil {
		t.Fatal(err)
	}
	c = EvolveCluster(c, evs[0])
	// Ready: the two other hosts' checks (every deploy user waits for
	// every host's check).
	if p := c.FindOperation("op-deploy-prod-a").Progress(); len(p.Ready) != 2 || p.Succeeded != 1 {
		t.Errorf("retry after cancel: ready %v, %d succeeded", stepIDs(p.Ready), p.Succeeded)
	}
}

func TestCancelWithNothingRunningEndsAtOnce(t *testing.T) {
	c := deployingProdA(t)
	evs, err := DecideCancelOperation(&c, CancelOperation{ID: "op-deploy-prod-a"})
	if err != nil || len(evs) != 2 {
		t.Fatalf("cancel: %v %v", evs, err)
	}
	if _, ok := evs[1].(OperationCancelled); !ok {
		t.Errorf("events %v, want OperationCancelRequested, OperationCancelled", evs)
	}
}

func TestOneOperationAtATime(t *testing.T) {
	c := deployingProdA(t)
	err := CheckIdle(&c)
	if ErrorCode(err) != Conflict || !strings.Contains(ErrorMessage(err), "busy with operation op-deploy-prod-a (deploy, pending)") {
		t.Errorf("CheckIdle = %v", err)
	}
	done, _ := runAll(t, c, 1)
	if err := CheckIdle(&done); err != nil {
		t.Errorf("idle cluster: %v", err)
	}
}
