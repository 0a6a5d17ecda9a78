package service

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
)

// TestOperationsShowARolledBackUpgrade: the list shows an upgrade that a
// rollback undid as rolled back, as the cluster's own fold does, though
// the rollback's commits carry only the rollback's id.
func TestOperationsShowARolledBackUpgrade(t *testing.T) {
	var evs []eventstore.Event
	add := func(op string, e domain.Event) {
		p, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, eventstore.Event{Seq: uint64(len(evs) + 1), Type: e.EventType(), SchemaVersion: 1,
			AggregateType: domain.AggregateCluster, AggregateID: "prod-a", Time: time.Unix(int64(len(evs)), 0), Actor: "alice",
			OperationID: op, Payload: p})
	}
	add("up", domain.OperationRequested{ID: "up", Kind: domain.OperationUpgrade, Cluster: "prod-a"})
	add("up", domain.OperationFailed{ID: "up", Error: "start failed"})
	add("rb", domain.OperationRequested{ID: "rb", Kind: domain.OperationRollback, Cluster: "prod-a", RollbackOf: "up"})
	add("rb", domain.OperationSucceeded{ID: "rb"})

	c := domain.Cluster{}
	for _, e := range evs {
		de, err := domain.DecodeEvent(e.Type, 1, e.Payload)
		if err != nil {
			t.Fatal(err)
		}
		c = domain.EvolveCluster(c, de)
	}
	ops := operationsOf(evs)
	if len(ops) != 2 || ops[0].ID != "rb" || ops[1].ID != "up" {
		t.Fatalf("operations %+v, want rb then up", ops)
	}
	if ops[1].Status != domain.OperationStatusRolledBack || ops[1].Status != c.FindOperation("up").Status {
		t.Errorf("the upgrade is listed as %s, the cluster's fold says %s; want %s", ops[1].Status, c.FindOperation("up").Status,
			domain.OperationStatusRolledBack)
	}
	if ops[0].Status != domain.OperationStatusSucceeded {
		t.Errorf("the rollback is listed as %s, want succeeded", ops[0].Status)
	}
}
