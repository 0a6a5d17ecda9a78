package domain

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
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
// change once written. Every stored name is pinned here as a literal, and
// the table must cover every type DecodeEvent knows: a new event type
// fails this test until its name is pinned.
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
		{StepStarted{}, "StepStarted"},
		{StepSucceeded{}, "StepSucceeded"},
		{StepFailed{}, "StepFailed"},
		{OperationSucceeded{}, "OperationSucceeded"},
		{OperationFailed{}, "OperationFailed"},
		{OperationRetried{}, "OperationRetried"},
		{OperationCancelRequested{}, "OperationCancelRequested"},
		{OperationCancelled{}, "OperationCancelled"},
		{ClusterLeaderElected{}, "ClusterLeaderElected"},
		{ClusterScaleOutRequested{}, "ClusterScaleOutRequested"},
		{ClusterScaleInRequested{}, "ClusterScaleInRequested"},
		{ClusterReloadRequested{}, "ClusterReloadRequested"},
		{ClusterDestroyRequested{}, "ClusterDestroyRequested"},
		{ClusterImported{}, "ClusterImported"},
		{InstancesPlaced{}, "InstancesPlaced"},
		{PlacementsReleased{}, "PlacementsReleased"},
		{ClaimTaken{}, "ClaimTaken"},
		{ClaimReleased{}, "ClaimReleased"},
		{ReservationsMade{}, "ReservationsMade"},
		{OwnerMoved{}, "OwnerMoved"},
		{ClusterLabelsSet{}, "ClusterLabelsSet"},
		{AccessRefused{}, "AccessRefused"},
		{UserCreated{}, "UserCreated"},
		{UserDisabled{}, "UserDisabled"},
		{UserEnabled{}, "UserEnabled"},
		{UserPasswordReset{}, "UserPasswordReset"},
		{UserDeleted{}, "UserDeleted"},
		{TokenIssued{}, "TokenIssued"},
		{TokenRevoked{}, "TokenRevoked"},
		{GroupCreated{}, "GroupCreated"},
		{GroupRenamed{}, "GroupRenamed"},
		{GroupDeleted{}, "GroupDeleted"},
		{GroupMemberSet{}, "GroupMemberSet"},
		{GroupMemberRemoved{}, "GroupMemberRemoved"},
		{ApprovalPolicySet{}, "ApprovalPolicySet"},
		{ApprovalRequested{}, "ApprovalRequested"},
		{ApprovalGranted{}, "ApprovalGranted"},
		{ApprovalRejected{}, "ApprovalRejected"},
		{ApprovalWithdrawn{}, "ApprovalWithdrawn"},
		{ApprovalExpired{}, "ApprovalExpired"},
	}
	pinned := map[string]bool{}
	for _, tt := range tests {
		if pinned[tt.name] {
			t.Errorf("%q pinned twice", tt.name)
		}
		pinned[tt.name] = true
		if got := tt.event.EventType(); got != tt.name {
			t.Errorf("%T.EventType() = %q, want %q", tt.event, got, tt.name)
		}
		// The stored name decodes to the same Go type.
		got, err := DecodeEvent(tt.name, 1, []byte(`{}`))
		if err != nil {
			t.Errorf("DecodeEvent(%q): %v", tt.name, err)
			continue
		}
		if reflect.TypeOf(got) != reflect.TypeOf(tt.event) {
			t.Errorf("DecodeEvent(%q) = %T, want %T", tt.name, got, tt.event)
		}
	}
	for name := range decoders {
		if !pinned[name] {
			t.Errorf("event type %q is stored but its name is not pinned in this test", name)
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

// TestDecodeEventAgreesWithEncodingJSON: DecodeEvent reads payloads with the
// JSON v2 decoder; for every event type, with every field set (nested
// structs, slices, maps, configs of any value, text that needs escaping),
// it must read exactly what encoding/json, which wrote the payload, reads.
func TestDecodeEventAgreesWithEncodingJSON(t *testing.T) {
	for typ, decode := range decoders {
		t.Run(typ, func(t *testing.T) {
			zero, err := decode.bytes([]byte(`{}`))
			if err != nil {
				t.Fatalf("decode {}: %v", err)
			}
			v := reflect.New(reflect.TypeOf(zero)).Elem()
			fillForTest(v, 0)
			payload, err := json.Marshal(v.Interface())
			if err != nil {
				t.Fatalf("marshal: %v", err)
			}
			want := reflect.New(v.Type())
			if err := json.Unmarshal(payload, want.Interface()); err != nil {
				t.Fatalf("encoding/json: %v", err)
			}
			got, err := DecodeEvent(typ, 1, payload)
			if err != nil {
				t.Fatalf("DecodeEvent: %v\npayload %s", err, payload)
			}
			if !reflect.DeepEqual(got, want.Elem().Interface()) {
				t.Errorf("DecodeEvent read\n  %#v\nencoding/json read\n  %#v\nfrom %s", got, want.Elem().Interface(), payload)
			}
			if reflect.DeepEqual(got, zero) && v.NumField() > 0 { // events without fields (UserDisabled) carry only their type
				t.Errorf("the filled %s decoded as its zero value: the test filled nothing", typ)
			}
		})
	}
}

// fillForTest sets every exported field reachable from v to a value that is
// not zero.
func fillForTest(v reflect.Value, depth int) {
	if v.Type() == reflect.TypeOf(json.RawMessage(nil)) {
		v.SetBytes([]byte(`{"kept":["as","written"],"n":-42}`))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(`a "quoted" <b>&amp; ünïcode ☃ \ line
break`)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(-42 - int64(depth))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(42 + uint64(depth))
	case reflect.Float32, reflect.Float64:
		v.SetFloat(1.5)
	case reflect.Struct:
		if v.Type() == reflect.TypeOf(time.Time{}) {
			v.Set(reflect.ValueOf(time.Date(2026, 11, 22, 3, 4, 5, 6, time.UTC)))
			return
		}
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				fillForTest(v.Field(i), depth+1)
			}
		}
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 2, 2)
		for i := 0; i < 2; i++ {
			fillForTest(s.Index(i), depth+1)
		}
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		for i, key := range []string{"first", "second"} {
			k := reflect.New(v.Type().Key()).Elem()
			k.SetString(key)
			e := reflect.New(v.Type().Elem()).Elem()
			fillForTest(e, depth+1+i)
			m.SetMapIndex(k, e)
		}
		v.Set(m)
	case reflect.Interface:
		// A server config value: every JSON kind.
		v.Set(reflect.ValueOf(map[string]any{"n": 3, "f": 2.5, "s": "x", "b": true, "l": []any{1, "y"}, "nil": nil}))
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		fillForTest(p.Elem(), depth+1)
		v.Set(p)
	}
}

// TestDecodeEventReadsWhatEncodingJSONReads: a payload the v2 decoder
// refuses but encoding/json reads (invalid UTF-8) still decodes.
func TestDecodeEventReadsWhatEncodingJSONReads(t *testing.T) {
	got, err := DecodeEvent(TypeMachineRemoved, 1, []byte("{\"host\":\"h\xff\"}"))
	if err != nil {
		t.Fatalf("DecodeEvent: %v", err)
	}
	if got != (MachineRemoved{Host: "h\ufffd"}) {
		t.Errorf("decoded %#v", got)
	}
}
