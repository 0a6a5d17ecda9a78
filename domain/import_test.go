package domain

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

// The specification of taking over a tiup-dm cluster (import.go).

// tiupHosts are the hosts of the imported cluster: not machines of the
// inventory yet.
var tiupHosts = []string{"198.18.0.21", "198.18.0.22", "198.18.0.23"}

// tiupTopology is the topology section of a tiup-dm meta.yaml as tiup
// writes it (yaml.v2, every default and directory filled in, tiup's own
// keys that dmgr does not use kept): three masters, two workers and a
// prometheus on 198.18.0.21-23.
var tiupTopology = specLines(
	"global:", // 1
	"  user: tidb",
	"  ssh_port: 22",
	"  ssh_type: builtin",
	"  deploy_dir: /home/tidb/dm/deploy", // 5
	"  data_dir: /home/tidb/dm/data",
	"  os: linux",
	"  arch: amd64",
	"  systemd_mode: system",
	"server_configs:", // 10
	"  master:",
	"    log-level: info",
	"  worker: {}",
	"  grafana: {}",
	"master_servers:", // 15
	"- host: 198.18.0.21",
	"  ssh_port: 22",
	"  name: dm-198.18.0.21-8261",
	"  port: 8261",
	"  peer_port: 8291", // 20
	"  deploy_dir: /home/tidb/dm/deploy/dm-master-8261",
	"  data_dir: /home/tidb/dm/data/dm-master-8261",
	"  log_dir: /home/tidb/dm/deploy/dm-master-8261/log",
	"  arch: amd64",
	"  os: linux", // 25
	"- host: 198.18.0.22",
	"  name: dm-198.18.0.22-8261",
	"  deploy_dir: /home/tidb/dm/deploy/dm-master-8261",
	"  data_dir: /home/tidb/dm/data/dm-master-8261",
	"- host: 198.18.0.23", // 30
	"  name: dm-198.18.0.23-8261",
	"  deploy_dir: /home/tidb/dm/deploy/dm-master-8261",
	"  data_dir: /home/tidb/dm/data/dm-master-8261",
	"worker_servers:",
	"- host: 198.18.0.21", // 35
	"  name: dm-198.18.0.21-8262",
	"  port: 8262",
	"  deploy_dir: /home/tidb/dm/deploy/dm-worker-8262",
	"  data_dir: /home/tidb/dm/data/dm-worker-8262",
	"- host: 198.18.0.22", // 40
	"  name: dm-198.18.0.22-8262",
	"  deploy_dir: /home/tidb/dm/deploy/dm-worker-8262",
	"  data_dir: /home/tidb/dm/data/dm-worker-8262",
	"monitoring_servers:",
	"- host: 198.18.0.23", // 45
	"  port: 9090",
	"  ng_port: 12020",
	"  deploy_dir: /home/tidb/dm/deploy/prometheus-9090",
	"  data_dir: /home/tidb/dm/data/prometheus-9090",
	"  external_alertmanagers: []", // 50
)

// newMachine is the registration of a host the import registers.
func newMachine(host string) RegisterMachine {
	return RegisterMachine{Host: host, SSHPort: 22, User: "tidb", Credential: CredentialRef{ID: "cred-" + host, Kind: CredentialPrivateKey},
		HostKey: testHostKey}
}

// importTiup is the import of tiupTopology, registering every host.
func importTiup() ImportCluster {
	var ms []RegisterMachine
	for _, h := range tiupHosts {
		ms = append(ms, newMachine(h))
	}
	return ImportCluster{Name: "legacy", Version: "v8.1.0", Topology: tiupTopology, User: "tidb", ServiceManager: ServiceManagerNone,
		NewMachines: ms, OperationID: "op-import"}
}

// importedLegacy is the history of the accepted import of tiupTopology
// against the inventory: the registrations and the cluster's events.
func importedLegacy(t *testing.T) []recorded {
	t.Helper()
	d, err := DecideImportCluster(given(inventory()...), importTiup())
	if err != nil {
		t.Fatalf("import refused: %v", err)
	}
	// As the service appends it: the registrations, the placements on
	// each machine and the cluster's events.
	var out []recorded
	for _, h := range sortedKeys(d.Machines) {
		out = append(out, onMachine(h, d.Machines[h]...)...)
	}
	placed := Placements("legacy", "op-import", PlacedInstances(d.Cluster))
	for _, h := range sortedKeys(placed) {
		out = append(out, onMachine(h, placed[h])...)
	}
	return append(out, onCluster("legacy", d.Cluster...)...)
}

// deployedOnTiupHosts is the history of a cluster deployed on the import's
// hosts, registered for it.
func deployedOnTiupHosts(t *testing.T, name, topology string) []recorded {
	t.Helper()
	h := registered(tiupHosts...)
	evs, err := DecideDeployCluster(given(history(inventory(), h)...), DeployCluster{Name: name, Version: "v8.1.0", Topology: topology, OperationID: "op-deploy-" + name})
	if err != nil {
		t.Fatalf("deploy %s: %v", name, err)
	}
	return history(h, onCluster(name, evs...))
}

