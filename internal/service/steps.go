package service

import (
	"context"
	"errors"
	"fmt"

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
	cluster, view, err := s.clusterOf(ctx, id)
	if err != nil {
		return Accepted{}, err
	}
	if cluster == "" {
		return Accepted{}, domain.Errorf(domain.Conflict, "operation %s (%s) completed in its commit; there is nothing to cancel", id, view.Kind)
	}
	meta.OperationID = id
	return s.onCluster(ctx, meta, cluster, func(c *domain.Cluster) ([]domain.Event, error) {
		return domain.DecideCancelOperation(c, domain.CancelOperation{ID: id})
	})
}

// onCluster loads a cluster, decides on it and appends, deciding again on
// a conflict.
func (s *Service) onCluster(ctx context.Context, meta Meta, cluster string, decide func(*domain.Cluster) ([]domain.Event, error)) (Accepted, error) {
	return s.run(ctx, meta, func(ctx context.Context) (decision, error) {
		c, err := loadedOf(s.clusters.read(ctx, cluster))
		if err != nil {
			return decision{}, err
		}
		if c.state == nil {
			return decision{}, domain.Errorf(domain.NotFound, "cluster %s does not exist", cluster)
		}
		evs, err := decide(c.state)
		d := one(domain.AggregateCluster, cluster, evs, c.expect())
		d.group = c.state.Group
		return d, err
	})
}

// RetryOperation resumes a failed operation from its failed steps.
func (s *Service) RetryOperation(ctx context.Context, meta Meta, id string) (Accepted, error) {
	cluster, view, err := s.clusterOf(ctx, id)
	if err != nil {
		return Accepted{}, err
	}
	if cluster == "" {
		return Accepted{}, domain.Errorf(domain.Conflict, "operation %s (%s) completed in its commit; there is nothing to retry", id, view.Kind)
	}
	meta.OperationID = id
	return s.onCluster(ctx, meta, cluster, func(c *domain.Cluster) ([]domain.Event, error) {
		return domain.DecideRetryOperation(c, domain.RetryOperation{ID: id})
	})
}

// TrackedCluster is one cluster's state kept in memory by the coordinator
// that leads it, and kept up to date incrementally: Refresh folds in only
// the commits made after the last one it folded (a direct get of the
// newer commits, eventstore.LoadSince), and the methods that decide fold
// in the events they appended. A step result then costs one decision on
// the state in memory and one append, whatever the cluster's history —
// never a read and fold of that history.
//
// The methods decide on the state in memory and append on the condition
// that nothing was committed to the cluster since; on a conflict they
// Refresh and decide again. A TrackedCluster is not safe for concurrent
// use: one driver owns it.
type TrackedCluster struct {
	s       *Service
	name    string
	fold    *domain.ClusterFold
	state   domain.Cluster // fold's state as last handed out (valid while !stale)
	stale   bool           // fold has events that state lacks
	exists  bool           // some event was folded in
	lastSeq uint64         // stream sequence of the last commit folded in
	version uint64         // the aggregate's version: events folded in
}

// TrackCluster starts tracking a cluster from nothing; the first Refresh
// reads its whole history.
func (s *Service) TrackCluster(name string) *TrackedCluster {
	return &TrackedCluster{s: s, name: name, fold: domain.NewClusterFold(domain.Cluster{})}
}

// Name is the tracked cluster's name.
func (t *TrackedCluster) Name() string { return t.name }

// LastSeq is the stream sequence of the last commit folded in.
func (t *TrackedCluster) LastSeq() uint64 { return t.lastSeq }

// State returns the state folded so far; ok is false while the cluster has
// no events. The state is shared: read it, never change it.
func (t *TrackedCluster) State() (c domain.Cluster, ok bool) {
	if t.stale {
		t.state, t.stale = t.fold.State(), false
	}
	return t.state, t.exists
}

// Refresh folds in the commits made to the cluster after the last one
// folded, and reports how many events it folded.
func (t *TrackedCluster) Refresh(ctx context.Context) (int, error) {
	st, err := t.s.store.LoadSince(ctx, domain.AggregateCluster, t.name, t.lastSeq)
	if err != nil {
		return 0, fmt.Errorf("cluster %s: read commits after %d: %w", t.name, t.lastSeq, err)
	}
	for _, e := range st.Events {
		de, err := domain.DecodeEvent(e.Type, e.SchemaVersion, e.Payload)
		if err != nil {
			return 0, fmt.Errorf("cluster %s: seq %d: %w", t.name, e.Seq, err)
		}
		t.apply(de)
		t.version = e.AggregateVersion // the stored numbering is the one an append continues
	}
	t.lastSeq = st.LastSeq
	return len(st.Events), nil
}

