package domain

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

// deployingProdA is prod-a right after its deploy was accepted.
func deployingProdA(t *testing.T) Cluster {
	t.Helper()
	return foldCluster(deployedCluster(t, "prod-a", prodATopology))
}

// report decides a report and folds its events; it fails the test when the
// report is refused.
func report(t *testing.T, c Cluster, r StepReport) (Cluster, []Event) {
	t.Helper()
	evs, err := DecideStepReport(&c, r, c.LeaderToken)
	if err != nil {
		t.Fatalf("report %+v: %v", r, err)
	}
	for _, e := range evs {
		c = EvolveCluster(c, e)
	}
	return c, evs
}

func started(step, agent string, attempt int) StepReport {
	return StepReport{Operation: "op-deploy-prod-a", Step: step, Attempt: attempt, Agent: agent}
}

func succeeded(step, agent string, attempt int) StepReport {
	return StepReport{Operation: "op-deploy-prod-a", Step: step, Attempt: attempt, Agent: agent, Finished: true, OK: true}
}

func failed(step, agent string, attempt int, msg string) StepReport {
	return StepReport{Operation: "op-deploy-prod-a", Step: step, Attempt: attempt, Agent: agent, Finished: true, Error: msg, ExitCode: 1}
}

// runAll runs every ready step to success, in rounds, as agents would.
func runAll(t *testing.T, c Cluster, attempt int) (Cluster, []Event) {
	t.Helper()
	var all []Event
	for round := 0; ; round++ {
		op := c.FindOperation("op-deploy-prod-a")
		p := ProgressOf(op.Plan, op.Steps)
		if len(p.Ready) == 0 || round > 100 {
			return c, all
		}
		for _, s := range p.Ready {
			var evs []Event
			c, evs = report(t, c, started(s.ID, "agent-1", attempt))
			all = append(all, evs...)
			c, evs = report(t, c, succeeded(s.ID, "agent-1", attempt))
			all = append(all, evs...)
		}
	}
}

func TestDeployRunsToSuccess(t *testing.T) {
	c := deployingProdA(t)
	op := c.FindOperation("op-deploy-prod-a")
	if op.Status != OperationStatusPending || op.Attempt != 1 {
		t.Fatalf("new operation: %s attempt %d", op.Status, op.Attempt)
	}
	c, evs := runAll(t, c, 1)
	last := evs[len(evs)-1]
	if _, ok := last.(OperationSucceeded); !ok {
		t.Fatalf("last event %T, want OperationSucceeded", last)
	}
	if n := countType[OperationSucceeded](evs); n != 1 {
		t.Errorf("%d OperationSucceeded events, want 1", n)
	}
	op = c.FindOperation("op-deploy-prod-a")
	if op.Status != OperationStatusSucceeded || c.Status != ClusterStatusRunning {
		t.Errorf("operation %s, cluster %s; want succeeded, running", op.Status, c.Status)
	}
	for _, in := range c.Instances {
		if in.Status != InstanceStatusUp {
			t.Errorf("instance %s %s: status %q, want up", in.Role, in.ID, in.Status)
		}
	}
	if c.ActiveOperation() != nil {
		t.Error("a finished operation is still active")
	}
}

func countType[T Event](evs []Event) int {
	n := 0
	for _, e := range evs {
		if _, ok := e.(T); ok {
			n++
		}
	}
	return n
}

func TestStepReportsThatChangeNothing(t *testing.T) {
	c := deployingProdA(t)
	check := "check/198.18.0.11"
	c, _ = report(t, c, started(check, "agent-1", 1))
	c, _ = report(t, c, succeeded(check, "agent-1", 1))
	for _, tc := range []struct {
		name string
		r    StepReport
	}{
		{"a redelivered result", succeeded(check, "agent-1", 1)},
		{"a late start after the result", started(check, "agent-2", 1)},
		{"a result of another attempt", succeeded("check/198.18.0.12", "agent-1", 2)},
		{"a result for an unknown step", succeeded("start/10.0.0.1:1", "agent-1", 1)},
		{"a result for an unknown operation", StepReport{Operation: "op-x", Step: check, Attempt: 1, Finished: true, OK: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evs, err := DecideStepReport(&c, tc.r, 0)
			if err != nil || len(evs) != 0 {
				t.Errorf("DecideStepReport = %v, %v; want no events", evs, err)
			}
		})
	}
	// The same agent starting again (a redelivery to it) is not news; another
	// agent taking the step over is.
	c, _ = report(t, c, started("check/198.18.0.12", "agent-1", 1))
	if evs, _ := DecideStepReport(&c, started("check/198.18.0.12", "agent-1", 1), 0); len(evs) != 0 {
		t.Errorf("repeated start by the same agent: %v", evs)
	}
	if evs, _ := DecideStepReport(&c, started("check/198.18.0.12", "agent-2", 1), 0); len(evs) != 1 {
		t.Errorf("start by another agent: %v, want StepStarted", evs)
	}
}

