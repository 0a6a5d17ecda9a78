package service

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/agents/remote"
	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/internal/pkgstore"
	"github.com/dmgr/dmgr/internal/secrets"
)

// Service is the command and query side of dmgr on the event store.
type Service struct {
	store *eventstore.Store
	ops   *eventstore.OperationIndex // operation id → its cluster
	// The aggregates decisions read, kept current in memory (aggregates.go).
	clusters   *aggregates[domain.Cluster]
	machines   *aggregates[domain.Machine]
	packageAgg *aggregates[domain.Package]
	claims     *aggregates[domain.Claim]
	vault      *secrets.Vault
	packages   *pkgstore.Store
	limits     pkgstore.Limits
	// maxInstances caps a cluster's instances (domain.CheckInstanceCap).
	maxInstances int
	now          func() time.Time
	log          zerolog.Logger

	scanHostKey func(ctx context.Context, host string, port int) (string, error)
	// login runs one read-only command on a host an import checks.
	login func(ctx context.Context, t remote.Target, cmd string, o remote.RunOptions, dialTimeout time.Duration) (remote.Result, error)
	// inventory admits registrations and removals of machines, a few at a
	// time (MaxConcurrentRegistrations).
	inventory chan struct{}

	// People (identity.go, groups.go, approvals.go).
	dir        *Directory
	users      *aggregates[domain.User]
	groups     *aggregates[domain.Group]
	approvals  *aggregates[domain.Approval]
	passwords  *secrets.Vault
	hashing    chan struct{} // slots for argon2id hashes
	throttle   *loginThrottle
	sessionTTL time.Duration
	ownedBy    func(ctx context.Context, group string) (string, error)
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
	// Login runs one command on a host over a connection of its own, for
	// the checks an import makes before it records anything (default
	// remote.Login).
	Login func(ctx context.Context, t remote.Target, cmd string, o remote.RunOptions, dialTimeout time.Duration) (remote.Result, error)
	// MaxConcurrentRegistrations is how many machine registrations and
	// removals may append at once (default DefaultMaxConcurrentRegistrations);
	// more wait their turn, so that a bulk of them (an inventory import)
	// does not queue every other command behind its atomic batches.
	MaxConcurrentRegistrations int
	// Passwords keeps the users' password hashes
	// (secrets.OpenPasswords); nil refuses logins and new users.
	Passwords *secrets.Vault
	// SessionTTL is how long a login lasts (default DefaultSessionTTL).
	SessionTTL time.Duration
	// MaxConcurrentHashes bounds the argon2id hashes that run at once
	// (default: the number of CPUs, at least 2); more logins wait.
	MaxConcurrentHashes int
	// OwnedBy describes one live thing a group owns ("" when none), for
	// the deletion of groups; nil reads the event store (slow, rare).
	OwnedBy func(ctx context.Context, group string) (string, error)
}

// DefaultMaxConcurrentRegistrations is the default of
// Config.MaxConcurrentRegistrations. The stream stages atomic batches one
// at a time, so two in flight keep it as busy as sixteen would
// (BenchmarkCommandsAtScale: 218 registrations/s with 2, 227 with 16)
// while a deploy waits behind two batches instead of sixteen.
const DefaultMaxConcurrentRegistrations = 2

