package domain

import (
	"slices"
	"strings"
	"testing"
)

// batchesOfPlan returns the instances restarted together, batch after
// batch: the stops that need the same steps.
func batchesOfPlan(plan []Step) [][]string {
	var out [][]string
	var last string
	for _, s := range plan {
		if s.Kind != StepStop {
			continue
		}
		key := strings.Join(s.Needs, ",")
		if len(out) == 0 || key != last {
			out = append(out, nil)
		}
		out[len(out)-1] = append(out[len(out)-1], s.Instance)
		last = key
	}
	return out
}

func TestPatchPlans(t *testing.T) {
	c := deployedProdA(t)
	pk := packagesWith("v8.1.0-hotfix.1")
	planOf := plans(t)
	for _, tc := range []struct {
		name  string
		cmd   PatchCluster
		want  [][]string
		check func(t *testing.T, plan []Step)
	}{
		{"workers one at a time", PatchCluster{Roles: []string{"dm-worker"}},
			[][]string{{"198.18.0.11:8262"}, {"198.18.0.12:8262"}, {"198.18.0.13:8262"}},
			func(t *testing.T, plan []Step) {
				s := stepByID(t, plan, "stage/198.18.0.12:8262")
				if len(s.Copies) != 1 || s.Copies[0].Src != "bin/dm-worker" || s.Copies[0].Dst != "/dm/deploy/dm-worker-8262/bin/dm-worker.v8.1.0-hotfix.1" {
					t.Errorf("stage %+v", s.Copies)
				}
				b := stepByID(t, plan, "backup/198.18.0.12:8262")
				if b.Switches[0].To != "/dm/deploy/dm-worker-8262/bin/dm-worker.before-op-patch" {
					t.Errorf("backup %+v", b.Switches)
				}
			}},
		{"workers in parallel", PatchCluster{Roles: []string{"dm-worker"}, Parallel: 3},
			[][]string{{"198.18.0.11:8262", "198.18.0.12:8262", "198.18.0.13:8262"}}, nil},
		{"two by two", PatchCluster{Roles: []string{"dm-worker", "prometheus", "alertmanager"}, Parallel: 2},
			[][]string{{"198.18.0.11:8262", "198.18.0.12:8262"}, {"198.18.0.13:8262"}, {"198.18.0.13:9090", "198.18.0.13:9093"}},
			func(t *testing.T, plan []Step) {
				if s := stepByID(t, plan, "switch/198.18.0.13:9090"); len(s.Switches) != 1 {
					t.Errorf("a patch switches only the binary: %+v", s.Switches)
				}
			}},
		{"masters never more than a minority", PatchCluster{Roles: []string{"dm-master"}, Parallel: 3, Leader: "198.18.0.11:8261"},
			[][]string{{"198.18.0.12:8261"}, {"198.18.0.13:8261"}, {"198.18.0.11:8261"}}, nil},
		{"by node", PatchCluster{Nodes: []string{"198.18.0.13:8262", "198.18.0.11:8261"}, Parallel: 4},
			[][]string{{"198.18.0.11:8261"}, {"198.18.0.13:8262"}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cmd.Name, tc.cmd.Package, tc.cmd.OperationID = "prod-a", "dm-v8.1.0-hotfix.1-linux-amd64", "op-patch"
			evs, err := DecidePatchCluster(&c, pk, tc.cmd)
			plan := planOf(evs, err)
			if got := batchesOfPlan(plan); !slices.EqualFunc(got, tc.want, slices.Equal) {
				t.Errorf("batches %v, want %v", got, tc.want)
			}
			if tc.check != nil {
				tc.check(t, plan)
			}
			after := fold(c, evs)
			after, _ = runOp(t, after, "op-patch")
			if after.FindOperation("op-patch").Status != OperationStatusSucceeded || after.Version != "v8.1.0" {
				t.Errorf("after the patch: %s, version %s", after.FindOperation("op-patch").Status, after.Version)
			}
		})
	}
}

func TestPatchRefusals(t *testing.T) {
	c := deployedProdA(t)
	pk := packagesWith("v8.1.0-hotfix.1")
	armHistory := append(inventory(), uploaded("v8.1.0-arm", "arm64")...)
	for id, p := range given(armHistory...).Packages {
		pk[id] = p
	}
	busy := fold(c, []Event{OperationRequested{ID: "op-stop", Kind: OperationStop, Cluster: "prod-a", Plan: []Step{{ID: "x", Kind: StepNoop}}}})
	const hotfix = "dm-v8.1.0-hotfix.1-linux-amd64"
	for _, tc := range []struct {
		name string
		c    *Cluster
		cmd  PatchCluster
		code string
		msg  string
	}{
		{"unknown cluster", &Cluster{}, PatchCluster{Name: "nope", Package: hotfix, Roles: []string{"dm-worker"}}, NotFound, "does not exist"},
		{"no package", &c, PatchCluster{Name: "prod-a", Roles: []string{"dm-worker"}}, Invalid, "package is required"},
		{"unknown package", &c, PatchCluster{Name: "prod-a", Package: "dm-v9-linux-amd64", Roles: []string{"dm-worker"}}, Invalid, "is not uploaded"},
		{"no selection", &c, PatchCluster{Name: "prod-a", Package: hotfix}, Invalid, "roles or nodes"},
		{"unknown role", &c, PatchCluster{Name: "prod-a", Package: hotfix, Roles: []string{"tikv"}}, Invalid, "no instance of it"},
		{"unknown node", &c, PatchCluster{Name: "prod-a", Package: hotfix, Nodes: []string{"10.0.0.1:1"}}, Invalid, "not an instance"},
		{"bad parallel", &c, PatchCluster{Name: "prod-a", Package: hotfix, Roles: []string{"dm-worker"}, Parallel: -2}, Invalid, "parallel"},
		{"other platform", &c, PatchCluster{Name: "prod-a", Package: "dm-v8.1.0-arm-linux-arm64", Roles: []string{"dm-worker"}}, Invalid, "linux/arm64"},
		{"busy", &busy, PatchCluster{Name: "prod-a", Package: hotfix, Roles: []string{"dm-worker"}}, Conflict, "busy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cmd.OperationID = "op-patch"
			evs, err := DecidePatchCluster(tc.c, pk, tc.cmd)
			if ErrorCode(err) != tc.code || err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v %v, want %s %q", evs, err, tc.code, tc.msg)
			}
		})
	}
}
