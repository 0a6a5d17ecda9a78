package domain

import (
	"maps"
	"slices"
)

// Cluster is a DM cluster managed by dmgr, identified by its name.
type Cluster struct {
	Name      string `json:"name"`
	Version   string `json:"version"`
	PackageID string `json:"package_id"`
	Status    string `json:"status"`
	// Group owns the cluster (OwnerGroup of what its events named).
	Group string `json:"group"`
	// Labels are the cluster's own labels (env=prod); its group's approval
	// policy matches on them.
	Labels    map[string]string `json:"labels,omitempty"`
	Topology  string            `json:"topology"` // the tiup-dm YAML as the user gave it
	Global    GlobalOptions     `json:"global"`
	Instances []Instance        `json:"instances"`
	// Operations, oldest first. An operation a Cluster points to never
	// changes: Evolve copies the one it changes (and the slice), so that
	// folding an event costs a pointer per operation, not the operation.
	Operations []*Operation `json:"operations"`
	// ServerConfigs replaces the topology's server_configs once a reload
	// changed them (nil: the topology's own).
	ServerConfigs map[string]map[string]any `json:"server_configs,omitempty"`
	// LeaderToken is the fencing token of the newest coordinator that took
	// the cluster over: reports and writes of older leaders are refused.
	LeaderToken int64  `json:"leader_token,omitempty"`
	Revision    uint64 `json:"revision"` // number of events folded in
}

// Cluster statuses.
const (
	ClusterStatusDeploying = "deploying"
	ClusterStatusDestroyed = "destroyed"
)

// EffectiveServerConfigs is the server_configs the cluster's configs are
// rendered from: the last reload's, or the topology's.
func (c *Cluster) EffectiveServerConfigs() map[string]map[string]any {
	if c.ServerConfigs != nil {
		return c.ServerConfigs
	}
	if t, err := ParseTopology(c.Topology); err == nil {
		return t.ServerConfigs
	}
	return nil
}

// Exists reports whether the name is taken by a cluster that has not been
// destroyed (nor failed to be imported: see import.go).
func (c *Cluster) Exists() bool {
	return c != nil && c.Status != "" && !slices.Contains(GoneClusterStatuses, c.Status)
}

// GoneClusterStatuses are the statuses of a cluster that no longer
// exists: its name, ports and directories are free.
var GoneClusterStatuses = []string{ClusterStatusDestroyed, ClusterStatusImportFailed}

// Operation is one run of a lifecycle command on a cluster: its plan and
// what the events say about each step.
type Operation struct {
	ID      string               `json:"id"`
	Kind    string               `json:"kind"`
	Cluster string               `json:"cluster"`
	Status  string               `json:"status"`
	Attempt int                  `json:"attempt"` // 1, then +1 per retry
	Plan    []Step               `json:"plan,omitempty"`
	Steps   map[string]StepState `json:"steps,omitempty"`
	Error   string               `json:"error,omitempty"`
	// Cancelling: a cancel was asked for; nothing more is dispatched and
	// the operation ends once its running steps have.
	Cancelling bool `json:"cancelling,omitempty"`
	// Upgrades and rollbacks: the version (and package) the cluster takes
	// when the operation succeeds, and the one it ran before.
	Version       string `json:"version,omitempty"`
	PackageID     string `json:"package_id,omitempty"`
	FromVersion   string `json:"from_version,omitempty"`
	FromPackageID string `json:"from_package_id,omitempty"`
	RollbackOf    string `json:"rollback_of,omitempty"` // a rollback: the upgrade it rolls back
}

// Progress is what the operation can do next: as ProgressOf, but nothing
// is ready once a cancel was asked for.
func (o *Operation) Progress() Progress {
	p := ProgressOf(o.Plan, o.Steps)
	if o.Cancelling {
		p.Ready = nil
		p.Done = len(p.Running) == 0
	}
	return p
}

// Active reports whether the operation still runs (pending or running).
func (o *Operation) Active() bool {
	return o != nil && (o.Status == OperationStatusPending || o.Status == OperationStatusRunning)
}

// Operation kinds and statuses.
const (
	OperationDeploy = "deploy"

	OperationStatusPending   = "pending"
	OperationStatusRunning   = "running"
	OperationStatusSucceeded = "succeeded"
	OperationStatusFailed    = "failed"
	OperationStatusCancelled = "cancelled"
)

// Cluster statuses after its deploy finished.
const (
	ClusterStatusRunning         = "running"
	ClusterStatusDeployFailed    = "deploy_failed"
	ClusterStatusDeployCancelled = "deploy_cancelled"
)

// InstanceStatusUp is an instance's status once its start step succeeded
// (empty before; the live status is probed).
const InstanceStatusUp = "up"

// OperationRequested: an operation was accepted and waits to be driven.
type OperationRequested struct {
	ID      string `json:"id"`
	Kind    string `json:"kind"`
	Cluster string `json:"cluster"`
	Plan    []Step `json:"plan,omitempty"`
	// Upgrades, rollbacks and patches (see Operation).
	Version       string `json:"version,omitempty"`
	PackageID     string `json:"package_id,omitempty"`
	FromVersion   string `json:"from_version,omitempty"`
	FromPackageID string `json:"from_package_id,omitempty"`
	RollbackOf    string `json:"rollback_of,omitempty"`
}