// New returns a Service.
func New(c Config) *Service {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.MaxInstancesPerCluster <= 0 {
		c.MaxInstancesPerCluster = domain.DefaultMaxInstancesPerCluster
	}
	if c.MaxConcurrentRegistrations <= 0 {
		c.MaxConcurrentRegistrations = DefaultMaxConcurrentRegistrations
	}
	if c.Login == nil {
		c.Login = remote.Login
	}
	if c.SessionTTL <= 0 {
		c.SessionTTL = DefaultSessionTTL
	}
	if c.MaxConcurrentHashes <= 0 {
		c.MaxConcurrentHashes = max(runtime.NumCPU(), 2)
	}
	return &Service{store: c.Store, ops: c.Store.NewOperationIndex(domain.AggregateCluster), vault: c.Vault, packages: c.Packages, limits: c.PackageLimits, now: c.Now, log: c.Log,
		maxInstances: c.MaxInstancesPerCluster, scanHostKey: c.ScanHostKey, login: c.Login, inventory: make(chan struct{}, c.MaxConcurrentRegistrations),
		clusters:   newAggregates(c.Store, domain.AggregateCluster, cachedClusters, foldClusterEvents),
		machines:   newAggregates(c.Store, domain.AggregateMachine, cachedMachines, evolveAll(domain.EvolveMachine)),
		packageAgg: newAggregates(c.Store, domain.AggregatePackage, cachedPackages, evolveAll(domain.EvolvePackage)),
		claims:     newAggregates(c.Store, domain.AggregateClaim, cachedClaims, evolveAll(domain.EvolveClaim)),
		dir:        NewDirectory(c.Store, c.Log),
		users:      newAggregates(c.Store, domain.AggregateUser, cachedUsers, evolveAll(domain.EvolveUser)),
		groups:     newAggregates(c.Store, domain.AggregateGroup, cachedGroups, evolveAll(domain.EvolveGroup)),
		approvals:  newAggregates(c.Store, domain.AggregateApproval, cachedApprovals, evolveAll(domain.EvolveApproval)),
		passwords:  c.Passwords, hashing: make(chan struct{}, c.MaxConcurrentHashes),
		throttle: &loginThrottle{names: map[string]*loginFailures{}}, sessionTTL: c.SessionTTL, ownedBy: c.OwnedBy,
	}
}

// StartDirectory starts following users, groups and approvals (the
// directory); commands and authentication wait until it has caught up.
func (s *Service) StartDirectory() { s.dir.Start() }

// StartOperationIndex starts reading the event stream into the operation
// index in the background (it starts on the first lookup otherwise).
func (s *Service) StartOperationIndex() error {
	return s.ops.Start()
}

// Close stops the operation index's and the directory's tails of the
// event stream.
func (s *Service) Close() {
	s.ops.Close()
	s.dir.Close()
}

// Meta is who sent a command and how to identify it.
type Meta struct {
	// Principal is the person who sent the command, as their credential
	// presents them; the service authorizes the command for them. nil is
	// one of dmgr's own identities (the coordinator, start-up tasks),
	// which Actor names and which are not authorized.
	Principal *domain.Principal
	// Actor is who the commit names: the principal's user when there is
	// one.
	Actor string
	// Group owns what the command is about; the service sets it once it
	// has read the aggregate, and every commit of the command carries it.
	Group string
	// CommitID deduplicates a retried command; empty means a fresh one.
	CommitID string
	// OperationID names the operation the command starts; empty means a
	// fresh one.
	OperationID   string
	CorrelationID string
	// FencingToken is the coordinator's leader token (0 for the API).
	FencingToken int64
	// approval, when set, is the approval request this command runs for:
	// its ApprovalGranted is appended atomically with the command's
	// commit, on the condition that the request did not change.
	approval *pending
	// noOperation: the command starts no operation (commands on people,
	// groups and requests); its commits name none.
	noOperation bool
}

// Accepted is what a command answers: the operation it started and the
// stream sequence of its commit (a consistency token for reads).
type Accepted struct {
	OperationID string `json:"operation_id,omitempty"`
	CommitSeq   uint64 `json:"commit_seq"`
	// ApprovalID and ApprovalState are set instead of an operation when
	// the command waits for approval (its group's policy names it).
	ApprovalID    string `json:"approval_id,omitempty"`
	ApprovalState string `json:"state,omitempty"`
}

// How many snapshots of each type a server keeps (aggregates.go): enough
// for the working set of a large installation; an evicted one is read
// again from the store when a decision needs it.
const (
	cachedClusters  = 2048
	cachedMachines  = 65536
	cachedPackages  = 1024
	cachedClaims    = 65536
	cachedUsers     = 4096
	cachedGroups    = 1024
	cachedApprovals = 1024
)

