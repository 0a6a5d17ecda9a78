package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/internal/pkgstore"
	"github.com/dmgr/dmgr/internal/secrets"
)

// Service is the command and query side of dmgr on the event store.
type Service struct {
	store    *eventstore.Store
	ops      *eventstore.OperationIndex // operation id → its cluster
	vault    *secrets.Vault
	packages *pkgstore.Store
	limits   pkgstore.Limits
	// maxInstances caps a cluster's instances (domain.CheckInstanceCap).
	maxInstances int
	now          func() time.Time
	log          zerolog.Logger

	scanHostKey func(ctx context.Context, host string, port int) (string, error)
}

// Config wires a Service.
type Config struct {
	Store         *eventstore.Store
	Vault         *secrets.Vault
	Packages      *pkgstore.Store
	PackageLimits pkgstore.Limits
	// MaxInstancesPerCluster caps the instances of a cluster on deploy and
	// scale-out (default domain.DefaultMaxInstancesPerCluster).
	MaxInstancesPerCluster int
	Now                    func() time.Time // default time.Now
	Log                    zerolog.Logger
	// ScanHostKey reads a machine's SSH host key for pinning when a
	// registration does not give one (remote.ScanHostKey).
	ScanHostKey func(ctx context.Context, host string, port int) (string, error)
}

// New returns a Service.
func New(c Config) *Service {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.MaxInstancesPerCluster <= 0 {
		c.MaxInstancesPerCluster = domain.DefaultMaxInstancesPerCluster
	}
	return &Service{store: c.Store, ops: c.Store.NewOperationIndex(domain.AggregateCluster), vault: c.Vault, packages: c.Packages, limits: c.PackageLimits, now: c.Now, log: c.Log,
		maxInstances: c.MaxInstancesPerCluster, scanHostKey: c.ScanHostKey}
}

// StartOperationIndex starts reading the event stream into the operation
// index in the background (it starts on the first lookup otherwise).
func (s *Service) StartOperationIndex() error {
	return s.ops.Start()
}

// Close stops the operation index's tail of the event stream.
func (s *Service) Close() {
	s.ops.Close()
}

// Meta is who sent a command and how to identify it.
type Meta struct {
	Actor string
	// CommitID deduplicates a retried command; empty means a fresh one.
	CommitID string
	// OperationID names the operation the command starts; empty means a
	// fresh one.
	OperationID   string
	CorrelationID string
	// FencingToken is the coordinator's leader token (0 for the API).
	FencingToken int64
}

// Accepted is what a command answers: the operation it started and the
// stream sequence of its commit (a consistency token for reads).
type Accepted struct {
	OperationID string `json:"operation_id"`
	CommitSeq   uint64 `json:"commit_seq"`
}

const maxDecideAttempts = 10

// decision is one attempt at a command: the events and where they go.
type decision struct {
	aggregateType, aggregateID string
	events                     []domain.Event
	expect                     eventstore.Expect
}

// run loads, decides and appends, deciding again on conflicts.
func (s *Service) run(ctx context.Context, meta Meta, decide func(ctx context.Context) (decision, error)) (Accepted, error) {
	meta = s.complete(meta)
	for attempt := 1; ; attempt++ {
		d, err := decide(ctx)
		if err != nil {
			return Accepted{}, deadlineErr(ctx, err)
		}
		if len(d.events) == 0 {
			return Accepted{OperationID: meta.OperationID}, nil // nothing to record
		}
		seq, err := s.appendDecision(ctx, meta, d)
		switch {
		case err == nil:
			return Accepted{OperationID: meta.OperationID, CommitSeq: seq}, nil
		case errors.Is(err, eventstore.ErrConflict) && attempt < maxDecideAttempts:
			// Someone else committed after our read: decide again on fresh state.
			continue
		}
		return Accepted{}, s.appendErr(ctx, d, attempt, err)
	}
}

// appendDecision appends a decision's events as one commit of meta, under
// its condition, and returns the commit's stream sequence.
func (s *Service) appendDecision(ctx context.Context, meta Meta, d decision) (uint64, error) {
	commit := eventstore.Commit{
		CommitID: meta.CommitID, AggregateType: d.aggregateType, AggregateID: d.aggregateID,
		Time: s.now().UTC(), Actor: meta.Actor, OperationID: meta.OperationID,
		CorrelationID: meta.CorrelationID, CausationID: meta.CommitID, FencingToken: meta.FencingToken,
	}
	for _, e := range d.events {
		payload, err := json.Marshal(e)
		if err != nil {
			return 0, fmt.Errorf("encode %s: %w", e.EventType(), err)
		}
		commit.Events = append(commit.Events, eventstore.NewEvent{Type: e.EventType(), SchemaVersion: 1, Payload: payload})
	}
	seq, err := s.store.Append(ctx, commit, d.expect)
	if err != nil {
		return 0, err
	}
	s.log.Info().Str("operation", meta.OperationID).Str("aggregate", d.aggregateType+"/"+d.aggregateID).
		Uint64("commit_seq", seq).Str("actor", meta.Actor).Msg("command committed")
	return seq, nil
}