// ActiveOperation returns the cluster's running or pending operation, or
// nil. The operation is shared with other states: read it, never change it.
func (c *Cluster) ActiveOperation() *Operation {
	for i := len(c.Operations) - 1; i >= 0; i-- {
		if c.Operations[i].Active() {
			return c.Operations[i]
		}
	}
	return nil
}

// FindOperation returns the cluster's operation with id, or nil. The
// operation is shared with other states: read it, never change it.
func (c *Cluster) FindOperation(id string) *Operation {
	if i := c.operationIndex(id); i >= 0 {
		return c.Operations[i]
	}
	return nil
}

// operationIndex is the index of operation id in c.Operations, or -1. The
// newest are searched first: events name the running operation.
func (c *Cluster) operationIndex(id string) int {
	for i := len(c.Operations) - 1; i >= 0; i-- {
		if c.Operations[i].ID == id {
			return i
		}
	}
	return -1
}

// EvolveCluster folds one event into a cluster's state. The state is
// copied before it changes: states handed out earlier never change.
func EvolveCluster(c Cluster, e Event) Cluster {
	f := ClusterFold{c: c}
	f.Apply(e)
	return f.c
}

// ClusterFold folds events into a cluster state of its own: what
// EvolveCluster does event by event, without copying an operation, its
// step map or the instances again once it has its own copy. A long fold
// (an aggregate's history, a projector's batch) then copies each changed
// operation once, not once per event.
//
// State hands the state out; from then on it is shared, and the next
// change copies again. The zero value folds from the empty state.
type ClusterFold struct {
	c Cluster
	// What c holds that no state handed out shares, and that may hence
	// change in place.
	ownOps       bool                // the Operations slice
	ownOp        map[*Operation]bool // operations, with their step maps
	ownInstances bool                // the Instances slice
}

// NewClusterFold starts a fold from c, which it does not change.
func NewClusterFold(c Cluster) *ClusterFold { return &ClusterFold{c: c} }

// State returns the state folded so far. It never changes afterwards.
func (f *ClusterFold) State() Cluster {
	f.ownOps, f.ownInstances = false, false
	clear(f.ownOp)
	return f.c
}

