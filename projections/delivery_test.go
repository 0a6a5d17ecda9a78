package projections

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/internal/testenv"
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

// testMsg is a delivered commit as gather sees it: a reply subject with
// its metadata, and a body. (Only Reply and Data are called.)
type testMsg struct {
	jetstream.Msg
	reply string
}

func (m testMsg) Reply() string { return m.reply }
func (m testMsg) Data() []byte  { return []byte(`{}`) }

type testConsume struct {
	jetstream.ConsumeContext
	closed chan struct{}
}

func (c testConsume) Closed() <-chan struct{} { return c.closed }

func ackReply(seq, pending uint64) string {
	return fmt.Sprintf("$JS.ACK.DMGR_EVENTS.proj.1.%d.%d.1700000000000000000.%d", seq, seq, pending)
}

// A live batch closes MaxWait after its first commit when the stream
// holds nothing more; past MaxWait while commits still come (catching
// up), it closes at the first commit after which the stream held nothing:
// a busy stream must not hold a live batch for long.
func TestGatherClosesALiveBatchAtTheFirstCaughtUpCommit(t *testing.T) {
	p := &Projector{cfg: ProjectorConfig{MaxWait: 20 * time.Millisecond, MaxBatch: 1000}}
	d := &delivery{msgs: make(chan jetstream.Msg, 16), cc: testConsume{closed: make(chan struct{})}}
	seqs := func(b *batch) []uint64 {
		var out []uint64
		for _, c := range b.commits {
			out = append(out, c.seq)
		}
		return out
	}
	ctx := testenv.Context(t, time.Minute)

	d.msgs <- testMsg{reply: ackReply(1, 0)}
	b, err := p.gather(ctx, d)
	if err != nil || fmt.Sprint(seqs(b)) != "[1]" {
		t.Fatalf("nothing pending: batch %v, %v; want [1]", seqs(b), err)
	}

	d.msgs <- testMsg{reply: ackReply(2, 3)}
	d.msgs <- testMsg{reply: ackReply(3, 2)}
	go func() {
		time.Sleep(500 * time.Millisecond) // MaxWait passes with 2 pending
		d.msgs <- testMsg{reply: ackReply(4, 0)}
		d.msgs <- testMsg{reply: ackReply(5, 0)}
	}()
	b, err = p.gather(ctx, d)
	if err != nil || fmt.Sprint(seqs(b)) != "[2 3 4]" {
		t.Fatalf("past MaxWait: batch %v, %v; want [2 3 4] (closed at the first commit with nothing pending)", seqs(b), err)
	}
	if m := <-d.msgs; m.Reply() != ackReply(5, 0) {
		t.Fatalf("next commit %s, want seq 5", m.Reply())
	}

	close(d.cc.(testConsume).closed)
	if b, err := p.gather(ctx, d); err == nil || len(b.commits) != 0 {
		t.Fatalf("consume closed: batch %v, error %v; want an error", seqs(b), err)
	}
}
