package domain

import (
	"reflect"
	"strconv"
	"testing"
)

// worldInstance is a small instance for the world specifications.
func worldInstance(role Role, host string, port int) Instance {
	id := host + ":" + strconv.Itoa(port)
	dir := "/dm/" + string(role) + "-" + strconv.Itoa(port)
	return Instance{ID: id, Name: string(role) + "-" + host + "-" + strconv.Itoa(port), Role: role, Host: host, SSHPort: 22, Port: port,
		DeployDir: dir, DataDir: dir + "/data", LogDir: dir + "/log"}
}

// worldClusters are three clusters, recorded in an order that is not their
// name order, and a destroyed one.
var (
	gammaInstances = []Instance{worldInstance(RoleMaster, "198.18.0.12", 8461), worldInstance(RoleWorker, "198.18.0.11", 8462), worldInstance(RoleWorker, "198.18.0.11", 8463)}
	alphaInstances = []Instance{worldInstance(RoleMaster, "198.18.0.11", 8261), worldInstance(RoleWorker, "198.18.0.13", 8262)}
	betaInstances  = []Instance{worldInstance(RoleMaster, "198.18.0.13", 8361)}
)

func worldClusters() *World {
	deploy := func(name string, insts []Instance) []recorded {
		return onCluster(name,
			ClusterDeployRequested{Name: name, Version: "v8.1.0", PackageID: "dm-v8.1.0-linux-amd64", Instances: insts},
			OperationRequested{ID: "op-" + name, Kind: OperationDeploy, Cluster: name})
	}
	w := given(history(deploy("gamma", gammaInstances), deploy("alpha", alphaInstances), deploy("beta", betaInstances))...)
	// There is no destroy event yet; a destroyed cluster is set directly.
	w.Clusters["destroyed"] = &Cluster{Name: "destroyed", Status: ClusterStatusDestroyed,
		Instances: []Instance{worldInstance(RoleMaster, "198.18.0.11", 9261), worldInstance(RoleMaster, "198.18.0.14", 9261)}}
	return w
}

func TestWorldClustersOn(t *testing.T) {
	tests := []struct {
		host string
		want []string
	}{
		{"198.18.0.11", []string{"alpha", "gamma"}}, // gamma has two instances there and is listed once
		{"198.18.0.12", []string{"gamma"}},
		{"198.18.0.13", []string{"alpha", "beta"}},
		{"198.18.0.14", nil}, // only a destroyed cluster
		{"198.18.0.99", nil},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			// Maps are iterated in a different order each time.
			for range 20 {
				if got := worldClusters().ClustersOn(tt.host); !reflect.DeepEqual(got, tt.want) {
					t.Fatalf("ClustersOn(%s) = %v, want %v", tt.host, got, tt.want)
				}
			}
		})
	}
	if got := NewWorld().ClustersOn("198.18.0.11"); len(got) != 0 {
		t.Errorf("an empty world has clusters %v", got)
	}
}

func TestWorldAllocations(t *testing.T) {
	alloc := func(cluster string, insts []Instance) []Allocation {
		var out []Allocation
		for _, in := range insts {
			out = append(out, Allocation{Cluster: cluster, Instance: in})
		}
		return out
	}
	join := func(parts ...[]Allocation) []Allocation {
		var out []Allocation
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	tests := []struct {
		except string
		want   []Allocation
	}{
		{"", join(alloc("alpha", alphaInstances), alloc("beta", betaInstances), alloc("gamma", gammaInstances))},
		{"beta", join(alloc("alpha", alphaInstances), alloc("gamma", gammaInstances))},
		{"alpha", join(alloc("beta", betaInstances), alloc("gamma", gammaInstances))},
		{"gamma", join(alloc("alpha", alphaInstances), alloc("beta", betaInstances))},
		{"unknown", join(alloc("alpha", alphaInstances), alloc("beta", betaInstances), alloc("gamma", gammaInstances))},
	}
	for _, tt := range tests {
		t.Run("except "+tt.except, func(t *testing.T) {
			for range 20 {
				got := worldClusters().Allocations(tt.except)
				if !reflect.DeepEqual(got, tt.want) {
					t.Fatalf("Allocations(%q) =\n  %+v\nwant\n  %+v", tt.except, got, tt.want)
				}
			}
		})
	}
	if got := NewWorld().Allocations(""); len(got) != 0 {
		t.Errorf("an empty world has allocations %v", got)
	}
}

func TestWorldApply(t *testing.T) {
	w := given(history(
		registered("198.18.0.11", "198.18.0.12"),
		onMachine("198.18.0.12", MachineRemoved{Host: "198.18.0.12"}),
		uploaded("v8.1.0", "amd64"),
		onCluster("alpha", ClusterDeployRequested{Name: "alpha", Version: "v8.1.0", Instances: alphaInstances}),
	)...)
	if m := w.Machines["198.18.0.11"]; !m.Active() || m.Revision != 1 {
		t.Errorf("198.18.0.11 = %+v, want registered at revision 1", m)
	}
	if m := w.Machines["198.18.0.12"]; m.Active() || m.Status != MachineStatusRemoved || m.Revision != 2 {
		t.Errorf("198.18.0.12 = %+v, want removed at revision 2", m)
	}
	if p := w.Packages["dm-v8.1.0-linux-amd64"]; p == nil || p.SHA256 != dmUploaded("v8.1.0", "amd64").SHA256 {
		t.Errorf("package dm-v8.1.0-linux-amd64 = %+v", p)
	}
	if c := w.Clusters["alpha"]; !c.Exists() || c.Revision != 1 || !reflect.DeepEqual(c.Instances, alphaInstances) {
		t.Errorf("cluster alpha = %+v", c)
	}
	if n := len(w.Machines) + len(w.Packages) + len(w.Clusters); n != 4 {
		t.Errorf("the world holds %d aggregates, want 4", n)
	}
}
