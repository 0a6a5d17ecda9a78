package service

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
)

// Directory is who is who, on every server: the users with their live
// credentials, the groups with their members and policies, and the
// approval requests, folded in memory from their subjects of the event
// stream (dmgr.ev.user.>, dmgr.ev.group.>, dmgr.ev.approval.>) and kept
// current by following them. Authenticating a request is a map read; a
// revoked credential, a disabled user or a changed role reaches every
// server as fast as the stream delivers the commit (milliseconds).
//
// It never decides: commands read their aggregates' snapshots and append
// on conditions, as every command does. The directory answers "who is
// this" and the lists of people, which grow with the number of people and
// requests, not with clusters or operations.
type Directory struct {
	store *eventstore.Store
	log   zerolog.Logger

	mu         sync.RWMutex
	users      map[string]domain.User
	groups     map[string]domain.Group
	groupNames map[string]string                       // current name → id
	byVerifier map[string]domain.Token                 // SHA-256 of a secret → credential
	tokenUser  map[string]string                       // credential id → user
	roles      map[string]map[string]domain.MemberRole // user → group id → role; each inner map is replaced, never changed
	approvals  map[string]domain.Approval              // without params and plan
	approvalID []string                                // sorted
	applied    uint64
	ready      bool
	changed    chan struct{}

	cancel context.CancelFunc
	done   chan struct{}
}

// directorySubjects are the subjects the directory follows.
var directorySubjects = []string{
	eventstore.TypeSubjects(domain.AggregateUser),
	eventstore.TypeSubjects(domain.AggregateGroup),
	eventstore.TypeSubjects(domain.AggregateApproval),
}

// NewDirectory returns an empty directory of store; Start fills it.
func NewDirectory(store *eventstore.Store, log zerolog.Logger) *Directory {
	return &Directory{store: store, log: log.With().Str("component", "directory").Logger(),
		users: map[string]domain.User{}, groups: map[string]domain.Group{}, groupNames: map[string]string{},
		byVerifier: map[string]domain.Token{}, tokenUser: map[string]string{}, roles: map[string]map[string]domain.MemberRole{},
		approvals: map[string]domain.Approval{}, changed: make(chan struct{})}
}

// Start follows the stream in the background until Close, resuming after
// errors (logged) from the last commit folded in.
func (d *Directory) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel, d.done = cancel, make(chan struct{})
	go func() {
		defer close(d.done)
		backoff := 100 * time.Millisecond
		for ctx.Err() == nil {
			d.mu.RLock()
			from := d.applied + 1
			d.mu.RUnlock()
			err := d.store.Follow(ctx, directorySubjects, from, d.apply, d.caughtUp)
			if ctx.Err() != nil {
				return
			}
			d.log.Warn().Err(err).Dur("retry_in", backoff).Msg("directory: following the stream failed")
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	}()
}

// Close stops following the stream.
func (d *Directory) Close() {
	if d.cancel != nil {
		d.cancel()
		<-d.done
	}
}

func (d *Directory) caughtUp() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.ready {
		d.ready = true
		d.broadcast()
	}
}

func (d *Directory) broadcast() {
	close(d.changed)
	d.changed = make(chan struct{})
}

// WaitReady waits until the directory has folded what the stream held
// when it started.
func (d *Directory) WaitReady(ctx context.Context) error {
	return d.wait(ctx, func() bool { return d.ready })
}

// WaitFor waits until the directory has folded the commit at seq (a
// command's answer is sent once its credential or member works here).
func (d *Directory) WaitFor(ctx context.Context, seq uint64) error {
	return d.wait(ctx, func() bool { return d.applied >= seq })
}

func (d *Directory) wait(ctx context.Context, done func() bool) error {
	for {
		d.mu.RLock()
		ok, ch := done(), d.changed
		d.mu.RUnlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return domain.Errorf(domain.Unavailable, "the directory of users has not caught up with the event stream; retry")
		}
	}
}

// apply folds in one commit.
func (d *Directory) apply(seq uint64, evs []eventstore.Event) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if seq <= d.applied {
		return
	}
	d.applied = seq
	defer d.broadcast()
	if len(evs) == 0 {
		return
	}
	typ, id := evs[0].AggregateType, evs[0].AggregateID
	decoded := make([]domain.Event, 0, len(evs))
	for _, e := range evs {
		de, err := domain.DecodeEvent(e.Type, e.SchemaVersion, e.Payload)
		if err != nil {
			d.log.Error().Err(err).Uint64("commit_seq", seq).Msg("directory: undecodable event skipped")
			continue
		}
		decoded = append(decoded, de)
	}
	switch typ {
	case domain.AggregateUser:
		u := d.users[id]
		for _, e := range decoded {
			u = domain.EvolveUser(u, e)
		}
		d.setUser(id, u)
	case domain.AggregateGroup:
		g := d.groups[id]
		before := g
		for _, e := range decoded {
			g = domain.EvolveGroup(g, e)
		}
		d.setGroup(before, g)
	case domain.AggregateApproval:
		a := d.approvals[id]
		for _, e := range decoded {
			a = domain.EvolveApproval(a, e)
		}
		a.Params, a.Plan = nil, nil
		if _, seen := d.approvals[id]; !seen {
			i, _ := slices.BinarySearch(d.approvalID, id)
			d.approvalID = slices.Insert(d.approvalID, i, id)
		}
		d.approvals[id] = a
	}
}

