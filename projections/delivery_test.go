package projections

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dmgr/dmgr/eventstore"
)

func TestParseAckReplyReadsBothForms(t *testing.T) {
	for _, tc := range []struct {
		reply string
		want  msgMeta
		ok    bool
	}{
		{"$JS.ACK.DMGR_EVENTS.proj.1.42.17.1700000000123456789.9", msgMeta{seq: 42, pending: 9, stored: time.Unix(0, 1700000000123456789)}, true},
		{"$JS.ACK._.ACCHASH.DMGR_EVENTS.proj.2.43.18.1700000000000000001.0.RANDOM", msgMeta{seq: 43, pending: 0, stored: time.Unix(0, 1700000000000000001)}, true},
		{"$JS.ACK.hub.ACCHASH.DMGR_EVENTS.proj.1.44.19.1700000000000000002.5", msgMeta{seq: 44, pending: 5, stored: time.Unix(0, 1700000000000000002)}, true},
		{"$JS.ACK.hub.ACCHASH.DMGR_EVENTS.proj.1.45.20.1700000000000000003.6.tok.more", msgMeta{seq: 45, pending: 6, stored: time.Unix(0, 1700000000000000003)}, true},
		{"$JS.ACK.DMGR_EVENTS.proj.1.42.17.1700000000123456789", msgMeta{}, false}, // a token short
		{"$JS.ACK.DMGR_EVENTS.proj.1.4x.17.1700000000123456789.9", msgMeta{}, false},
		{"$JS.ACK.DMGR_EVENTS.proj.1.-2.17.1700000000123456789.9", msgMeta{}, false},
		{"_INBOX.abc.def", msgMeta{}, false},
		{"", msgMeta{}, false},
	} {
		got, ok := parseAckReply(tc.reply)
		if ok != tc.ok || got.seq != tc.want.seq || got.pending != tc.want.pending || !got.stored.Equal(tc.want.stored) {
			t.Errorf("parseAckReply(%q) = %+v, %v; want %+v, %v", tc.reply, got, ok, tc.want, tc.ok)
		}
	}
}

// The reply subjects the embedded server really gives are read as the
// client's own Metadata reads them.
func TestMetaOfAgreesWithTheClient(t *testing.T) {
	e := newEnvWithoutClickHouse(t)
	for i := 0; i < 3; i++ {
		_, err := e.events.Append(e.ctx, eventstore.Commit{CommitID: uuid.NewString(), AggregateType: "cluster", AggregateID: fmt.Sprintf("m%d", i),
			Time: time.Now(), Actor: "alice", Events: []eventstore.NewEvent{{Type: "X", Payload: json.RawMessage(`{}`)}}}, eventstore.Expect{})
		must(t, err, "append")
	}
	cons, err := e.js.CreateOrUpdateConsumer(e.ctx, eventstore.StreamName, consumerConfig(99, 1))
	must(t, err, "consumer")
	d, err := consumeCommits(cons, 10, e.log)
	must(t, err, "consume")
	defer d.Stop()
	for i := 0; i < 3; i++ {
		var m jetstream.Msg
		select {
		case m = <-d.msgs:
		case <-time.After(10 * time.Second):
			t.Fatalf("message %d not delivered", i+1)
		}
		if _, ok := parseAckReply(m.Reply()); !ok {
			t.Fatalf("reply subject %q not read without the client", m.Reply())
		}
		got, err := metaOf(m)
		must(t, err, "metaOf")
		md, err := m.Metadata()
		must(t, err, "Metadata")
		if got.seq != md.Sequence.Stream || got.pending != md.NumPending || !got.stored.Equal(md.Timestamp) {
			t.Fatalf("metaOf %+v, client's Metadata seq %d pending %d stored %s", got, md.Sequence.Stream, md.NumPending, md.Timestamp)
		}
		if got.seq != uint64(i+1) || got.pending != uint64(2-i) {
			t.Fatalf("message %d: seq %d pending %d", i+1, got.seq, got.pending)
		}
	}
}
