package domain

import (
	"slices"
	"strings"
)

// Operation kinds of the lifecycle commands.
const (
	OperationStart   = "start"
	OperationStop    = "stop"
	OperationRestart = "restart"
	OperationDestroy = "destroy"
)

// Step kinds of the lifecycle plans.
const (
	StepStop       = "stop"        // stop the instance unless it is stopped (pid file or systemd)
	StepRemoveDirs = "remove_dirs" // remove an instance's directories (and systemd unit)
)

// InstanceStatusDown is an instance's status once its stop step succeeded.
const InstanceStatusDown = "down"

// ClusterStatusStopped: every instance of the cluster is stopped.
const ClusterStatusStopped = "stopped"

// ControlCluster starts, stops or restarts a cluster's instances: all of
// them, or those of Roles and Nodes (both filters apply when both are
// given), as `tiup dm start|stop|restart -R … -N …`.
type ControlCluster struct {
	Kind        string // OperationStart, OperationStop or OperationRestart
	Name        string
	Roles       []string
	Nodes       []string // instance ids ("host:port") as `tiup dm display` shows them
	OperationID string
}

// DecideControlCluster plans a start, stop or restart: starts in the order
// masters, workers, monitoring (each group after the one before it is up),
// stops in the reverse order, a restart stops and starts group by group.
func DecideControlCluster(c *Cluster, cmd ControlCluster) ([]Event, error) {
	if !c.Exists() {
		return nil, Errorf(NotFound, "cluster %s does not exist", cmd.Name)
	}
	insts, err := selectInstances(c, cmd.Roles, cmd.Nodes)
	if err != nil {
		return nil, err
	}
	if err := checkCommand(c, cmd.Name, cmd.OperationID); err != nil {
		return nil, err
	}
	pl := clusterPlanner(c)
	var plan []Step
	switch cmd.Kind {
	case OperationStart:
		plan = pl.starts(insts, nil)
	case OperationStop:
		plan = pl.stops(insts)
	case OperationRestart:
		plan = pl.restarts(insts)
	default:
		return nil, Errorf(Invalid, "unknown lifecycle command %q: use start, stop or restart", cmd.Kind)
	}
	if err := CheckPlan(plan); err != nil {
		return nil, err
	}
	return []Event{OperationRequested{ID: cmd.OperationID, Kind: cmd.Kind, Cluster: c.Name, Plan: plan}}, nil
}

// checkCommand checks what every command that starts an operation on an
// existing cluster needs: the cluster exists, the operation has an id, and
// no other operation runs.
func checkCommand(c *Cluster, name, operationID string) error {
	if !c.Exists() {
		return Errorf(NotFound, "cluster %s does not exist", name)
	}
	if operationID == "" {
		return Errorf(Invalid, "operation id is required")
	}
	return CheckIdle(c)
}

// clusterPlanner plans on a deployed cluster's topology.
func clusterPlanner(c *Cluster) *planner {
	return &planner{cluster: c.Name, version: c.Version,
		topo: &Topology{Global: c.Global, ServerConfigs: c.EffectiveServerConfigs(), Instances: c.Instances}}
}

// roleGroups are the start order: masters, workers, then monitoring.
var roleGroups = [][]Role{{RoleMaster}, {RoleWorker}, {RolePrometheus, RoleGrafana, RoleAlertmanager}}

// grouped splits instances into the start order's groups, skipping empty
// ones.
func grouped(insts []Instance) [][]Instance {
	var out [][]Instance
	for _, roles := range roleGroups {
		var g []Instance
		for _, in := range insts {
			if slices.Contains(roles, in.Role) {
				g = append(g, in)
			}
		}
		if len(g) > 0 {
			out = append(out, g)
		}
	}
	return out
}

// starts adds a start step per instance, group after group; the first
// group waits for after.
func (pl *planner) starts(insts []Instance, after []string) []Step {
	before := after
	for _, g := range grouped(insts) {
		var ids []string
		for _, in := range g {
			ids = append(ids, pl.add(Step{ID: "start/" + in.ID, Kind: StepStart, Host: in.Host, Instance: in.ID, Role: in.Role,
				User: pl.topo.Global.User, Needs: slices.Clone(before), Service: pl.service(in)}))
		}
		before = ids
	}
	return pl.steps
}

// stops adds a stop step per instance, monitoring first, masters last.
func (pl *planner) stops(insts []Instance) []Step {
	var before []string
	groups := grouped(insts)
	for i := len(groups) - 1; i >= 0; i-- {
		var ids []string
		for _, in := range groups[i] {
			ids = append(ids, pl.addStop(in, before))
		}
		before = ids
	}
	return pl.steps
}

func (pl *planner) addStop(in Instance, needs []string) string {
	return pl.add(Step{ID: "stop/" + in.ID, Kind: StepStop, Host: in.Host, Instance: in.ID, Role: in.Role,
		User: pl.topo.Global.User, Needs: slices.Clone(needs), Service: pl.service(in)})
}

// restarts stops and starts each group in the start order: the workers
// are stopped only once the masters are back.
func (pl *planner) restarts(insts []Instance) []Step {
	var before []string
	for _, g := range grouped(insts) {
		var starts []string
		for _, in := range g {
			pl.addStop(in, before)
		}
		for _, in := range g {
			starts = append(starts, pl.add(Step{ID: "start/" + in.ID, Kind: StepStart, Host: in.Host, Instance: in.ID,
				Role: in.Role, User: pl.topo.Global.User, Needs: []string{"stop/" + in.ID}, Service: pl.service(in)}))
		}
		before = starts
	}
	return pl.steps
}

// selectInstances returns the cluster's instances of roles and nodes
// (all when both are empty), refusing unknown ones.
func selectInstances(c *Cluster, roles, nodes []string) ([]Instance, error) {
	for _, r := range roles {
		if !slices.ContainsFunc(c.Instances, func(in Instance) bool { return string(in.Role) == r }) {
			return nil, Errorf(Invalid, "role %q: cluster %s has no instance of it; its roles are %s", r, c.Name, strings.Join(clusterRoles(c), ", "))
		}
	}
	for _, n := range nodes {
		if !slices.ContainsFunc(c.Instances, func(in Instance) bool { return in.ID == n }) {
			return nil, Errorf(Invalid, "node %q is not an instance of cluster %s; its nodes are %s", n, c.Name, strings.Join(clusterNodes(c), ", "))
		}
	}
	var out []Instance
	for _, in := range c.Instances {
		if (len(roles) == 0 || slices.Contains(roles, string(in.Role))) && (len(nodes) == 0 || slices.Contains(nodes, in.ID)) {
			out = append(out, in)
		}
	}
	if len(out) == 0 {
		return nil, Errorf(Invalid, "no instance of cluster %s is of roles %v and nodes %v", c.Name, roles, nodes)
	}
	return out, nil
}

func clusterRoles(c *Cluster) []string {
	var out []string
	for _, in := range c.Instances {
		if !slices.Contains(out, string(in.Role)) {
			out = append(out, string(in.Role))
		}
	}
	return out
}

func clusterNodes(c *Cluster) []string {
	out := make([]string, len(c.Instances))
	for i, in := range c.Instances {
		out[i] = in.ID
	}
	return out
}