func TestDecideImportClusterAccepted(t *testing.T) {
	w := given(inventory()...)
	before := given(inventory()...)
	d, err := DecideImportCluster(w, importTiup())
	if err != nil {
		t.Fatalf("import refused: %s %q", ErrorCode(err), err)
	}
	if !reflect.DeepEqual(w, before) {
		t.Error("deciding changed the world it was given")
	}
	if len(d.Cluster) != 2 {
		t.Fatalf("cluster events %s, want ClusterImported and OperationRequested", describeEvents(d.Cluster))
	}
	imp, ok := d.Cluster[0].(ClusterImported)
	if !ok {
		t.Fatalf("first event %T, want ClusterImported", d.Cluster[0])
	}
	if imp.Name != "legacy" || imp.Version != "v8.1.0" || imp.PackageID != "dm-v8.1.0-linux-amd64" || imp.Group != DefaultGroup ||
		imp.Topology != tiupTopology || imp.Source != ImportSourceTiUPDM {
		t.Errorf("ClusterImported %+v", imp)
	}
	wantGlobal := GlobalOptions{User: "tidb", SSHPort: 22, DeployDir: "/home/tidb/dm/deploy", DataDir: "/home/tidb/dm/data", LogDir: "log",
		Arch: "amd64", OS: "linux", ServiceManager: ServiceManagerNone}
	if imp.Global != wantGlobal {
		t.Errorf("Global = %+v, want %+v", imp.Global, wantGlobal)
	}
	// The directories are the ones tiup deployed, every instance imported.
	var got []string
	for _, in := range imp.Instances {
		if !in.Imported {
			t.Errorf("%s is not marked imported", in.label())
		}
		got = append(got, in.label()+" "+in.Name+" "+strings.Join(in.Dirs(), ","))
	}
	want := []string{
		"dm-master 198.18.0.21:8261 dm-198.18.0.21-8261 /home/tidb/dm/deploy/dm-master-8261,/home/tidb/dm/data/dm-master-8261,/home/tidb/dm/deploy/dm-master-8261/log",
		"dm-master 198.18.0.22:8261 dm-198.18.0.22-8261 /home/tidb/dm/deploy/dm-master-8261,/home/tidb/dm/data/dm-master-8261,/home/tidb/dm/deploy/dm-master-8261/log",
		"dm-master 198.18.0.23:8261 dm-198.18.0.23-8261 /home/tidb/dm/deploy/dm-master-8261,/home/tidb/dm/data/dm-master-8261,/home/tidb/dm/deploy/dm-master-8261/log",
		"dm-worker 198.18.0.21:8262 dm-198.18.0.21-8262 /home/tidb/dm/deploy/dm-worker-8262,/home/tidb/dm/data/dm-worker-8262,/home/tidb/dm/deploy/dm-worker-8262/log",
		"dm-worker 198.18.0.22:8262 dm-198.18.0.22-8262 /home/tidb/dm/deploy/dm-worker-8262,/home/tidb/dm/data/dm-worker-8262,/home/tidb/dm/deploy/dm-worker-8262/log",
		"prometheus 198.18.0.23:9090 prometheus-198.18.0.23-9090 /home/tidb/dm/deploy/prometheus-9090,/home/tidb/dm/data/prometheus-9090,/home/tidb/dm/deploy/prometheus-9090/log",
	}
	if !slices.Equal(got, want) {
		t.Errorf("instances\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}

	// Every host is registered with the import, as the deploy user.
	if len(d.Machines) != 3 {
		t.Fatalf("machines %v, want the three hosts", sortedKeys(d.Machines))
	}
	for _, h := range tiupHosts {
		evs := d.Machines[h]
		if len(evs) != 1 {
			t.Fatalf("machine %s: events %s", h, describeEvents(evs))
		}
		if r, ok := evs[0].(MachineRegistered); !ok || r.Host != h || r.User != "tidb" || r.Credential.ID != "cred-"+h || r.Address != h {
			t.Errorf("machine %s: %+v", h, evs[0])
		}
	}

	// The plan reads and nothing else: a check per instance, then the
	// members check after all of them.
	op := d.Cluster[1].(OperationRequested)
	if op.ID != "op-import" || op.Kind != OperationImport || op.Cluster != "legacy" {
		t.Errorf("operation %+v", op)
	}
	if len(op.Plan) != len(imp.Instances)+1 {
		t.Fatalf("plan %v, want a check per instance and the members check", stepIDs(op.Plan))
	}
	for _, s := range op.Plan {
		if s.Kind != StepVerifyInstance && s.Kind != StepCheckCluster {
			t.Errorf("step %s is a %s: an import only reads", s.ID, s.Kind)
		}
		if len(s.Files) > 0 || len(s.Copies) > 0 || len(s.Switches) > 0 || s.Mark != nil {
			t.Errorf("step %s would write: %+v", s.ID, s)
		}
	}
	master := stepByID(t, op.Plan, "verify/198.18.0.21:8261")
	wantVerify := InstanceVerify{Binary: "/home/tidb/dm/deploy/dm-master-8261/bin/dm-master/dm-master",
		Config: "/home/tidb/dm/deploy/dm-master-8261/conf/dm-master.toml", Version: "v8.1.0"}
	if master.Verify == nil || *master.Verify != wantVerify {
		t.Errorf("master check %+v, want %+v", master.Verify, wantVerify)
	}
	if s := master.Service; s == nil || s.Manager != ServiceManagerNone || s.PIDFile != "/home/tidb/dm/deploy/dm-master-8261/scripts/dm-master-8261.pid" ||
		s.RunScript != "/home/tidb/dm/deploy/dm-master-8261/scripts/run_dm-master.sh" || s.HealthAddr != "198.18.0.21:8261" || s.HealthPath != "/status" {
		t.Errorf("master service %+v", master.Service)
	}
	if !slices.Equal(master.Dirs, []string{"/home/tidb/dm/deploy/dm-master-8261", "/home/tidb/dm/data/dm-master-8261", "/home/tidb/dm/deploy/dm-master-8261/log"}) {
		t.Errorf("master dirs %v", master.Dirs)
	}
	prom := stepByID(t, op.Plan, "verify/198.18.0.23:9090")
	if prom.Verify.Binary != "/home/tidb/dm/deploy/prometheus-9090/bin/prometheus/prometheus" || prom.Verify.Version != "" {
		t.Errorf("prometheus check %+v", prom.Verify)
	}
	check := stepByID(t, op.Plan, "check-cluster")
	if check.Check == nil || !slices.Equal(check.Check.Workers, []string{"dm-198.18.0.21-8262", "dm-198.18.0.22-8262"}) || len(check.Check.Masters) != 3 {
		t.Errorf("members check %+v", check.Check)
	}
	for _, in := range imp.Instances {
		if !slices.Contains(check.Needs, "verify/"+in.ID) {
			t.Errorf("the members check does not wait for %s", in.label())
		}
	}

	// Under systemd the checks ask systemd about tiup's units.
	c := importTiup()
	c.ServiceManager = ServiceManagerSystemd
	d, err = DecideImportCluster(given(inventory()...), c)
	if err != nil {
		t.Fatal(err)
	}
	s := stepByID(t, d.Cluster[1].(OperationRequested).Plan, "verify/198.18.0.22:8262").Service
	if s.Manager != ServiceManagerSystemd || s.UnitFile != "/etc/systemd/system/dm-worker-8262.service" || s.PIDFile != "" {
		t.Errorf("systemd service %+v", s)
	}
}

// TestDecideImportClusterOnRegisteredMachines: machines of the cluster's
// group are used as they are; the others of the topology are registered.
func TestDecideImportClusterOnRegisteredMachines(t *testing.T) {
	w := given(history(inventory(), registered("198.18.0.21", "198.18.0.22"))...)
	c := importTiup()
	c.NewMachines = []RegisterMachine{newMachine("198.18.0.23")}
	d, err := DecideImportCluster(w, c)
	if err != nil {
		t.Fatalf("refused: %v", err)
	}
	if !slices.Equal(sortedKeys(d.Machines), []string{"198.18.0.23"}) {
		t.Errorf("registered %v, want only 198.18.0.23", sortedKeys(d.Machines))
	}
	if got := PlacedInstances(d.Cluster); len(got) != 6 {
		t.Errorf("the import places %d instances, want 6", len(got))
	}
}

func TestDecideImportClusterRefused(t *testing.T) {
	otherGroup := machineRegistered("198.18.0.22")
	otherGroup.Group = "payments"
	clash := strings.ReplaceAll(prodATopology, "198.18.0.1", "198.18.0.2") // prod-a's ports and directories, on the import's hosts
	tests := []struct {
		name    string
		history []recorded
		change  func(*ImportCluster)
		want    then
	}{
		{"invalid name", nil, func(c *ImportCluster) { c.Name = "Legacy!" }, thenError(Invalid, "cluster name")},
		{"name of a cluster that exists", deployedCluster(t, "legacy", prodBTopology), nil,
			thenError(Conflict, "cluster legacy already exists (version v8.1.0, deploying): import the cluster under another name")},
		{"unknown version", nil, func(c *ImportCluster) { c.Version = "nightly" }, thenError(Invalid, `dm_version: version "nightly" is invalid`)},
		{"version without a package", nil, func(c *ImportCluster) { c.Version = "v8.5.0" },
			thenError(Conflict, "version v8.5.0 has no uploaded package for linux/amd64 (dm-v8.5.0-linux-amd64)", "upload dm-v8.5.0.tar.gz for linux/amd64 with POST /api/v1/packages first")},
		{"an instance on a platform without a package", nil, func(c *ImportCluster) {
			c.Topology = withLine(t, withLine(t, tiupTopology, 8, "  arch: arm64"), 24, "  arch: arm64")
		}, thenError(Conflict, "version v8.1.0 has no uploaded package for linux/arm64")},
		{"no operation id", nil, func(c *ImportCluster) { c.OperationID = "" }, thenError(Invalid, "operation id is required")},
		{"unknown service manager", nil, func(c *ImportCluster) { c.ServiceManager = "upstart" }, thenError(Invalid, `service_manager "upstart" is not supported`)},
		{"invalid topology", nil, func(c *ImportCluster) { c.Topology = withLine(t, tiupTopology, 19, "  port: http") },
			thenError(Invalid, "topology line 19: master_servers[0].port: want a number")},
		{"user of meta.yaml is not the topology's", nil, func(c *ImportCluster) { c.User = "dm" },
			thenError(Invalid, "meta.yaml names user dm, but its topology's global.user is tidb")},
		{"two ssh ports on one host", nil, func(c *ImportCluster) { c.Topology = withLine(t, tiupTopology, 17, "  ssh_port: 2222") },
			thenError(Invalid, "has ssh_port 22 but dm-master 198.18.0.21:8261 on the same host has 2222")},
		{"a port of another cluster", deployedOnTiupHosts(t, "prod-a", clash), func(c *ImportCluster) {
			c.NewMachines = nil
		}, thenError(Conflict, "port 8261 on 198.18.0.21 is already used by cluster prod-a (dm-master 198.18.0.21:8261)")},
		{"a directory of another cluster", deployedOnTiupHosts(t, "prod-b", specLines(
			"master_servers:", "  - host: 198.18.0.21", "    port: 18261", "    peer_port: 18291", "    deploy_dir: /home/tidb/dm/deploy/dm-master-8261")),
			func(c *ImportCluster) { c.NewMachines = nil },
			thenError(Conflict, "directory /home/tidb/dm/deploy/dm-master-8261 on 198.18.0.21 clashes with cluster prod-b (dm-master 198.18.0.21:18261)")},
		{"a machine of another group", onMachine("198.18.0.22", otherGroup), nil,
			thenError(Conflict, "host 198.18.0.22 is machine 198.18.0.22 of group payments, not of the group default the imported cluster will belong to")},
		{"a host registered under another name", onMachine("dm-host-3", MachineRegistered{Host: "dm-host-3", Address: "198.18.0.23", SSHPort: 22,
			User: "tidb", Credential: CredentialRef{ID: "c", Kind: CredentialPassword}, HostKey: testHostKey}), nil,
			thenError(Conflict, "machine 198.18.0.23 is already registered as dm-host-3")},
		{"a host the import does not register", nil, func(c *ImportCluster) { c.NewMachines = c.NewMachines[:2] },
			thenError(Internal, "host 198.18.0.23 is not a machine")},
		{"a registration of a host outside the topology", nil, func(c *ImportCluster) {
			c.NewMachines = append(c.NewMachines, newMachine("198.18.0.99"))
		}, thenError(Internal, "198.18.0.99, which is not a host of the topology")},
		{"too many instances", nil, func(c *ImportCluster) { c.MaxInstances = 5 }, thenError(Invalid, "6")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := given(history(inventory(), tt.history)...)
			before := given(history(inventory(), tt.history)...)
			c := importTiup()
			if tt.change != nil {
				tt.change(&c)
			}
			d, err := DecideImportCluster(w, c)
			if err == nil {
				t.Fatalf("accepted with %s and machines %v, want a %s error %q", describeEvents(d.Cluster), sortedKeys(d.Machines), tt.want.code, tt.want.msgs)
			}
			if d.Cluster != nil || d.Machines != nil {
				t.Errorf("refused but also decided %s / %v", describeEvents(d.Cluster), d.Machines)
			}
			tt.want.check(t, nil, err)
			if !reflect.DeepEqual(w, before) {
				t.Error("a refused import changed the world")
			}
		})
	}
}

// reportOn runs a report of operation op on c, failing t on a refusal.
func reportOn(t *testing.T, c Cluster, op string, r StepReport) Cluster {
	t.Helper()
	r.Operation = op
	evs, err := DecideStepReport(&c, r, c.LeaderToken)
	if err != nil {
		t.Fatalf("report %+v: %v", r, err)
	}
	for _, e := range evs {
		c = EvolveCluster(c, e)
	}
	return c
}

// TestImportRunsToSuccess: the checks pass, the cluster runs and every
// instance is up (live display probes it).
func TestImportRunsToSuccess(t *testing.T) {
	c := foldCluster(onCluster("legacy", clusterEventsOf(importedLegacy(t))...))
	if c.Status != ClusterStatusImporting || !c.Exists() {
		t.Fatalf("while it imports: status %s, exists %v", c.Status, c.Exists())
	}
	for round := 0; round < 10; round++ {
		op := c.FindOperation("op-import")
		for _, s := range ProgressOf(op.Plan, op.Steps).Ready {
			c = reportOn(t, c, "op-import", StepReport{Step: s.ID, Attempt: 1, Agent: "a"})
			c = reportOn(t, c, "op-import", StepReport{Step: s.ID, Attempt: 1, Agent: "a", Finished: true, OK: true})
		}
	}
	if op := c.FindOperation("op-import"); op.Status != OperationStatusSucceeded || c.Status != ClusterStatusRunning {
		t.Fatalf("operation %s, cluster %s; want succeeded, running", op.Status, c.Status)
	}
	for _, in := range c.Instances {
		if in.Status != InstanceStatusUp || !in.Imported {
			t.Errorf("%s: status %q imported %v; want up, imported", in.label(), in.Status, in.Imported)
		}
	}
}

func clusterEventsOf(h []recorded) []Event {
	var out []Event
	for _, r := range h {
		if r.aggregate == AggregateCluster {
			out = append(out, r.event)
		}
	}
	return out
}

// TestImportFailureReleasesTheCluster: a failed check fails the import
// with the host, the instance and the reason; the cluster is not taken
// over — its name, ports and directories are free again — with no other
// event than the operation's outcome; the machines stay registered; the
// import is not retried, it is imported again.
func TestImportFailureReleasesTheCluster(t *testing.T) {
	for _, end := range []string{"failed", "cancelled"} {
		t.Run(end, func(t *testing.T) {
			h := importedLegacy(t)
			w := given(history(inventory(), h)...)
			c := *w.Clusters["legacy"]
			step := "verify/198.18.0.22:8262"
			var last []Event
			switch end {
			case "failed":
				// The other checks pass (they run side by side); this one fails.
				for _, s := range c.FindOperation("op-import").Plan {
					if s.Kind == StepVerifyInstance && s.ID != step {
						c = reportOn(t, c, "op-import", StepReport{Step: s.ID, Attempt: 1, Agent: "a", Finished: true, OK: true})
					}
				}
				c = reportOn(t, c, "op-import", StepReport{Step: step, Attempt: 1, Agent: "a"})
				r := StepReport{Operation: "op-import", Step: step, Attempt: 1, Agent: "a", Finished: true, ExitCode: 1,
					Error: "step verify/198.18.0.22:8262 on 198.18.0.22: dm-worker 198.18.0.22:8262 does not run: its pid file names no live process"}
				evs, err := DecideStepReport(&c, r, c.LeaderToken)
				if err != nil {
					t.Fatal(err)
				}
				last = evs
				// Nothing else runs: the other steps were never started.
				if len(evs) != 2 {
					t.Fatalf("events %s, want StepFailed and OperationFailed", describeEvents(evs))
				}
				f, ok := evs[1].(OperationFailed)
				if !ok || !strings.Contains(f.Error, "198.18.0.22") || !strings.Contains(f.Error, "dm-worker 198.18.0.22:8262 does not run") {
					t.Fatalf("outcome %s does not name the host, instance and reason", describeEvents(evs))
				}
			case "cancelled":
				evs, err := DecideCancelOperation(&c, CancelOperation{ID: "op-import"})
				if err != nil {
					t.Fatal(err)
				}
				last = evs
			}
			for _, e := range last {
				w.Apply(AggregateCluster, "legacy", e)
			}
			got := w.Clusters["legacy"]
			if got.Status != ClusterStatusImportFailed || got.Exists() {
				t.Fatalf("after the import %s: status %s, exists %v; want import_failed, not existing", end, got.Status, got.Exists())
			}
			if len(w.Allocations("")) != 0 {
				t.Errorf("the failed import still holds %d instances' ports and directories", len(w.Allocations("")))
			}
			for _, host := range tiupHosts {
				if !w.Machines[host].Active() {
					t.Errorf("machine %s is not registered after the failed import", host)
				}
				if gone := Released(w.Machines[host], w.Clusters, ""); !slices.Equal(gone, []string{"legacy"}) {
					t.Errorf("machine %s: released %v, want legacy", host, gone)
				}
				if _, err := DecideRemoveMachine(w, RemoveMachine{Host: host}); err != nil {
					t.Errorf("machine %s cannot be removed: %v", host, err)
				}
			}

			// Retrying it is refused, saying to import again.
			_, err := DecideRetryOperation(got, RetryOperation{ID: "op-import"})
			thenError(Conflict, "is an import that "+end, "import it again with POST /api/v1/clusters/import").check(t, nil, err)
			// Other commands find no cluster.
			_, err = DecideControlCluster(got, ControlCluster{Kind: OperationStop, Name: "legacy", OperationID: "op-stop"})
			thenError(NotFound, "cluster legacy does not exist").check(t, nil, err)

			// The name, ports and directories are free: a deploy of the
			// same name on the same ports is accepted, and so is a second
			// import (the hosts are machines now).
			deploy := strings.ReplaceAll(prodBTopology, "198.18.0.11", "198.18.0.21")
			deploy = strings.ReplaceAll(deploy, "port: 8361", "port: 8261")
			if _, err := DecideDeployCluster(w, DeployCluster{Name: "legacy", Version: "v8.1.0", Topology: deploy, OperationID: "op-d"}); err != nil {
				t.Errorf("a deploy after the failed import is refused: %v", err)
			}
			again := importTiup()
			again.NewMachines, again.OperationID = nil, "op-import-2"
			d, err := DecideImportCluster(w, again)
			if err != nil {
				t.Fatalf("a second import is refused: %v", err)
			}
			if len(d.Machines) != 0 {
				t.Errorf("the second import registers %v again", sortedKeys(d.Machines))
			}
			c2 := EvolveCluster(*got, d.Cluster[0])
			if c2.Status != ClusterStatusImporting || len(c2.Instances) != 6 {
				t.Errorf("re-imported: %s with %d instances", c2.Status, len(c2.Instances))
			}
		})
	}
}

// importedRunning is legacy imported, its checks passed.
func importedRunning(t *testing.T) *World {
	t.Helper()
	w := given(history(inventory(), importedLegacy(t))...)
	c := *w.Clusters["legacy"]
	op := c.FindOperation("op-import")
	for round := 0; round < 10 && op.Active(); round++ {
		for _, s := range ProgressOf(op.Plan, op.Steps).Ready {
			c = reportOn(t, c, "op-import", StepReport{Step: s.ID, Attempt: 1, Agent: "a", Finished: true, OK: true})
		}
		op = c.FindOperation("op-import")
	}
	if c.Status != ClusterStatusRunning {
		t.Fatalf("import did not finish: %s", c.Status)
	}
	w.Clusters["legacy"] = &c
	return w
}

// TestCommandsOnAnImportedCluster: the later commands know tiup's layout
// and the directories without a marker.
func TestCommandsOnAnImportedCluster(t *testing.T) {
	w := importedRunning(t)
	c := w.Clusters["legacy"]

	// Scale-in and destroy remove directories under a mark that says the
	// instance was imported.
	evs, err := DecideScaleIn(c, ScaleIn{Name: "legacy", Nodes: []string{"198.18.0.22:8262"}, OperationID: "op-si"})
	if err != nil {
		t.Fatal(err)
	}
	rm := stepByID(t, evs[1].(OperationRequested).Plan, "remove/198.18.0.22:8262")
	if rm.Mark == nil || !rm.Mark.Imported || rm.Mark.Cluster != "legacy" || rm.Service.PIDFile != "/home/tidb/dm/deploy/dm-worker-8262/scripts/dm-worker-8262.pid" {
		t.Errorf("scale-in removal %+v mark %+v", rm, rm.Mark)
	}
	plan := plans(t)(DecideDestroyCluster(c, DestroyCluster{Name: "legacy", OperationID: "op-d"}))
	if rm := stepByID(t, plan, "remove/198.18.0.21:8261"); rm.Mark == nil || !rm.Mark.Imported {
		t.Errorf("destroy removal mark %+v", rm.Mark)
	}

	// A scale-out adds instances of dmgr's own (marked, dmgr's layout)
	// that join the imported masters.
	w.Packages["dm-v8.1.0-linux-amd64"] = ptrTo(dmUploaded("v8.1.0", "amd64")).asPackage()
	so, err := DecideScaleOut(w, ScaleOut{Name: "legacy", Topology: specLines("worker_servers:", "  - host: 198.18.0.23", "    name: worker3"), OperationID: "op-so"})
	if err != nil {
		t.Fatalf("scale-out refused: %v", err)
	}
	added := so[0].(ClusterScaleOutRequested).Instances
	if len(added) != 1 || added[0].Imported || added[0].DeployDir != "/home/tidb/dm/deploy/dm-worker-8262" {
		t.Errorf("added %+v", added)
	}
	soPlan := so[1].(OperationRequested).Plan
	cfg := fileOf(t, stepByID(t, soPlan, "config/198.18.0.23:8262"), "/home/tidb/dm/deploy/dm-worker-8262/conf/dm-worker.toml")
	if !strings.Contains(cfg.Content, "198.18.0.21:8261,198.18.0.22:8261,198.18.0.23:8261") {
		t.Errorf("the new worker does not join the imported masters:\n%s", cfg.Content)
	}
	run := fileOf(t, stepByID(t, soPlan, "config/198.18.0.23:8262"), "/home/tidb/dm/deploy/dm-worker-8262/scripts/run_dm-worker.sh")
	if !strings.Contains(run.Content, "exec bin/dm-worker ") {
		t.Errorf("the new worker's run script:\n%s", run.Content)
	}
	// The imported prometheus is re-rendered to scrape it, with tiup's binary.
	promRun := fileOf(t, stepByID(t, soPlan, "config/198.18.0.23:9090"), "/home/tidb/dm/deploy/prometheus-9090/scripts/run_prometheus.sh")
	if !strings.Contains(promRun.Content, "exec bin/prometheus/prometheus ") {
		t.Errorf("the imported prometheus' run script:\n%s", promRun.Content)
	}

	// An upgrade switches the binaries where tiup keeps them.
	w.Packages["dm-v8.5.0-linux-amd64"] = ptrTo(dmUploaded("v8.5.0", "amd64")).asPackage()
	up, err := DecideUpgradeCluster(c, w.Packages, UpgradeCluster{Name: "legacy", Version: "v8.5.0", OperationID: "op-up"})
	if err != nil {
		t.Fatalf("upgrade refused: %v", err)
	}
	upPlan := up[0].(OperationRequested).Plan
	stage := stepByID(t, upPlan, "stage/198.18.0.21:8261")
	if len(stage.Copies) != 1 || stage.Copies[0].Dst != "/home/tidb/dm/deploy/dm-master-8261/bin/dm-master/dm-master.v8.5.0" || stage.Copies[0].Src != "bin/dm-master" {
		t.Errorf("stage %+v", stage.Copies)
	}
	sw := stepByID(t, upPlan, "switch/198.18.0.22:8262")
	if want := (SwitchSpec{From: "/home/tidb/dm/deploy/dm-worker-8262/bin/dm-worker/dm-worker.v8.5.0", To: "/home/tidb/dm/deploy/dm-worker-8262/bin/dm-worker/dm-worker", Owner: "tidb"}); len(sw.Switches) != 1 || sw.Switches[0] != want {
		t.Errorf("switch %+v, want %+v", sw.Switches, want)
	}
	bk := stepByID(t, upPlan, "backup/198.18.0.21:8261")
	if bk.Switches[0].To != "/home/tidb/dm/deploy/dm-master-8261/bin/dm-master/dm-master.v8.1.0" {
		t.Errorf("backup %+v", bk.Switches)
	}

	// A patch too.
	patch, err := DecidePatchCluster(c, w.Packages, PatchCluster{Name: "legacy", Package: "dm-v8.5.0-linux-amd64", Roles: []string{"dm-worker"}, OperationID: "op-p"})
	if err != nil {
		t.Fatal(err)
	}
	if sw := stepByID(t, patch[0].(OperationRequested).Plan, "switch/198.18.0.21:8262"); sw.Switches[0].To != "/home/tidb/dm/deploy/dm-worker-8262/bin/dm-worker/dm-worker" {
		t.Errorf("patch switch %+v", sw.Switches)
	}

	// A reload with new server_configs rewrites the config and keeps
	// tiup's binary path in what it renders.
	rl, err := DecideReloadCluster(c, ReloadCluster{Name: "legacy", ServerConfigs: map[string]map[string]any{"master": {"log-level": "debug"}}, OperationID: "op-rl"})
	if err != nil {
		t.Fatal(err)
	}
	rlPlan := rl[1].(OperationRequested).Plan
	if f := fileOf(t, stepByID(t, rlPlan, "config/198.18.0.21:8261"), "/home/tidb/dm/deploy/dm-master-8261/conf/dm-master.toml"); !strings.Contains(f.Content, `log-level = "debug"`) {
		t.Errorf("reloaded config:\n%s", f.Content)
	}
	files, err := clusterPlanner(c).renderFiles(c.Instances[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f.Path, "run_dm-master.sh") && !strings.Contains(f.Content, "exec bin/dm-master/dm-master ") {
			t.Errorf("an imported master's run script execs another binary:\n%s", f.Content)
		}
	}
}

// TestImportedGrafanaIsNotChangedInPlace: tiup's grafana tree under bin/
// is not what grafana.tar.gz replaces; an upgrade or patch says so.
func TestImportedGrafanaIsNotChangedInPlace(t *testing.T) {
	topo := tiupTopology + specLines("grafana_servers:", "- host: 198.18.0.23", "  port: 3000",
		"  deploy_dir: /home/tidb/dm/deploy/grafana-3000", "  data_dir: /home/tidb/dm/data/grafana-3000")
	c := importTiup()
	c.Topology = topo
	d, err := DecideImportCluster(given(inventory()...), c)
	if err != nil {
		t.Fatal(err)
	}
	gs := stepByID(t, d.Cluster[1].(OperationRequested).Plan, "verify/198.18.0.23:3000")
	if v := gs.Verify; v.Binary != "/home/tidb/dm/deploy/grafana-3000/bin/bin/grafana-server" || v.Config != "/home/tidb/dm/deploy/grafana-3000/conf/grafana.ini" {
		t.Errorf("grafana check %+v", v)
	}
	// tiup keeps grafana's data and logs in its deploy directory.
	if !slices.Equal(gs.Dirs, []string{"/home/tidb/dm/deploy/grafana-3000", "/home/tidb/dm/deploy/grafana-3000/data", "/home/tidb/dm/deploy/grafana-3000/log"}) {
		t.Errorf("grafana dirs %v", gs.Dirs)
	}
	cl := EvolveCluster(Cluster{}, d.Cluster[0])
	cl.Status = ClusterStatusRunning
	pkgs := map[string]*Package{"dm-v8.5.0-linux-amd64": ptrTo(dmUploaded("v8.5.0", "amd64")).asPackage()}
	_, err = DecideUpgradeCluster(&cl, pkgs, UpgradeCluster{Name: "legacy", Version: "v8.5.0", OperationID: "op-up"})
	thenError(Invalid, "grafana 198.18.0.23:3000 was taken over from tiup-dm", "scale it in").check(t, nil, err)
	_, err = DecidePatchCluster(&cl, pkgs, PatchCluster{Name: "legacy", Package: "dm-v8.5.0-linux-amd64", Roles: []string{"grafana"}, OperationID: "op-p"})
	thenError(Invalid, "grafana 198.18.0.23:3000 was taken over from tiup-dm").check(t, nil, err)
	files, err := clusterPlanner(&cl).renderFiles(cl.Instances[len(cl.Instances)-1])
	if err != nil {
		t.Fatal(err)
	}
	if run := files[len(files)-1]; !strings.Contains(run.Content, "exec bin/bin/grafana-server --homepath=/home/tidb/dm/deploy/grafana-3000/bin ") {
		t.Errorf("imported grafana's run script:\n%s", run.Content)
	}
}

// TestRemovalOfImportedDirectories: a directory without any marker is an
// imported instance's; everything a deployed instance's removal leaves is
// still left.
func TestRemovalOfImportedDirectories(t *testing.T) {
	m := DirMark{Cluster: "legacy", Dirs: []string{"/home/tidb/dm/deploy/dm-master-8261", "/home/tidb/dm/data/dm-master-8261"}, Imported: true}
	const inst = "198.18.0.21:8261"
	dir := func(path, kind string, mk *Marker, owner string) DirProbe {
		return DirProbe{Path: path, Kind: kind, Real: path, Marker: mk, MarkerOwner: owner}
	}
	deploy := "/home/tidb/dm/deploy/dm-master-8261"
	for _, tt := range []struct {
		name    string
		p, mark DirProbe
		want    string // part of the reason; "" when removed
	}{
		{"no marker", dir(deploy, DirFull, nil, ""), dir(deploy, DirFull, nil, ""), ""},
		{"inside an unmarked directory", dir(deploy+"/log", DirFull, nil, ""), dir(deploy, DirFull, nil, ""), ""},
		{"gone", dir(deploy, DirAbsent, nil, ""), dir(deploy, DirAbsent, nil, ""), ""},
		{"marked for this instance", dir(deploy, DirFull, &Marker{Cluster: "legacy", Instance: inst}, "root"),
			dir(deploy, DirFull, &Marker{Cluster: "legacy", Instance: inst}, "root"), ""},
		{"marked by another cluster", dir(deploy, DirFull, &Marker{Cluster: "prod-a", Instance: inst}, "root"),
			dir(deploy, DirFull, &Marker{Cluster: "prod-a", Instance: inst}, "root"), "carries the marker of cluster prod-a"},
		{"marked for another instance", dir(deploy, DirFull, &Marker{Cluster: "legacy", Instance: "198.18.0.21:8262"}, "root"),
			dir(deploy, DirFull, &Marker{Cluster: "legacy", Instance: "198.18.0.21:8262"}, "root"), "marker of instance 198.18.0.21:8262"},
		{"a marker someone else wrote", dir(deploy, DirFull, &Marker{Cluster: "legacy", Instance: inst}, "nobody"),
			dir(deploy, DirFull, &Marker{Cluster: "legacy", Instance: inst}, "nobody"), "owned by nobody"},
		{"a marker naming no cluster", dir(deploy, DirFull, &Marker{Instance: inst}, "root"), dir(deploy, DirFull, &Marker{Instance: inst}, "root"), "carries no marker"},
		{"a link", dir(deploy, DirSymlink, nil, ""), dir(deploy, DirSymlink, nil, ""), "symbolic link"},
		{"a file", dir(deploy, DirNotDir, nil, ""), dir(deploy, DirNotDir, nil, ""), "not a directory"},
		{"resolves to a home", DirProbe{Path: deploy, Kind: DirFull, Real: "/home/tidb"}, dir(deploy, DirFull, nil, ""), "home directory of the deploy user"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := m.RemovalProblem(tt.p, tt.mark, inst, "tidb")
			if (got == "") != (tt.want == "") || !strings.Contains(got, tt.want) {
				t.Errorf("RemovalProblem = %q, want %q", got, tt.want)
			}
			// Without Imported, an unmarked directory is left.
			plain := m
			plain.Imported = false
			if tt.p.Kind == DirFull && tt.mark.Marker == nil && tt.want == "" {
				if got := plain.RemovalProblem(tt.p, tt.mark, inst, "tidb"); !strings.Contains(got, "carries no marker of dmgr's") {
					t.Errorf("a deployed instance's unmarked directory: %q, want it left", got)
				}
			}
		})
	}
}

func TestApprovalPolicyMayNameImport(t *testing.T) {
	p := ApprovalPolicy{Commands: []string{"import"}, TTLSeconds: 3600}
	if err := ValidateApprovalPolicy(p); err != nil {
		t.Fatalf("a policy naming import is refused: %v", err)
	}
	if !p.Requires("import", nil) {
		t.Error("the policy does not hold an import")
	}
	if DefaultApprovalPolicy().Requires("import", map[string]string{"env": "prod"}) {
		t.Error("the default policy holds imports; it must only when a group names them")
	}
}

func ptrTo[T any](v T) *T { return &v }

// asPackage folds an upload into the package it makes.
func (p *PackageUploaded) asPackage() *Package {
	pk := EvolvePackage(Package{}, *p)
	return &pk
}