// setUser replaces a user and re-indexes their credentials. d.mu is held.
func (d *Directory) setUser(name string, u domain.User) {
	if old, ok := d.users[name]; ok {
		for _, t := range old.Tokens {
			delete(d.byVerifier, t.Verifier)
			delete(d.tokenUser, t.ID)
		}
	}
	d.users[name] = u
	for _, t := range u.Tokens {
		d.byVerifier[t.Verifier] = t
		d.tokenUser[t.ID] = name
	}
}

// setGroup replaces a group and the roles of its members. d.mu is held.
func (d *Directory) setGroup(before, g domain.Group) {
	if before.Name != "" && d.groupNames[before.Name] == before.ID {
		delete(d.groupNames, before.Name)
	}
	d.groups[g.ID] = g
	if !g.Deleted {
		d.groupNames[g.Name] = g.ID
	}
	touched := map[string]bool{}
	for u := range before.Members {
		touched[u] = true
	}
	for u := range g.Members {
		touched[u] = true
	}
	for u := range touched {
		roles := make(map[string]domain.MemberRole, len(d.roles[u])+1)
		for gid, r := range d.roles[u] {
			if gid != g.ID {
				roles[gid] = r
			}
		}
		if r, ok := g.Members[u]; ok && !g.Deleted {
			roles[g.ID] = r
		}
		d.roles[u] = roles
	}
}

// Verifier is what the directory keeps of a secret: its hex SHA-256.
func Verifier(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// Authenticate returns the principal a credential's secret stands for at
// now: Unauthorized when it is unknown, expired or revoked, or its user
// is disabled or deleted.
func (d *Directory) Authenticate(secret string, now time.Time) (domain.Principal, error) {
	v := Verifier(secret)
	d.mu.RLock()
	defer d.mu.RUnlock()
	t, ok := d.byVerifier[v]
	if !ok || !now.Before(t.ExpiresAt) {
		return domain.Principal{}, domain.Errorf(domain.Unauthorized, "invalid bearer token (unknown, expired or revoked): log in again")
	}
	u := d.users[t.User]
	if !u.Active() {
		return domain.Principal{}, domain.Errorf(domain.Unauthorized, "user %s is disabled", t.User)
	}
	return domain.Principal{User: u.Name, SuperAdmin: u.SuperAdmin, Roles: d.roles[u.Name], ReadOnly: t.ReadOnly, TokenID: t.ID}, nil
}

// PrincipalOf is the principal of user name with full rights (the
// bootstrap admin token's); ok is false when the user exists and is
// disabled or deleted.
func (d *Directory) PrincipalOf(name, tokenID string, superAdmin bool) (domain.Principal, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	u, exists := d.users[name]
	if exists && !u.Active() {
		return domain.Principal{}, false
	}
	return domain.Principal{User: name, SuperAdmin: superAdmin || u.SuperAdmin, Roles: d.roles[name], TokenID: tokenID}, true
}

// User returns a user's state.
func (d *Directory) User(name string) (domain.User, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	u, ok := d.users[name]
	return u, ok && u.Exists()
}

// Users lists up to limit users after name after, by name, and whether
// more follow (deleted users are not listed).
func (d *Directory) Users(after string, limit int) ([]domain.User, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return pageOfMap(d.users, after, limit, func(u domain.User) bool { return u.Exists() && !u.Deleted })
}

// pageOfMap is up to limit values of m, by key, after key after, that
// keep accepts, and whether more follow.
func pageOfMap[V any](m map[string]V, after string, limit int, keep func(V) bool) ([]V, bool) {
	keys := make([]string, 0, len(m))
	for k, v := range m {
		if k > after && keep(v) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	more := len(keys) > limit
	if more {
		keys = keys[:limit]
	}
	out := make([]V, len(keys))
	for i, k := range keys {
		out[i] = m[k]
	}
	return out, more
}

// Group resolves a group by id or current name.
func (d *Directory) Group(ref string) (domain.Group, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if g, ok := d.groups[ref]; ok && g.Exists() {
		return g, true
	}
	if id, ok := d.groupNames[ref]; ok {
		g := d.groups[id]
		return g, g.Exists()
	}
	return domain.Group{}, false
}

// Groups lists up to limit existing groups after id after that keep
// accepts, by id, and whether more follow.
func (d *Directory) Groups(after string, limit int, keep func(domain.Group) bool) ([]domain.Group, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return pageOfMap(d.groups, after, limit, func(g domain.Group) bool { return g.Exists() && keep(g) })
}

// TokenOwner is the user a credential id belongs to, while it is live.
func (d *Directory) TokenOwner(id string) (string, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	u, ok := d.tokenUser[id]
	return u, ok
}

// Approvals lists up to limit requests after id after that keep accepts
// (in id order, which is the order they were made in), and whether more
// follow. Params and plans are not kept here: read the request for them.
func (d *Directory) Approvals(after string, limit int, keep func(domain.Approval) bool) ([]domain.Approval, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	i, found := slices.BinarySearch(d.approvalID, after)
	if found {
		i++
	}
	var out []domain.Approval
	for ; i < len(d.approvalID); i++ {
		a := d.approvals[d.approvalID[i]]
		if !keep(a) {
			continue
		}
		if len(out) == limit {
			return out, true
		}
		out = append(out, a)
	}
	return out, false
}
