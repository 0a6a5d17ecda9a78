package domain

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// sampleEvents holds one event of every type, with every field set, as the
// event store would write them.
func sampleEvents(t *testing.T) []Event {
	t.Helper()
	pkg := dmUploaded("v8.1.0", "amd64")
	pkg.Files = []PackageFile{
		{Path: "dm-master-v8.1.0-linux-amd64.tar.gz", Size: 52428800, Mode: 0o644, SHA256: strings.Repeat("a1", 32)},
		{Path: "bin/dmctl", Size: 1024, Mode: 0o755, SHA256: strings.Repeat("b2", 32)},
	}
	evs := []Event{
		MachineRegistered{Host: "198.18.0.11", SSHPort: 2222, User: "tidb", Credential: CredentialRef{ID: "cred-1", Kind: CredentialPrivateKey},
			Labels: Labels{Region: "eu", Zone: "eu-1", Rack: "r1"}},
		MachineRemoved{Host: "198.18.0.11"},
		pkg,
		OperationRequested{ID: "op-1", Kind: OperationDeploy, Cluster: "prod-a"},
	}
	// A deploy as decided from a real topology. Its instance configs hold
	// strings only: JSON has one number type, so ints in a config come back
	// as float64.
	for _, r := range deployedCluster(t, "prod-a", prodATopology) {
		if _, ok := r.event.(ClusterDeployRequested); ok {
			evs = append(evs, r.event)
		}
	}
	return evs
}

func TestDecodeEventRoundTrip(t *testing.T) {
	all := map[string]bool{
		TypeMachineRegistered: false, TypeMachineRemoved: false, TypePackageUploaded: false,
		TypeClusterDeployRequested: false, TypeOperationRequested: false,
	}
	for _, e := range sampleEvents(t) {
		all[e.EventType()] = true
		t.Run(e.EventType(), func(t *testing.T) {
			payload, err := json.Marshal(e)
			if err != nil {
				t.Fatalf("marshal: %v", err)
			}
			got, err := DecodeEvent(e.EventType(), 1, payload)
			if err != nil {
				t.Fatalf("DecodeEvent: %v", err)
			}
			if !reflect.DeepEqual(got, e) {
				t.Errorf("decoded\n  %#v\nwant\n  %#v", got, e)
			}
		})
	}
	for typ, covered := range all {
		if !covered {
			t.Errorf("no sample of event type %s", typ)
		}
	}
}

// TestDecodeEventTypeNames: the names written into the event store never
// change once written.
func TestDecodeEventTypeNames(t *testing.T) {
	tests := []struct {
		event Event
		name  string
	}{
		{MachineRegistered{}, "MachineRegistered"},
		{MachineRemoved{}, "MachineRemoved"},
		{PackageUploaded{}, "PackageUploaded"},
		{ClusterDeployRequested{}, "ClusterDeployRequested"},
		{OperationRequested{}, "OperationRequested"},
	}
	for _, tt := range tests {
		if got := tt.event.EventType(); got != tt.name {
			t.Errorf("%T.EventType() = %q, want %q", tt.event, got, tt.name)
		}
	}
}

func TestDecodeEventRefused(t *testing.T) {
	tests := []struct {
		name          string
		eventType     string
		schemaVersion int
		payload       string
		wantErr       string
	}{
		{"unknown type", "ClusterExploded", 1, `{}`, `unknown type "ClusterExploded"`},
		{"empty type", "", 1, `{}`, `unknown type ""`},
		{"schema version 2", TypeMachineRegistered, 2, `{"host":"198.18.0.11"}`, "unknown schema version 2"},
		{"schema version 0", TypeClusterDeployRequested, 0, `{"name":"prod-a"}`, "unknown schema version 0"},
		{"bad JSON", TypeMachineRemoved, 1, `{"host":`, "decode event MachineRemoved"},
		{"a field of the wrong type", TypeMachineRegistered, 1, `{"host":"198.18.0.11","ssh_port":"22"}`, "decode event MachineRegistered"},
		{"not an object", TypeOperationRequested, 1, `["op-1"]`, "decode event OperationRequested"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := DecodeEvent(tt.eventType, tt.schemaVersion, []byte(tt.payload))
			if err == nil {
				t.Fatalf("DecodeEvent accepted it as %#v", e)
			}
			if e != nil {
				t.Errorf("DecodeEvent returned %#v with its error", e)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantErr)
			}
		})
	}
}
