package eventstore_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	jsonv2 "github.com/go-json-experiment/json"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
)

// sampleCommit has every envelope field set and payloads whose text needs
// escaping; EncodeCommit gives its events versions 42 to 44.
func sampleCommit() eventstore.Commit {
	return eventstore.Commit{
		CommitID: "c-1", AggregateType: "cluster", AggregateID: `prod "a" ☃`,
		Time: time.Date(2026, 11, 22, 3, 4, 5, 123456789, time.FixedZone("CET", 3600)), Actor: "alice <a@example.com>",
		OperationID: "op-1", CorrelationID: "corr-1", CausationID: "cause-1", FencingToken: 7_000_000_001,
		Events: []eventstore.NewEvent{
			{Type: "StepSucceeded", Payload: json.RawMessage(`{"stdout":"line\nbreak \"q\" \u2603 <&>","n":[1,2.5,null,{"x":{}}]}`)},
			{Type: "OperationSucceeded", SchemaVersion: 2, Payload: json.RawMessage(`{}`)},
			{Type: "Strange", Payload: json.RawMessage(`"a string payload"`)},
		},
	}
}

func sampleCommitBody(t testing.TB) []byte {
	t.Helper()
	body, err := eventstore.EncodeCommit(sampleCommit(), 41)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	return body
}

// TestCommitReaderReadsWhatDecodeCommitReads: the one-pass reader and
// DecodeCommit agree on every event, payload bytes included, and the
// payload reader sees each payload as the decoder's next value.
func TestCommitReaderReadsWhatDecodeCommitReads(t *testing.T) {
	bodies := map[string][]byte{
		"encoded": sampleCommitBody(t),
		// Written by hand, with space around every token.
		"spaced": []byte(" {\n \"commit_id\" : \"c-2\" , \"aggregate_type\":\"machine\",\"aggregate_id\":\"h1\",\"time\":\"2026-11-22T03:04:05Z\"," +
			"\"actor\":\"bob\",\"events\" : [ { \"event_id\":\"e1\",\"type\":\"MachineRemoved\",\"schema_version\":1,\"aggregate_version\":7," +
			"\"payload\" :\t {\"host\" : \"h1\"} } ] } "),
		"no events": []byte(`{"commit_id":"c-3","aggregate_type":"cluster","aggregate_id":"x","time":"2026-11-22T03:04:05Z","actor":"a","events":[]}`),
	}
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			want, err := eventstore.DecodeCommit(3, body)
			if err != nil {
				t.Fatalf("DecodeCommit: %v", err)
			}
			var r eventstore.CommitReader
			var types []string
			got, decoded, err := r.Read(3, body, func(typ string, sv int, payload []byte) (any, error) {
				types = append(types, typ)
				var v any
				err := jsonv2.Unmarshal(payload, &v)
				return v, err
			})
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if len(got) != len(want) || len(decoded) != len(want) {
				t.Fatalf("%d events and %d decoded payloads, want %d", len(got), len(decoded), len(want))
			}
			for i := range want {
				if !reflect.DeepEqual(got[i], want[i]) {
					t.Errorf("event %d:\n  %+v\nDecodeCommit read\n  %+v", i, got[i], want[i])
				}
				var p any
				if err := json.Unmarshal(got[i].Payload, &p); err != nil {
					t.Errorf("event %d: payload %q is not JSON: %v", i, got[i].Payload, err)
				}
				if !reflect.DeepEqual(p, decoded[i]) {
					t.Errorf("event %d: the payload reader decoded %v, the payload is %s", i, decoded[i], got[i].Payload)
				}
				if types[i] != want[i].Type {
					t.Errorf("event %d: the payload reader was called for %s, want %s", i, types[i], want[i].Type)
				}
			}
			// Again with the same reader, and without a payload reader.
			again, none, err := r.Read(3, body, nil)
			if err != nil || none != nil || !reflect.DeepEqual(again, got) {
				t.Errorf("second read: %v, %v; want the same events", err, none)
			}
		})
	}
}

// TestCommitReaderRefusesWhatItDoesNotKnow: the reader reads only what
// EncodeCommit writes; everything else is an error (and the projector
// decodes such a commit with DecodeCommit).
func TestCommitReaderRefusesWhatItDoesNotKnow(t *testing.T) {
	good := string(sampleCommitBody(t))
	cases := map[string]string{
		"an unknown field":           strings.Replace(good, `"actor"`, `"author"`, 1),
		"an unknown event field":     strings.Replace(good, `"event_id"`, `"id"`, 1),
		"payload before type":        `{"commit_id":"c","events":[{"payload":{},"type":"X"}]}`,
		"an event without payload":   `{"commit_id":"c","events":[{"type":"X"}]}`,
		"data after the commit":      good + `{}`,
		"invalid UTF-8":              strings.Replace(good, "alice", "al\xffce", 1),
		"a version with a fraction":  strings.Replace(good, `"aggregate_version":42`, `"aggregate_version":42.5`, 1),
		"truncated":                  good[:len(good)/2],
		"not an object":              `[]`,
		"time not RFC 3339":          strings.Replace(good, `"time":"2026`, `"time":"x2026`, 1),
		"a payload that is not JSON": strings.Replace(good, `"payload":{}`, `"payload":{"a" 1}`, 1),
		"an escaped field name":      strings.Replace(good, `"actor"`, `"act\u006fr"`, 1),
		"a version with a leading 0": strings.Replace(good, `"aggregate_version":42`, `"aggregate_version":042`, 1),
		"a negative version":         strings.Replace(good, `"aggregate_version":42`, `"aggregate_version":-42`, 1),
		"no comma":                   strings.Replace(good, `,"actor"`, ` "actor"`, 1),
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			if body == good {
				t.Fatal("the case changed nothing")
			}
			var r eventstore.CommitReader
			if _, _, err := r.Read(8, []byte(body), nil); err == nil || !strings.Contains(err.Error(), "read commit at seq 8") {
				t.Errorf("Read(%q) = %v, want an error naming seq 8", body, err)
			}
		})
	}
	// A payload reader's error is the commit's.
	var r eventstore.CommitReader
	boom := errors.New("boom")
	_, _, err := r.Read(8, []byte(good), func(string, int, []byte) (any, error) { return nil, boom })
	if !errors.Is(err, boom) {
		t.Errorf("Read with a failing payload reader = %v, want boom", err)
	}
}

