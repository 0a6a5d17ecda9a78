package domain

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// workersTopology is a topology of one master and workers-1 workers on
// prodHosts, each worker with a port and directories of its own.
func workersTopology(n int) string {
	var b strings.Builder
	b.WriteString("global:\n  deploy_dir: /dm/deploy\n  data_dir: /dm/data\nmaster_servers:\n  - host: 198.18.0.11\nworker_servers:\n")
	for i := 1; i < n; i++ {
		fmt.Fprintf(&b, "  - host: %s\n    port: %d\n", prodHosts[i%len(prodHosts)], 10000+i)
	}
	return b.String()
}

func TestInstanceCap(t *testing.T) {
	tests := []struct {
		name                    string
		existing, adding, limit int
		want                    string // "" accepted
	}{
		{"at the default cap", 0, 500, 0, ""},
		{"one past the default cap", 0, 501, 0, "topology has 501 instances, more than the limit of 500 instances per cluster"},
		{"a configured cap", 0, 11, 10, "topology has 11 instances, more than the limit of 10 instances per cluster"},
		{"a configured cap reached", 0, 10, 10, ""},
		{"scale-out to the cap", 450, 50, 0, ""},
		{"scale-out past the cap", 450, 51, 0, "cluster c has 450 instances and the scale-out adds 51: 501 is more than the limit of 500 instances per cluster"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckInstanceCap("c", tt.existing, tt.adding, tt.limit)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("CheckInstanceCap = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || ErrorCode(err) != Invalid {
				t.Fatalf("CheckInstanceCap = %v (%s), want an invalid error containing %q", err, ErrorCode(err), tt.want)
			}
		})
	}
}

// A 501-instance topology is refused with the cap and decides nothing; a
// 500-instance one is accepted. Scale-out counts the instances the cluster
// has.
func TestDeployAndScaleOutRespectTheInstanceCap(t *testing.T) {
	w := given(inventory()...)
	evs, err := DecideDeployCluster(w, DeployCluster{Name: "big", Version: "v8.1.0", Topology: workersTopology(501), OperationID: "op-big"})
	if err == nil || ErrorCode(err) != Invalid || !strings.Contains(err.Error(), "501 instances, more than the limit of 500") || evs != nil {
		t.Fatalf("deploy of 501 instances = %d events, %v; want an invalid error with the cap and no event", len(evs), err)
	}
	evs, err = DecideDeployCluster(w, DeployCluster{Name: "big", Version: "v8.1.0", Topology: workersTopology(501), OperationID: "op-big", MaxInstances: 600})
	if err != nil || len(evs) != 2 {
		t.Fatalf("deploy of 501 instances under a cap of 600 = %v", err)
	}
	evs, err = DecideDeployCluster(w, DeployCluster{Name: "big", Version: "v8.1.0", Topology: workersTopology(500), OperationID: "op-big"})
	if err != nil {
		t.Fatalf("deploy of 500 instances: %v", err)
	}
	if got := len(evs[0].(ClusterDeployRequested).Instances); got != 500 {
		t.Fatalf("deploy has %d instances, want 500", got)
	}

	w = runningProdA(t) // 9 instances
	fragment := "worker_servers:\n  - host: 198.18.0.11\n    port: 9000\n  - host: 198.18.0.12\n    port: 9000\n"
	evs, err = DecideScaleOut(w, ScaleOut{Name: "prod-a", Topology: fragment, OperationID: "op-so", MaxInstances: 10})
	if err == nil || ErrorCode(err) != Invalid || !strings.Contains(err.Error(), "cluster prod-a has 9 instances and the scale-out adds 2: 11 is more than the limit of 10") || evs != nil {
		t.Fatalf("scale-out past the cap = %d events, %v", len(evs), err)
	}
	if _, err := DecideScaleOut(w, ScaleOut{Name: "prod-a", Topology: fragment, OperationID: "op-so", MaxInstances: 11}); err != nil {
		t.Fatalf("scale-out to the cap: %v", err)
	}
}

