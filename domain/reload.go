package domain

import "slices"

// OperationReload re-renders configs and restarts what changed.
const OperationReload = "reload"

// ReloadCluster re-renders every instance's configs, after an edit of
// the cluster's server_configs (nil: keep them, re-render only), and
// restarts, one at a time, only the instances whose rendered files
// changed.
type ReloadCluster struct {
	Name          string
	ServerConfigs map[string]map[string]any
	OperationID   string
}

// ClusterReloadRequested: the cluster's server_configs are now these.
type ClusterReloadRequested struct {
	ServerConfigs map[string]map[string]any `json:"server_configs"`
}

// serverConfigSections are the server_configs sections dmgr renders.
var serverConfigSections = []string{"master", "worker"}

// DecideReloadCluster plans a reload: for each instance whose rendered
// files differ from what its configs were rendered from before, write
// them, stop and start it (the start waits until it is healthy), in the
// order masters, workers, monitoring, one instance at a time.
func DecideReloadCluster(c *Cluster, cmd ReloadCluster) ([]Event, error) {
	if err := checkCommand(c, cmd.Name, cmd.OperationID); err != nil {
		return nil, err
	}
	for section := range cmd.ServerConfigs {
		if !slices.Contains(serverConfigSections, section) {
			return nil, Errorf(Invalid, "server_configs.%s: unknown section; use %v", section, serverConfigSections)
		}
	}
	before := clusterPlanner(c)
	after := clusterPlanner(c)
	var events []Event
	if cmd.ServerConfigs != nil {
		after.topo.ServerConfigs = cmd.ServerConfigs
		events = append(events, ClusterReloadRequested{ServerConfigs: cmd.ServerConfigs})
	}
	var last []string
	for _, g := range grouped(c.Instances) {
		for _, in := range g {
			old, err := before.renderFiles(in)
			if err != nil {
				return nil, err
			}
			now, err := after.renderFiles(in)
			if err != nil {
				return nil, err
			}
			if slices.EqualFunc(old, now, func(a, b FileSpec) bool { return a == b }) {
				continue
			}
			cfg := after.add(Step{ID: "config/" + in.ID, Kind: StepWriteFiles, Host: in.Host, Instance: in.ID, Role: in.Role,
				User: c.Global.User, Needs: last, Files: changed(old, now)})
			stop := after.addStop(in, []string{cfg})
			last = []string{after.add(Step{ID: "start/" + in.ID, Kind: StepStart, Host: in.Host, Instance: in.ID, Role: in.Role,
				User: c.Global.User, Needs: []string{stop}, Service: after.service(in)})}
		}
	}
	if err := CheckPlan(after.steps); err != nil {
		return nil, err
	}
	plan := after.steps
	if plan == nil {
		plan = []Step{}
	}
	return append(events, OperationRequested{ID: cmd.OperationID, Kind: OperationReload, Cluster: c.Name, Plan: plan}), nil
}

// changed returns the files of now that differ from old.
func changed(old, now []FileSpec) []FileSpec {
	was := map[string]FileSpec{}
	for _, f := range old {
		was[f.Path] = f
	}
	var out []FileSpec
	for _, f := range now {
		if was[f.Path] != f {
			out = append(out, f)
		}
	}
	return out
}
