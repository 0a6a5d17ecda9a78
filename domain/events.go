package domain

import (
	"encoding/json"
	"fmt"
)

// Aggregate types: the second token of an event subject.
const (
	AggregateMachine = "machine"
	AggregatePackage = "package"
	AggregateCluster = "cluster"
)

// Event is a domain event: a fact in the past tense. Its type name is
// written into the event store and never changes once written; a changed
// shape gets a new schema version and an upcaster in DecodeEvent.
type Event interface {
	EventType() string
}

// Event type names.
const (
	TypeMachineRegistered        = "MachineRegistered"
	TypeMachineRemoved           = "MachineRemoved"
	TypePackageUploaded          = "PackageUploaded"
	TypeClusterDeployRequested   = "ClusterDeployRequested"
	TypeOperationRequested       = "OperationRequested"
	TypeStepStarted              = "StepStarted"
	TypeStepSucceeded            = "StepSucceeded"
	TypeStepFailed               = "StepFailed"
	TypeOperationSucceeded       = "OperationSucceeded"
	TypeOperationFailed          = "OperationFailed"
	TypeOperationRetried         = "OperationRetried"
	TypeOperationCancelRequested = "OperationCancelRequested"
	TypeOperationCancelled       = "OperationCancelled"
	TypeClusterLeaderElected     = "ClusterLeaderElected"
	TypeClusterScaleOutRequested = "ClusterScaleOutRequested"
	TypeClusterScaleInRequested  = "ClusterScaleInRequested"
	TypeClusterReloadRequested   = "ClusterReloadRequested"
)

func (MachineRegistered) EventType() string        { return TypeMachineRegistered }
func (MachineRemoved) EventType() string           { return TypeMachineRemoved }
func (PackageUploaded) EventType() string          { return TypePackageUploaded }
func (ClusterDeployRequested) EventType() string   { return TypeClusterDeployRequested }
func (OperationRequested) EventType() string       { return TypeOperationRequested }
func (StepStarted) EventType() string              { return TypeStepStarted }
func (StepSucceeded) EventType() string            { return TypeStepSucceeded }
func (StepFailed) EventType() string               { return TypeStepFailed }
func (OperationSucceeded) EventType() string       { return TypeOperationSucceeded }
func (OperationFailed) EventType() string          { return TypeOperationFailed }
func (OperationRetried) EventType() string         { return TypeOperationRetried }
func (OperationCancelRequested) EventType() string { return TypeOperationCancelRequested }
func (OperationCancelled) EventType() string       { return TypeOperationCancelled }
func (ClusterLeaderElected) EventType() string     { return TypeClusterLeaderElected }
func (ClusterScaleOutRequested) EventType() string { return TypeClusterScaleOutRequested }
func (ClusterScaleInRequested) EventType() string  { return TypeClusterScaleInRequested }
func (ClusterReloadRequested) EventType() string   { return TypeClusterReloadRequested }

// decoders decode schema 1 of every event type into its value type, so
// that Evolve switches on value types only.
var decoders = map[string]func([]byte) (Event, error){
	TypeMachineRegistered:        decodeAs[MachineRegistered],
	TypeMachineRemoved:           decodeAs[MachineRemoved],
	TypePackageUploaded:          decodeAs[PackageUploaded],
	TypeClusterDeployRequested:   decodeAs[ClusterDeployRequested],
	TypeOperationRequested:       decodeAs[OperationRequested],
	TypeStepStarted:              decodeAs[StepStarted],
	TypeStepSucceeded:            decodeAs[StepSucceeded],
	TypeStepFailed:               decodeAs[StepFailed],
	TypeOperationSucceeded:       decodeAs[OperationSucceeded],
	TypeOperationFailed:          decodeAs[OperationFailed],
	TypeOperationRetried:         decodeAs[OperationRetried],
	TypeOperationCancelRequested: decodeAs[OperationCancelRequested],
	TypeOperationCancelled:       decodeAs[OperationCancelled],
	TypeClusterLeaderElected:     decodeAs[ClusterLeaderElected],
	TypeClusterScaleOutRequested: decodeAs[ClusterScaleOutRequested],
	TypeClusterScaleInRequested:  decodeAs[ClusterScaleInRequested],
	TypeClusterReloadRequested:   decodeAs[ClusterReloadRequested],
}

func decodeAs[T Event](payload []byte) (Event, error) {
	var v T
	err := json.Unmarshal(payload, &v)
	return v, err
}

// DecodeEvent turns a stored event back into its type. Unknown types are an
// error: a binary older than its stream must not silently skip history.
func DecodeEvent(eventType string, schemaVersion int, payload []byte) (Event, error) {
	decode, ok := decoders[eventType]
	if !ok {
		return nil, fmt.Errorf("decode event: unknown type %q (schema %d)", eventType, schemaVersion)
	}
	if schemaVersion != 1 {
		return nil, fmt.Errorf("decode event %s: unknown schema version %d", eventType, schemaVersion)
	}
	e, err := decode(payload)
	if err != nil {
		return nil, fmt.Errorf("decode event %s: %w", eventType, err)
	}
	return e, nil
}
