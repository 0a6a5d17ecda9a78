package domain

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// packagesWith is the inventory's packages and those of more versions.
func packagesWith(versions ...string) map[string]*Package {
	h := inventory()
	for _, v := range versions {
		h = append(h, uploaded(v, "amd64")...)
	}
	return given(h...).Packages
}

// runOp drives operation id to its end, one ready step at a time in plan
// order; failing names steps that fail. It returns the cluster and the
// order in which the steps succeeded or failed.
func runOp(t *testing.T, c Cluster, id string, failing ...string) (Cluster, []string) {
	t.Helper()
	var order []string
	for round := 0; round < 1000; round++ {
		op := c.FindOperation(id)
		p := op.Progress()
		if len(p.Ready) == 0 {
			return c, order
		}
		s := p.Ready[0]
		c, _ = report(t, c, StepReport{Operation: id, Step: s.ID, Attempt: op.Attempt, Agent: "a", Token: c.LeaderToken})
		ok := !slices.Contains(failing, s.ID)
		c, _ = report(t, c, StepReport{Operation: id, Step: s.ID, Attempt: op.Attempt, Agent: "a", Token: c.LeaderToken,
			Finished: true, OK: ok, Error: map[bool]string{false: "did not come up"}[ok]})
		order = append(order, s.ID)
	}
	t.Fatalf("operation %s did not end", id)
	return c, nil
}

func fold(c Cluster, evs []Event) Cluster {
	for _, e := range evs {
		c = EvolveCluster(c, e)
	}
	return c
}

// rolled returns the instances in the order of their stop steps.
func rolled(plan []Step) []string {
	var out []string
	for _, s := range plan {
		if s.Kind == StepStop {
			out = append(out, s.Instance)
		}
	}
	return out
}

func TestUpgradePlanRollsOneInstanceAtATimeLeaderLast(t *testing.T) {
	c := deployedProdA(t)
	planOf := plans(t)
	plan := planOf(DecideUpgradeCluster(&c, packagesWith("v8.5.0"),
		UpgradeCluster{Name: "prod-a", Version: "v8.5.0", Leader: "198.18.0.12:8261", OperationID: "op-up"}))
	want := []string{"198.18.0.11:8261", "198.18.0.13:8261", "198.18.0.12:8261",
		"198.18.0.11:8262", "198.18.0.12:8262", "198.18.0.13:8262",
		"198.18.0.13:9090", "198.18.0.13:3000", "198.18.0.13:9093"}
	if got := rolled(plan); !slices.Equal(got, want) {
		t.Fatalf("roll order %v, want %v", got, want)
	}
	// Every upload and backup comes before the first stop; each stop
	// waits for the previous instance's start.
	first := stepByID(t, plan, "stop/"+want[0])
	if len(first.Needs) != 18 {
		t.Errorf("first stop needs %v, want the 9 uploads and 9 backups", first.Needs)
	}
	for i := 1; i < len(want); i++ {
		if s := stepByID(t, plan, "stop/"+want[i]); !slices.Equal(s.Needs, []string{"start/" + want[i-1]}) {
			t.Errorf("stop/%s needs %v, want start/%s", want[i], s.Needs, want[i-1])
		}
	}
	if s := stepByID(t, plan, "check-cluster"); !slices.Equal(s.Needs, []string{"start/" + want[len(want)-1]}) {
		t.Errorf("check-cluster needs %v", s.Needs)
	}
	stage := stepByID(t, plan, "stage/198.18.0.11:8261")
	if len(stage.Copies) != 1 || stage.Copies[0].Dst != "/dm/deploy/dm-master-8261/bin/dm-master.v8.5.0" ||
		stage.Copies[0].Package != "dm-v8.5.0-linux-amd64" {
		t.Errorf("stage: %+v", stage.Copies)
	}
	backup := stepByID(t, plan, "backup/198.18.0.11:8261")
	if want := (SwitchSpec{From: "/dm/deploy/dm-master-8261/bin/dm-master", To: "/dm/deploy/dm-master-8261/bin/dm-master.v8.1.0", Owner: "tidb"}); len(backup.Switches) != 1 || backup.Switches[0] != want {
		t.Errorf("backup: %+v", backup.Switches)
	}
	sw := stepByID(t, plan, "switch/198.18.0.13:3000")
	if len(sw.Switches) != 1 || sw.Switches[0].From != "/dm/deploy/grafana-3000/grafana.tar.gz.v8.5.0" || sw.Switches[0].UnpackInto != "/dm/deploy/grafana-3000" {
		t.Errorf("grafana switch: %+v", sw.Switches)
	}
	if s := stepByID(t, plan, "switch/198.18.0.13:9090"); len(s.Switches) != 2 {
		t.Errorf("prometheus switches its binary and its rules: %+v", s.Switches)
	}

	// Without a known leader, masters roll in topology order.
	plan = planOf(DecideUpgradeCluster(&c, packagesWith("v8.5.0"), UpgradeCluster{Name: "prod-a", Version: "v8.5.0", OperationID: "op-up"}))
	if got := rolled(plan)[:3]; !slices.Equal(got, []string{"198.18.0.11:8261", "198.18.0.12:8261", "198.18.0.13:8261"}) {
		t.Errorf("masters without a leader: %v", got)
	}
	if s := stepByID(t, plan, "start/198.18.0.11:8261"); s.Service.HealthTimeoutSec != startTimeoutSec {
		t.Errorf("default wait: %d", s.Service.HealthTimeoutSec)
	}
	plan = planOf(DecideUpgradeCluster(&c, packagesWith("v8.5.0"), UpgradeCluster{Name: "prod-a", Version: "v8.5.0", WaitTimeoutSec: 7, OperationID: "op-up"}))
	if s := stepByID(t, plan, "start/198.18.0.11:8261"); s.Service.HealthTimeoutSec != 7 {
		t.Errorf("wait_timeout_sec 7: %d", s.Service.HealthTimeoutSec)
	}
}

