package domain

import (
	"strings"
	"testing"
)

func TestReloadRestartsOnlyWhatChanged(t *testing.T) {
	c := deployedProdA(t)
	evs, err := DecideReloadCluster(&c, ReloadCluster{Name: "prod-a", OperationID: "op-r"})
	if err != nil {
		t.Fatal(err)
	}
	if plan := evs[0].(OperationRequested).Plan; len(plan) != 0 {
		t.Errorf("a reload without changes plans %v", stepIDs(plan))
	}

	// server_configs.worker changes: the three workers, one at a time.
	evs, err = DecideReloadCluster(&c, ReloadCluster{Name: "prod-a", OperationID: "op-r", ServerConfigs: map[string]map[string]any{
		"master": {"log-level": "info"}, "worker": {"log-level": "debug"}}})
	if err != nil {
		t.Fatal(err)
	}
	plan := evs[1].(OperationRequested).Plan
	if got := stepIDs(plan); len(got) != 9 || !strings.HasPrefix(got[0], "config/198.18.0.11:8262") {
		t.Fatalf("plan %v, want config, stop, start of each worker", got)
	}
	if !needsTransitively(plan, "stop/198.18.0.12:8262", "start/198.18.0.11:8262") {
		t.Error("workers restart together; want one at a time")
	}
	if f := stepByID(t, plan, "config/198.18.0.12:8262").Files; len(f) != 1 || !strings.Contains(f[0].Content, `log-level = "debug"`) {
		t.Errorf("rewritten files %+v", f)
	}
	c = EvolveCluster(c, evs[0])
	if c.EffectiveServerConfigs()["worker"]["log-level"] != "debug" {
		t.Errorf("server_configs after the reload: %v", c.EffectiveServerConfigs())
	}
	if _, err := DecideReloadCluster(&c, ReloadCluster{Name: "prod-a", OperationID: "op", ServerConfigs: map[string]map[string]any{"tikv": {}}}); ErrorCode(err) != Invalid {
		t.Errorf("unknown section: %v", err)
	}
}
