package domain

import (
	stdjson "encoding/json"
	"fmt"

	"github.com/go-json-experiment/json"
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
	TypeClusterDestroyRequested  = "ClusterDestroyRequested"
	TypeClusterImported          = "ClusterImported"
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
func (ClusterDestroyRequested) EventType() string  { return TypeClusterDestroyRequested }
func (ClusterImported) EventType() string          { return TypeClusterImported }

// decoders decode schema 1 of every event type into its value type, so
// that Evolve switches on value types only.
var decoders = map[string]eventDecoder{
	TypeMachineRegistered:        decoderOf[MachineRegistered](),
	TypeMachineRemoved:           decoderOf[MachineRemoved](),
	TypePackageUploaded:          decoderOf[PackageUploaded](),
	TypeClusterDeployRequested:   decoderOf[ClusterDeployRequested](),
	TypeOperationRequested:       decoderOf[OperationRequested](),
	TypeStepStarted:              decoderOf[StepStarted](),
	TypeStepSucceeded:            decoderOf[StepSucceeded](),
	TypeStepFailed:               decoderOf[StepFailed](),
	TypeOperationSucceeded:       decoderOf[OperationSucceeded](),
	TypeOperationFailed:          decoderOf[OperationFailed](),
	TypeOperationRetried:         decoderOf[OperationRetried](),
	TypeOperationCancelRequested: decoderOf[OperationCancelRequested](),
	TypeOperationCancelled:       decoderOf[OperationCancelled](),
	TypeClusterLeaderElected:     decoderOf[ClusterLeaderElected](),
	TypeClusterScaleOutRequested: decoderOf[ClusterScaleOutRequested](),
	TypeClusterScaleInRequested:  decoderOf[ClusterScaleInRequested](),
	TypeClusterReloadRequested:   decoderOf[ClusterReloadRequested](),
	TypeClusterDestroyRequested:  decoderOf[ClusterDestroyRequested](),
	TypeClusterImported:          decoderOf[ClusterImported](),
	TypeInstancesPlaced:          decoderOf[InstancesPlaced](),
	TypePlacementsReleased:       decoderOf[PlacementsReleased](),
	TypeClaimTaken:               decoderOf[ClaimTaken](),
	TypeClaimReleased:            decoderOf[ClaimReleased](),
	TypeReservationsMade:         decoderOf[ReservationsMade](),
	TypeOwnerMoved:               decoderOf[OwnerMoved](),
	TypeClusterLabelsSet:         decoderOf[ClusterLabelsSet](),
	TypeAccessRefused:            decoderOf[AccessRefused](),
	TypeUserCreated:              decoderOf[UserCreated](),
	TypeUserDisabled:             decoderOf[UserDisabled](),
	TypeUserEnabled:              decoderOf[UserEnabled](),
	TypeUserPasswordReset:        decoderOf[UserPasswordReset](),
	TypeUserDeleted:              decoderOf[UserDeleted](),
	TypeTokenIssued:              decoderOf[TokenIssued](),
	TypeTokenRevoked:             decoderOf[TokenRevoked](),
	TypeGroupCreated:             decoderOf[GroupCreated](),
	TypeGroupRenamed:             decoderOf[GroupRenamed](),
	TypeGroupDeleted:             decoderOf[GroupDeleted](),
	TypeGroupMemberSet:           decoderOf[GroupMemberSet](),
	TypeGroupMemberRemoved:       decoderOf[GroupMemberRemoved](),
	TypeApprovalPolicySet:        decoderOf[ApprovalPolicySet](),
	TypeApprovalRequested:        decoderOf[ApprovalRequested](),
	TypeApprovalGranted:          decoderOf[ApprovalGranted](),
	TypeApprovalRejected:         decoderOf[ApprovalRejected](),
	TypeApprovalWithdrawn:        decoderOf[ApprovalWithdrawn](),
	TypeApprovalExpired:          decoderOf[ApprovalExpired](),
}

// eventDecoder decodes one event type from a payload's bytes.
type eventDecoder struct {
	bytes func([]byte) (Event, error)
}

func decoderOf[T Event]() eventDecoder { return eventDecoder{bytes: decodeAs[T]} }

func (d eventDecoder) decode(payload []byte) (Event, error) { return d.bytes(payload) }

// decodeAs decodes a payload with the JSON v2 decoder (the module that
// became encoding/json/v2): two to three times faster than encoding/json,
// which matters because every load and every projected event decodes. The
// payloads were written by encoding/json from the same structs, so v2's
// stricter defaults (exact names, valid UTF-8, no duplicate names) accept
// them all (TestDecodeEventAgreesWithEncodingJSON checks it for every
// event type); what v2 refuses is read as encoding/json reads it.
func decodeAs[T Event](payload []byte) (Event, error) {
	var v T
	if err := json.Unmarshal(payload, &v); err != nil {
		var v1 T
		if err := stdjson.Unmarshal(payload, &v1); err != nil {
			return v1, err
		}
		return v1, nil
	}
	return v, nil
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
	e, err := decode.decode(payload)
	if err != nil {
		return nil, fmt.Errorf("decode event %s: %w", eventType, err)
	}
	return e, nil
}

// Decodes reports whether DecodeEvent knows the event type and schema.
func Decodes(eventType string, schemaVersion int) bool {
	_, ok := decoders[eventType]
	return ok && schemaVersion == 1
}
