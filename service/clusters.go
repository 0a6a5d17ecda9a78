package service

import (
	"context"
	"sort"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
)

// DeployClusterRequest is the body of a deploy.
type DeployClusterRequest struct {
	Name     string
	Version  string
	Topology string
}

// DeployCluster records a deploy after checking it against every machine,
// package and cluster. With dryRun it decides but appends nothing.
func (s *Service) DeployCluster(ctx context.Context, meta Meta, r DeployClusterRequest) (Accepted, error) {
	meta = s.complete(meta)
	return s.run(ctx, meta, func(ctx context.Context) (decision, error) {
		w, err := s.loadWorld(ctx, eventstore.AllSubjects)
		if err != nil {
			return decision{}, err
		}
		evs, err := domain.DecideDeployCluster(w.World, domain.DeployCluster{
			Name: r.Name, Version: r.Version, Topology: r.Topology, OperationID: meta.OperationID})
		return decision{domain.AggregateCluster, r.Name, evs, w.expect(domain.AggregateCluster, r.Name)}, err
	})
}

// PlanDeployCluster decides a deploy without recording it: the resolved
// topology it would deploy, or why it would be refused.
func (s *Service) PlanDeployCluster(ctx context.Context, r DeployClusterRequest) (domain.ClusterDeployRequested, error) {
	w, err := s.loadWorld(ctx, eventstore.AllSubjects)
	if err != nil {
		return domain.ClusterDeployRequested{}, err
	}
	evs, err := domain.DecideDeployCluster(w.World, domain.DeployCluster{
		Name: r.Name, Version: r.Version, Topology: r.Topology, OperationID: "dry-run"})
	if err != nil {
		return domain.ClusterDeployRequested{}, err
	}
	return evs[0].(domain.ClusterDeployRequested), nil
}

// Cluster returns one existing cluster.
func (s *Service) Cluster(ctx context.Context, name string) (domain.Cluster, error) {
	c, err := load(ctx, s, domain.AggregateCluster, name, domain.EvolveCluster)
	if err != nil {
		return domain.Cluster{}, err
	}
	if !c.state.Exists() {
		return domain.Cluster{}, domain.Errorf(domain.NotFound, "cluster %s does not exist", name)
	}
	return *c.state, nil
}

// Clusters lists the existing clusters, sorted by name.
func (s *Service) Clusters(ctx context.Context) ([]domain.Cluster, error) {
	w, err := s.loadWorld(ctx, eventstore.TypeSubjects(domain.AggregateCluster))
	if err != nil {
		return nil, err
	}
	out := []domain.Cluster{}
	for _, c := range w.Clusters {
		if c.Exists() {
			out = append(out, *c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
