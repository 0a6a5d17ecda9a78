package service

import (
	"context"

	"github.com/dmgr/dmgr/domain"
)

// ScaleOut records a scale-out after checking it against every machine,
// package and cluster.
func (s *Service) ScaleOut(ctx context.Context, meta Meta, name, topology string) (Accepted, error) {
	meta = s.complete(meta)
	return s.run(ctx, meta, func(ctx context.Context) (decision, error) {
		return s.decideScaleOut(ctx, name, topology, meta.OperationID)
	})
}

// PlanScaleOut is ScaleOut's dry run.
func (s *Service) PlanScaleOut(ctx context.Context, name, topology string) ([]domain.Step, error) {
	d, err := s.decideScaleOut(ctx, name, topology, "dry-run")
	if err != nil {
		return nil, err
	}
	return d.events[1].(domain.OperationRequested).Plan, nil
}

// decideScaleOut decides a scale-out on what it touches (see placement).
func (s *Service) decideScaleOut(ctx context.Context, name, topology, operationID string) (decision, error) {
	cmd := domain.ScaleOut{Name: name, Topology: topology, OperationID: operationID, MaxInstances: s.maxInstances}
	self, err := s.clusters.read(ctx, name)
	if err != nil {
		return decision{}, err
	}
	p, err := s.readPlacementOf(ctx, self, name, domain.ScaleOutNeeds(self.ptr(), cmd))
	if err != nil {
		return decision{}, err
	}
	evs, err := domain.DecideScaleOut(p.world, cmd)
	if err != nil {
		return decision{}, err
	}
	return p.decision(evs, operationID), nil
}

// ScaleIn records a scale-in.
func (s *Service) ScaleIn(ctx context.Context, meta Meta, name string, nodes []string, force bool) (Accepted, error) {
	meta = s.complete(meta)
	return s.onCluster(ctx, meta, name, func(c *domain.Cluster) ([]domain.Event, error) {
		return domain.DecideScaleIn(c, domain.ScaleIn{Name: name, Nodes: nodes, Force: force, OperationID: meta.OperationID})
	})
}

// PlanScaleIn is ScaleIn's dry run.
func (s *Service) PlanScaleIn(ctx context.Context, name string, nodes []string, force bool) ([]domain.Step, error) {
	return s.planOnCluster(ctx, name, func(c *domain.Cluster) ([]domain.Event, error) {
		return domain.DecideScaleIn(c, domain.ScaleIn{Name: name, Nodes: nodes, Force: force, OperationID: "dry-run"})
	})
}
