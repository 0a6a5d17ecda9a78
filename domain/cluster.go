package domain

import (
	"maps"
	"slices"
)

// Cluster is a DM cluster managed by dmgr, identified by its name.
type Cluster struct {
	Name       string        `json:"name"`
	Version    string        `json:"version"`
	PackageID  string        `json:"package_id"`
	Status     string        `json:"status"`
	Topology   string        `json:"topology"` // the tiup-dm YAML as the user gave it
	Global     GlobalOptions `json:"global"`
	Instances  []Instance    `json:"instances"`
	Operations []Operation   `json:"operations"`
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
// destroyed.
func (c *Cluster) Exists() bool {
	return c != nil && c.Status != "" && c.Status != ClusterStatusDestroyed
}

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
// nil.
func (c *Cluster) ActiveOperation() *Operation {
	for i := range c.Operations {
		if c.Operations[i].Active() {
			return &c.Operations[i]
		}
	}
	return nil
}

// FindOperation returns the cluster's operation with id, or nil.
func (c *Cluster) FindOperation(id string) *Operation {
	for i := range c.Operations {
		if c.Operations[i].ID == id {
			return &c.Operations[i]
		}
	}
	return nil
}

// EvolveCluster folds one event into a cluster's state. The state is
// copied before it changes: states handed out earlier never change.
func EvolveCluster(c Cluster, e Event) Cluster {
	switch e := e.(type) {
	case ClusterDeployRequested:
		c = Cluster{Name: e.Name, Version: e.Version, PackageID: e.PackageID, Status: ClusterStatusDeploying,
			Topology: e.Topology, Global: e.Global, Instances: e.Instances,
			Operations: c.Operations, Revision: c.Revision}
	case OperationRequested:
		c.Operations = append(slices.Clone(c.Operations),
			Operation{ID: e.ID, Kind: e.Kind, Cluster: e.Cluster, Status: OperationStatusPending, Attempt: 1, Plan: e.Plan,
				Version: e.Version, PackageID: e.PackageID, FromVersion: e.FromVersion, FromPackageID: e.FromPackageID, RollbackOf: e.RollbackOf})
		if i := slices.IndexFunc(c.Operations, func(o Operation) bool { return e.RollbackOf != "" && o.ID == e.RollbackOf }); i >= 0 {
			c.Operations[i].Status = OperationStatusRolledBack
		}
	case StepStarted:
		c = c.withStep(e.Operation, e.Step, func(_ *Cluster, o *Operation, st *StepState) {
			*st = StepState{Status: StepStatusRunning, Attempt: e.Attempt, Agent: e.Agent}
			o.Status = OperationStatusRunning
		})
	case StepSucceeded:
		c = c.withStep(e.Operation, e.Step, func(c *Cluster, o *Operation, st *StepState) {
			*st = StepState{Status: StepStatusSucceeded, Attempt: e.Attempt, Agent: e.Agent, DurationMS: e.DurationMS}
			if s := o.step(e.Step); s != nil {
				switch s.Kind {
				case StepStart:
					c.Instances = setInstanceStatus(c.Instances, s.Instance, InstanceStatusUp)
				case StepStop:
					c.Instances = setInstanceStatus(c.Instances, s.Instance, InstanceStatusDown)
				case StepRemoveDirs:
					if o.Kind == OperationScaleIn {
						c.Instances = slices.DeleteFunc(c.Instances, func(in Instance) bool { return in.ID == s.Instance })
					}
				}
			}
		})
	case StepFailed:
		c = c.withStep(e.Operation, e.Step, func(_ *Cluster, o *Operation, st *StepState) {
			*st = StepState{Status: StepStatusFailed, Attempt: e.Attempt, Agent: e.Agent, Error: e.Error,
				ExitCode: e.ExitCode, DurationMS: e.DurationMS}
		})
	case OperationSucceeded:
		c = c.withOperation(e.ID, func(c *Cluster, o *Operation) {
			o.Status, o.Error = OperationStatusSucceeded, ""
			switch o.Kind {
			case OperationDeploy, OperationStart, OperationRestart:
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
		c = c.withOperation(e.ID, func(c *Cluster, o *Operation) {
			o.Status, o.Error = OperationStatusFailed, e.Error
			if o.Kind == OperationDeploy {
				c.Status = ClusterStatusDeployFailed
			}
		})
	case ClusterReloadRequested:
		c.ServerConfigs = e.ServerConfigs
	case ClusterScaleOutRequested:
		c.Instances = slices.Concat(c.Instances, e.Instances)
	case OperationCancelRequested:
		c = c.withOperation(e.ID, func(_ *Cluster, o *Operation) { o.Cancelling = true })
	case OperationCancelled:
		c = c.withOperation(e.ID, func(c *Cluster, o *Operation) {
			o.Status, o.Cancelling = OperationStatusCancelled, false
			if o.Kind == OperationDeploy {
				c.Status = ClusterStatusDeployCancelled
			}
		})
	case ClusterLeaderElected:
		c.LeaderToken = e.Token
		// Steps running under the old leader are dispatched again by the
		// new one: their results carry the old token and are not taken.
		if op := c.ActiveOperation(); op != nil {
			c = c.withOperation(op.ID, func(_ *Cluster, o *Operation) {
				for id, st := range o.Steps {
					if st.Status == StepStatusRunning {
						delete(o.Steps, id)
					}
				}
			})
		}
	case OperationRetried:
		c = c.withOperation(e.ID, func(c *Cluster, o *Operation) {
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
	return c
}

// withOperation returns c with a copy of operation id changed by f, which
// may change the copy of the cluster it is given too.
func (c Cluster) withOperation(id string, f func(*Cluster, *Operation)) Cluster {
	i := slices.IndexFunc(c.Operations, func(o Operation) bool { return o.ID == id })
	if i < 0 {
		return c
	}
	ops := slices.Clone(c.Operations)
	op := ops[i]
	op.Steps = maps.Clone(op.Steps)
	if op.Steps == nil {
		op.Steps = map[string]StepState{}
	}
	c.Instances = slices.Clone(c.Instances)
	f(&c, &op)
	ops[i] = op
	c.Operations = ops
	return c
}

// withStep returns c with a copy of one step's state changed by f.
func (c Cluster) withStep(opID, stepID string, f func(*Cluster, *Operation, *StepState)) Cluster {
	return c.withOperation(opID, func(c *Cluster, o *Operation) {
		st := o.Steps[stepID]
		f(c, o, &st)
		o.Steps[stepID] = st
	})
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

func setInstanceStatus(insts []Instance, id, status string) []Instance {
	for i := range insts {
		if insts[i].ID == id {
			insts[i].Status = status
		}
	}
	return insts
}
