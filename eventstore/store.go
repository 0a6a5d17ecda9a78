package eventstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config is how the event stream is created.
type Config struct {
	// Replicas is the stream's replication factor: 1 in dev, 3 in production.
	Replicas int
	// Duplicates is the window in which a commit id is deduplicated.
	Duplicates time.Duration
}

// NewEvent is one event of a commit that is about to be appended.
type NewEvent struct {
	Type          string
	SchemaVersion int
	Payload       json.RawMessage
}

// Commit is everything one command produced for one aggregate.
type Commit struct {
	CommitID      string
	AggregateType string
	AggregateID   string
	Time          time.Time
	Actor         string
	// ActorToken is the id (never the secret) of the session or API token
	// the actor used; empty for service identities.
	ActorToken string
	// Group is the group that owns what the commit is about (the cluster's,
	// machine's or package's group; the group itself for group commits);
	// empty for commits that belong to no group (users, the store).
	Group         string
	OperationID   string
	CorrelationID string
	CausationID   string
	// FencingToken is the leader-key revision of the coordinator that made
	// the commit (0 for commands from the API).
	FencingToken int64
	Events       []NewEvent
}

// Expect is the optimistic-concurrency condition of an append.
type Expect struct {
	// LastSeq is the stream sequence of the last commit the decision saw:
	// on the aggregate's own subject, or on Filter when it is set. 0 means
	// "no commit yet".
	LastSeq uint64
	// Filter widens the check to every subject it matches (for decisions that
	// read several aggregates). Empty means the aggregate's own subject.
	Filter string
	// Version is the aggregate's version (number of events) the decision
	// saw; the new events are numbered from Version+1.
	Version uint64
	// Any appends whatever the aggregate holds (for records that decide
	// nothing, such as refusals); LastSeq and Filter are ignored, and the
	// events' aggregate versions are not meaningful.
	Any bool
}

// Event is a stored event with its envelope.
type Event struct {
	Seq              uint64          `json:"seq"` // stream sequence of its commit
	CommitID         string          `json:"commit_id"`
	EventID          string          `json:"event_id"`
	Type             string          `json:"type"`
	SchemaVersion    int             `json:"schema_version"`
	AggregateType    string          `json:"aggregate_type"`
	AggregateID      string          `json:"aggregate_id"`
	AggregateVersion uint64          `json:"aggregate_version"`
	Time             time.Time       `json:"time"`
	Actor            string          `json:"actor"`
	ActorToken       string          `json:"actor_token,omitempty"`
	Group            string          `json:"group,omitempty"`
	OperationID      string          `json:"operation_id,omitempty"`
	CorrelationID    string          `json:"correlation_id,omitempty"`
	CausationID      string          `json:"causation_id,omitempty"`
	FencingToken     int64           `json:"fencing_token,omitempty"`
	Payload          json.RawMessage `json:"payload"`
}

// Stream is the history of one aggregate, or of every aggregate matched by
// a filter, in stream order.
type Stream struct {
	Events []Event
	// LastSeq is the stream sequence of the last commit read (0: none).
	LastSeq uint64
}

// Version is the number of events of the aggregate (only meaningful for a
// single aggregate's stream).
func (s Stream) Version() uint64 {
	if len(s.Events) == 0 {
		return 0
	}
	return s.Events[len(s.Events)-1].AggregateVersion
}

// wireCommit is the body of a commit message.
type wireCommit struct {
	CommitID      string      `json:"commit_id"`
	AggregateType string      `json:"aggregate_type"`
	AggregateID   string      `json:"aggregate_id"`
	Time          time.Time   `json:"time"`
	Actor         string      `json:"actor"`
	ActorToken    string      `json:"actor_token,omitempty"`
	Group         string      `json:"group,omitempty"`
	OperationID   string      `json:"operation_id,omitempty"`
	CorrelationID string      `json:"correlation_id,omitempty"`
	CausationID   string      `json:"causation_id,omitempty"`
	FencingToken  int64       `json:"fencing_token,omitempty"`
	Events        []wireEvent `json:"events"`
}

