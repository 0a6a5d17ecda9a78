package eventstore_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/dmgr/dmgr/eventstore"
)

// TestCommitRoundTrip: what EncodeCommit writes (encoding/json), DecodeCommit
// (the JSON v2 decoder) reads back whole: every envelope field, the
// versions, and payloads byte for byte, whatever text they hold.
func TestCommitRoundTrip(t *testing.T) {
	c := sampleCommit()
	body, err := eventstore.EncodeCommit(c, 41)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	evs, err := eventstore.DecodeCommit(9, body)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if len(evs) != len(c.Events) {
		t.Fatalf("%d events, want %d", len(evs), len(c.Events))
	}
	for i, e := range evs {
		want := c.Events[i]
		sv := max(want.SchemaVersion, 1)
		if e.Seq != 9 || e.CommitID != c.CommitID || e.AggregateType != c.AggregateType || e.AggregateID != c.AggregateID ||
			!e.Time.Equal(c.Time) || e.Actor != c.Actor || e.OperationID != c.OperationID || e.CorrelationID != c.CorrelationID ||
			e.CausationID != c.CausationID || e.FencingToken != c.FencingToken || e.Type != want.Type || e.SchemaVersion != sv ||
			e.AggregateVersion != 42+uint64(i) || e.EventID == "" {
			t.Errorf("event %d: %+v does not carry the commit's envelope %+v", i, e, c)
		}
		var got, exp any
		if err := json.Unmarshal(e.Payload, &got); err != nil {
			t.Fatalf("event %d payload %s: %v", i, e.Payload, err)
		}
		_ = json.Unmarshal(want.Payload, &exp)
		if gb, _ := json.Marshal(got); string(gb) != mustMarshal(t, exp) {
			t.Errorf("event %d payload %s, want %s", i, e.Payload, want.Payload)
		}
	}
}

func mustMarshal(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDecodeCommitRefusesWhatIsNotACommit(t *testing.T) {
	for name, body := range map[string]string{
		"empty":             ``,
		"truncated":         `{"commit_id":"c","events":[{"type":"X","payload":{"a":`,
		"not an object":     `["c"]`,
		"events not a list": `{"commit_id":"c","events":{"type":"X"}}`,
		"version a string":  `{"commit_id":"c","events":[{"type":"X","aggregate_version":"3","payload":{}}]}`,
		"time not RFC 3339": `{"commit_id":"c","time":"yesterday","events":[]}`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := eventstore.DecodeCommit(5, []byte(body))
			if err == nil || !strings.Contains(err.Error(), "decode commit at seq 5") {
				t.Errorf("DecodeCommit(%q) = %v, want an error naming seq 5", body, err)
			}
		})
	}
}

// TestDecodeCommitReadsWhatEncodingJSONReads: a body the v2 decoder refuses
// but encoding/json reads (invalid UTF-8 in a string) still decodes, so no
// history that was once readable stops being readable.
func TestDecodeCommitReadsWhatEncodingJSONReads(t *testing.T) {
	body := "{\"commit_id\":\"c\xff\",\"aggregate_type\":\"cluster\",\"events\":[{\"type\":\"X\",\"aggregate_version\":3,\"payload\":{\"a\":\"\xfe\"}}]}"
	evs, err := eventstore.DecodeCommit(5, []byte(body))
	if err != nil {
		t.Fatalf("DecodeCommit: %v", err)
	}
	if len(evs) != 1 || evs[0].AggregateType != "cluster" || evs[0].AggregateVersion != 3 || evs[0].CommitID != "c\ufffd" {
		t.Errorf("decoded %+v", evs)
	}
}
