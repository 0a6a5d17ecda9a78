package domain

import (
	"cmp"
	"fmt"
)

// DeployCluster asks for a new DM cluster from a tiup-dm topology.
type DeployCluster struct {
	Name string
	// Group will own the cluster; every machine it places on must belong
	// to it too.
	Group       string
	Labels      map[string]string
	Version     string
	Topology    string // tiup-dm YAML
	OperationID string
	// MaxInstances caps the cluster's instances (≤ 0: DefaultMaxInstancesPerCluster).
	MaxInstances int
}

// ClusterDeployRequested: a deploy was accepted with this resolved topology.
type ClusterDeployRequested struct {
	Name      string            `json:"name"`
	Group     string            `json:"group,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	Version   string            `json:"version"`
	PackageID string            `json:"package_id"`
	Topology  string            `json:"topology"`
	Global    GlobalOptions     `json:"global"`
	Instances []Instance        `json:"instances"`
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
	if err := CheckInstanceCap(c.Name, 0, len(topo.Instances), c.MaxInstances); err != nil {
		return nil, err
	}
	// Every platform in the topology needs its package: the global one
	// first, then any an instance overrides.
	pkgID := PackageID(DMPackageName, c.Version, topo.Global.OS, topo.Global.Arch)
	if err := needPackage(w, c.Version, pkgID, 0); err != nil {
		return nil, err
	}
	for _, in := range topo.Instances {
		if in.OS == "" && in.Arch == "" {
			continue
		}
		os, arch := cmp.Or(in.OS, topo.Global.OS), cmp.Or(in.Arch, topo.Global.Arch)
		if err := needPackage(w, c.Version, PackageID(DMPackageName, c.Version, os, arch), in.Line); err != nil {
			return nil, err
		}
	}
	group := OwnerGroup(c.Group)
	if err := ValidateGroupName(group); err != nil {
		return nil, err
	}
	if err := ValidateLabels(c.Labels); err != nil {
		return nil, err
	}
	for _, in := range topo.Instances {
		m := w.Machines[in.Host]
		if !m.Active() {
			return nil, Errorf(Invalid, "topology line %d: host %s is not a registered machine: register it with POST /api/v1/machines first", in.Line, in.Host)
		}
		if m.Group != group {
			return nil, Errorf(Invalid, "topology line %d: machine %s belongs to group %s, not to the cluster's group %s: a cluster is placed only on its own group's machines", in.Line, in.Host, m.Group, group)
		}
	}
	if err := CheckPlacement(topo.Instances, w.Allocations(c.Name)); err != nil {
		return nil, err
	}
	plan, err := DeployPlan(c.Name, c.Version, topo, w.Packages)
	if err != nil {
		return nil, err
	}
	markOperation(plan, c.OperationID)
	return []Event{
		ClusterDeployRequested{Name: c.Name, Group: group, Labels: c.Labels, Version: c.Version, PackageID: pkgID, Topology: c.Topology,
			Global: topo.Global, Instances: topo.Instances},
		OperationRequested{ID: c.OperationID, Kind: OperationDeploy, Cluster: c.Name, Plan: plan},
	}, nil
}

// needPackage refuses a deploy whose package for one platform is missing.
func needPackage(w *World, version, id string, line int) error {
	if _, ok := w.Packages[id]; ok {
		return nil
	}
	where := ""
	if line > 0 {
		where = fmt.Sprintf("topology line %d: ", line)
	}
	return Errorf(Invalid, "%sversion %s has no uploaded package %s: upload %s-%s.tar.gz (for that platform) with POST /api/v1/packages first",
		where, version, id, DMPackageName, version)
}
