package service

import (
	"context"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
)

// CoordinatorActor is the actor of the commits the coordinator makes.
const CoordinatorActor = "dmgr-coordinator"

// ReportStep records an agent's report on a step of a cluster's operation,
// written by the coordinator that leads the cluster with token. A report
// that changes nothing (stale, repeated) appends nothing and answers
// recorded=false; a stale leader gets a conflict.
func (s *Service) ReportStep(ctx context.Context, cluster string, r domain.StepReport, token int64) (acc Accepted, recorded bool, err error) {
	meta := Meta{Actor: CoordinatorActor, OperationID: r.Operation, FencingToken: token}
	acc, err = s.onCluster(ctx, meta, cluster, func(c *domain.Cluster) ([]domain.Event, error) {
		return domain.DecideStepReport(c, r, token)
	})
	return acc, err == nil && acc.CommitSeq != 0, err
}

// TakeLeadership records that the coordinator with token leads the
// cluster (nothing when it already did), as part of the operation it takes
// over.
func (s *Service) TakeLeadership(ctx context.Context, cluster, operationID string, token int64, coordinator string) (Accepted, error) {
	meta := Meta{Actor: CoordinatorActor, OperationID: operationID, FencingToken: token}
	return s.onCluster(ctx, meta, cluster, func(c *domain.Cluster) ([]domain.Event, error) {
		return domain.DecideLeadership(c, token, coordinator)
	})
}

// SettleOperation records the outcome of an active operation with nothing
// left to run, as the coordinator with token.
func (s *Service) SettleOperation(ctx context.Context, cluster, id string, token int64) (Accepted, error) {
	meta := Meta{Actor: CoordinatorActor, OperationID: id, FencingToken: token}
	return s.onCluster(ctx, meta, cluster, func(c *domain.Cluster) ([]domain.Event, error) {
		return domain.DecideSettle(c, id, token)
	})
}

// CancelOperation stops a running operation: nothing more is dispatched,
// running steps finish, then it is cancelled.
func (s *Service) CancelOperation(ctx context.Context, meta Meta, id string) (Accepted, error) {
	view, err := s.Operation(ctx, id)
	if err != nil {
		return Accepted{}, err
	}
	if view.Cluster == "" {
		return Accepted{}, domain.Errorf(domain.Conflict, "operation %s (%s) completed in its commit; there is nothing to cancel", id, view.Kind)
	}
	meta.OperationID = id
	return s.onCluster(ctx, meta, view.Cluster, func(c *domain.Cluster) ([]domain.Event, error) {
		return domain.DecideCancelOperation(c, domain.CancelOperation{ID: id})
	})
}

// onCluster loads a cluster, decides on it and appends, deciding again on
// a conflict.
func (s *Service) onCluster(ctx context.Context, meta Meta, cluster string, decide func(*domain.Cluster) ([]domain.Event, error)) (Accepted, error) {
	return s.run(ctx, meta, func(ctx context.Context) (decision, error) {
		c, err := load(ctx, s, domain.AggregateCluster, cluster, domain.EvolveCluster)
		if err != nil {
			return decision{}, err
		}
		if c.state == nil {
			return decision{}, domain.Errorf(domain.NotFound, "cluster %s does not exist", cluster)
		}
		evs, err := decide(c.state)
		return decision{domain.AggregateCluster, cluster, evs, eventstore.Expect{LastSeq: c.lastSeq, Version: c.version}}, err
	})
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
	return s.onCluster(ctx, meta, view.Cluster, func(c *domain.Cluster) ([]domain.Event, error) {
		return domain.DecideRetryOperation(c, domain.RetryOperation{ID: id})
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
