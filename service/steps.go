package service

import (
	"context"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
)

// CoordinatorActor is the actor of the commits the coordinator makes.
const CoordinatorActor = "dmgr-coordinator"

// ReportStep records an agent's report on a step of a cluster's operation.
// A report that changes nothing (stale, repeated) appends nothing and
// answers recorded=false.
func (s *Service) ReportStep(ctx context.Context, cluster string, r domain.StepReport) (acc Accepted, recorded bool, err error) {
	meta := Meta{Actor: CoordinatorActor, OperationID: r.Operation}
	acc, err = s.run(ctx, meta, func(ctx context.Context) (decision, error) {
		c, err := load(ctx, s, domain.AggregateCluster, cluster, domain.EvolveCluster)
		if err != nil {
			return decision{}, err
		}
		if c.state == nil {
			return decision{}, domain.Errorf(domain.NotFound, "cluster %s does not exist", cluster)
		}
		evs, err := domain.DecideStepReport(c.state, r)
		return decision{domain.AggregateCluster, cluster, evs, eventstore.Expect{LastSeq: c.lastSeq, Version: c.version}}, err
	})
	return acc, err == nil && acc.CommitSeq != 0, err
}

// RetryOperation resumes a failed operation from its failed steps.
func (s *Service) RetryOperation(ctx context.Context, meta Meta, id string) (Accepted, error) {
	view, err := s.Operation(ctx, id)
	if err != nil {
		return Accepted{}, err
	}
	if view.Cluster == "" {
		return Accepted{}, domain.Errorf(domain.Conflict, "operation %s (%s) completed in its commit; there is nothing to retry", id, view.Kind)
	}
	meta.OperationID = id
	return s.run(ctx, meta, func(ctx context.Context) (decision, error) {
		c, err := load(ctx, s, domain.AggregateCluster, view.Cluster, domain.EvolveCluster)
		if err != nil {
			return decision{}, err
		}
		if c.state == nil {
			return decision{}, domain.Errorf(domain.NotFound, "cluster %s does not exist", view.Cluster)
		}
		evs, err := domain.DecideRetryOperation(c.state, domain.RetryOperation{ID: id})
		return decision{domain.AggregateCluster, view.Cluster, evs, eventstore.Expect{LastSeq: c.lastSeq, Version: c.version}}, err
	})
}

// ClusterState returns a cluster's state folded from its events, whatever
// its status, with the stream sequence of its last commit; ok is false when
// the cluster has no events.
func (s *Service) ClusterState(ctx context.Context, name string) (c domain.Cluster, lastSeq uint64, ok bool, err error) {
	l, err := load(ctx, s, domain.AggregateCluster, name, domain.EvolveCluster)
	if err != nil || l.state == nil {
		return domain.Cluster{}, l.lastSeq, false, err
	}
	return *l.state, l.lastSeq, true, nil
}
