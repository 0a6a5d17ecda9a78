package domain

import (
	"slices"
	"strings"
	"testing"
)

// deployedProdA is prod-a after its deploy succeeded.
func deployedProdA(t *testing.T) Cluster {
	t.Helper()
	c, _ := runAll(t, deployingProdA(t), 1)
	if c.Status != ClusterStatusRunning {
		t.Fatalf("deploy did not finish: %s", c.Status)
	}
	return c
}

// plans returns a function that takes a decision and answers its plan,
// failing t when the decision was refused.
func plans(t *testing.T) func([]Event, error) []Step {
	return func(evs []Event, err error) []Step {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if op, ok := e.(OperationRequested); ok {
				return op.Plan
			}
		}
		t.Fatalf("no OperationRequested in %v", evs)
		return nil
	}
}

func TestStopStopsMonitoringThenWorkersThenMasters(t *testing.T) {
	c := deployedProdA(t)
	planOf := plans(t)
	plan := planOf(DecideControlCluster(&c, ControlCluster{Kind: OperationStop, Name: "prod-a", OperationID: "op-stop"}))
	if len(plan) != 9 {
		t.Fatalf("%d steps: %v", len(plan), stepIDs(plan))
	}
	if !needsTransitively(plan, "stop/198.18.0.11:8262", "stop/198.18.0.13:9090") ||
		!needsTransitively(plan, "stop/198.18.0.11:8261", "stop/198.18.0.13:8262") {
		t.Errorf("stop order wrong: %v", plan)
	}
	for _, s := range plan {
		if s.Kind != StepStop || s.Service == nil || s.Service.Manager != ServiceManagerSystemd {
			t.Errorf("step %+v", s)
		}
	}
}

func TestStartAndRestartBySelection(t *testing.T) {
	c := deployedProdA(t)
	planOf := plans(t)
	plan := planOf(DecideControlCluster(&c, ControlCluster{Kind: OperationStart, Name: "prod-a", OperationID: "op"}))
	if !needsTransitively(plan, "start/198.18.0.11:8262", "start/198.18.0.13:8261") ||
		!needsTransitively(plan, "start/198.18.0.13:3000", "start/198.18.0.12:8262") {
		t.Errorf("start order wrong: %v", stepIDs(plan))
	}
	plan = planOf(DecideControlCluster(&c, ControlCluster{Kind: OperationRestart, Name: "prod-a", Roles: []string{"dm-worker"}, OperationID: "op"}))
	if got := stepIDs(plan); len(got) != 6 || !slices.Contains(got, "stop/198.18.0.12:8262") || !slices.Contains(got, "start/198.18.0.12:8262") {
		t.Errorf("restart of the workers: %v", got)
	}
	plan = planOf(DecideControlCluster(&c, ControlCluster{Kind: OperationRestart, Name: "prod-a", OperationID: "op"}))
	if !needsTransitively(plan, "stop/198.18.0.11:8262", "start/198.18.0.11:8261") {
		t.Error("a restart stops the workers before the masters are back")
	}
	plan = planOf(DecideControlCluster(&c, ControlCluster{Kind: OperationStop, Name: "prod-a", Roles: []string{"dm-master"},
		Nodes: []string{"198.18.0.12:8261", "198.18.0.12:8262"}, OperationID: "op"}))
	if got := stepIDs(plan); !slices.Equal(got, []string{"stop/198.18.0.12:8261"}) {
		t.Errorf("roles and nodes together: %v, want the one master on .12", got)
	}
}

func TestLifecycleRefusals(t *testing.T) {
	c := deployedProdA(t)
	busy := deployingProdA(t)
	gone := Cluster{Name: "gone", Status: ClusterStatusDestroyed}
	for _, tc := range []struct {
		name string
		c    *Cluster
		cmd  ControlCluster
		code string
		msg  string
	}{
		{"unknown cluster", nil, ControlCluster{Kind: OperationStop, Name: "nope", OperationID: "op"}, NotFound, "cluster nope does not exist"},
		{"destroyed cluster", &gone, ControlCluster{Kind: OperationStart, Name: "gone", OperationID: "op"}, NotFound, "cluster gone does not exist"},
		{"unknown node", &c, ControlCluster{Kind: OperationStart, Name: "prod-a", Nodes: []string{"10.0.0.9:8261"}, OperationID: "op"}, Invalid, `node "10.0.0.9:8261" is not an instance of cluster prod-a`},
		{"unknown role", &c, ControlCluster{Kind: OperationStop, Name: "prod-a", Roles: []string{"tidb"}, OperationID: "op"}, Invalid, `role "tidb": cluster prod-a has no instance of it`},
		{"another operation runs", &busy, ControlCluster{Kind: OperationStop, Name: "prod-a", OperationID: "op"}, Conflict, "busy with operation op-deploy-prod-a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evs, err := DecideControlCluster(tc.c, tc.cmd)
			if ErrorCode(err) != tc.code || !strings.Contains(ErrorMessage(err), tc.msg) {
				t.Errorf("= %v, %v; want %s %q", evs, err, tc.code, tc.msg)
			}
		})
	}
	if _, err := DecideDestroyCluster(&busy, DestroyCluster{Name: "prod-a", OperationID: "op"}); ErrorCode(err) != Conflict {
		t.Errorf("destroy while deploying: %v", err)
	}
	if _, err := DecideDestroyCluster(nil, DestroyCluster{Name: "nope", OperationID: "op"}); ErrorCode(err) != NotFound {
		t.Errorf("destroy of an unknown cluster: %v", err)
	}
}

func TestDestroyRemovesEverythingOrKeepsTheData(t *testing.T) {
	c := deployedProdA(t)
	planOf := plans(t)
	plan := planOf(DecideDestroyCluster(&c, DestroyCluster{Name: "prod-a", OperationID: "op-d"}))
	rm := stepByID(t, plan, "remove/198.18.0.11:8261")
	if !slices.Equal(rm.Dirs, []string{"/dm/deploy/dm-master-8261", "/dm/data/dm-master-8261"}) || rm.Needs[0] != "stop/198.18.0.11:8261" {
		t.Errorf("remove step %+v", rm)
	}
	plan = planOf(DecideDestroyCluster(&c, DestroyCluster{Name: "prod-a", RetainData: true, OperationID: "op-d"}))
	if rm := stepByID(t, plan, "remove/198.18.0.11:8261"); !slices.Equal(rm.Dirs, []string{"/dm/deploy/dm-master-8261"}) {
		t.Errorf("retain_data: %v", rm.Dirs)
	}
	// Once the destroy succeeded the cluster is gone and its machines free.
	evs, _ := DecideDestroyCluster(&c, DestroyCluster{Name: "prod-a", OperationID: "op-d"})
	for _, e := range evs {
		c = EvolveCluster(c, e)
	}
	for round := 0; round < 10; round++ {
		op := c.FindOperation("op-d")
		for _, s := range op.Progress().Ready {
			c, _ = reportAs(t, c, StepReport{Operation: "op-d", Step: s.ID, Attempt: 1, Agent: "a", Finished: true, OK: true}, 0)
		}
	}
	if c.Exists() || c.Status != ClusterStatusDestroyed {
		t.Errorf("after destroy: status %s", c.Status)
	}
}
