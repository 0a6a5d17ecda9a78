package service

import (
	"context"

	"github.com/dmgr/dmgr/domain"
)

// ControlClusterRequest starts, stops or restarts instances of a cluster.
type ControlClusterRequest struct {
	Kind  string // domain.OperationStart, OperationStop or OperationRestart
	Name  string
	Roles []string
	Nodes []string
}

// ControlCluster records a start, stop or restart of a cluster's instances.
func (s *Service) ControlCluster(ctx context.Context, meta Meta, r ControlClusterRequest) (Accepted, error) {
	meta = s.complete(meta)
	return s.onCluster(ctx, meta, r.Name, func(c *domain.Cluster) ([]domain.Event, error) {
		return domain.DecideControlCluster(c, domain.ControlCluster{Kind: r.Kind, Name: r.Name, Roles: r.Roles, Nodes: r.Nodes,
			OperationID: meta.OperationID})
	})
}

// PlanControlCluster is ControlCluster's dry run: the steps it would run.
func (s *Service) PlanControlCluster(ctx context.Context, r ControlClusterRequest) ([]domain.Step, error) {
	return s.planOnCluster(ctx, r.Name, func(c *domain.Cluster) ([]domain.Event, error) {
		return domain.DecideControlCluster(c, domain.ControlCluster{Kind: r.Kind, Name: r.Name, Roles: r.Roles, Nodes: r.Nodes,
			OperationID: "dry-run"})
	})
}

// DestroyClusterRequest destroys a cluster.
type DestroyClusterRequest struct {
	Name       string
	RetainData bool
	// Force forgets a cluster whose hosts are gone: each instance is tried
	// once, and the cluster is destroyed whatever the tries gave. It needs
	// Confirm, the cluster's name repeated.
	Force   bool
	Confirm string
}

func (r DestroyClusterRequest) command(operationID string) domain.DestroyCluster {
	return domain.DestroyCluster{Name: r.Name, RetainData: r.RetainData, Force: r.Force, Confirm: r.Confirm, OperationID: operationID}
}

// DestroyCluster records a destroy of a cluster.
func (s *Service) DestroyCluster(ctx context.Context, meta Meta, r DestroyClusterRequest) (Accepted, error) {
	meta = s.complete(meta)
	acc, err := s.onCluster(ctx, meta, r.Name, func(c *domain.Cluster) ([]domain.Event, error) {
		return domain.DecideDestroyCluster(c, r.command(meta.OperationID))
	})
	if err == nil && r.Force {
		s.log.Warn().Str("cluster", r.Name).Str("operation", acc.OperationID).Str("actor", meta.Actor).
			Uint64("commit_seq", acc.CommitSeq).Msg("forced destroy: the cluster is forgotten whether or not its hosts answer")
	}
	return acc, err
}

// PlanDestroyCluster is DestroyCluster's dry run.
func (s *Service) PlanDestroyCluster(ctx context.Context, r DestroyClusterRequest) ([]domain.Step, error) {
	return s.planOnCluster(ctx, r.Name, func(c *domain.Cluster) ([]domain.Event, error) {
		return domain.DecideDestroyCluster(c, r.command("dry-run"))
	})
}

// planOnCluster decides on a cluster without recording: the plan of the
// operation it would request.
func (s *Service) planOnCluster(ctx context.Context, name string, decide func(*domain.Cluster) ([]domain.Event, error)) ([]domain.Step, error) {
	l, err := loadedOf(s.clusters.read(ctx, name))
	if err != nil {
		return nil, err
	}
	if l.state == nil {
		return nil, domain.Errorf(domain.NotFound, "cluster %s does not exist", name)
	}
	evs, err := decide(l.state)
	if err != nil {
		return nil, err
	}
	for _, e := range evs {
		if op, ok := e.(domain.OperationRequested); ok {
			return op.Plan, nil
		}
	}
	return nil, domain.Errorf(domain.Internal, "cluster %s: the decision requested no operation", name)
}

// ReloadCluster records a reload: new server_configs (nil: unchanged),
// and restarts of the instances whose rendered configs change.
func (s *Service) ReloadCluster(ctx context.Context, meta Meta, name string, serverConfigs map[string]map[string]any) (Accepted, error) {
	meta = s.complete(meta)
	return s.onCluster(ctx, meta, name, func(c *domain.Cluster) ([]domain.Event, error) {
		return domain.DecideReloadCluster(c, domain.ReloadCluster{Name: name, ServerConfigs: serverConfigs, OperationID: meta.OperationID})
	})
}

// PlanReloadCluster is ReloadCluster's dry run.
func (s *Service) PlanReloadCluster(ctx context.Context, name string, serverConfigs map[string]map[string]any) ([]domain.Step, error) {
	return s.planOnCluster(ctx, name, func(c *domain.Cluster) ([]domain.Event, error) {
		return domain.DecideReloadCluster(c, domain.ReloadCluster{Name: name, ServerConfigs: serverConfigs, OperationID: "dry-run"})
	})
}
