package service

import (
	"context"

	"github.com/dmgr/dmgr/domain"
)

// UpgradeClusterRequest rolls a cluster to another version.
type UpgradeClusterRequest struct {
	Name           string
	Version        string
	WaitTimeoutSec int
}

// PatchClusterRequest replaces the binary of some instances by an
// uploaded package's.
type PatchClusterRequest struct {
	Name           string
	Package        string
	Roles          []string
	Nodes          []string
	Parallel       int
	WaitTimeoutSec int
}

// UpgradeCluster records an upgrade; its plan rolls the dm-master leader,
// probed now, last.
func (s *Service) UpgradeCluster(ctx context.Context, meta Meta, r UpgradeClusterRequest) (Accepted, error) {
	meta = s.complete(meta)
	return s.onClusterWithPackages(ctx, meta, r.Name, r.packages, func(c *domain.Cluster, pk map[string]*domain.Package, leader string) ([]domain.Event, error) {
		return domain.DecideUpgradeCluster(c, pk, domain.UpgradeCluster{Name: r.Name, Version: r.Version, Leader: leader,
			WaitTimeoutSec: r.WaitTimeoutSec, OperationID: meta.OperationID})
	})
}

// PlanUpgradeCluster is UpgradeCluster's dry run.
func (s *Service) PlanUpgradeCluster(ctx context.Context, r UpgradeClusterRequest) ([]domain.Step, error) {
	return s.planWithPackages(ctx, r.Name, r.packages, func(c *domain.Cluster, pk map[string]*domain.Package, leader string) ([]domain.Event, error) {
		return domain.DecideUpgradeCluster(c, pk, domain.UpgradeCluster{Name: r.Name, Version: r.Version, Leader: leader,
			WaitTimeoutSec: r.WaitTimeoutSec, OperationID: "dry-run"})
	})
}

// PatchCluster records a patch.
func (s *Service) PatchCluster(ctx context.Context, meta Meta, r PatchClusterRequest) (Accepted, error) {
	meta = s.complete(meta)
	return s.onClusterWithPackages(ctx, meta, r.Name, r.packages, func(c *domain.Cluster, pk map[string]*domain.Package, leader string) ([]domain.Event, error) {
		return domain.DecidePatchCluster(c, pk, r.patch(leader, meta.OperationID))
	})
}

// PlanPatchCluster is PatchCluster's dry run.
func (s *Service) PlanPatchCluster(ctx context.Context, r PatchClusterRequest) ([]domain.Step, error) {
	return s.planWithPackages(ctx, r.Name, r.packages, func(c *domain.Cluster, pk map[string]*domain.Package, leader string) ([]domain.Event, error) {
		return domain.DecidePatchCluster(c, pk, r.patch(leader, "dry-run"))
	})
}

// packages are the packages an upgrade of c reads: its version's, for
// each platform of its instances.
func (r UpgradeClusterRequest) packages(c *domain.Cluster) []string {
	return domain.PackagesFor(r.Version, c.Global, c.Instances)
}

// packages are the packages a patch reads: the patch.
func (r PatchClusterRequest) packages(*domain.Cluster) []string { return []string{r.Package} }

func (r PatchClusterRequest) patch(leader, operationID string) domain.PatchCluster {
	return domain.PatchCluster{Name: r.Name, Package: r.Package, Roles: r.Roles, Nodes: r.Nodes, Parallel: r.Parallel,
		Leader: leader, WaitTimeoutSec: r.WaitTimeoutSec, OperationID: operationID}
}

// RollbackOperation records the rollback of an upgrade as a new operation.
func (s *Service) RollbackOperation(ctx context.Context, meta Meta, id string) (Accepted, error) {
	cluster, err := s.clusterOfOperation(ctx, id)
	if err != nil {
		return Accepted{}, err
	}
	meta = s.complete(meta)
	return s.onCluster(ctx, meta, cluster, func(c *domain.Cluster) ([]domain.Event, error) {
		return domain.DecideRollbackOperation(c, domain.RollbackOperation{ID: id, OperationID: meta.OperationID})
	})
}

// PlanRollbackOperation is RollbackOperation's dry run.
func (s *Service) PlanRollbackOperation(ctx context.Context, id string) ([]domain.Step, error) {
	cluster, err := s.clusterOfOperation(ctx, id)
	if err != nil {
		return nil, err
	}
	return s.planOnCluster(ctx, cluster, func(c *domain.Cluster) ([]domain.Event, error) {
		return domain.DecideRollbackOperation(c, domain.RollbackOperation{ID: id, OperationID: "dry-run"})
	})
}

func (s *Service) clusterOfOperation(ctx context.Context, id string) (string, error) {
	cluster, view, err := s.clusterOf(ctx, id)
	if err != nil {
		return "", err
	}
	if cluster == "" {
		return "", domain.Errorf(domain.Invalid, "operation %s (%s) is not an upgrade: only an upgrade can be rolled back", id, view.Kind)
	}
	return cluster, nil
}

// masterLeader probes the cluster's dm-master leader (members API), for
// the roll order; "" when no master answers. The probe is best effort: a
// wrong or missing answer only changes which master rolls last.
func (s *Service) masterLeader(ctx context.Context, name string) string {
	live, err := s.LiveCluster(ctx, name)
	if err != nil {
		return ""
	}
	for _, in := range live.Instances {
		if in.Role == domain.RoleMaster && in.Status == LiveUpLeader {
			return in.ID
		}
	}
	return ""
}

type decideWithPackages func(c *domain.Cluster, packages map[string]*domain.Package, leader string) ([]domain.Event, error)

// readPackages reads the packages of ids that are uploaded.
func (s *Service) readPackages(ctx context.Context, ids []string) (map[string]*domain.Package, error) {
	snaps, err := s.packageAgg.readEach(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := map[string]*domain.Package{}
	for id, p := range snaps {
		if p.exists {
			out[id] = p.ptr()
		}
	}
	return out, nil
}

// onClusterWithPackages decides on a cluster and the packages needs names.
// Only the cluster is expected unchanged at the append: packages are
// never removed, and the leader is probed once, before deciding.
func (s *Service) onClusterWithPackages(ctx context.Context, meta Meta, name string, needs func(*domain.Cluster) []string, decide decideWithPackages) (Accepted, error) {
	if _, err := s.Cluster(ctx, name); err != nil {
		return Accepted{}, err
	}
	leader := s.masterLeader(ctx, name)
	return s.onCluster(ctx, meta, name, func(c *domain.Cluster) ([]domain.Event, error) {
		pk, err := s.readPackages(ctx, needs(c))
		if err != nil {
			return nil, err
		}
		return decide(c, pk, leader)
	})
}

func (s *Service) planWithPackages(ctx context.Context, name string, needs func(*domain.Cluster) []string, decide decideWithPackages) ([]domain.Step, error) {
	if _, err := s.Cluster(ctx, name); err != nil {
		return nil, err
	}
	leader := s.masterLeader(ctx, name)
	return s.planOnCluster(ctx, name, func(c *domain.Cluster) ([]domain.Event, error) {
		pk, err := s.readPackages(ctx, needs(c))
		if err != nil {
			return nil, err
		}
		return decide(c, pk, leader)
	})
}