func TestAFailedStepBlocksItsDependentsOnlyThenFailsTheOperation(t *testing.T) {
	c := deployingProdA(t)
	c, evs := report(t, c, failed("check/198.18.0.13", "agent-1", 1, "ssh 198.18.0.13:22: i/o timeout"))
	if len(evs) != 1 {
		t.Fatalf("events %v, want StepFailed only: other steps can still run", evs)
	}
	c, evs = runAll(t, c, 1)
	var outcome OperationFailed
	for _, e := range evs {
		if f, ok := e.(OperationFailed); ok {
			outcome = f
		}
		if s, ok := e.(StepSucceeded); ok && (strings.Contains(s.Step, "198.18.0.13") || strings.HasPrefix(s.Step, "start/")) {
			if strings.Contains(s.Step, "198.18.0.13") {
				t.Errorf("step %s of the failed host ran", s.Step)
			}
		}
	}
	if outcome.ID == "" {
		t.Fatalf("no OperationFailed after every runnable step ran: %v", evs)
	}
	if !slices.Equal(outcome.FailedSteps, []string{"check/198.18.0.13"}) ||
		!strings.Contains(outcome.Error, "step check/198.18.0.13 on 198.18.0.13: ssh 198.18.0.13:22: i/o timeout") {
		t.Errorf("outcome %+v", outcome)
	}
	op := c.FindOperation("op-deploy-prod-a")
	p := ProgressOf(op.Plan, op.Steps)
	if len(p.Blocked) == 0 || !slices.Contains(p.Blocked, "check-cluster") {
		t.Errorf("blocked %v: the members check needs master3 and must be blocked", p.Blocked)
	}
	if !slices.Contains(p.Blocked, "start/198.18.0.11:8262") {
		t.Errorf("blocked %v: workers start after every master, so worker1 waits for master3", p.Blocked)
	}
	if c.Status != ClusterStatusDeployFailed || op.Status != OperationStatusFailed {
		t.Errorf("cluster %s, operation %s", c.Status, op.Status)
	}

	// Retry: only the failed step runs again; what succeeded stays.
	retried, err := DecideRetryOperation(&c, RetryOperation{ID: "op-deploy-prod-a"})
	if err != nil {
		t.Fatal(err)
	}
	if want := (OperationRetried{ID: "op-deploy-prod-a", Attempt: 2, Steps: []string{"check/198.18.0.13"}}); !slices.Equal(retried[0].(OperationRetried).Steps, want.Steps) || retried[0].(OperationRetried).Attempt != 2 {
		t.Fatalf("retry = %+v, want %+v", retried, want)
	}
	succeededBefore := ProgressOf(op.Plan, op.Steps).Succeeded
	c = EvolveCluster(c, retried[0])
	op = c.FindOperation("op-deploy-prod-a")
	p = ProgressOf(op.Plan, op.Steps)
	if p.Succeeded != succeededBefore || len(p.Ready) != 1 || p.Ready[0].ID != "check/198.18.0.13" {
		t.Fatalf("after retry: %d succeeded (was %d), ready %v", p.Succeeded, succeededBefore, stepIDs(p.Ready))
	}
	if c.Status != ClusterStatusDeploying {
		t.Errorf("cluster %s after retry, want deploying", c.Status)
	}
	if evs, _ := DecideStepReport(&c, succeeded("check/198.18.0.13", "agent-1", 1), 0); len(evs) != 0 {
		t.Errorf("a result of attempt 1 after the retry was recorded: %v", evs)
	}
	c, evs = runAll(t, c, 2)
	if _, ok := evs[len(evs)-1].(OperationSucceeded); !ok {
		t.Fatalf("retry did not finish: %v", evs[len(evs)-1])
	}
}

func TestDecideRetryOperationRefuses(t *testing.T) {
	c := deployingProdA(t)
	for _, tc := range []struct {
		name string
		c    Cluster
		id   string
		code string
		msg  string
	}{
		{"unknown operation", c, "op-x", NotFound, "operation op-x does not exist"},
		{"a pending operation", c, "op-deploy-prod-a", Conflict, "is pending: only a failed or cancelled operation can be retried"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evs, err := DecideRetryOperation(&tc.c, RetryOperation{ID: tc.id})
			if ErrorCode(err) != tc.code || !strings.Contains(ErrorMessage(err), tc.msg) {
				t.Errorf("DecideRetryOperation = %v, %v; want %s %q", evs, err, tc.code, tc.msg)
			}
		})
	}
	done, _ := runAll(t, c, 1)
	if _, err := DecideRetryOperation(&done, RetryOperation{ID: "op-deploy-prod-a"}); ErrorCode(err) != Conflict {
		t.Errorf("retry of a succeeded operation: %v, want conflict", err)
	}
}