func TestDirIndex(t *testing.T) {
	x := newDirIndex()
	x.add("/dm/a", 0)
	x.add("/dm/a/data", 0)
	x.add("/srv/b/deploy", 1)
	x.add("/srv/b/deploy/log", 1)
	x.add("/srv/c", 2)
	tests := []struct {
		dir   string
		owner int // -1: no clash
	}{
		{"/dm/a", 0},           // equal
		{"/dm/a/data/x", 0},    // inside
		{"/dm", 0},             // contains
		{"/", 0},               // contains everything; the first owner
		{"/dm/ab", -1},         // a sibling sharing a prefix
		{"/dm/b", -1},          // a sibling
		{"/srv", 1},            // contains 1 and 2: the first
		{"/srv/b", 1},          // contains
		{"/srv/b/deploy2", -1}, // a sibling sharing a prefix
		{"/srv/c/d/e", 2},      // deep inside
		{"/srv/cc", -1},
		{"/opt", -1},
	}
	for _, tt := range tests {
		got, ok := x.clash(tt.dir)
		if !ok {
			got = -1
		}
		if got != tt.owner {
			t.Errorf("clash(%s) = %d, want %d", tt.dir, got, tt.owner)
		}
	}
}

// pairwisePlacement is CheckPlacement as it was written before it was
// indexed: every instance against every allocation on its host. The
// indexed check must answer exactly as it does.
func pairwisePlacement(instances []Instance, existing []Allocation) error {
	for _, in := range instances {
		var same []Allocation
		for _, a := range existing {
			if canonicalHost(a.Instance.Host) == canonicalHost(in.Host) {
				same = append(same, a)
			}
		}
		for _, port := range in.Ports() {
			for _, a := range same {
				if slices.Contains(a.Instance.Ports(), port) {
					return placementErr(in, "port %d on %s is already used by cluster %s (%s)", port, in.Host, a.Cluster, a.Instance.label())
				}
			}
		}
		for _, d := range in.Dirs() {
			for _, a := range same {
				if _, _, ok := firstDirClash([]string{d}, a.Instance.Dirs()); ok {
					return placementErr(in, "directory %s on %s clashes with cluster %s (%s)", d, in.Host, a.Cluster, a.Instance.label())
				}
			}
		}
	}
	return nil
}

// pairwiseTopologyClashes is checkTopologyClashes as it was written before
// it was indexed.
func pairwiseTopologyClashes(insts []Instance) error {
	names := map[string]int{}
	ports := map[hostPortKey]int{}
	onHost := map[string][]int{}
	for i, in := range insts {
		if in.Role == RoleMaster || in.Role == RoleWorker {
			if j, ok := names[in.Name]; ok {
				o := insts[j]
				return topologyErr(in.Line, "name %q is already used by %s (line %d)", in.Name, o.label(), o.Line)
			}
			names[in.Name] = i
		}
		hk := canonicalHost(in.Host)
		if in.PeerPort == in.Port {
			return topologyErr(in.Line, "%s uses port %d twice", in.label(), in.Port)
		}
		for _, port := range in.Ports() {
			if j, ok := ports[hostPortKey{hk, port}]; ok {
				o := insts[j]
				return topologyErr(in.Line, "port %d on %s is already used by %s (line %d)", port, in.Host, o.label(), o.Line)
			}
			ports[hostPortKey{hk, port}] = i
		}
		for _, j := range onHost[hk] {
			o := insts[j]
			if o.Arch != in.Arch || o.OS != in.OS {
				return topologyErr(in.Line, "%s is %s/%s but %s (line %d) on the same host is %s/%s", in.label(), in.OS, in.Arch, o.label(), o.Line, o.OS, o.Arch)
			}
			if d, od, ok := firstDirClash(in.Dirs(), o.Dirs()); ok {
				return topologyErr(in.Line, "directory %s on %s %s (line %d)", d, in.Host, describeDirClash(d, od, o), o.Line)
			}
		}
		onHost[hk] = append(onHost[hk], i)
	}
	return nil
}