func TestUpgradeRefusals(t *testing.T) {
	c := deployedProdA(t)
	busy := fold(c, []Event{OperationRequested{ID: "op-stop", Kind: OperationStop, Cluster: "prod-a", Plan: []Step{{ID: "x", Kind: StepNoop}}}})
	pk := packagesWith("v8.5.0")
	for _, tc := range []struct {
		name string
		c    *Cluster
		cmd  UpgradeCluster
		code string
		msg  string
	}{
		{"unknown cluster", &Cluster{}, UpgradeCluster{Name: "nope", Version: "v8.5.0"}, NotFound, "does not exist"},
		{"same version", &c, UpgradeCluster{Name: "prod-a", Version: "v8.1.0"}, Invalid, "already runs version v8.1.0"},
		{"missing package", &c, UpgradeCluster{Name: "prod-a", Version: "v9.0.0"}, Invalid, "no uploaded package dm-v9.0.0-linux-amd64"},
		{"bad version", &c, UpgradeCluster{Name: "prod-a", Version: "latest"}, Invalid, "invalid"},
		{"bad wait", &c, UpgradeCluster{Name: "prod-a", Version: "v8.5.0", WaitTimeoutSec: -1}, Invalid, "wait_timeout_sec"},
		{"busy", &busy, UpgradeCluster{Name: "prod-a", Version: "v8.5.0"}, Conflict, "busy with operation op-stop"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cmd.OperationID = "op-up"
			evs, err := DecideUpgradeCluster(tc.c, pk, tc.cmd)
			var de *Error
			if !errors.As(err, &de) || de.Code != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v %v, want %s %q", evs, err, tc.code, tc.msg)
			}
		})
	}
}

