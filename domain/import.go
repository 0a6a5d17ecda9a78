package domain

import (
	"cmp"
	"fmt"
	"path"
	"slices"
)

// Taking over a DM cluster that tiup-dm manages (`dmgr cluster import`).
//
// The cluster runs already: dmgr records it as it is on the hosts — its
// topology, version, directories and how its processes run — and checks,
// reading only, that the hosts hold what the topology says. Nothing of the
// cluster is stopped, written or re-deployed.
//
// The events: one atomic batch records ClusterImported and the import
// operation on the cluster, InstancesPlaced (ports and directories
// reserved) on each machine, and MachineRegistered (with its claims) for
// each host that was not a machine yet. The operation's steps only read
// (verify_instance per instance, then the members check). When it
// succeeds the cluster is running and every later command works on it as
// on a deployed one. When it fails or is cancelled, the fold marks the
// cluster import_failed, which does not exist (Cluster.Exists): its name,
// ports and directories are free again, with no further event to write
// and so nothing half-written; the machines registered stay registered.
// A failed import is not retried (its reservations may be taken since):
// it is imported again.
//
// Directories: tiup does not put dmgr's ownership marker (owned_dirs.go)
// into an instance's directories, and the import must not write one (it
// would change the cluster's files). An imported instance is recorded as
// such (Instance.Imported), and the marks of the steps that remove its
// directories (scale-in, destroy) say so (DirMark.Imported): a directory
// with no marker at all is then taken as the instance's, one that carries
// a marker must still name the cluster and the instance, and everything
// else (a link, a system path, another cluster's marker, a marker owned
// by someone else) is left, as for a deployed instance.

// Kinds and statuses of an import.
const (
	OperationImport = "import"
	// StepVerifyInstance checks, reading only, that an instance is as the
	// topology says: its deploy directory, binary, config, run script and
	// directories exist, its process runs (pid file or systemd) and it
	// answers its health route with the cluster's version.
	StepVerifyInstance = "verify_instance"

	// ClusterStatusImporting: the import's checks run; the name, ports
	// and directories are reserved.
	ClusterStatusImporting = "importing"
	// ClusterStatusImportFailed: the import failed or was cancelled; the
	// cluster was not taken over and does not exist.
	ClusterStatusImportFailed = "import_failed"
)

// ImportSource names where an imported cluster came from.
const ImportSourceTiUPDM = "tiup-dm"

// Health-check timeouts of an import, in seconds: the instances run
// already, so they answer at once or something is wrong.
const (
	importHealthTimeoutSec = 15
	importCheckTimeoutSec  = 30
)

// ImportCluster asks dmgr to take over a DM cluster that tiup-dm deployed
// and runs.
type ImportCluster struct {
	Name   string
	Group  string // the group that will own the cluster ("" is DefaultGroup)
	Labels map[string]string
	// Version is meta.yaml's dm_version, the version the cluster runs.
	Version string
	// Topology is the topology section of meta.yaml, a tiup-dm topology
	// with every directory as deployed.
	Topology string
	// User is meta.yaml's user: the deploy user the processes run as.
	User string
	// ServiceManager says how the instances run: ServiceManagerSystemd
	// (tiup's units) or ServiceManagerNone (run scripts with pid files).
	ServiceManager string
	// NewMachines register the hosts of the topology that are not
	// machines yet, with the import (their host keys read and pinned and
	// their credentials stored by the caller).
	NewMachines []RegisterMachine
	OperationID string
	// MaxInstances caps the cluster's instances (≤ 0: DefaultMaxInstancesPerCluster).
	MaxInstances int
}

