package service

import (
	"context"
	"fmt"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
)

// Operations lists every operation, newest first. Lifecycle operations
// (deploy, ...) carry their own status; inventory commands (register a
// machine, upload a package) succeed in their commit.
func (s *Service) Operations(ctx context.Context) ([]domain.OperationView, error) {
	st, err := s.store.LoadFilter(ctx, eventstore.AllSubjects)
	if err != nil {
		return nil, err
	}
	return operationsOf(st.Events), nil
}

// Operation returns one operation, with its steps when it runs on a
// cluster. It finds the operation through the operation index and reads
// only the aggregate its commits went to (its cluster, or the machine or
// package of a command that completed in its commit): its cost does not
// depend on how many operations or commits exist.
func (s *Service) Operation(ctx context.Context, id string) (domain.OperationView, error) {
	ref, ok, err := s.ops.Lookup(ctx, id)
	if err != nil {
		return domain.OperationView{}, s.indexErr(ctx, err)
	}
	if !ok {
		return domain.OperationView{}, domain.Errorf(domain.NotFound, "operation %s does not exist", id)
	}
	typ, aggID := ref.AggregateType, ref.AggregateID
	if ref.Home != "" {
		typ, aggID = domain.AggregateCluster, ref.Home
	}
	st, err := s.store.Load(ctx, typ, aggID)
	if err != nil {
		return domain.OperationView{}, deadlineErr(ctx, fmt.Errorf("operation %s: load %s %s: %w", id, typ, aggID, err))
	}
	for _, op := range operationsOf(st.Events) {
		if op.ID != id {
			continue
		}
		if op.Cluster == "" || typ != domain.AggregateCluster {
			return op, nil
		}
		c, err := foldCluster(st.Events)
		if err != nil {
			return domain.OperationView{}, fmt.Errorf("operation %s: cluster %s: %w", id, aggID, err)
		}
		if o := c.FindOperation(id); o != nil {
			op.Status, op.Attempt, op.Error = o.Status, o.Attempt, o.Error
			op.Steps = stepViews(o)
		}
		return op, nil
	}
	// The index named an aggregate whose history does not carry the id:
	// the index and the store disagree, which is a defect, not a 404.
	return domain.OperationView{}, fmt.Errorf("operation %s: the operation index names %s %s (seq %d), whose history does not carry it",
		id, typ, aggID, ref.Seq)
}

// clusterOf is the cluster operation id runs on, found through the index
// without reading anything else; "" and the operation, read, when it ran
// on no cluster (a command that completed in its commit), for the caller
// to say so.
func (s *Service) clusterOf(ctx context.Context, id string) (string, domain.OperationView, error) {
	ref, ok, err := s.ops.Lookup(ctx, id)
	switch {
	case err != nil:
		return "", domain.OperationView{}, s.indexErr(ctx, err)
	case !ok:
		return "", domain.OperationView{}, domain.Errorf(domain.NotFound, "operation %s does not exist", id)
	case ref.Home != "":
		return ref.Home, domain.OperationView{}, nil
	}
	view, err := s.Operation(ctx, id)
	return view.Cluster, view, err
}

// indexErr is what a request answers when the operation index could not
// answer in time or its tail failed: the client may retry.
func (s *Service) indexErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return deadlineErr(ctx, err)
	}
	s.log.Warn().Err(err).Msg("operation index unavailable")
	return domain.Errorf(domain.Unavailable, "the operation index is not available: %v; retry the request", err)
}

// foldCluster folds a cluster's stored events.
func foldCluster(events []eventstore.Event) (domain.Cluster, error) {
	var c domain.Cluster
	for _, e := range events {
		de, err := domain.DecodeEvent(e.Type, e.SchemaVersion, e.Payload)
		if err != nil {
			return domain.Cluster{}, fmt.Errorf("seq %d: %w", e.Seq, err)
		}
		c = domain.EvolveCluster(c, de)
	}
	return c, nil
}

func stepViews(o *domain.Operation) []domain.StepView {
	out := make([]domain.StepView, 0, len(o.Plan))
	for _, st := range o.Plan {
		state := o.Steps[st.ID]
		status := state.Status
		if status == domain.StepStatusPending {
			status = "pending"
		}
		out = append(out, domain.StepView{ID: st.ID, Kind: st.Kind, Host: st.Host, Instance: st.Instance, Needs: st.Needs,
			Status: status, Attempt: state.Attempt, Agent: state.Agent, Error: state.Error, DurationMS: state.DurationMS})
	}
	return out
}

func operationsOf(events []eventstore.Event) []domain.OperationView {
	byID := map[string]*domain.OperationView{}
	sums := map[string]domain.OperationSummary{}
	var order []string
	for _, e := range events {
		if e.OperationID == "" {
			continue
		}
		if _, seen := byID[e.OperationID]; !seen {
			byID[e.OperationID] = &domain.OperationView{ID: e.OperationID, AggregateType: e.AggregateType, AggregateID: e.AggregateID,
				Actor: e.Actor, CreatedAt: e.Time, CommitSeq: e.Seq}
			order = append(order, e.OperationID)
		}
		if !domain.Summarizes(e.Type) {
			continue
		}
		de, err := domain.DecodeEvent(e.Type, e.SchemaVersion, e.Payload)
		if err != nil {
			de = nil
		}
		sums[e.OperationID] = sums[e.OperationID].Apply(e.Type, de)
		// A rollback's request rolls back the operation it names, as the
		// cluster's fold does; its commit carries the rollback's id only.
		if r, ok := de.(domain.OperationRequested); ok && r.RollbackOf != "" {
			if s, ok := sums[r.RollbackOf]; ok {
				s.Status = domain.OperationStatusRolledBack
				sums[r.RollbackOf] = s
			}
		}
	}
	for id, s := range sums {
		op := byID[id]
		op.Kind, op.Cluster, op.Status, op.Attempt, op.Error = s.Kind, s.Cluster, s.Status, s.Attempt, s.Error
	}
	// Events come in stream order, so operations were first seen in commit
	// order: reversed, they are newest first.
	out := make([]domain.OperationView, 0, len(order))
	for i := len(order) - 1; i >= 0; i-- {
		out = append(out, *byID[order[i]])
	}
	return out
}