type wireEvent struct {
	EventID          string          `json:"event_id"`
	Type             string          `json:"type"`
	SchemaVersion    int             `json:"schema_version"`
	AggregateVersion uint64          `json:"aggregate_version"`
	Payload          json.RawMessage `json:"payload"`
}

// wireCommitIn is wireCommit as DecodeCommit reads it: with the JSON v2
// decoder (the module that became encoding/json/v2), three times faster
// than encoding/json on a commit, and a payload it copies once, unparsed.
// The bodies were written by encoding/json from wireCommit, so v2's
// stricter defaults accept them (TestCommitRoundTrip); DecodeCommit falls
// back to encoding/json for anything v2 refuses.
type wireCommitIn struct {
	CommitID      string        `json:"commit_id"`
	AggregateType string        `json:"aggregate_type"`
	AggregateID   string        `json:"aggregate_id"`
	Time          time.Time     `json:"time"`
	Actor         string        `json:"actor"`
	ActorToken    string        `json:"actor_token"`
	Group         string        `json:"group"`
	OperationID   string        `json:"operation_id"`
	CorrelationID string        `json:"correlation_id"`
	CausationID   string        `json:"causation_id"`
	FencingToken  int64         `json:"fencing_token"`
	Events        []wireEventIn `json:"events"`
}

type wireEventIn struct {
	EventID          string         `json:"event_id"`
	Type             string         `json:"type"`
	SchemaVersion    int            `json:"schema_version"`
	AggregateVersion uint64         `json:"aggregate_version"`
	Payload          jsontext.Value `json:"payload"`
}

// Headers set on every commit message, so that consumers can route without
// decoding the body.
const (
	HeaderAggregateType = "Dmgr-Aggregate-Type"
	HeaderAggregateID   = "Dmgr-Aggregate-Id"
	HeaderOperationID   = "Dmgr-Operation-Id"
	HeaderFencingToken  = "Dmgr-Fencing-Token"
)

// Store appends commits to and loads aggregates from the event stream.
type Store struct {
	js     jetstream.JetStream
	stream jetstream.Stream
}

// Open creates or updates the event stream (idempotently) and returns a store on it.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Store, error) {
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.Duplicates <= 0 {
		cfg.Duplicates = 10 * time.Minute
	}
	sc := jetstream.StreamConfig{
		Name:        StreamName,
		Description: "dmgr event store: one message per commit",
		Subjects:    []string{AllSubjects},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Replicas:    cfg.Replicas,
		Duplicates:  cfg.Duplicates,
		DenyDelete:  true,
		DenyPurge:   true,
		AllowDirect: true,
		Discard:     jetstream.DiscardNew,
		// A decision that touches several aggregates (a deploy and the
		// machines it places on) appends one commit to each, atomically.
		AllowAtomicPublish: true,
	}
	stream, err := js.CreateOrUpdateStream(ctx, sc)
	if err != nil {
		return nil, fmt.Errorf("create or update stream %s: %w", StreamName, err)
	}
	return &Store{js: js, stream: stream}, nil
}

// Message is the message that appends commit c, body being c encoded
// (EncodeCommit), with the publish options that make the append
// conditional on exp. Append publishes it; the projector's benchmark
// publishes the same messages.
func Message(c Commit, body []byte, exp Expect) (*nats.Msg, []jetstream.PublishOpt) {
	msg := &nats.Msg{Subject: Subject(c.AggregateType, c.AggregateID), Data: body, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, c.CommitID)
	msg.Header.Set(HeaderAggregateType, c.AggregateType)
	msg.Header.Set(HeaderAggregateID, c.AggregateID)
	if c.OperationID != "" {
		msg.Header.Set(HeaderOperationID, c.OperationID)
	}
	if c.FencingToken != 0 {
		msg.Header.Set(HeaderFencingToken, strconv.FormatInt(c.FencingToken, 10))
	}
	opts := []jetstream.PublishOpt{jetstream.WithExpectStream(StreamName)}
	switch {
	case exp.Any:
		return msg, opts
	case exp.Filter != "":
		opts = append(opts, jetstream.WithExpectLastSequenceForSubject(exp.LastSeq, exp.Filter))
	default:
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(exp.LastSeq))
	}
	return msg, opts
}

