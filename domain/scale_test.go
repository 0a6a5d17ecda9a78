package domain

import (
	"slices"
	"strings"
	"testing"
)

// runningProdA is the world with prod-a deployed and running.
func runningProdA(t *testing.T) *World {
	t.Helper()
	w := given(inventory()...)
	c := deployedProdA(t)
	w.Clusters["prod-a"] = &c
	return w
}

func TestScaleOutJoinsTheRunningCluster(t *testing.T) {
	w := runningProdA(t)
	fragment := specLines(
		"master_servers:",
		"  - host: 198.18.0.11",
		"    name: master4",
		"    port: 8361",
		"    peer_port: 8391",
		"worker_servers:",
		"  - host: 198.18.0.12",
		"    name: worker4",
		"    port: 8362",
	)
	evs, err := DecideScaleOut(w, ScaleOut{Name: "prod-a", Topology: fragment, OperationID: "op-so"})
	if err != nil {
		t.Fatal(err)
	}
	added := evs[0].(ClusterScaleOutRequested).Instances
	if len(added) != 2 || added[0].DeployDir != "/dm/deploy/dm-master-8361" || added[1].DataDir != "/dm/data/dm-worker-8362" {
		t.Errorf("added instances do not take the cluster's global settings: %+v", added)
	}
	plan := evs[1].(OperationRequested).Plan
	master := fileOf(t, stepByID(t, plan, "config/198.18.0.11:8361"), "/dm/deploy/dm-master-8361/conf/dm-master.toml")
	if !strings.Contains(master.Content, `join = "198.18.0.11:8261,198.18.0.12:8261,198.18.0.13:8261"`) || strings.Contains(master.Content, "initial-cluster") {
		t.Errorf("new master config:\n%s", master.Content)
	}
	if !strings.Contains(master.Content, `log-level = "info"`) {
		t.Errorf("server_configs.master does not apply to the new master:\n%s", master.Content)
	}
	worker := fileOf(t, stepByID(t, plan, "config/198.18.0.12:8362"), "/dm/deploy/dm-worker-8362/conf/dm-worker.toml")
	if !strings.Contains(worker.Content, "198.18.0.11:8361") {
		t.Errorf("the new worker does not join the new master:\n%s", worker.Content)
	}
	prom := fileOf(t, stepByID(t, plan, "config/198.18.0.13:9090"), "/dm/deploy/prometheus-9090/conf/prometheus.yml")
	if !strings.Contains(prom.Content, "'198.18.0.11:8361'") || !strings.Contains(prom.Content, "'198.18.0.12:8362'") {
		t.Errorf("prometheus is not re-rendered with the new instances:\n%s", prom.Content)
	}
	if !needsTransitively(plan, "start/198.18.0.13:9090", "check-cluster") || !needsTransitively(plan, "start/198.18.0.12:8362", "start/198.18.0.11:8361") {
		t.Errorf("order: %v", stepIDs(plan))
	}
	c := EvolveCluster(*w.Clusters["prod-a"], evs[0])
	if len(c.Instances) != 11 {
		t.Errorf("instances after the request: %d", len(c.Instances))
	}
}

func TestScaleOutRefusals(t *testing.T) {
	w := runningProdA(t)
	for _, tc := range []struct {
		name, fragment, code, msg string
	}{
		{"a port in use", "worker_servers:\n  - host: 198.18.0.11\n", Conflict, "port 8262 on 198.18.0.11 is already used by cluster prod-a"},
		{"an unregistered host", "worker_servers:\n  - host: 198.18.0.99\n", Invalid, "host 198.18.0.99 is not a registered machine"},
		{"a global section", "global:\n  user: x\nworker_servers:\n  - host: 198.18.0.11\n    port: 9999\n", Invalid, "only *_servers sections"},
		{"a taken name", "worker_servers:\n  - host: 198.18.0.11\n    port: 9999\n    name: worker1\n", Conflict, "worker1 is already the name"},
		{"nothing", "worker_servers: []\n", Invalid, "no instance"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecideScaleOut(w, ScaleOut{Name: "prod-a", Topology: tc.fragment, OperationID: "op"})
			if ErrorCode(err) != tc.code || !strings.Contains(ErrorMessage(err), tc.msg) {
				t.Errorf("= %v; want %s %q", err, tc.code, tc.msg)
			}
		})
	}
	if _, err := DecideScaleOut(w, ScaleOut{Name: "nope", Topology: "worker_servers:\n  - host: 198.18.0.11\n", OperationID: "op"}); ErrorCode(err) != NotFound {
		t.Errorf("unknown cluster: %v", err)
	}
}