func TestUpgradeFailsRetriesAndRollsBack(t *testing.T) {
	c := deployedProdA(t)
	evs, err := DecideUpgradeCluster(&c, packagesWith("v8.5.0"), UpgradeCluster{Name: "prod-a", Version: "v8.5.0", OperationID: "op-up"})
	if err != nil {
		t.Fatal(err)
	}
	c = fold(c, evs)
	// The third instance fails to come up: nothing after it runs.
	c, order := runOp(t, c, "op-up", "start/198.18.0.13:8261")
	op := c.FindOperation("op-up")
	if op.Status != OperationStatusFailed || c.Version != "v8.1.0" {
		t.Fatalf("after the failure: %s, cluster %s", op.Status, c.Version)
	}
	if slices.Contains(order, "stop/198.18.0.11:8262") {
		t.Errorf("the roll went on after the failure: %v", order)
	}
	// Retry resumes at the failed start.
	evs, err = DecideRetryOperation(&c, RetryOperation{ID: "op-up"})
	if err != nil || !slices.Equal(evs[0].(OperationRetried).Steps, []string{"start/198.18.0.13:8261"}) {
		t.Fatalf("retry: %v %v", evs, err)
	}
	retried := fold(c, evs)
	retried, order = runOp(t, retried, "op-up")
	if order[0] != "start/198.18.0.13:8261" || retried.FindOperation("op-up").Status != OperationStatusSucceeded {
		t.Fatalf("retry ran %v", order)
	}
	if retried.Version != "v8.5.0" || retried.PackageID != "dm-v8.5.0-linux-amd64" {
		t.Errorf("after the upgrade: %s %s", retried.Version, retried.PackageID)
	}

	// Rollback of the failed upgrade instead: the three masters it
	// touched, in reverse order, back to the v8.1.0 files.
	evs, err = DecideRollbackOperation(&c, RollbackOperation{ID: "op-up", OperationID: "op-rb"})
	if err != nil {
		t.Fatal(err)
	}
	rb := evs[0].(OperationRequested)
	if got := rolled(rb.Plan); !slices.Equal(got, []string{"198.18.0.13:8261", "198.18.0.12:8261", "198.18.0.11:8261"}) {
		t.Errorf("rollback rolls %v", got)
	}
	if s := stepByID(t, rb.Plan, "switch/198.18.0.12:8261"); s.Switches[0].From != "/dm/deploy/dm-master-8261/bin/dm-master.v8.1.0" {
		t.Errorf("switch back: %+v", s.Switches)
	}
	if hasStep(rb.Plan, "stage/198.18.0.12:8261") || hasStep(rb.Plan, "backup/198.18.0.12:8261") {
		t.Errorf("a rollback uploads nothing: %v", stepIDs(rb.Plan))
	}
	c = fold(c, evs)
	if st := c.FindOperation("op-up").Status; st != OperationStatusRolledBack {
		t.Errorf("upgrade after its rollback: %s", st)
	}
	if _, err := DecideRetryOperation(&c, RetryOperation{ID: "op-up"}); err == nil {
		t.Error("a rolled-back upgrade was retried")
	}
	c, _ = runOp(t, c, "op-rb")
	if c.FindOperation("op-rb").Status != OperationStatusSucceeded || c.Version != "v8.1.0" || c.PackageID != "dm-v8.1.0-linux-amd64" {
		t.Errorf("after the rollback: %s %s", c.FindOperation("op-rb").Status, c.Version)
	}

	// Refusals of rollbacks.
	if _, err := DecideRollbackOperation(&c, RollbackOperation{ID: "op-rb", OperationID: "x"}); err == nil {
		t.Error("rollback of a rollback accepted")
	}
	if _, err := DecideRollbackOperation(&c, RollbackOperation{ID: "op-up", OperationID: "x"}); err == nil {
		t.Error("second rollback accepted")
	}
	if _, err := DecideRollbackOperation(&c, RollbackOperation{ID: "nope", OperationID: "x"}); err == nil {
		t.Error("rollback of an unknown operation accepted")
	}
	// The last, succeeded upgrade can be rolled back whole.
	evs, err = DecideRollbackOperation(&retried, RollbackOperation{ID: "op-up", OperationID: "op-rb2"})
	if err != nil || len(rolled(evs[0].(OperationRequested).Plan)) != 9 {
		t.Errorf("rollback of the succeeded upgrade: %v", err)
	}
}