// Apply folds one event.
func (f *ClusterFold) Apply(e Event) {
	c := &f.c
	switch e := e.(type) {
	case ClusterDeployRequested:
		*c = Cluster{Name: e.Name, Version: e.Version, PackageID: e.PackageID, Status: ClusterStatusDeploying,
			Group: OwnerGroup(e.Group), Labels: e.Labels, Topology: e.Topology, Global: e.Global, Instances: e.Instances,
			Operations: c.Operations, Revision: c.Revision}
		f.ownInstances = false // the event's
	case ClusterImported:
		*c = Cluster{Name: e.Name, Version: e.Version, PackageID: e.PackageID, Status: ClusterStatusImporting,
			Group: OwnerGroup(e.Group), Labels: e.Labels, Topology: e.Topology, Global: e.Global, Instances: e.Instances,
			Operations: c.Operations, Revision: c.Revision}
		f.ownInstances = false // the event's
	case OwnerMoved:
		c.Group = e.To
	case ClusterLabelsSet:
		c.Labels = e.Labels
	case OperationRequested:
		if e.RollbackOf != "" {
			f.withOperation(e.RollbackOf, func(o *Operation) { o.Status = OperationStatusRolledBack })
		}
		op := &Operation{ID: e.ID, Kind: e.Kind, Cluster: e.Cluster, Status: OperationStatusPending, Attempt: 1, Plan: e.Plan,
			Version: e.Version, PackageID: e.PackageID, FromVersion: e.FromVersion, FromPackageID: e.FromPackageID, RollbackOf: e.RollbackOf}
		if !f.ownOps {
			c.Operations, f.ownOps = slices.Clip(c.Operations), true // append copies
		}
		c.Operations = append(c.Operations, op)
		f.own(op)
	case StepStarted:
		f.withStep(e.Operation, e.Step, func(o *Operation, st *StepState) {
			*st = StepState{Status: StepStatusRunning, Attempt: e.Attempt, Agent: e.Agent}
			o.Status = OperationStatusRunning
		})
	case StepSucceeded:
		f.withStep(e.Operation, e.Step, func(o *Operation, st *StepState) {
			*st = StepState{Status: StepStatusSucceeded, Attempt: e.Attempt, Agent: e.Agent, DurationMS: e.DurationMS}
			if s := o.step(e.Step); s != nil {
				switch s.Kind {
				case StepStart, StepVerifyInstance:
					f.setInstanceStatus(s.Instance, InstanceStatusUp)
				case StepStop:
					f.setInstanceStatus(s.Instance, InstanceStatusDown)
				case StepRemoveDirs:
					if o.Kind == OperationScaleIn && slices.ContainsFunc(c.Instances, func(in Instance) bool { return in.ID == s.Instance }) {
						f.ownInstanceSlice()
						c.Instances = slices.DeleteFunc(c.Instances, func(in Instance) bool { return in.ID == s.Instance })
					}
				}
			}
		})
	case StepFailed:
		f.withStep(e.Operation, e.Step, func(_ *Operation, st *StepState) {
			*st = StepState{Status: StepStatusFailed, Attempt: e.Attempt, Agent: e.Agent, Error: e.Error,
				ExitCode: e.ExitCode, DurationMS: e.DurationMS}
		})
	case OperationSucceeded:
		f.withOperation(e.ID, func(o *Operation) {
			o.Status, o.Error = OperationStatusSucceeded, ""
			switch o.Kind {
			case OperationDeploy, OperationStart, OperationRestart, OperationImport:
				c.Status = ClusterStatusRunning
			case OperationStop:
				if !slices.ContainsFunc(c.Instances, func(in Instance) bool { return in.Status != InstanceStatusDown }) {
					c.Status = ClusterStatusStopped
				}
			case OperationDestroy:
				c.Status = ClusterStatusDestroyed
			case OperationUpgrade, OperationRollback:
				c.Version, c.PackageID, c.Status = o.Version, o.PackageID, ClusterStatusRunning
			}
		})
	case OperationFailed:
		f.withOperation(e.ID, func(o *Operation) {
			o.Status, o.Error = OperationStatusFailed, e.Error
			if o.Kind == OperationDeploy {
				c.Status = ClusterStatusDeployFailed
			}
			importFailed(c, o)
		})
	case ClusterReloadRequested:
		c.ServerConfigs = e.ServerConfigs
	case ClusterScaleOutRequested:
		c.Instances, f.ownInstances = slices.Concat(c.Instances, e.Instances), true
	case OperationCancelRequested:
		f.withOperation(e.ID, func(o *Operation) { o.Cancelling = true })
	case OperationCancelled:
		f.withOperation(e.ID, func(o *Operation) {
			o.Status, o.Cancelling = OperationStatusCancelled, false
			if o.Kind == OperationDeploy {
				c.Status = ClusterStatusDeployCancelled
			}
			importFailed(c, o)
		})
	case ClusterLeaderElected:
		c.LeaderToken = e.Token
		// Steps running under the old leader are dispatched again by the
		// new one: their results carry the old token and are not taken.
		if op := c.ActiveOperation(); op != nil {
			f.withOperation(op.ID, func(o *Operation) {
				for id, st := range o.Steps {
					if st.Status == StepStatusRunning {
						delete(o.Steps, id)
					}
				}
			})
		}
	case OperationRetried:
		f.withOperation(e.ID, func(o *Operation) {
			o.Status, o.Error, o.Attempt, o.Cancelling = OperationStatusPending, "", e.Attempt, false
			for _, id := range e.Steps {
				delete(o.Steps, id)
			}
			if o.Kind == OperationDeploy {
				c.Status = ClusterStatusDeploying
			}
		})
	}
	c.Revision++
}

func (f *ClusterFold) own(op *Operation) {
	if f.ownOp == nil {
		f.ownOp = map[*Operation]bool{}
	}
	f.ownOp[op] = true
}

// withOperation changes operation id (copied, with its step map, unless
// the fold owns it) with change; nothing when there is no such operation.
func (f *ClusterFold) withOperation(id string, change func(*Operation)) {
	c := &f.c
	i := c.operationIndex(id)
	if i < 0 {
		return
	}
	op := c.Operations[i]
	if !f.ownOp[op] {
		cp := *op
		cp.Steps = maps.Clone(op.Steps)
		if !f.ownOps {
			c.Operations, f.ownOps = slices.Clone(c.Operations), true
		}
		op = &cp
		c.Operations[i] = op
		f.own(op)
	}
	if op.Steps == nil {
		op.Steps = map[string]StepState{}
	}
	change(op)
}

// withStep changes one step's state of an operation.
func (f *ClusterFold) withStep(opID, stepID string, change func(*Operation, *StepState)) {
	f.withOperation(opID, func(o *Operation) {
		st := o.Steps[stepID]
		change(o, &st)
		o.Steps[stepID] = st
	})
}

// ownInstanceSlice makes c.Instances the fold's own.
func (f *ClusterFold) ownInstanceSlice() {
	if !f.ownInstances {
		f.c.Instances, f.ownInstances = slices.Clone(f.c.Instances), true
	}
}

// setInstanceStatus sets instance id's status (copying the instances
// first, unless the fold owns them); nothing when it has that status.
func (f *ClusterFold) setInstanceStatus(id, status string) {
	for i := range f.c.Instances {
		if f.c.Instances[i].ID == id && f.c.Instances[i].Status != status {
			f.ownInstanceSlice()
			f.c.Instances[i].Status = status
		}
	}
}

// step returns the plan's step with id, or nil.
func (o *Operation) step(id string) *Step {
	for i := range o.Plan {
		if o.Plan[i].ID == id {
			return &o.Plan[i]
		}
	}
	return nil
}
