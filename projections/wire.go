package projections

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/dmgr/dmgr/eventstore"
)

// wireCommit is the body of a commit message, as eventstore writes it
// (eventstore.wireCommit, which is unexported). TestWireFormatMatchesTheEventStore
// appends through eventstore and decodes here, so a change there fails a
// test here.
type wireCommit struct {
	CommitID      string      `json:"commit_id"`
	AggregateType string      `json:"aggregate_type"`
	AggregateID   string      `json:"aggregate_id"`
	Time          time.Time   `json:"time"`
	Actor         string      `json:"actor"`
	OperationID   string      `json:"operation_id,omitempty"`
	CorrelationID string      `json:"correlation_id,omitempty"`
	CausationID   string      `json:"causation_id,omitempty"`
	FencingToken  int64       `json:"fencing_token,omitempty"`
	Events        []wireEvent `json:"events"`
}

type wireEvent struct {
	EventID          string          `json:"event_id"`
	Type             string          `json:"type"`
	SchemaVersion    int             `json:"schema_version"`
	AggregateVersion uint64          `json:"aggregate_version"`
	Payload          json.RawMessage `json:"payload"`
}

// decodeCommit turns one message of the event stream into its events.
func decodeCommit(seq uint64, data []byte) ([]eventstore.Event, error) {
	var w wireCommit
	if err := json.Unmarshal(data, &w); err != nil {
		return nil, fmt.Errorf("decode commit at seq %d: %w", seq, err)
	}
	out := make([]eventstore.Event, len(w.Events))
	for i, e := range w.Events {
		out[i] = eventstore.Event{
			Seq: seq, CommitID: w.CommitID, EventID: e.EventID, Type: e.Type,
			SchemaVersion: e.SchemaVersion, AggregateType: w.AggregateType,
			AggregateID: w.AggregateID, AggregateVersion: e.AggregateVersion,
			Time: w.Time, Actor: w.Actor, OperationID: w.OperationID,
			CorrelationID: w.CorrelationID, CausationID: w.CausationID, FencingToken: w.FencingToken, Payload: e.Payload,
		}
	}
	return out, nil
}