// ClusterImported: a running tiup-dm cluster was recorded as it is on its
// hosts; the import operation checks it. Its shape is a deploy's
// (ClusterDeployRequested), with every instance Imported.
type ClusterImported struct {
	Name      string            `json:"name"`
	Group     string            `json:"group,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	Version   string            `json:"version"`
	PackageID string            `json:"package_id"`
	Topology  string            `json:"topology"`
	Global    GlobalOptions     `json:"global"`
	Instances []Instance        `json:"instances"`
	Source    string            `json:"source"` // ImportSourceTiUPDM
}

// ImportDecision is what an import records: the cluster's events, and the
// events of each machine it registers (keyed by host), all appended in one
// atomic batch with the placements.
type ImportDecision struct {
	Cluster  []Event
	Machines map[string][]Event
}

// InstanceVerify is what a verify_instance step checks besides the
// instance's directories (Step.Dirs) and service (Step.Service).
type InstanceVerify struct {
	Binary string `json:"binary"`           // absolute path of the component's binary
	Config string `json:"config,omitempty"` // absolute path of its main config file
	// Version is what the instance's GET /status must report (masters
	// and workers); empty: not checked.
	Version string `json:"version,omitempty"`
}

// ImportNeeds is what DecideImportCluster reads for c besides the cluster
// itself; nothing when the topology does not parse.
func ImportNeeds(c ImportCluster) Needs {
	topo, err := ParseTopology(c.Topology)
	if err != nil {
		return Needs{}
	}
	return Needs{Hosts: hostsOf(topo.Instances), Packages: PackagesFor(c.Version, topo.Global, topo.Instances)}
}

// DecideImportCluster decides an import against the inventory: the name
// must be free, the version's package uploaded (for later scale-outs and
// upgrades), every host a machine of the cluster's group or registered
// with the import, and no port or directory of the cluster may clash with
// an instance of another cluster. Its plan only reads the hosts.
func DecideImportCluster(w *World, c ImportCluster) (ImportDecision, error) {
	if err := ValidateClusterName(c.Name); err != nil {
		return ImportDecision{}, err
	}
	if existing := w.Clusters[c.Name]; existing.Exists() {
		return ImportDecision{}, Errorf(Conflict, "cluster %s already exists (version %s, %s): import the cluster under another name", c.Name, existing.Version, existing.Status)
	}
	if err := ValidatePackageVersion(c.Version); err != nil {
		return ImportDecision{}, Errorf(Invalid, "dm_version: %s", ErrorMessage(err))
	}
	if c.OperationID == "" {
		return ImportDecision{}, Errorf(Invalid, "operation id is required")
	}
	if c.ServiceManager != ServiceManagerSystemd && c.ServiceManager != ServiceManagerNone {
		return ImportDecision{}, Errorf(Invalid, "service_manager %q is not supported: use %s or %s", c.ServiceManager, ServiceManagerSystemd, ServiceManagerNone)
	}
	topo, err := ParseTopology(c.Topology)
	if err != nil {
		return ImportDecision{}, err
	}
	if c.User != "" && topo.Global.User != c.User {
		return ImportDecision{}, Errorf(Invalid, "meta.yaml names user %s, but its topology's global.user is %s: tiup-dm runs the cluster as one user; fix meta.yaml", c.User, topo.Global.User)
	}
	topo.Global.ServiceManager = c.ServiceManager
	if err := CheckInstanceCap(c.Name, 0, len(topo.Instances), c.MaxInstances); err != nil {
		return ImportDecision{}, err
	}
	pkgID := PackageID(DMPackageName, c.Version, topo.Global.OS, topo.Global.Arch)
	for _, in := range topo.Instances {
		os, arch := cmp.Or(in.OS, topo.Global.OS), cmp.Or(in.Arch, topo.Global.Arch)
		if id := PackageID(DMPackageName, c.Version, os, arch); w.Packages[id] == nil {
			return ImportDecision{}, Errorf(Conflict, "version %s has no uploaded package for %s/%s (%s), which %s runs: upload %s-%s.tar.gz for %s/%s with POST /api/v1/packages first, then import again",
				c.Version, os, arch, id, in.label(), DMPackageName, c.Version, os, arch)
		}
	}
	group := OwnerGroup(c.Group)
	if err := ValidateGroupName(group); err != nil {
		return ImportDecision{}, err
	}
	if err := ValidateLabels(c.Labels); err != nil {
		return ImportDecision{}, err
	}
	insts := slices.Clone(topo.Instances)
	for i := range insts {
		insts[i].Imported = true
		if insts[i].Role == RoleGrafana {
			// tiup-dm gives grafana no data or log directory of its own:
			// its grafana.ini keeps both inside the deploy directory.
			insts[i].DataDir = path.Join(insts[i].DeployDir, "data")
			insts[i].LogDir = path.Join(insts[i].DeployDir, "log")
		}
	}
	topo.Instances = insts
	machines, err := importMachines(w, c, topo, group)
	if err != nil {
		return ImportDecision{}, err
	}
	if err := CheckPlacement(topo.Instances, w.Allocations(c.Name)); err != nil {
		return ImportDecision{}, err
	}
	plan, err := ImportPlan(c.Name, c.Version, topo)
	if err != nil {
		return ImportDecision{}, err
	}
	return ImportDecision{
		Cluster: []Event{
			ClusterImported{Name: c.Name, Group: group, Labels: c.Labels, Version: c.Version, PackageID: pkgID, Topology: c.Topology,
				Global: topo.Global, Instances: insts, Source: ImportSourceTiUPDM},
			OperationRequested{ID: c.OperationID, Kind: OperationImport, Cluster: c.Name, Plan: plan},
		},
		Machines: machines,
	}, nil
}

// importMachines checks every host of the topology: a registered machine
// must belong to the cluster's group; any other host must be registered
// with the import, as the deploy user, in that group. It returns the
// registrations' events by host.
func importMachines(w *World, c ImportCluster, topo *Topology, group string) (map[string][]Event, error) {
	newByHost := map[string]RegisterMachine{}
	for _, rm := range c.NewMachines {
		newByHost[rm.Host] = rm
	}
	out := map[string][]Event{}
	sshPorts := map[string]Instance{}
	for _, in := range topo.Instances {
		if first, ok := sshPorts[in.Host]; ok {
			if first.SSHPort != in.SSHPort {
				return nil, topologyErr(in.Line, "%s has ssh_port %d but %s on the same host has %d: one host has one SSH port", in.label(), in.SSHPort, first.label(), first.SSHPort)
			}
			continue
		}
		sshPorts[in.Host] = in
		if m := w.Machines[in.Host]; m.Active() {
			if m.Group != group {
				return nil, Errorf(Conflict, "host %s is machine %s of group %s, not of the group %s the imported cluster will belong to: a cluster is placed only on its own group's machines; move the machine (PUT /api/v1/machines/%s/group) or import into group %s",
					in.Host, m.Host, m.Group, group, m.Host, m.Group)
			}
			continue
		}
		rm, ok := newByHost[in.Host]
		if !ok {
			return nil, Errorf(Internal, "host %s is not a machine, and the import does not register it", in.Host)
		}
		if OwnerGroup(rm.Group) != group {
			return nil, Errorf(Internal, "host %s would be registered in group %s, not in the cluster's group %s", in.Host, OwnerGroup(rm.Group), group)
		}
		evs, err := DecideRegisterMachine(w.Machines, rm)
		if err != nil {
			return nil, err
		}
		out[in.Host] = evs
	}
	for host := range newByHost {
		if _, ok := sshPorts[host]; !ok {
			return nil, Errorf(Internal, "the import would register %s, which is not a host of the topology", host)
		}
	}
	return out, nil
}

// ImportPlan computes the steps of an import: per instance a check that
// only reads its host, then, once every instance passed, the members
// check (a leader, every master and worker a member). The plan writes
// nothing and starts or stops nothing.
func ImportPlan(cluster, version string, topo *Topology) ([]Step, error) {
	pl := &planner{cluster: cluster, version: version, topo: topo}
	var verified []string
	for _, in := range topo.Instances {
		svc := pl.service(in)
		svc.HealthTimeoutSec = importHealthTimeoutSec
		v := &InstanceVerify{Binary: in.componentPath(binaryOf[in.Role]), Config: path.Join(in.DeployDir, "conf", configOf[in.Role])}
		if in.Role == RoleMaster || in.Role == RoleWorker {
			v.Version = version
		}
		verified = append(verified, pl.add(Step{ID: "verify/" + in.ID, Kind: StepVerifyInstance, Host: in.Host, Instance: in.ID,
			Role: in.Role, User: topo.Global.User, Dirs: in.Dirs(), Service: svc, Verify: v}))
	}
	if check, ok := pl.clusterCheck(verified); ok {
		check.Check.TimeoutSec = importCheckTimeoutSec
		pl.add(check)
	}
	if err := CheckPlan(pl.steps); err != nil {
		return nil, err
	}
	return pl.steps, nil
}

// binaryOf is each role's binary in the package (and, for an instance
// dmgr deployed, under its deploy directory).
var binaryOf = map[Role]string{
	RoleMaster:       "bin/dm-master",
	RoleWorker:       "bin/dm-worker",
	RolePrometheus:   "bin/prometheus",
	RoleAlertmanager: "bin/alertmanager",
	RoleGrafana:      "bin/grafana-server",
}

// configOf is each role's main config file under conf/.
var configOf = map[Role]string{
	RoleMaster:       "dm-master.toml",
	RoleWorker:       "dm-worker.toml",
	RolePrometheus:   "prometheus.yml",
	RoleAlertmanager: "alertmanager.yml",
	RoleGrafana:      "grafana.ini",
}

// tiupLayout maps a file of dmgr's layout (relative to the deploy
// directory) to where tiup-dm keeps it: tiup unpacks each component into
// a directory of its own under bin/ ("bin/dm-master/dm-master"; grafana's
// whole tree into bin/, so "bin/bin/grafana-server"). Files it does not
// map are where dmgr has them.
var tiupLayout = map[string]string{
	"bin/dm-master":      "bin/dm-master/dm-master",
	"bin/dm-worker":      "bin/dm-worker/dm-worker",
	"bin/prometheus":     "bin/prometheus/prometheus",
	"bin/alertmanager":   "bin/alertmanager/alertmanager",
	"bin/grafana-server": "bin/bin/grafana-server",
}

// componentRel is where the instance keeps rel (a path of dmgr's layout
// relative to the deploy directory): tiup's place for an imported
// instance, rel itself otherwise.
func (i Instance) componentRel(rel string) string {
	if i.Imported {
		if t, ok := tiupLayout[rel]; ok {
			return t
		}
	}
	return rel
}

// componentPath is the absolute path of rel (see componentRel).
func (i Instance) componentPath(rel string) string {
	return path.Join(i.DeployDir, i.componentRel(rel))
}

// refuseImportedGrafana refuses to change the files of an imported
// grafana in place: tiup keeps grafana's whole tree under bin/, which the
// package's grafana.tar.gz does not replace file for file.
func refuseImportedGrafana(in Instance, what string) error {
	if in.Imported && in.Role == RoleGrafana {
		return Errorf(Invalid, "%s was taken over from tiup-dm, whose grafana layout dmgr does not %s in place: scale it in and scale out a grafana deployed by dmgr first",
			in.label(), what)
	}
	return nil
}

// importFailed marks the cluster of a failed or cancelled import as not
// taken over.
func importFailed(c *Cluster, o *Operation) {
	if o.Kind == OperationImport && c.Status == ClusterStatusImporting {
		c.Status = ClusterStatusImportFailed
	}
}

// checkRetryImport refuses to retry an import: once it failed, its
// cluster was released, and its names, ports and directories may be
// someone else's now.
func checkRetryImport(c *Cluster, op *Operation) error {
	if op.Kind != OperationImport {
		return nil
	}
	return Errorf(Conflict, "operation %s is an import that %s: cluster %s was not taken over (%s), and an import is not retried; import it again with POST /api/v1/clusters/import",
		op.ID, op.Status, cmp.Or(c.Name, op.Cluster), describeImportState(c))
}

func describeImportState(c *Cluster) string {
	if c.Exists() {
		return fmt.Sprintf("a cluster of that name exists again, %s", c.Status)
	}
	return "its name, ports and directories are free"
}