// appendErr is what a command answers when its append failed on its
// attempt-th decision.
func (s *Service) appendErr(ctx context.Context, d decision, attempt int, err error) error {
	switch {
	case errors.Is(err, eventstore.ErrConflict):
		return domain.Errorf(domain.Conflict, "%s %s changed %d times while this command was decided; retry it", d.aggregateType, d.aggregateID, attempt)
	case errors.Is(err, eventstore.ErrRetryable):
		return domain.Errorf(domain.Unavailable, "event store is busy: %v; retry the request", err)
	}
	return deadlineErr(ctx, err)
}

// deadlineErr turns an error that came from ctx ending (the request's
// deadline passed, or the server is stopping) into an Unavailable one the
// client may retry; other errors are returned as they are.
func deadlineErr(ctx context.Context, err error) error {
	if err == nil || domain.ErrorCode(err) != domain.Internal || ctx.Err() == nil {
		return err
	}
	return domain.Errorf(domain.Unavailable, "the request did not finish within its deadline; retry it")
}

func (s *Service) complete(m Meta) Meta {
	if m.Actor == "" {
		m.Actor = "anonymous"
	}
	if m.CommitID == "" {
		m.CommitID = uuid.NewString()
	}
	if m.OperationID == "" {
		m.OperationID = newID()
	}
	if m.CorrelationID == "" {
		m.CorrelationID = m.OperationID
	}
	return m
}

func newID() string {
	id, err := uuid.NewV7()
	if err != nil {
		return uuid.NewString()
	}
	return id.String()
}

// aggregate is the history of one aggregate folded into domain events.
type aggregate struct {
	events  []domain.Event
	lastSeq uint64
	version uint64
}

func (s *Service) loadAggregate(ctx context.Context, aggregateType, id string) (aggregate, error) {
	st, err := s.store.Load(ctx, aggregateType, id)
	if err != nil {
		return aggregate{}, deadlineErr(ctx, fmt.Errorf("load %s %s: %w", aggregateType, id, err))
	}
	a := aggregate{lastSeq: st.LastSeq, version: st.Version()}
	for _, e := range st.Events {
		de, err := domain.DecodeEvent(e.Type, e.SchemaVersion, e.Payload)
		if err != nil {
			return aggregate{}, fmt.Errorf("load %s %s: seq %d: %w", aggregateType, id, e.Seq, err)
		}
		a.events = append(a.events, de)
	}
	return a, nil
}

// loaded is one aggregate's state (nil when it has no events) with what an
// append after deciding on it must expect.
type loaded[T any] struct {
	state   *T
	lastSeq uint64
	version uint64
}

// load reads one aggregate and folds its events with evolve.
func load[T any](ctx context.Context, s *Service, aggregateType, id string, evolve func(T, domain.Event) T) (loaded[T], error) {
	a, err := s.loadAggregate(ctx, aggregateType, id)
	if err != nil || len(a.events) == 0 {
		return loaded[T]{lastSeq: a.lastSeq}, err
	}
	var state T
	for _, e := range a.events {
		state = evolve(state, e)
	}
	return loaded[T]{state: &state, lastSeq: a.lastSeq, version: a.version}, nil
}

// world is every aggregate matched by filter, folded, with the versions of
// each aggregate and the last sequence on filter.
type world struct {
	*domain.World
	lastSeq  uint64
	versions map[string]uint64 // "type/id" → aggregate version
	events   []eventstore.Event
}

func (s *Service) loadWorld(ctx context.Context, filter string) (world, error) {
	st, err := s.store.LoadFilter(ctx, filter)
	if err != nil {
		return world{}, deadlineErr(ctx, fmt.Errorf("load %s: %w", filter, err))
	}
	w := world{World: domain.NewWorld(), lastSeq: st.LastSeq, versions: map[string]uint64{}, events: st.Events}
	for _, e := range st.Events {
		de, err := domain.DecodeEvent(e.Type, e.SchemaVersion, e.Payload)
		if err != nil {
			return world{}, fmt.Errorf("load %s: seq %d: %w", filter, e.Seq, err)
		}
		w.Apply(e.AggregateType, e.AggregateID, de)
		w.versions[e.AggregateType+"/"+e.AggregateID] = e.AggregateVersion
	}
	return w, nil
}

// expectWorld is the condition for a decision that read the whole world.
func (w world) expect(aggregateType, id string) eventstore.Expect {
	return eventstore.Expect{LastSeq: w.lastSeq, Filter: eventstore.AllSubjects, Version: w.versions[aggregateType+"/"+id]}
}