// randomInstances draws instances on a few hosts with directories from a
// small tree, so that equal, nested and sibling directories and shared
// ports all occur.
func randomInstances(r *rand.Rand, n int) []Instance {
	hosts := []string{"10.0.0.1", "10.0.0.2", "fd00::1", "fd00:0::1", "Host.example.com", "host.example.com"}
	parts := []string{"a", "b", "ab", "data", "log"}
	dir := func() string {
		d := ""
		for range 1 + r.IntN(3) {
			d += "/" + parts[r.IntN(len(parts))]
		}
		return d
	}
	roles := []Role{RoleMaster, RoleWorker, RolePrometheus}
	out := make([]Instance, n)
	for i := range out {
		port := 8000 + r.IntN(40)
		in := Instance{ID: fmt.Sprintf("i%d", i), Name: fmt.Sprintf("n%d", r.IntN(4*n)), Role: roles[r.IntN(len(roles))],
			Host: hosts[r.IntN(len(hosts))], Port: port, DeployDir: dir(), DataDir: dir(), Line: i + 1}
		if r.IntN(3) == 0 {
			in.PeerPort = port + 1 + r.IntN(5)
		}
		if r.IntN(2) == 0 {
			in.LogDir = dir()
		}
		if r.IntN(20) == 0 {
			in.Arch = "arm64"
		}
		out[i] = in
	}
	return out
}

// The indexed clash checks answer exactly as the pairwise ones, for
// clashing and clean inputs alike.
func TestClashChecksAnswerAsPairwiseChecks(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 13))
	clashes, clean := 0, 0
	for round := range 3000 {
		n := 1 + r.IntN(12)
		insts := randomInstances(r, n)
		got, want := checkTopologyClashes(insts), pairwiseTopologyClashes(insts)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("round %d: checkTopologyClashes = %v\nwant %v\ninstances %+v", round, got, want, insts)
		}
		var existing []Allocation
		for i, in := range randomInstances(r, r.IntN(12)) {
			existing = append(existing, Allocation{Cluster: fmt.Sprintf("c%d", i%3), Instance: in})
		}
		got, want = CheckPlacement(insts, existing), pairwisePlacement(insts, existing)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("round %d: CheckPlacement = %v\nwant %v\ninstances %+v\nexisting %+v", round, got, want, insts, existing)
		}
		if want != nil {
			clashes++
		} else {
			clean++
		}
	}
	if clashes < 300 || clean < 300 {
		t.Fatalf("the random inputs were %d clashing and %d clean; both kinds need to be common", clashes, clean)
	}
}

// A topology of 10,000 workers on one host is checked (and refused by the
// cap); the clash checks do not compare every pair.
func TestLargeTopologyIsCheckedWithoutComparingEveryPair(t *testing.T) {
	var b strings.Builder
	b.WriteString("master_servers:\n  - host: 10.0.0.1\nworker_servers:\n")
	for i := range 10000 {
		fmt.Fprintf(&b, "  - host: 10.0.0.1\n    port: %d\n", 20000+i)
	}
	topo, err := ParseTopology(b.String())
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if err := CheckInstanceCap("big", 0, len(topo.Instances), 0); err == nil || !strings.Contains(err.Error(), "10001 instances") {
		t.Fatalf("cap: %v", err)
	}
	// The same instances again on the host clash at the first one.
	var existing []Allocation
	for _, in := range topo.Instances {
		existing = append(existing, Allocation{Cluster: "other", Instance: in})
	}
	err = CheckPlacement(topo.Instances[1:], existing)
	if err == nil || !strings.Contains(err.Error(), "port 20000 on 10.0.0.1 is already used by cluster other") {
		t.Fatalf("placement: %v", err)
	}
}

func BenchmarkClashChecks(b *testing.B) {
	for _, n := range []int{500, 10000} {
		var sb strings.Builder
		sb.WriteString("master_servers:\n  - host: 10.0.0.1\nworker_servers:\n")
		for i := 1; i < n; i++ {
			fmt.Fprintf(&sb, "  - host: 10.0.0.%d\n    port: %d\n", 1+i%4, 20000+i)
		}
		topo, err := ParseTopology(sb.String())
		if err != nil {
			b.Fatal(err)
		}
		var existing []Allocation
		for _, in := range topo.Instances {
			in.Port += 30000
			in.PeerPort = 0
			in.DeployDir, in.DataDir, in.LogDir = "/other"+in.DeployDir, "/other"+in.DataDir, "/other"+in.LogDir
			existing = append(existing, Allocation{Cluster: "other", Instance: in})
		}
		b.Run(fmt.Sprintf("topology/n=%d", n), func(b *testing.B) {
			for b.Loop() {
				if err := checkTopologyClashes(topo.Instances); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("placement/n=%d", n), func(b *testing.B) {
			for b.Loop() {
				if err := CheckPlacement(topo.Instances, existing); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
