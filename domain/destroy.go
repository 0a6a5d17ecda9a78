package domain

import "slices"

// DestroyCluster stops every instance and removes its directories (the
// data directories stay with RetainData), freeing the machines.
type DestroyCluster struct {
	Name        string
	RetainData  bool
	OperationID string
}

// DecideDestroyCluster plans a destroy: stop every instance (monitoring
// first, masters last), then remove each one's deploy, log and (unless
// retained) data directories, and its systemd unit.
func DecideDestroyCluster(c *Cluster, cmd DestroyCluster) ([]Event, error) {
	if !c.Exists() {
		return nil, Errorf(NotFound, "cluster %s does not exist", cmd.Name)
	}
	if cmd.OperationID == "" {
		return nil, Errorf(Invalid, "operation id is required")
	}
	if err := CheckIdle(c); err != nil {
		return nil, err
	}
	pl := clusterPlanner(c)
	pl.stops(c.Instances)
	for _, in := range c.Instances {
		dirs := []string{in.DeployDir}
		for _, d := range []string{in.LogDir, in.DataDir} {
			if d == "" || slices.Contains(dirs, d) || dirIsUnder(d, in.DeployDir) || (cmd.RetainData && d == in.DataDir) {
				continue
			}
			dirs = append(dirs, d)
		}
		s := Step{ID: "remove/" + in.ID, Kind: StepRemoveDirs, Host: in.Host, Instance: in.ID, Role: in.Role,
			User: c.Global.User, Needs: []string{"stop/" + in.ID}, Dirs: dirs, Service: pl.service(in)}
		if cmd.RetainData && dirIsUnder(in.DataDir, in.DeployDir) {
			// The data lives inside the deploy directory: keep it, remove
			// the rest of the instance.
			s.Dirs = []string{}
			for _, sub := range []string{"bin", "conf", "scripts"} {
				s.Dirs = append(s.Dirs, in.DeployDir+"/"+sub)
			}
			if in.LogDir != "" && in.LogDir != in.DataDir {
				s.Dirs = append(s.Dirs, in.LogDir)
			}
		}
		pl.add(s)
	}
	if err := CheckPlan(pl.steps); err != nil {
		return nil, err
	}
	return []Event{OperationRequested{ID: cmd.OperationID, Kind: OperationDestroy, Cluster: c.Name, Plan: pl.steps}}, nil
}