// maxDecideAttempts bounds how often a command decides again after a
// conflict: only a concurrent commit to an aggregate it touches causes one.
const maxDecideAttempts = 10

// pending is one commit of a decision: events for one aggregate, appended
// on the condition expect.
type pending struct {
	aggregateType, aggregateID string
	events                     []domain.Event
	expect                     eventstore.Expect
	// group owns the aggregate ("": the command's, Meta.Group).
	group string
}

// decision is one attempt at a command: the commit on the aggregate the
// command is about, and the commits on the other aggregates it reserves
// (machines a deploy places on, claims a registration takes), appended
// together atomically, each on its own condition.
type decision struct {
	pending
	also []pending
}

// one is a decision that commits to one aggregate.
func one(aggregateType, aggregateID string, events []domain.Event, expect eventstore.Expect) decision {
	return decision{pending: pending{aggregateType: aggregateType, aggregateID: aggregateID, events: events, expect: expect}}
}

// run decides and appends, deciding again on conflicts.
func (s *Service) run(ctx context.Context, meta Meta, decide func(ctx context.Context) (decision, error)) (Accepted, error) {
	meta = s.complete(meta)
	for attempt := 1; ; attempt++ {
		d, err := decide(ctx)
		if err != nil {
			return Accepted{}, deadlineErr(ctx, err)
		}
		switch {
		case len(d.events) == 0 && meta.approval != nil:
			d = decision{pending: *meta.approval} // nothing but the decision on the request to record
		case len(d.events) == 0:
			return Accepted{OperationID: meta.OperationID}, nil // nothing to record
		case meta.approval != nil:
			d.also = append(d.also, *meta.approval)
		}
		seq, err := s.appendDecision(ctx, meta, d)
		switch {
		case err == nil:
			return Accepted{OperationID: meta.OperationID, CommitSeq: seq}, nil
		case errors.Is(err, eventstore.ErrConflict) && attempt < maxDecideAttempts && meta.approval == nil:
			// (With an approval, the caller reads the request again.)
			// Someone committed to an aggregate this decision touches since
			// it was read: decide again on what they wrote, after a short
			// pause that keeps racing deciders from meeting again.
			if err := pause(ctx, attempt); err != nil {
				return Accepted{}, deadlineErr(ctx, err)
			}
			continue
		}
		return Accepted{}, s.appendErr(ctx, d, attempt, err)
	}
}

