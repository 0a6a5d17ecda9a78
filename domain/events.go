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
	TypeMachineRegistered      = "MachineRegistered"
	TypeMachineRemoved         = "MachineRemoved"
	TypePackageUploaded        = "PackageUploaded"
	TypeClusterDeployRequested = "ClusterDeployRequested"
	TypeOperationRequested     = "OperationRequested"
)

func (MachineRegistered) EventType() string      { return TypeMachineRegistered }
func (MachineRemoved) EventType() string         { return TypeMachineRemoved }
func (PackageUploaded) EventType() string        { return TypePackageUploaded }
func (ClusterDeployRequested) EventType() string { return TypeClusterDeployRequested }
func (OperationRequested) EventType() string     { return TypeOperationRequested }

// DecodeEvent turns a stored event back into its type. Unknown types are an
// error: a binary older than its stream must not silently skip history.
func DecodeEvent(eventType string, schemaVersion int, payload []byte) (Event, error) {
	var e Event
	switch eventType {
	case TypeMachineRegistered:
		e = &MachineRegistered{}
	case TypeMachineRemoved:
		e = &MachineRemoved{}
	case TypePackageUploaded:
		e = &PackageUploaded{}
	case TypeClusterDeployRequested:
		e = &ClusterDeployRequested{}
	case TypeOperationRequested:
		e = &OperationRequested{}
	default:
		return nil, fmt.Errorf("decode event: unknown type %q (schema %d)", eventType, schemaVersion)
	}
	if schemaVersion != 1 {
		return nil, fmt.Errorf("decode event %s: unknown schema version %d", eventType, schemaVersion)
	}
	if err := json.Unmarshal(payload, e); err != nil {
		return nil, fmt.Errorf("decode event %s: %w", eventType, err)
	}
	return deref(e), nil
}

// deref returns the event value the pointer points at, so that Evolve
// switches on value types only.
func deref(e Event) Event {
	switch v := e.(type) {
	case *MachineRegistered:
		return *v
	case *MachineRemoved:
		return *v
	case *PackageUploaded:
		return *v
	case *ClusterDeployRequested:
		return *v
	case *OperationRequested:
		return *v
	}
	return e
}