// FuzzCommitReader: whatever the bytes, a commit the one-pass reader takes
// is one DecodeCommit reads the same way.
func FuzzCommitReader(f *testing.F) {
	f.Add(sampleCommitBody(f))
	f.Add([]byte(`{"commit_id":"c","aggregate_type":"a","aggregate_id":"b","time":"2026-11-22T03:04:05Z","actor":"x","events":[{"event_id":"e","type":"T","schema_version":1,"aggregate_version":1,"payload":{"a":[1,{"b":"\u00e9"}]}}]}`))
	f.Add([]byte(`{"events":[{"type":"T","payload":"x"}],"events":[]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var r eventstore.CommitReader
		got, _, err := r.Read(1, body, nil)
		if err != nil {
			return
		}
		want, err := eventstore.DecodeCommit(1, body)
		if err != nil {
			t.Fatalf("the reader took %q, DecodeCommit refused it: %v", body, err)
		}
		if len(got) != len(want) {
			t.Fatalf("%d events, DecodeCommit %d", len(got), len(want))
		}
		for i := range want {
			g, w := got[i], want[i]
			if !bytes.Equal(bytes.TrimSpace(g.Payload), bytes.TrimSpace(w.Payload)) {
				t.Fatalf("event %d payload %q, DecodeCommit %q", i, g.Payload, w.Payload)
			}
			g.Payload, w.Payload = nil, nil
			if !reflect.DeepEqual(g, w) {
				t.Fatalf("event %d:\n  %+v\nDecodeCommit\n  %+v", i, g, w)
			}
		}
	})
}

// BenchmarkDecodeCommit compares the ways of reading a commit body (one
// StepSucceeded-sized event): encoding/json into the wire shape (what
// DecodeCommit did before the v2 decoder), DecodeCommit, and the one-pass
// CommitReader.
func BenchmarkDecodeCommit(b *testing.B) {
	body, err := eventstore.EncodeCommit(eventstore.Commit{CommitID: "0b6f3a4c-7a43-4d8e-9b5e-1f3e2b4a5c6d", AggregateType: "cluster",
		AggregateID: "cluster-0001", Time: time.Now(), Actor: "dmgr-coordinator", OperationID: "5a0c7f1e-2b9d-4c3a-8e6f-7d1b2c3a4e5f",
		FencingToken: 12345, Events: []eventstore.NewEvent{{Type: "StepSucceeded", Payload: json.RawMessage(
			`{"operation":"5a0c7f1e-2b9d-4c3a-8e6f-7d1b2c3a4e5f","step":"start/10.0.0.1:8261","attempt":1,"host":"10.0.0.1","agent":"agent-1","duration_ms":120,"stdout":"started"}`)}}}, 76)
	if err != nil {
		b.Fatal(err)
	}
	// The wire shape with its names, so that every one of the 12 fields is
	// decoded (checked once before the loop).
	type wireEvent struct {
		EventID          string          `json:"event_id"`
		Type             string          `json:"type"`
		SchemaVersion    int             `json:"schema_version"`
		AggregateVersion uint64          `json:"aggregate_version"`
		Payload          json.RawMessage `json:"payload"`
	}
	type wireCommit struct {
		CommitID      string      `json:"commit_id"`
		AggregateType string      `json:"aggregate_type"`
		AggregateID   string      `json:"aggregate_id"`
		Time          time.Time   `json:"time"`
		Actor         string      `json:"actor"`
		OperationID   string      `json:"operation_id"`
		FencingToken  int64       `json:"fencing_token"`
		Events        []wireEvent `json:"events"`
	}
	b.Run("encoding/json", func(b *testing.B) {
		var w wireCommit
		if err := json.Unmarshal(body, &w); err != nil {
			b.Fatal(err)
		}
		if w.CommitID == "" || w.AggregateType == "" || w.AggregateID == "" || w.Time.IsZero() || w.Actor == "" || w.OperationID == "" ||
			w.FencingToken == 0 || len(w.Events) != 1 || w.Events[0].EventID == "" || w.Events[0].Type == "" ||
			w.Events[0].SchemaVersion == 0 || w.Events[0].AggregateVersion == 0 || len(w.Events[0].Payload) == 0 {
			b.Fatalf("the baseline decodes only part of the commit: %+v", w)
		}
		b.ReportAllocs()
		for b.Loop() {
			var w wireCommit
			if err := json.Unmarshal(body, &w); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("DecodeCommit", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := eventstore.DecodeCommit(1, body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("CommitReader", func(b *testing.B) {
		b.ReportAllocs()
		var r eventstore.CommitReader
		for b.Loop() {
			if _, _, err := r.Read(1, body, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	// As the projector reads: the payload decoded into its domain event
	// while the commit is read (the other ways leave it undecoded).
	b.Run("CommitReader+payload", func(b *testing.B) {
		b.ReportAllocs()
		var r eventstore.CommitReader
		decode := func(typ string, sv int, p []byte) (any, error) { return domain.DecodeEvent(typ, sv, p) }
		for b.Loop() {
			if _, _, err := r.Read(1, body, decode); err != nil {
				b.Fatal(err)
			}
		}
	})
}
