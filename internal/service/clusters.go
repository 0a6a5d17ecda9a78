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
	// Group will own the cluster ("": DefaultGroup); Labels are its labels.
	Group  string
	Labels map[string]string
}

// DeployCluster records a deploy after checking it against every machine,
// package and cluster.
func (s *Service) DeployCluster(ctx context.Context, meta Meta, r DeployClusterRequest) (Accepted, error) {
	meta = s.complete(meta) // the decision needs the operation id
	return s.run(ctx, meta, func(ctx context.Context) (decision, error) {
		return s.decideDeploy(ctx, r, meta.OperationID)
	})
}

// DeployPlan is what a deploy would do: the resolved cluster and the steps.
type DeployPlan struct {
	Cluster domain.ClusterDeployRequested `json:"cluster"`
	Steps   []domain.Step                 `json:"steps"`
}

// PlanDeployCluster decides a deploy without recording it: the resolved
// topology and the steps it would run, or why it would be refused.
func (s *Service) PlanDeployCluster(ctx context.Context, r DeployClusterRequest) (DeployPlan, error) {
	d, err := s.decideDeploy(ctx, r, "dry-run")
	if err != nil {
		return DeployPlan{}, err
	}
	return DeployPlan{Cluster: d.events[0].(domain.ClusterDeployRequested), Steps: d.events[1].(domain.OperationRequested).Plan}, nil
}

// decideDeploy decides a deploy on what it touches: the cluster, the
// machines of the topology with the clusters they list, and the packages.
func (s *Service) decideDeploy(ctx context.Context, r DeployClusterRequest, operationID string) (decision, error) {
	cmd := domain.DeployCluster{Name: r.Name, Group: r.Group, Labels: r.Labels, Version: r.Version, Topology: r.Topology, OperationID: operationID, MaxInstances: s.maxInstances}
	if err := domain.ValidateClusterName(r.Name); err != nil {
		return decision{}, err // before the name is used as a subject
	}
	p, err := s.readPlacement(ctx, r.Name, domain.DeployNeeds(cmd))
	if err != nil {
		return decision{}, err
	}
	evs, err := domain.DecideDeployCluster(p.world, cmd)
	if err != nil {
		return decision{}, err
	}
	return p.decision(evs, operationID), nil
}

// Cluster returns one existing cluster.
func (s *Service) Cluster(ctx context.Context, name string) (domain.Cluster, error) {
	c, err := loadedOf(s.clusters.read(ctx, name))
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