func TestScaleInOrderAndRefusals(t *testing.T) {
	c := deployedProdA(t)
	evs, err := DecideScaleIn(&c, ScaleIn{Name: "prod-a", Nodes: []string{"198.18.0.11:8261", "198.18.0.12:8262"}, OperationID: "op-si"})
	if err != nil {
		t.Fatal(err)
	}
	plan := evs[1].(OperationRequested).Plan
	// A master goes offline before it stops; a worker stops first.
	if !needsTransitively(plan, "stop/198.18.0.11:8261", "offline/198.18.0.11:8261") ||
		!needsTransitively(plan, "offline/198.18.0.12:8262", "stop/198.18.0.12:8262") ||
		!needsTransitively(plan, "remove/198.18.0.11:8261", "stop/198.18.0.11:8261") {
		t.Errorf("order: %v", stepIDs(plan))
	}
	if off := stepByID(t, plan, "offline/198.18.0.11:8261"); slices.Contains(off.Check.MasterAddrs, "198.18.0.11:8261") || off.Host == "198.18.0.11" {
		t.Errorf("the member is taken offline through itself: %+v", off)
	}
	prom := fileOf(t, stepByID(t, plan, "config/198.18.0.13:9090"), "/dm/deploy/prometheus-9090/conf/prometheus.yml")
	if strings.Contains(prom.Content, "'198.18.0.11:8261'") {
		t.Errorf("prometheus still scrapes the removed master:\n%s", prom.Content)
	}
	// The instances leave the topology as their directories go.
	c = EvolveCluster(c, evs[0])
	c = EvolveCluster(c, evs[1])
	for round := 0; round < 10; round++ {
		for _, s := range c.FindOperation("op-si").Progress().Ready {
			c, _ = reportAs(t, c, StepReport{Operation: "op-si", Step: s.ID, Attempt: 1, Agent: "a", Finished: true, OK: true}, 0)
		}
	}
	if len(c.Instances) != 7 || slices.ContainsFunc(c.Instances, func(in Instance) bool { return in.ID == "198.18.0.11:8261" }) {
		t.Errorf("instances after scale-in: %v", clusterNodes(&c))
	}
	// Forced: no members API.
	c = deployedProdA(t)
	evs, _ = DecideScaleIn(&c, ScaleIn{Name: "prod-a", Nodes: []string{"198.18.0.13:8262"}, Force: true, OperationID: "op"})
	for _, s := range evs[1].(OperationRequested).Plan {
		if s.Kind == StepOffline {
			t.Errorf("forced scale-in asks the members API: %s", s.ID)
		}
	}

	for _, tc := range []struct {
		name  string
		nodes []string
		force bool
		code  string
		msg   string
	}{
		{"the last masters", []string{"198.18.0.11:8261", "198.18.0.12:8261", "198.18.0.13:8261"}, true, Invalid, "cannot remove every dm-master"},
		{"a majority of masters", []string{"198.18.0.11:8261", "198.18.0.12:8261"}, false, Invalid, "removing 2 of 3 dm-masters at once"},
		{"an unknown node", []string{"198.18.0.11:9999"}, false, Invalid, `node "198.18.0.11:9999" is not an instance`},
		{"no node", nil, false, Invalid, "nodes is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecideScaleIn(&c, ScaleIn{Name: "prod-a", Nodes: tc.nodes, Force: tc.force, OperationID: "op"})
			if ErrorCode(err) != tc.code || !strings.Contains(ErrorMessage(err), tc.msg) {
				t.Errorf("= %v; want %s %q", err, tc.code, tc.msg)
			}
		})
	}
	if _, err := DecideScaleIn(&c, ScaleIn{Name: "prod-a", Nodes: []string{"198.18.0.11:8261", "198.18.0.12:8261"}, Force: true, OperationID: "op"}); err != nil {
		t.Errorf("a forced scale-in of two of three masters: %v", err)
	}
}