// Evolve never changes a state handed out before.
func TestEvolveClusterCopiesBeforeChanging(t *testing.T) {
	before := deployingProdA(t)
	snapshot := deployingProdA(t)
	after, _ := runAll(t, before, 1)
	if after.Status == before.Status {
		t.Fatal("the run changed nothing")
	}
	if before.Status != snapshot.Status || len(before.Operations[0].Steps) != 0 || before.Instances[0].Status != "" {
		t.Errorf("folding events changed an earlier state: %s, %d step states, instance %q",
			before.Status, len(before.Operations[0].Steps), before.Instances[0].Status)
	}
	if !reflect.DeepEqual(before, snapshot) {
		t.Errorf("folding events changed an earlier state:\n  %+v\nwant\n  %+v", before, snapshot)
	}

	// Every other event that changes an operation, and a rollback that
	// marks an older one, leave the states before them as they were.
	mid := after
	midCopy := mid
	midCopy.Operations = deepCopyOperations(mid.Operations)
	midCopy.Instances = slices.Clone(mid.Instances)
	for _, e := range []Event{
		OperationRequested{ID: "op-2", Kind: OperationRestart, Cluster: "prod-a"},
		ClusterLeaderElected{Token: 9},
		OperationCancelRequested{ID: "op-2"},
		OperationCancelled{ID: "op-2"},
		OperationRetried{ID: "op-2", Attempt: 2},
		OperationFailed{ID: "op-2", Error: "boom"},
		OperationRequested{ID: "op-3", Kind: OperationRollback, Cluster: "prod-a", RollbackOf: "op-deploy-prod-a"},
	} {
		next := EvolveCluster(mid, e)
		if reflect.DeepEqual(next, mid) {
			t.Errorf("%T changed nothing", e)
		}
		if !reflect.DeepEqual(mid, midCopy) {
			t.Fatalf("%T changed the state before it", e)
		}
		mid = next
		midCopy = mid
		midCopy.Operations = deepCopyOperations(mid.Operations)
		midCopy.Instances = slices.Clone(mid.Instances)
	}
	if got := mid.FindOperation("op-deploy-prod-a").Status; got != OperationStatusRolledBack {
		t.Errorf("the rolled-back operation is %s, want %s", got, OperationStatusRolledBack)
	}
	if got := after.FindOperation("op-deploy-prod-a").Status; got != OperationStatusSucceeded {
		t.Errorf("the rollback changed an earlier state's operation to %s", got)
	}
}

// TestClusterFoldFoldsAsEvolveCluster: a fold that keeps its own copies
// between events reaches the state EvolveCluster reaches event by event,
// and a state it handed out never changes afterwards, however many events
// follow.
func TestClusterFoldFoldsAsEvolveCluster(t *testing.T) {
	history := deployedCluster(t, "prod-a", prodATopology)
	var evs []Event
	for _, r := range history {
		evs = append(evs, r.event)
	}
	_, run := runAll(t, foldCluster(history), 1)
	evs = append(evs, run...)
	evs = append(evs,
		OperationRequested{ID: "op-2", Kind: OperationScaleIn, Cluster: "prod-a", Plan: []Step{{ID: "rm", Kind: StepRemoveDirs, Instance: "198.18.0.13:8262"}}},
		ClusterLeaderElected{Token: 3},
		StepStarted{Operation: "op-2", Step: "rm", Attempt: 1},
		OperationCancelRequested{ID: "op-2"},
		StepSucceeded{Operation: "op-2", Step: "rm", Attempt: 1},
		OperationCancelled{ID: "op-2"},
		OperationRetried{ID: "op-2", Attempt: 2, Steps: []string{"rm"}},
		ClusterScaleOutRequested{Instances: []Instance{{ID: "198.18.0.13:9262", Role: RoleWorker}}},
		OperationFailed{ID: "op-2", Error: "boom"},
		OperationRequested{ID: "op-3", Kind: OperationRollback, Cluster: "prod-a", RollbackOf: "op-deploy-prod-a"},
		OperationSucceeded{ID: "op-3"},
	)
	f := NewClusterFold(Cluster{})
	var want Cluster
	type handed struct {
		state, copy Cluster
	}
	var out []handed
	for i, e := range evs {
		want = EvolveCluster(want, e)
		f.Apply(e)
		if i%3 == 0 || i == len(evs)-1 {
			got := f.State()
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("after event %d (%T) the fold has\n  %+v\nEvolveCluster\n  %+v", i, e, got, want)
			}
			c := got
			c.Operations = deepCopyOperations(got.Operations)
			c.Instances = slices.Clone(got.Instances)
			out = append(out, handed{got, c})
		}
	}
	for i, h := range out {
		if !reflect.DeepEqual(h.state, h.copy) {
			t.Errorf("state %d changed after it was handed out", i)
		}
	}
	if got := f.State(); got.FindOperation("op-deploy-prod-a").Status != OperationStatusRolledBack || len(got.Instances) != len(want.Instances) {
		t.Errorf("the fold ends with %+v", got)
	}
}
