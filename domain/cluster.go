package domain

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
	Revision   uint64        `json:"revision"` // number of events folded in
}

// Cluster statuses.
const (
	ClusterStatusDeploying = "deploying"
	ClusterStatusDestroyed = "destroyed"
)

// Exists reports whether the name is taken by a cluster that has not been
// destroyed.
func (c *Cluster) Exists() bool {
	return c != nil && c.Status != "" && c.Status != ClusterStatusDestroyed
}

// Operation is one run of a lifecycle command on a cluster.
type Operation struct {
	ID      string `json:"id"`
	Kind    string `json:"kind"`
	Cluster string `json:"cluster"`
	Status  string `json:"status"`
}

// Operation kinds and statuses.
const (
	OperationDeploy = "deploy"

	OperationPending = "pending"
)

// OperationRequested: an operation was accepted and waits to be driven.
type OperationRequested struct {
	ID      string `json:"id"`
	Kind    string `json:"kind"`
	Cluster string `json:"cluster"`
}

// EvolveCluster folds one event into a cluster's state.
func EvolveCluster(c Cluster, e Event) Cluster {
	switch e := e.(type) {
	case ClusterDeployRequested:
		c = Cluster{Name: e.Name, Version: e.Version, PackageID: e.PackageID, Status: ClusterStatusDeploying,
			Topology: e.Topology, Global: e.Global, Instances: e.Instances,
			Operations: c.Operations, Revision: c.Revision}
	case OperationRequested:
		c.Operations = append(c.Operations[:len(c.Operations):len(c.Operations)],
			Operation{ID: e.ID, Kind: e.Kind, Cluster: e.Cluster, Status: OperationPending})
	}
	c.Revision++
	return c
}