// Append appends c as one message if the condition in exp holds, and returns
// the commit's stream sequence. A retried append of the same commit id
// within the duplicate window returns the original sequence.
func (s *Store) Append(ctx context.Context, c Commit, exp Expect) (uint64, error) {
	if err := checkCommit(c); err != nil {
		return 0, fmt.Errorf("append: %w", err)
	}
	body, err := EncodeCommit(c, exp.Version)
	if err != nil {
		return 0, fmt.Errorf("append: %w", err)
	}
	msg, opts := Message(c, body, exp)
	ack, err := s.js.PublishMsg(ctx, msg, opts...)
	if err != nil {
		err = classify(fmt.Errorf("append commit %s to %s: %w", c.CommitID, msg.Subject, err))
		// JetStream checks the expected sequence before the duplicate window,
		// so a retry of an append whose answer was lost looks like a
		// conflict. It is not one when the last commit is this very commit.
		if errors.Is(err, ErrConflict) {
			if seq, ok := s.lastCommitIs(ctx, msg.Subject, c.CommitID); ok {
				return seq, nil
			}
		}
		return 0, err
	}
	return ack.Sequence, nil
}

// checkCommit refuses a commit that cannot be stored as it is.
func checkCommit(c Commit) error {
	if len(c.Events) == 0 {
		return errors.New("a commit needs at least one event")
	}
	if c.CommitID == "" || c.AggregateType == "" || c.AggregateID == "" {
		return errors.New("commit id, aggregate type and id are required")
	}
	// These travel in message headers too (readers such as the operation
	// index trust them): a control character would be mangled there.
	for _, f := range []struct{ name, v string }{{"commit id", c.CommitID}, {"aggregate type", c.AggregateType},
		{"aggregate id", c.AggregateID}, {"operation id", c.OperationID}} {
		if i := strings.IndexFunc(f.v, func(r rune) bool { return r < 0x20 || r == 0x7f }); i >= 0 {
			return fmt.Errorf("%s %q holds a control character (at byte %d), which a message header cannot carry", f.name, f.v, i)
		}
	}
	return nil
}

// lastCommitIs reports whether the last message on subject has commitID.
func (s *Store) lastCommitIs(ctx context.Context, subject, commitID string) (uint64, bool) {
	m, err := s.stream.GetLastMsgForSubject(ctx, subject)
	if err != nil || m.Header.Get(jetstream.MsgIDHeader) != commitID {
		return 0, false
	}
	return m.Sequence, true
}

// Load reads every commit of one aggregate (LoadSince from the start).
func (s *Store) Load(ctx context.Context, aggregateType, id string) (Stream, error) {
	return s.LoadSince(ctx, aggregateType, id, 0)
}

// LoadFilter reads every commit on the subjects that filter matches, in
// stream order. Its LastSeq is the value to pass as Expect.LastSeq with the
// same filter.
func (s *Store) LoadFilter(ctx context.Context, filter string) (Stream, error) {
	last, err := s.lastSeq(ctx, filter)
	if err != nil || last == 0 {
		return Stream{}, err
	}
	// An ephemeral consumer of our own, deleted when the read is done: an
	// ordered consumer would stay on the server for 5 minutes, and the
	// server allows 1,000 consumers per stream by default.
	cons, err := s.stream.CreateConsumer(ctx, jetstream.ConsumerConfig{
		FilterSubject:     filter,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: 30 * time.Second, // in case the delete below does not get through
		MemoryStorage:     true,
		Replicas:          1,
	})
	if err != nil {
		return Stream{}, fmt.Errorf("load %s: %w", filter, classify(err))
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = s.stream.DeleteConsumer(dctx, cons.CachedInfo().Name)
	}()
	out := Stream{LastSeq: last}
	// An iterator, stopped as soon as the last commit is read, leaves no
	// pull request waiting on the server (a Fetch would, until it expires).
	it, err := cons.Messages(jetstream.PullMaxMessages(512))
	if err != nil {
		return Stream{}, fmt.Errorf("load %s: %w", filter, classify(err))
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return Stream{}, fmt.Errorf("load %s: %w", filter, ctx.Err())
			}
			return Stream{}, fmt.Errorf("load %s: %w", filter, classify(err))
		}
		meta, err := m.Metadata()
		if err != nil {
			return Stream{}, fmt.Errorf("load %s: %w", filter, err)
		}
		seq := meta.Sequence.Stream
		if seq > last {
			continue // appended after we started; not part of this read
		}
		evs, err := DecodeCommit(seq, m.Data())
		if err != nil {
			return Stream{}, fmt.Errorf("load %s: %w", filter, err)
		}
		out.Events = append(out.Events, evs...)
		if seq == last {
			return out, nil
		}
	}
}

