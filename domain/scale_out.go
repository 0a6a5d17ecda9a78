package domain

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// OperationScaleOut adds instances to a cluster.
const OperationScaleOut = "scale-out"

// ScaleOut adds the instances of a tiup-dm topology fragment (the
// `*_servers` sections; the cluster's global settings apply) to a cluster.
type ScaleOut struct {
	Name        string
	Topology    string
	OperationID string
	// MaxInstances caps the cluster's instances, existing and new (≤ 0:
	// DefaultMaxInstancesPerCluster).
	MaxInstances int
}

// ClusterScaleOutRequested: instances were added to the cluster's
// topology; the operation deploys and starts them.
type ClusterScaleOutRequested struct {
	Topology  string     `json:"topology"` // the fragment as the user gave it
	Instances []Instance `json:"instances"`
}

// DecideScaleOut checks a scale-out against the whole inventory (hosts
// registered, the package for every platform, no port or directory clash
// with any instance, in this cluster or another) and plans it: the new
// instances are deployed like a deploy's, new masters join the running ones
// one at a time (dm-master --join), new workers join every master, the
// monitoring is re-rendered to scrape the new instances and restarted, and
// the members check covers the whole cluster.
func DecideScaleOut(w *World, cmd ScaleOut) ([]Event, error) {
	c := w.Clusters[cmd.Name]
	if err := checkCommand(c, cmd.Name, cmd.OperationID); err != nil {
		return nil, err
	}
	fragment, err := parseFragment(c, cmd.Topology)
	if err != nil {
		return nil, err
	}
	if err := CheckInstanceCap(c.Name, len(c.Instances), len(fragment.Instances), cmd.MaxInstances); err != nil {
		return nil, err
	}
	memberNames := make(map[string]bool, len(c.Instances))
	for _, o := range c.Instances {
		if o.Role == RoleMaster || o.Role == RoleWorker {
			memberNames[o.Name] = true
		}
	}
	for _, in := range fragment.Instances {
		m := w.Machines[in.Host]
		if !m.Active() {
			return nil, Errorf(Invalid, "topology line %d: host %s is not a registered machine: register it with POST /api/v1/machines first", in.Line, in.Host)
		}
		if m.Group != OwnerGroup(c.Group) {
			return nil, Errorf(Invalid, "topology line %d: machine %s belongs to group %s, not to the cluster's group %s: a cluster is placed only on its own group's machines", in.Line, in.Host, m.Group, OwnerGroup(c.Group))
		}
		id := PackageID(DMPackageName, c.Version, cmp.Or(in.OS, c.Global.OS), cmp.Or(in.Arch, c.Global.Arch))
		if err := needPackage(w, c.Version, id, in.Line); err != nil {
			return nil, err
		}
		if memberNames[in.Name] {
			return nil, Errorf(Conflict, "topology line %d: %s is already the name of an instance of cluster %s", in.Line, in.Name, c.Name)
		}
	}
	if err := CheckPlacement(fragment.Instances, w.Allocations("")); err != nil {
		return nil, err
	}
	plan, err := scaleOutPlan(c, fragment, w.Packages)
	if err != nil {
		return nil, err
	}
	markOperation(plan, cmd.OperationID)
	return []Event{
		ClusterScaleOutRequested{Topology: cmd.Topology, Instances: fragment.Instances},
		OperationRequested{ID: cmd.OperationID, Kind: OperationScaleOut, Cluster: c.Name, Plan: plan},
	}, nil
}

// parseFragment parses a scale-out fragment with the cluster's global
// settings, appended after the fragment so that line numbers stay the
// user's.
func parseFragment(c *Cluster, text string) (*Topology, error) {
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, "global:") || strings.HasPrefix(l, "server_configs:") {
			return nil, Errorf(Invalid, "a scale-out topology has only *_servers sections: the cluster's global settings and server_configs apply")
		}
	}
	g := c.Global
	global := fmt.Sprintf("\nglobal:\n  user: %s\n  ssh_port: %d\n  deploy_dir: %s\n  data_dir: %s\n  log_dir: %s\n  arch: %s\n  os: %s\n  service_manager: %s\n",
		yamlQuote(g.User), g.SSHPort, yamlQuote(g.DeployDir), yamlQuote(g.DataDir), yamlQuote(g.LogDir), g.Arch, g.OS, g.ServiceManager)
	t, err := parseTopologyFragment(strings.TrimRight(text, "\n") + "\n" + global)
	if err != nil {
		return nil, err
	}
	if len(t.Instances) == 0 {
		return nil, Errorf(Invalid, "the scale-out topology has no instance")
	}
	t.ServerConfigs = c.EffectiveServerConfigs()
	return t, nil
}

// scaleOutPlan deploys the fragment's instances into the running cluster.
func scaleOutPlan(c *Cluster, fragment *Topology, packages map[string]*Package) ([]Step, error) {
	all := &Topology{Global: c.Global, ServerConfigs: fragment.ServerConfigs,
		Instances: slices.Concat(c.Instances, fragment.Instances)}
	pl := &planner{cluster: c.Name, version: c.Version, topo: all, packages: packages,
		join: clusterPlanner(c).masterAddrs()}
	var hosts []string
	for _, in := range fragment.Instances {
		if !slices.Contains(hosts, in.Host) {
			hosts = append(hosts, in.Host)
		}
	}
	pl.hostChecks(hosts, fragment.Instances)
	for _, in := range fragment.Instances {
		if err := pl.prepareInstance(in); err != nil {
			return nil, err
		}
	}
	// New masters join one at a time; workers after every master.
	var before []string
	for _, in := range fragment.Instances {
		if in.Role == RoleMaster {
			before = []string{pl.addStart(in, before)}
		}
	}
	var workers []string
	for _, in := range fragment.Instances {
		if in.Role == RoleWorker {
			workers = append(workers, pl.addStart(in, before))
		}
	}
	before = slices.Concat(before, workers)
	if check, ok := pl.clusterCheck(before); ok {
		before = []string{pl.add(check)}
	}
	for _, in := range fragment.Instances {
		switch in.Role {
		case RolePrometheus, RoleGrafana, RoleAlertmanager:
			pl.addStart(in, before)
		}
	}
	// Existing prometheus: scrape the new instances.
	if err := pl.rescrape(c.Instances, before); err != nil {
		return nil, err
	}
	if err := CheckPlan(pl.steps); err != nil {
		return nil, err
	}
	return pl.steps, nil
}

// rescrape rewrites the configs of the prometheus instances among insts
// (rendered with the planner's topology) after needs, and restarts them to
// read the new scrape targets.
func (pl *planner) rescrape(insts []Instance, needs []string) error {
	for _, in := range insts {
		if in.Role != RolePrometheus {
			continue
		}
		files, err := pl.renderFiles(in)
		if err != nil {
			return err
		}
		cfg := pl.add(Step{ID: "config/" + in.ID, Kind: StepWriteFiles, Host: in.Host, Instance: in.ID, Role: in.Role,
			User: pl.topo.Global.User, Needs: slices.Clone(needs), Files: files})
		stop := pl.addStop(in, []string{cfg})
		pl.add(Step{ID: "start/" + in.ID, Kind: StepStart, Host: in.Host, Instance: in.ID, Role: in.Role,
			User: pl.topo.Global.User, Needs: []string{stop}, Service: pl.service(in)})
	}
	return nil
}
