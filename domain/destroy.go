package domain

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
	if err := checkCommand(c, cmd.Name, cmd.OperationID); err != nil {
		return nil, err
	}
	pl := clusterPlanner(c)
	pl.stops(c.Instances)
	for _, in := range c.Instances {
		s := Step{ID: "remove/" + in.ID, Kind: StepRemoveDirs, Host: in.Host, Instance: in.ID, Role: in.Role,
			User: c.Global.User, Needs: []string{"stop/" + in.ID}, Dirs: removableDirs(in, cmd.RetainData), Service: pl.service(in)}
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