// lastSeq is the stream sequence of the last message on filter (0: none).
func (s *Store) lastSeq(ctx context.Context, filter string) (uint64, error) {
	m, err := s.stream.GetLastMsgForSubject(ctx, filter)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("last commit on %s: %w", filter, classify(err))
	}
	return m.Sequence, nil
}

// LastSeq is the stream sequence of the last commit on any subject.
func (s *Store) LastSeq(ctx context.Context) (uint64, error) {
	info, err := s.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream info: %w", classify(err))
	}
	return info.State.LastSeq, nil
}

// Subjects lists the aggregate subjects that match filter (for example
// TypeSubjects("cluster")) with their number of commits.
func (s *Store) Subjects(ctx context.Context, filter string) (map[string]uint64, error) {
	info, err := s.stream.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return nil, fmt.Errorf("list subjects %s: %w", filter, classify(err))
	}
	return info.State.Subjects, nil
}

// EncodeCommit is the body of the message that stores c, its events
// numbered from version+1 with fresh event ids. Append uses it; tools that
// write commits some other way (benchmarks) use it to write the same format.
func EncodeCommit(c Commit, version uint64) ([]byte, error) {
	w := wireCommit{
		CommitID: c.CommitID, AggregateType: c.AggregateType, AggregateID: c.AggregateID,
		Time: c.Time.UTC(), Actor: c.Actor, ActorToken: c.ActorToken, Group: c.Group, OperationID: c.OperationID,
		CorrelationID: c.CorrelationID, CausationID: c.CausationID, FencingToken: c.FencingToken,
		Events: make([]wireEvent, len(c.Events)),
	}
	for i, e := range c.Events {
		id, err := uuid.NewV7()
		if err != nil {
			return nil, fmt.Errorf("event id: %w", err)
		}
		sv := e.SchemaVersion
		if sv == 0 {
			sv = 1
		}
		w.Events[i] = wireEvent{EventID: id.String(), Type: e.Type, SchemaVersion: sv,
			AggregateVersion: version + uint64(i) + 1, Payload: e.Payload}
	}
	body, err := json.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("encode commit: %w", err)
	}
	return body, nil
}

// DecodeCommit turns the body of the message at stream sequence seq into
// its events with their envelopes: what Load returns, for consumers that
// read the stream themselves (the projector).
func DecodeCommit(seq uint64, data []byte) ([]Event, error) {
	var w wireCommitIn
	if err := jsonv2.Unmarshal(data, &w); err != nil {
		// What v2 refuses and encoding/json reads (invalid UTF-8, say)
		// is read as encoding/json reads it: history stays readable.
		w = wireCommitIn{}
		if err := json.Unmarshal(data, &w); err != nil {
			return nil, fmt.Errorf("decode commit at seq %d: %w", seq, err)
		}
	}
	out := make([]Event, len(w.Events))
	for i, e := range w.Events {
		out[i] = Event{
			Seq: seq, CommitID: w.CommitID, EventID: e.EventID, Type: e.Type,
			SchemaVersion: e.SchemaVersion, AggregateType: w.AggregateType,
			AggregateID: w.AggregateID, AggregateVersion: e.AggregateVersion,
			Time: w.Time, Actor: w.Actor, ActorToken: w.ActorToken, Group: w.Group, OperationID: w.OperationID,
			CorrelationID: w.CorrelationID, CausationID: w.CausationID, FencingToken: w.FencingToken,
			Payload: json.RawMessage(e.Payload),
		}
	}
	return out, nil
}
