package domain

import (
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// prodHosts are the machines of the deploy specifications.
var prodHosts = []string{"198.18.0.11", "198.18.0.12", "198.18.0.13"}

// prodATopology is a full DM cluster in the format of `tiup dm deploy`
// (after tiup's examples/dm/topology.example.yaml): three masters, three
// workers and the monitoring stack on 198.18.0.11-13. Tables refer to its
// line numbers.
var prodATopology = specLines(
	"# prod-a: three masters, three workers and the monitoring stack", // 1
	"global:",                        // 2
	`  user: "tidb"`,                 // 3
	"  ssh_port: 22",                 // 4
	`  deploy_dir: "/dm/deploy"`,     // 5
	`  data_dir: "/dm/data"`,         // 6
	"",                               // 7
	"server_configs:",                // 8
	"  master:",                      // 9
	"    log-level: info",            // 10
	"  worker:",                      // 11
	"    log-level: info",            // 12
	"",                               // 13
	"master_servers:",                // 14
	"  - host: 198.18.0.11",          // 15
	"    name: master1",              // 16
	"    port: 8261",                 // 17
	"    peer_port: 8291",            // 18
	"    config:",                    // 19
	"      log-level: debug",         // 20
	"  - host: 198.18.0.12",          // 21
	"    name: master2",              // 22
	"  - host: 198.18.0.13",          // 23
	"    name: master3",              // 24
	"",                               // 25
	"worker_servers:",                // 26
	"  - host: 198.18.0.11",          // 27
	"    name: worker1",              // 28
	"  - host: 198.18.0.12",          // 29
	"    name: worker2",              // 30
	"  - host: 198.18.0.13",          // 31
	"    name: worker3",              // 32
	`    log_dir: "/dm/log/worker3"`, // 33
	"",                               // 34
	"monitoring_servers:",            // 35
	"  - host: 198.18.0.13",          // 36
	"",                               // 37
	"grafana_servers:",               // 38
	"  - host: 198.18.0.13",          // 39
	"",                               // 40
	"alertmanager_servers:",          // 41
	"  - host: 198.18.0.13",          // 42
)

// prodBTopology is a second, smaller cluster on the same machines with ports
// and directories of its own.
var prodBTopology = specLines(
	"global:",                      // 1
	`  user: "tidb"`,               // 2
	`  deploy_dir: "/dm-b/deploy"`, // 3
	`  data_dir: "/dm-b/data"`,     // 4
	"",                             // 5
	"master_servers:",              // 6
	"  - host: 198.18.0.11",        // 7
	"    port: 8361",               // 8
	"    peer_port: 8391",          // 9
	"",                             // 10
	"worker_servers:",              // 11
	"  - host: 198.18.0.11",        // 12
	"    port: 8362",               // 13
	"  - host: 198.18.0.12",        // 14
	"    port: 8362",               // 15
)

// inventory is the history every deploy specification starts from: the
// three machines registered and DM v8.1.0 for linux/amd64 uploaded.
func inventory() []recorded {
	return history(registered(prodHosts...), uploaded("v8.1.0", "amd64"))
}

// deployedCluster is the history of a cluster whose deploy was accepted
// against the inventory.
func deployedCluster(t *testing.T, name, topology string) []recorded {
	t.Helper()
	evs, err := DecideDeployCluster(given(inventory()...), DeployCluster{Name: name, Version: "v8.1.0", Topology: topology, OperationID: "op-deploy-" + name})
	if err != nil {
		t.Fatalf("deploy %s: %v", name, err)
	}
	return onCluster(name, evs...)
}

func deployProdA() DeployCluster {
	return DeployCluster{Name: "prod-a", Version: "v8.1.0", Topology: prodATopology, OperationID: "op-1"}
}

func TestDecideDeployClusterAccepted(t *testing.T) {
	w := given(inventory()...)
	before := given(inventory()...)
	got, err := DecideDeployCluster(w, deployProdA())
	if err != nil {
		t.Fatalf("deploy refused: %s error %q", ErrorCode(err), err)
	}
	if !reflect.DeepEqual(w, before) {
		t.Error("deciding changed the world it was given")
	}
	if len(got) != 2 {
		t.Fatalf("events = %s, want [ClusterDeployRequested, OperationRequested]", describeEvents(got))
	}
	req, ok := got[0].(ClusterDeployRequested)
	if !ok {
		t.Fatalf("first event is %T, want ClusterDeployRequested", got[0])
	}
	if op, ok := got[1].(OperationRequested); !ok || op.ID != "op-1" || op.Kind != OperationDeploy || op.Cluster != "prod-a" || len(op.Plan) == 0 {
		t.Errorf("second event = %#v, want OperationRequested op-1 deploy prod-a with a plan", got[1])
	}

	if req.Name != "prod-a" || req.Version != "v8.1.0" || req.PackageID != "dm-v8.1.0-linux-amd64" {
		t.Errorf("name, version, package = %q, %q, %q; want prod-a, v8.1.0, dm-v8.1.0-linux-amd64", req.Name, req.Version, req.PackageID)
	}
	if req.Topology != prodATopology {
		t.Errorf("the event does not keep the topology as the user gave it:\n%s", req.Topology)
	}
	wantGlobal := GlobalOptions{User: "tidb", SSHPort: 22, DeployDir: "/dm/deploy", DataDir: "/dm/data", LogDir: "log",
		Arch: "amd64", OS: "linux", ServiceManager: ServiceManagerSystemd}
	if req.Global != wantGlobal {
		t.Errorf("Global = %+v, want %+v", req.Global, wantGlobal)
	}

	// Masters, then workers, prometheus, grafana, alertmanager, each in file order.
	var ids []string
	for _, in := range req.Instances {
		ids = append(ids, string(in.Role)+" "+in.ID)
	}
	wantIDs := []string{
		"dm-master 198.18.0.11:8261", "dm-master 198.18.0.12:8261", "dm-master 198.18.0.13:8261",
		"dm-worker 198.18.0.11:8262", "dm-worker 198.18.0.12:8262", "dm-worker 198.18.0.13:8262",
		"prometheus 198.18.0.13:9090", "grafana 198.18.0.13:3000", "alertmanager 198.18.0.13:9093",
	}
	if !reflect.DeepEqual(ids, wantIDs) {
		t.Fatalf("instances =\n  %s\nwant\n  %s", strings.Join(ids, "\n  "), strings.Join(wantIDs, "\n  "))
	}
	want := map[int]Instance{
		0: {ID: "198.18.0.11:8261", Name: "master1", Role: RoleMaster, Host: "198.18.0.11", SSHPort: 22, Port: 8261, PeerPort: 8291,
			DeployDir: "/dm/deploy/dm-master-8261", DataDir: "/dm/data/dm-master-8261", LogDir: "/dm/deploy/dm-master-8261/log",
			Config: map[string]any{"log-level": "debug"}, Arch: "amd64", OS: "linux", Line: 15},
		5: {ID: "198.18.0.13:8262", Name: "worker3", Role: RoleWorker, Host: "198.18.0.13", SSHPort: 22, Port: 8262,
			DeployDir: "/dm/deploy/dm-worker-8262", DataDir: "/dm/data/dm-worker-8262", LogDir: "/dm/log/worker3",
			Arch: "amd64", OS: "linux", Line: 31},
		8: {ID: "198.18.0.13:9093", Name: "alertmanager-198.18.0.13-9093", Role: RoleAlertmanager, Host: "198.18.0.13", SSHPort: 22,
			Port: 9093, PeerPort: 9094, DeployDir: "/dm/deploy/alertmanager-9093", DataDir: "/dm/data/alertmanager-9093",
			LogDir: "/dm/deploy/alertmanager-9093/log", Arch: "amd64", OS: "linux", Line: 42},
	}
	for i, w := range want {
		if got := req.Instances[i]; !reflect.DeepEqual(got, w) {
			t.Errorf("instance %d =\n  %+v\nwant\n  %+v", i, got, w)
		}
	}
	if l := req.Instances[1].Line; l != 21 {
		t.Errorf("master2 is at line %d, want 21", l)
	}
}

func TestDecideDeployClusterRefused(t *testing.T) {
	prodA := deployedCluster(t, "prod-a", prodATopology)
	deployB := func(topology string) DeployCluster {
		return DeployCluster{Name: "prod-b", Version: "v8.1.0", Topology: topology, OperationID: "op-2"}
	}
	edit := func(edit func(*DeployCluster)) DeployCluster {
		c := deployProdA()
		edit(&c)
		return c
	}
	tests := []struct {
		name  string
		given []recorded
		when  DeployCluster
		then  then
	}{
		{"name starting with '-'", inventory(), edit(func(c *DeployCluster) { c.Name = "-bad" }),
			thenError(Invalid, `cluster name "-bad" is invalid`)},
		{"name with a space", inventory(), edit(func(c *DeployCluster) { c.Name = "a b" }),
			thenError(Invalid, `cluster name "a b" is invalid`)},
		{"name of 65 characters", inventory(), edit(func(c *DeployCluster) { c.Name = strings.Repeat("a", 65) }),
			thenError(Invalid, "cluster name", "is invalid: use 1-64 letters")},
		{"empty name", inventory(), edit(func(c *DeployCluster) { c.Name = "" }),
			thenError(Invalid, `cluster name "" is invalid`)},
		{"the cluster exists", history(inventory(), prodA), deployProdA(),
			thenError(Conflict, "cluster prod-a already exists (version v8.1.0, deploying)")},
		{"no package for the version", inventory(), edit(func(c *DeployCluster) { c.Version = "v8.2.0" }),
			thenError(Invalid, "version v8.2.0 has no uploaded package dm-v8.2.0-linux-amd64", "POST /api/v1/packages")},
		{"a package for another arch only", history(registered(prodHosts...), uploaded("v8.1.0", "arm64")), deployProdA(),
			thenError(Invalid, "no uploaded package dm-v8.1.0-linux-amd64", "POST /api/v1/packages")},
		{"version without v", inventory(), edit(func(c *DeployCluster) { c.Version = "8.1.0" }),
			thenError(Invalid, `version "8.1.0" is invalid`, "e.g. v8.1.0")},
		{"version without patch", inventory(), edit(func(c *DeployCluster) { c.Version = "v8.1" }),
			thenError(Invalid, `version "v8.1" is invalid`)},
		{"no operation id", inventory(), edit(func(c *DeployCluster) { c.OperationID = "" }),
			thenError(Invalid, "operation id is required")},
		{"YAML syntax error", inventory(), edit(func(c *DeployCluster) { c.Topology = withLine(t, prodATopology, 22, "    name: master2: x") }),
			thenError(Invalid, "topology line 22: mapping values are not allowed")},
		{"unknown host", inventory(), edit(func(c *DeployCluster) { c.Topology = withLine(t, prodATopology, 36, "  - host: 198.18.0.14") }),
			thenError(Invalid, "topology line 36: host 198.18.0.14 is not a registered machine", "POST /api/v1/machines")},
		{"host removed earlier", history(inventory(), onMachine("198.18.0.12", MachineRemoved{Host: "198.18.0.12"})), deployProdA(),
			thenError(Invalid, "topology line 21: host 198.18.0.12 is not a registered machine")},
		{"port used by another cluster", history(inventory(), prodA), deployB(withLine(t, prodBTopology, 8, "    port: 8261")),
			thenError(Conflict, "topology line 7: port 8261 on 198.18.0.11 is already used by cluster prod-a (dm-master 198.18.0.11:8261)")},
		{"peer port used by another cluster", history(inventory(), prodA), deployB(withLine(t, prodBTopology, 9, "    peer_port: 8262")),
			thenError(Conflict, "topology line 7: port 8262 on 198.18.0.11 is already used by cluster prod-a (dm-worker 198.18.0.11:8262)")},
		{"directory inside one of another cluster", history(inventory(), prodA),
			deployB(withLine(t, prodBTopology, 10, "    deploy_dir: /dm/data/dm-master-8261/b")),
			thenError(Conflict, "topology line 7: directory /dm/data/dm-master-8261/b on 198.18.0.11 clashes with cluster prod-a (dm-master 198.18.0.11:8261)")},
		{"directory of another cluster", history(inventory(), prodA),
			deployB(withLine(t, prodBTopology, 16, "    deploy_dir: /dm/deploy/dm-worker-8262")),
			thenError(Conflict, "topology line 14: directory /dm/deploy/dm-worker-8262 on 198.18.0.12 clashes with cluster prod-a (dm-worker 198.18.0.12:8262)")},
		{"no master", inventory(), edit(func(c *DeployCluster) {
			c.Topology = specLines("worker_servers:", "  - host: 198.18.0.11")
		}), thenError(Invalid, "topology needs at least one dm-master")},
		{"empty topology", inventory(), edit(func(c *DeployCluster) { c.Topology = "" }),
			thenError(Invalid, "topology needs at least one dm-master")},
		{"a clash inside the topology", inventory(), edit(func(c *DeployCluster) {
			c.Topology = withLine(t, prodATopology, 32, "    name: worker2")
		}), thenError(Invalid, `topology line 31: name "worker2" is already used by dm-worker 198.18.0.12:8262 (line 29)`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecideDeployCluster(given(tt.given...), tt.when)
			tt.then.check(t, got, err)
		})
	}
}

// TestDecideDeployClusterSharesMachines: clusters share machines as long as
// their ports and directories are apart.
func TestDecideDeployClusterSharesMachines(t *testing.T) {
	prodA := deployedCluster(t, "prod-a", prodATopology)
	tests := []struct {
		name     string
		topology string
	}{
		{"directories of their own", prodBTopology},
		{"the same global directories", withLine(t, withLine(t, prodBTopology, 3, `  deploy_dir: "/dm/deploy"`), 4, `  data_dir: "/dm/data"`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := given(history(inventory(), prodA)...)
			evs, err := DecideDeployCluster(w, DeployCluster{Name: "prod-b", Version: "v8.1.0", Topology: tt.topology, OperationID: "op-2"})
			if err != nil {
				t.Fatalf("prod-b refused: %s error %q", ErrorCode(err), err)
			}
			if len(evs) != 2 {
				t.Fatalf("events = %s, want two", describeEvents(evs))
			}
			for _, e := range evs {
				w.Apply(AggregateCluster, "prod-b", e)
			}
			if got, want := w.ClustersOn("198.18.0.11"), []string{"prod-a", "prod-b"}; !reflect.DeepEqual(got, want) {
				t.Errorf("ClustersOn(198.18.0.11) = %v, want %v", got, want)
			}
			if got, want := w.ClustersOn("198.18.0.13"), []string{"prod-a"}; !reflect.DeepEqual(got, want) {
				t.Errorf("ClustersOn(198.18.0.13) = %v, want %v", got, want)
			}
			_, err = DecideDeployCluster(w, DeployCluster{Name: "prod-c", Version: "v8.1.0", Topology: tt.topology, OperationID: "op-3"})
			then{code: Conflict, msgs: []string{"is already used by cluster prod-b"}}.check(t, nil, err)
		})
	}
}

// TestDecideDeployClusterPlatforms: the package is the one of the
// topology's platform.
func TestDecideDeployClusterPlatforms(t *testing.T) {
	arm := specLines(
		"global:",
		"  arch: aarch64",
		"master_servers:",
		"  - host: 198.18.0.11",
	)
	w := given(history(inventory(), uploaded("v8.1.0", "arm64"))...)
	evs, err := DecideDeployCluster(w, DeployCluster{Name: "arm", Version: "v8.1.0", Topology: arm, OperationID: "op-arm"})
	if err != nil {
		t.Fatalf("refused: %v", err)
	}
	if got := evs[0].(ClusterDeployRequested).PackageID; got != "dm-v8.1.0-linux-arm64" {
		t.Errorf("PackageID = %q, want dm-v8.1.0-linux-arm64", got)
	}
}

// TestDecideDeployClusterNeedsAPackageForEveryPlatform: an instance may
// override global.arch (the parser keeps Instance.Arch), so a topology can
// need the packages of two platforms. A deploy must not be accepted when one
// of them was never uploaded: the agents would have no binaries for that
// host.
func TestDecideDeployClusterNeedsAPackageForEveryPlatform(t *testing.T) {
	mixed := specLines(
		"master_servers:",
		"  - host: 198.18.0.11",
		"worker_servers:",
		"  - host: 198.18.0.21",
		"    arch: arm64",
	)
	w := given(history(inventory(), registered("198.18.0.21"))...)
	evs, err := DecideDeployCluster(w, DeployCluster{Name: "mixed", Version: "v8.1.0", Topology: mixed, OperationID: "op-m"})
	if err == nil {
		t.Errorf("BUG (deploy.go, DecideDeployCluster): a worker with arch arm64 was accepted with package %s although "+
			"dm-v8.1.0-linux-arm64 was never uploaded; the package check looks at global.os/arch only, not at each instance's OS/Arch",
			evs[0].(ClusterDeployRequested).PackageID)
	} else {
		thenError(Invalid, "dm-v8.1.0-linux-arm64", "POST /api/v1/packages").check(t, evs, err)
	}

	w = given(history(inventory(), registered("198.18.0.21"), uploaded("v8.1.0", "arm64"))...)
	if _, err := DecideDeployCluster(w, DeployCluster{Name: "mixed", Version: "v8.1.0", Topology: mixed, OperationID: "op-m"}); err != nil {
		t.Errorf("with both packages uploaded the deploy is refused: %v", err)
	}
}

// foldCluster folds the events of one cluster from its zero state.
func foldCluster(evs []recorded) Cluster {
	var c Cluster
	for _, r := range evs {
		c = EvolveCluster(c, r.event)
	}
	return c
}

func TestEvolveCluster(t *testing.T) {
	prodA := deployedCluster(t, "prod-a", prodATopology)
	req := prodA[0].event.(ClusterDeployRequested)
	plan := prodA[1].event.(OperationRequested).Plan

	got := foldCluster(prodA)
	want := Cluster{Name: "prod-a", Version: "v8.1.0", PackageID: "dm-v8.1.0-linux-amd64", Status: ClusterStatusDeploying,
		Topology: prodATopology, Global: req.Global, Instances: req.Instances,
		Operations: []*Operation{{ID: "op-deploy-prod-a", Kind: OperationDeploy, Cluster: "prod-a", Status: OperationStatusPending,
			Attempt: 1, Plan: plan}},
		Revision: 2, Group: DefaultGroup}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("state =\n  %+v\nwant\n  %+v", got, want)
	}
	if !got.Exists() {
		t.Error("a deploying cluster does not exist")
	}
	for _, c := range []*Cluster{nil, {}, {Name: "gone", Status: ClusterStatusDestroyed}} {
		if c.Exists() {
			t.Errorf("cluster %+v exists", c)
		}
	}

	// Deterministic: the same history gives the same state.
	if again := foldCluster(prodA); !reflect.DeepEqual(again, got) {
		t.Errorf("folding the same events again gave\n  %+v\nthe first fold gave\n  %+v", again, got)
	}

	// Revisions count events; operations are kept in order.
	next := EvolveCluster(got, OperationRequested{ID: "op-2", Kind: OperationDeploy, Cluster: "prod-a"})
	if next.Revision != 3 || len(next.Operations) != 2 || next.Operations[1].ID != "op-2" || next.Operations[1].Status != OperationStatusPending {
		t.Errorf("after a second operation: revision %d, operations %+v; want revision 3 and op-2 pending last", next.Revision, next.Operations)
	}
}