// pause waits a random time that grows with attempt (at most ~50 ms).
func pause(ctx context.Context, attempt int) error {
	d := time.Duration(rand.Int64N(int64(min(attempt, 10)) * int64(5*time.Millisecond)))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// commitOf is the commit of p as part of meta's command. The main commit
// carries the command's ids; a reservation commit gets its own commit id,
// derived from the command's (so that a retried command dedupes it too),
// and names the operation only as its correlation: it is not a step of it.
func (s *Service) commitOf(meta Meta, p pending, main bool) (eventstore.Commit, error) {
	commit := eventstore.Commit{
		CommitID: meta.CommitID, AggregateType: p.aggregateType, AggregateID: p.aggregateID,
		Time: s.now().UTC(), Actor: meta.Actor, OperationID: meta.OperationID,
		Group: cmp.Or(p.group, meta.Group), ActorToken: meta.actorToken(),
		CorrelationID: meta.CorrelationID, CausationID: meta.CommitID, FencingToken: meta.FencingToken,
	}
	if !main {
		commit.CommitID = meta.CommitID + "/" + p.aggregateType + "/" + p.aggregateID
		commit.OperationID = ""
	}
	for _, e := range p.events {
		payload, err := json.Marshal(e)
		if err != nil {
			return eventstore.Commit{}, fmt.Errorf("encode %s: %w", e.EventType(), err)
		}
		commit.Events = append(commit.Events, eventstore.NewEvent{Type: e.EventType(), SchemaVersion: 1, Payload: payload})
	}
	return commit, nil
}

// appendDecision appends a decision's commits as meta's command, under
// their conditions, and returns the stream sequence of its main commit
// (the one that names the operation; reservations follow it).
func (s *Service) appendDecision(ctx context.Context, meta Meta, d decision) (uint64, error) {
	main, err := s.commitOf(meta, d.pending, true)
	if err != nil {
		return 0, err
	}
	var seq uint64
	if len(d.also) == 0 {
		if seq, err = s.store.Append(ctx, main, d.expect); err != nil {
			return 0, err
		}
	} else {
		batch := []eventstore.Conditional{{Commit: main, Expect: d.expect}}
		for _, p := range d.also {
			c, err := s.commitOf(meta, p, false)
			if err != nil {
				return 0, err
			}
			batch = append(batch, eventstore.Conditional{Commit: c, Expect: p.expect})
		}
		seqs, err := s.store.AppendAtomic(ctx, batch)
		if err != nil {
			return 0, err
		}
		seq = seqs[0]
	}
	s.log.Info().Str("operation", meta.OperationID).Str("aggregate", d.aggregateType+"/"+d.aggregateID).
		Int("reservations", len(d.also)).Uint64("commit_seq", seq).Str("actor", meta.Actor).Msg("command committed")
	return seq, nil
}

// appendErr is what a command answers when its append failed on its
// attempt-th decision.
func (s *Service) appendErr(ctx context.Context, d decision, attempt int, err error) error {
	switch {
	case errors.Is(err, eventstore.ErrConflict) && len(d.also) > 0:
		return domain.Errorf(domain.Conflict, "%s %s or one of the %d %s it reserves changed %d times while this command was decided; retry it",
			d.aggregateType, d.aggregateID, len(d.also), d.also[0].aggregateType+"s", attempt)
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
	if m.Principal != nil {
		m.Actor = m.Principal.User
	}
	if m.Actor == "" {
		m.Actor = "anonymous"
	}
	if m.CommitID == "" {
		m.CommitID = uuid.NewString()
	}
	if m.OperationID == "" && !m.noOperation {
		m.OperationID = newID()
	}
	if m.CorrelationID == "" {
		m.CorrelationID = cmp.Or(m.OperationID, m.CommitID)
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

// loaded is one aggregate's state (nil when it has no events) with what an
// append after deciding on it must expect.
type loaded[T any] struct {
	state   *T
	lastSeq uint64
	version uint64
}

// expect is the append condition of a decision on l.
func (l loaded[T]) expect() eventstore.Expect {
	return eventstore.Expect{LastSeq: l.lastSeq, Version: l.version}
}

// loadedOf is what a read of the aggregates' snapshots (aggregates.read)
// gives, as loaded.
func loadedOf[T any](s snapshot[T], err error) (loaded[T], error) {
	if err != nil {
		return loaded[T]{}, err
	}
	return loaded[T]{state: s.ptr(), lastSeq: s.lastSeq, version: s.version}, nil
}

// world is every aggregate matched by filter, folded: what the lists read
// from the event store (without projections) and start-up tasks read. No
// decision reads it.
type world struct {
	*domain.World
	events []eventstore.Event
}

func (s *Service) loadWorld(ctx context.Context, filter string) (world, error) {
	st, err := s.store.LoadFilter(ctx, filter)
	if err != nil {
		return world{}, deadlineErr(ctx, fmt.Errorf("load %s: %w", filter, err))
	}
	w := world{World: domain.NewWorld(), events: st.Events}
	for _, e := range st.Events {
		de, err := domain.DecodeEvent(e.Type, e.SchemaVersion, e.Payload)
		if err != nil {
			return world{}, fmt.Errorf("load %s: seq %d: %w", filter, e.Seq, err)
		}
		w.Apply(e.AggregateType, e.AggregateID, de)
	}
	return w, nil
}

// actorToken is the id of the credential the principal used ("" for
// dmgr's own identities).
func (m Meta) actorToken() string {
	if m.Principal == nil {
		return ""
	}
	return m.Principal.TokenID
}
