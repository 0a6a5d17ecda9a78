package domain

// StepForceRemove stops an instance and removes its directories (those
// carrying its marker), as a forced destroy's one best-effort try.
const StepForceRemove = "force_remove"

// forceStepTimeoutSec bounds a forced destroy's try of an instance: the
// agent gives up on a host that does not answer within it.
const forceStepTimeoutSec = 30

// DestroyCluster stops every instance and removes its directories (the
// data directories stay with RetainData), freeing the machines.
//
// Force forgets a cluster whose hosts are gone: each instance is tried
// once (stop, remove its directories) under a short deadline, and the
// cluster is destroyed whether or not the tries succeed. It needs the
// cluster's name repeated in Confirm.
type DestroyCluster struct {
	Name        string
	RetainData  bool
	Force       bool
	Confirm     string // the cluster's name, repeated by the caller
	OperationID string
}

// ClusterDestroyRequested: a destroy was accepted; Force, when it is a
// forced one (audited with its actor, as every event).
type ClusterDestroyRequested struct {
	Force      bool `json:"force"`
	RetainData bool `json:"retain_data"`
}

// DecideDestroyCluster plans a destroy: stop every instance (monitoring
// first, masters last), then remove each one's deploy, log and (unless
// retained) data directories, and its systemd unit; a directory is
// removed only when it carries the marker of the cluster and instance.
// A forced destroy instead tries each instance once, stop and removal
// together, as best-effort steps with a short deadline.
func DecideDestroyCluster(c *Cluster, cmd DestroyCluster) ([]Event, error) {
	if !c.Exists() {
		return nil, Errorf(NotFound, "cluster %s does not exist", cmd.Name)
	}
	switch {
	case cmd.Force && cmd.Confirm == "":
		return nil, Errorf(Invalid, `a forced destroy forgets cluster %s even when its hosts cannot be reached: confirm it by repeating the cluster's name in the body, {"name": %q}`, c.Name, c.Name)
	case cmd.Confirm != "" && cmd.Confirm != c.Name:
		return nil, Errorf(Invalid, "the name %q in the body is not the cluster's name %s: repeat the name of the cluster to destroy", cmd.Confirm, c.Name)
	}
	if err := checkCommand(c, cmd.Name, cmd.OperationID); err != nil {
		return nil, err
	}
	pl := clusterPlanner(c)
	if cmd.Force {
		for _, in := range c.Instances {
			pl.add(Step{ID: "force/" + in.ID, Kind: StepForceRemove, Host: in.Host, Instance: in.ID, Role: in.Role,
				User: c.Global.User, Dirs: destroyDirs(in, cmd.RetainData), Service: pl.service(in), Mark: removalMark(c, in),
				BestEffort: true, TimeoutSec: forceStepTimeoutSec})
		}
	} else {
		pl.stops(c.Instances)
		for _, in := range c.Instances {
			pl.add(removeStep(c, in, destroyDirs(in, cmd.RetainData), "stop/"+in.ID, pl.service(in)))
		}
	}
	if err := CheckPlan(pl.steps); err != nil {
		return nil, err
	}
	return []Event{
		ClusterDestroyRequested{Force: cmd.Force, RetainData: cmd.RetainData},
		OperationRequested{ID: cmd.OperationID, Kind: OperationDestroy, Cluster: c.Name, Plan: pl.steps},
	}, nil
}

// destroyDirs is what destroying an instance removes: its directories,
// or with retain everything but its data directory.
func destroyDirs(in Instance, retain bool) []string {
	if !retain || !dirIsUnder(in.DataDir, in.DeployDir) {
		return removableDirs(in, retain)
	}
	// The data lives inside the deploy directory: keep it, remove the rest
	// of the instance.
	var dirs []string
	for _, sub := range []string{"bin", "conf", "scripts"} {
		dirs = append(dirs, in.DeployDir+"/"+sub)
	}
	if in.LogDir != "" && in.LogDir != in.DataDir {
		dirs = append(dirs, in.LogDir)
	}
	return dirs
}

// removeStep removes dirs of an instance (each only when the marker that
// speaks for it names the cluster and the instance), and its systemd unit.
func removeStep(c *Cluster, in Instance, dirs []string, after string, svc *ServiceSpec) Step {
	return Step{ID: "remove/" + in.ID, Kind: StepRemoveDirs, Host: in.Host, Instance: in.ID, Role: in.Role,
		User: c.Global.User, Needs: []string{after}, Dirs: dirs, Service: svc, Mark: removalMark(c, in)}
}

// removalMark is the mark of an instance's directories as its deploy (or
// scale-out) wrote it, or, for an instance taken over from tiup-dm, the
// mark that says it has none.
func removalMark(c *Cluster, in Instance) *DirMark {
	return &DirMark{Cluster: c.Name, Dirs: topDirs(in.Dirs()), Imported: in.Imported}
}
