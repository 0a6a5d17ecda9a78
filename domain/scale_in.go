package domain

import "slices"

// Scale-in: the operation kind and its step kind.
const (
	OperationScaleIn = "scale-in"
	// StepOffline takes a master or worker out of the DM cluster through
	// dm-master's API (DELETE /apis/v1alpha1/members/{master|worker}/{name});
	// a member that is already gone is fine.
	StepOffline = "offline"
)

// ScaleIn removes instances (`host:port` ids, as display shows them).
// Force skips the members API, for a dead host.
type ScaleIn struct {
	Name        string
	Nodes       []string
	Force       bool
	OperationID string
}

// ClusterScaleInRequested: instances are being removed; each leaves the
// cluster's topology (and frees its ports) once its directories are gone.
type ClusterScaleInRequested struct {
	Nodes []string `json:"nodes"`
	Force bool     `json:"force"`
}

// DecideScaleIn refuses to remove the last master, and without force a
// majority of the masters at once; it plans, per node: a master is taken
// offline, then stopped; a worker is stopped, then taken offline; then its
// directories are removed. The monitoring is re-rendered without the
// removed instances and restarted.
func DecideScaleIn(c *Cluster, cmd ScaleIn) ([]Event, error) {
	if !c.Exists() {
		return nil, Errorf(NotFound, "cluster %s does not exist", cmd.Name)
	}
	if cmd.OperationID == "" {
		return nil, Errorf(Invalid, "operation id is required")
	}
	if len(cmd.Nodes) == 0 {
		return nil, Errorf(Invalid, "nodes is required: the host:port of each instance to remove, as the cluster view shows them")
	}
	removed, err := selectInstances(c, nil, cmd.Nodes)
	if err != nil {
		return nil, err
	}
	if err := CheckIdle(c); err != nil {
		return nil, err
	}
	masters := len(slices.DeleteFunc(slices.Clone(c.Instances), func(in Instance) bool { return in.Role != RoleMaster }))
	goingMasters := len(slices.DeleteFunc(slices.Clone(removed), func(in Instance) bool { return in.Role != RoleMaster }))
	if masters > 0 && goingMasters == masters {
		return nil, Errorf(Invalid, "cannot remove every dm-master of cluster %s: a cluster needs at least one; destroy it instead", c.Name)
	}
	if !cmd.Force && goingMasters > 0 && 2*goingMasters >= masters {
		return nil, Errorf(Invalid, "removing %d of %d dm-masters at once would lose their quorum: remove fewer at a time, or use force for dead hosts", goingMasters, masters)
	}
	kept := slices.DeleteFunc(slices.Clone(c.Instances), func(in Instance) bool { return slices.Contains(cmd.Nodes, in.ID) })
	pl := &planner{cluster: c.Name, version: c.Version, topo: &Topology{Global: c.Global, Instances: kept}}
	offline := func(in Instance, needs []string) string {
		var addrs []string
		host := ""
		for _, m := range kept {
			if m.Role == RoleMaster {
				addrs = append(addrs, hostPort(m.Host, m.Port))
				if host == "" {
					host = m.Host
				}
			}
		}
		return pl.add(Step{ID: "offline/" + in.ID, Kind: StepOffline, Host: host, Instance: in.ID, Role: in.Role,
			Needs: needs, Check: &ClusterCheck{MasterAddrs: addrs, TimeoutSec: 60,
				Masters: names(in, RoleMaster), Workers: names(in, RoleWorker)}})
	}
	var removes []string
	for _, in := range removed {
		var last string
		switch {
		case cmd.Force || (in.Role != RoleMaster && in.Role != RoleWorker):
			last = pl.addStop(in, nil)
		case in.Role == RoleMaster:
			last = pl.addStop(in, []string{offline(in, nil)})
		default:
			last = offline(in, []string{pl.addStop(in, nil)})
		}
		removes = append(removes, pl.add(removeStep(c, in, removableDirs(in, false), last, pl.service(in))))
	}
	if err := pl.rescrape(kept, removes); err != nil {
		return nil, err
	}
	if err := CheckPlan(pl.steps); err != nil {
		return nil, err
	}
	return []Event{
		ClusterScaleInRequested{Nodes: cmd.Nodes, Force: cmd.Force},
		OperationRequested{ID: cmd.OperationID, Kind: OperationScaleIn, Cluster: c.Name, Plan: pl.steps},
	}, nil
}

// names lists in's name when it has role.
func names(in Instance, role Role) []string {
	if in.Role == role {
		return []string{in.Name}
	}
	return nil
}

// removableDirs is what removing an instance deletes: its deploy
// directory, and its log and data directories when they are elsewhere
// (the data kept with retain).
func removableDirs(in Instance, retain bool) []string {
	dirs := []string{in.DeployDir}
	for _, d := range []string{in.LogDir, in.DataDir} {
		if d == "" || slices.Contains(dirs, d) || dirIsUnder(d, in.DeployDir) || (retain && d == in.DataDir) {
			continue
		}
		dirs = append(dirs, d)
	}
	return dirs
}
