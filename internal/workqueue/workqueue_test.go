package workqueue

import (
	"strings"
	"testing"
)

// A step message is read strictly: exactly the five members, spelled
// exactly, once each, all set, nothing else. Anything an older format or an
// attacker adds (a target, a step definition) makes the message refused,
// never read in part.
func TestDecodeDispatch(t *testing.T) {
	good := `{"cluster":"c1","operation":"op1","attempt":2,"token":41,"step":"start/10.0.0.1:8261"}`
	d, err := DecodeDispatch([]byte(good))
	if err != nil {
		t.Fatalf("good message: %v", err)
	}
	if d != (Dispatch{Cluster: "c1", Operation: "op1", Attempt: 2, Token: 41, Step: "start/10.0.0.1:8261"}) {
		t.Fatalf("good message read as %+v", d)
	}
	if d.MsgID() != "op1/2/41/start/10.0.0.1:8261" {
		t.Fatalf("msg id %q", d.MsgID())
	}

	tests := []struct {
		name, data, want string
	}{
		{"old format: a target", `{"cluster":"c1","operation":"op1","attempt":2,"token":41,"step":"s","target":{"host":"10.9.9.9","port":22}}`,
			`unknown object member name "target"`},
		{"old format: a step definition", `{"cluster":"c1","operation":"op1","attempt":2,"token":41,"step":{"id":"s","kind":"noop"}}`,
			"JSON object into Go string"},
		{"an extra member", `{"cluster":"c1","operation":"op1","attempt":2,"token":41,"step":"s","host":"10.9.9.9"}`,
			`unknown object member name "host"`},
		{"a repeated member", `{"cluster":"c1","operation":"op1","attempt":2,"token":41,"step":"s","step":"t"}`, "duplicate"},
		{"a member differing in case", `{"cluster":"c1","operation":"op1","attempt":2,"token":41,"Step":"s"}`,
			`unknown object member name "Step"`},
		{"something after the object", good + `{"step":"t"}`, "invalid character"},
		{"not an object", `["c1","op1",2,41,"s"]`, "JSON array into Go workqueue.Dispatch"},
		{"a fractional attempt", `{"cluster":"c1","operation":"op1","attempt":2.5,"token":41,"step":"s"}`, "attempt"},
		{"a token as a string", `{"cluster":"c1","operation":"op1","attempt":2,"token":"41","step":"s"}`, "token"},
		{"invalid UTF-8", "{\"cluster\":\"c\xff\",\"operation\":\"op1\",\"attempt\":2,\"token\":41,\"step\":\"s\"}", "UTF-8"},
		{"members missing", `{"cluster":"c1","attempt":0,"token":-3}`, "lacks operation, attempt, token, step"},
		{"empty", ``, "step message is not"},
		{"too large", `{"cluster":"` + strings.Repeat("c", MaxDispatchSize) + `"}`, "at most 4096"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := DecodeDispatch([]byte(tt.data))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got (%+v, %v), want an error containing %q", d, err, tt.want)
			}
			if d != (Dispatch{}) {
				t.Fatalf("a refused message was read in part: %+v", d)
			}
		})
	}
}
