package service

import (
	"context"
	"time"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
)

// OperationView is an operation as the API shows it.
type OperationView struct {
	ID            string    `json:"id"`
	Kind          string    `json:"kind"`
	Status        string    `json:"status"`
	Cluster       string    `json:"cluster,omitempty"`
	AggregateType string    `json:"aggregate_type"`
	AggregateID   string    `json:"aggregate_id"`
	Actor         string    `json:"actor"`
	CreatedAt     time.Time `json:"created_at"`
	CommitSeq     uint64    `json:"commit_seq"`
}

// Commands that complete in their commit, by the type of their first event.
var immediateKinds = map[string]string{
	domain.TypeMachineRegistered: "register-machine",
	domain.TypeMachineRemoved:    "remove-machine",
	domain.TypePackageUploaded:   "upload-package",
}

// Operations lists every operation, newest first. Lifecycle operations
// (deploy, ...) carry their own status; inventory commands (register a
// machine, upload a package) succeed in their commit.
func (s *Service) Operations(ctx context.Context) ([]OperationView, error) {
	st, err := s.store.LoadFilter(ctx, eventstore.AllSubjects)
	if err != nil {
		return nil, err
	}
	return operationsOf(st.Events), nil
}

// Operation returns one operation.
func (s *Service) Operation(ctx context.Context, id string) (OperationView, error) {
	ops, err := s.Operations(ctx)
	if err != nil {
		return OperationView{}, err
	}
	for _, op := range ops {
		if op.ID == id {
			return op, nil
		}
	}
	return OperationView{}, domain.Errorf(domain.NotFound, "operation %s does not exist", id)
}

func operationsOf(events []eventstore.Event) []OperationView {
	byID := map[string]*OperationView{}
	var order []string
	for _, e := range events {
		if e.OperationID == "" {
			continue
		}
		op, seen := byID[e.OperationID]
		if !seen {
			op = &OperationView{ID: e.OperationID, AggregateType: e.AggregateType, AggregateID: e.AggregateID,
				Actor: e.Actor, CreatedAt: e.Time, CommitSeq: e.Seq}
			byID[e.OperationID] = op
			order = append(order, e.OperationID)
		}
		if kind, ok := immediateKinds[e.Type]; ok && op.Kind == "" {
			op.Kind, op.Status = kind, "succeeded"
		}
		if e.Type == domain.TypeOperationRequested {
			de, err := domain.DecodeEvent(e.Type, e.SchemaVersion, e.Payload)
			if err != nil {
				continue
			}
			r := de.(domain.OperationRequested)
			op.Kind, op.Cluster, op.Status = r.Kind, r.Cluster, domain.OperationPending
		}
	}
	// Events come in stream order, so operations were first seen in commit
	// order: reversed, they are newest first.
	out := make([]OperationView, 0, len(order))
	for i := len(order) - 1; i >= 0; i-- {
		out = append(out, *byID[order[i]])
	}
	return out
}
