package domain

// DeployCluster asks for a new DM cluster from a tiup-dm topology.
type DeployCluster struct {
	Name        string
	Version     string
	Topology    string // tiup-dm YAML
	OperationID string
}

// ClusterDeployRequested: a deploy was accepted with this resolved topology.
type ClusterDeployRequested struct {
	Name      string        `json:"name"`
	Version   string        `json:"version"`
	PackageID string        `json:"package_id"`
	Topology  string        `json:"topology"`
	Global    GlobalOptions `json:"global"`
	Instances []Instance    `json:"instances"`
}

// DecideDeployCluster decides a deploy against the whole inventory: the
// name must be free, the version's package uploaded, every host a
// registered machine, and no port or directory may clash with another
// instance on the same machine, in this topology or in any other cluster.
func DecideDeployCluster(w *World, c DeployCluster) ([]Event, error) {
	if err := ValidateClusterName(c.Name); err != nil {
		return nil, err
	}
	if existing := w.Clusters[c.Name]; existing.Exists() {
		return nil, Errorf(Conflict, "cluster %s already exists (version %s, %s)", c.Name, existing.Version, existing.Status)
	}
	if err := ValidatePackageVersion(c.Version); err != nil {
		return nil, err
	}
	if c.OperationID == "" {
		return nil, Errorf(Invalid, "operation id is required")
	}
	topo, err := ParseTopology(c.Topology)
	if err != nil {
		return nil, err
	}
	pkgID := PackageID(DMPackageName, c.Version, topo.Global.OS, topo.Global.Arch)
	if _, ok := w.Packages[pkgID]; !ok {
		return nil, Errorf(Invalid, "version %s has no uploaded package %s: upload %s-%s.tar.gz with POST /api/v1/packages first",
			c.Version, pkgID, DMPackageName, c.Version)
	}
	for _, in := range topo.Instances {
		if m := w.Machines[in.Host]; !m.Active() {
			return nil, Errorf(Invalid, "topology line %d: host %s is not a registered machine: register it with POST /api/v1/machines first", in.Line, in.Host)
		}
	}
	if err := CheckPlacement(topo.Instances, w.Allocations(c.Name)); err != nil {
		return nil, err
	}
	return []Event{
		ClusterDeployRequested{Name: c.Name, Version: c.Version, PackageID: pkgID, Topology: c.Topology,
			Global: topo.Global, Instances: topo.Instances},
		OperationRequested{ID: c.OperationID, Kind: OperationDeploy, Cluster: c.Name},
	}, nil
}