// TestEvolveClusterDoesNotShareOperations: states are values; evolving one
// never changes another, even when their operations have spare capacity.
func TestEvolveClusterDoesNotShareOperations(t *testing.T) {
	prodA := deployedCluster(t, "prod-a", prodATopology)
	op := func(id string) OperationRequested {
		return OperationRequested{ID: id, Kind: OperationDeploy, Cluster: "prod-a"}
	}

	// Two folds of one history, then an operation on one of them.
	one, two := foldCluster(prodA), foldCluster(prodA)
	one = EvolveCluster(one, op("op-2"))
	if len(one.Operations) != 2 {
		t.Fatalf("the evolved state has %d operations, want 2", len(one.Operations))
	}
	if want := foldCluster(prodA); !reflect.DeepEqual(two, want) {
		t.Errorf("evolving one state changed the other:\n  %+v", two.Operations)
	}

	// Two branches from one state with room to grow in place.
	base := foldCluster(prodA)
	ops := make([]*Operation, len(base.Operations), 8)
	copy(ops, base.Operations)
	base.Operations = ops
	left := EvolveCluster(base, op("op-left"))
	right := EvolveCluster(base, op("op-right"))
	if got := left.Operations[len(left.Operations)-1].ID; got != "op-left" {
		t.Errorf("the left branch ends with %s, want op-left: the branches share their operations", got)
	}
	if got := right.Operations[len(right.Operations)-1].ID; got != "op-right" {
		t.Errorf("the right branch ends with %s, want op-right", got)
	}
	if len(base.Operations) != 1 {
		t.Errorf("the base state has %d operations, want 1", len(base.Operations))
	}

	// The world keeps a state per event: a state read earlier stays as it was.
	w := given(history(inventory(), prodA)...)
	earlier := w.Clusters["prod-a"]
	snapshot := *earlier
	snapshot.Operations = deepCopyOperations(earlier.Operations)
	w.Apply(AggregateCluster, "prod-a", op("op-3"))
	if !reflect.DeepEqual(*earlier, snapshot) {
		t.Errorf("applying an event changed a state read before it: %+v", earlier.Operations)
	}
	if got := len(w.Clusters["prod-a"].Operations); got != 2 {
		t.Errorf("the world's prod-a has %d operations, want 2", got)
	}
}

// deepCopyOperations copies operations down to their plans and step maps,
// so that a comparison with the copy sees a change made in place.
func deepCopyOperations(ops []*Operation) []*Operation {
	if ops == nil {
		return nil
	}
	out := make([]*Operation, len(ops))
	for i, o := range ops {
		c := *o
		c.Plan = slices.Clone(o.Plan)
		c.Steps = maps.Clone(o.Steps)
		out[i] = &c
	}
	return out
}