func (t *TrackedCluster) apply(e domain.Event) {
	t.fold.Apply(e)
	t.version++
	t.stale, t.exists = true, true
}

// ReportStep records an agent's report on a step (see Service.ReportStep)
// on the tracked state.
func (t *TrackedCluster) ReportStep(ctx context.Context, r domain.StepReport, token int64) (acc Accepted, recorded bool, err error) {
	meta := Meta{Actor: CoordinatorActor, OperationID: r.Operation, FencingToken: token}
	acc, err = t.decide(ctx, meta, func(c *domain.Cluster) ([]domain.Event, error) {
		return domain.DecideStepReport(c, r, token)
	})
	return acc, err == nil && acc.CommitSeq != 0, err
}

// TakeLeadership records that the coordinator with token leads the
// cluster (see Service.TakeLeadership) on the tracked state.
func (t *TrackedCluster) TakeLeadership(ctx context.Context, operationID string, token int64, coordinator string) (Accepted, error) {
	meta := Meta{Actor: CoordinatorActor, OperationID: operationID, FencingToken: token}
	return t.decide(ctx, meta, func(c *domain.Cluster) ([]domain.Event, error) {
		return domain.DecideLeadership(c, token, coordinator)
	})
}

// SettleOperation records the outcome of an operation with nothing left to
// run (see Service.SettleOperation) on the tracked state.
func (t *TrackedCluster) SettleOperation(ctx context.Context, id string, token int64) (Accepted, error) {
	meta := Meta{Actor: CoordinatorActor, OperationID: id, FencingToken: token}
	return t.decide(ctx, meta, func(c *domain.Cluster) ([]domain.Event, error) {
		return domain.DecideSettle(c, id, token)
	})
}

// AbandonOperation fails an operation the coordinator with token could not
// advance, with the reason (domain.DecideAbandonOperation).
func (t *TrackedCluster) AbandonOperation(ctx context.Context, a domain.AbandonOperation, token int64) (Accepted, error) {
	meta := Meta{Actor: CoordinatorActor, OperationID: a.ID, FencingToken: token}
	return t.decide(ctx, meta, func(c *domain.Cluster) ([]domain.Event, error) {
		return domain.DecideAbandonOperation(c, a, token)
	})
}

// decide decides on the tracked state and appends on the condition that
// the cluster has no commit after the last one folded; on a conflict it
// refreshes and decides again. What it appended is folded in.
func (t *TrackedCluster) decide(ctx context.Context, meta Meta, decide func(*domain.Cluster) ([]domain.Event, error)) (Accepted, error) {
	meta = t.s.complete(meta)
	for attempt := 1; ; attempt++ {
		c, ok := t.State()
		if !ok {
			return Accepted{}, domain.Errorf(domain.NotFound, "cluster %s does not exist", t.name)
		}
		evs, err := decide(&c)
		if err != nil || len(evs) == 0 {
			return Accepted{OperationID: meta.OperationID}, err
		}
		d := one(domain.AggregateCluster, t.name, evs, eventstore.Expect{LastSeq: t.lastSeq, Version: t.version})
		d.group = c.Group
		seq, err := t.s.appendDecision(ctx, meta, d)
		switch {
		case err == nil:
			for _, e := range evs {
				t.apply(e)
			}
			t.lastSeq = seq
			return Accepted{OperationID: meta.OperationID, CommitSeq: seq}, nil
		case errors.Is(err, eventstore.ErrConflict) && attempt < maxDecideAttempts:
			// Someone else committed to the cluster: read what, decide again.
			if _, err := t.Refresh(ctx); err != nil {
				return Accepted{}, err
			}
			continue
		}
		return Accepted{}, t.s.appendErr(ctx, d, attempt, err)
	}
}

// ClusterState returns a cluster's state folded from its events, whatever
// its status, with the stream sequence of its last commit; ok is false when
// the cluster has no events.
func (s *Service) ClusterState(ctx context.Context, name string) (c domain.Cluster, lastSeq uint64, ok bool, err error) {
	l, err := loadedOf(s.clusters.read(ctx, name))
	if err != nil || l.state == nil {
		return domain.Cluster{}, l.lastSeq, false, err
	}
	return *l.state, l.lastSeq, true, nil
}
