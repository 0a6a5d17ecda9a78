package leadership

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// ErrNotLeading is the cause of a term that ended, or that could not
// begin because the session was not known to be alive.
var ErrNotLeading = errors.New("not leading")

// Session is an etcd lease kept alive, to campaign under. It is trusted
// only while its last keepalive answer is at most Window old (two thirds
// of the TTL): etcd cannot have expired the lease before then, so no one
// else can have been elected in an election this session leads. When the
// lease is lost, or the window passes without an answer, the session's
// context ends, and with it every term under it, before anything else
// happens.
type Session struct {
	cli    *clientv3.Client
	sess   *concurrency.Session
	ctx    context.Context
	cancel context.CancelCauseFunc
	done   chan struct{}
	window time.Duration

	mu     sync.Mutex
	lastOK time.Time

	rpc  time.Duration // bound of a request that is not a wait by design
	emu  sync.Mutex
	held map[string]chan struct{} // election → closed once this session's campaign or term of it is over
}

// NewSession grants a lease of ttl (whole seconds, at least 1) and keeps
// it alive until ctx ends or Close. rpc bounds the grant.
func NewSession(ctx context.Context, cli *clientv3.Client, ttl, rpc time.Duration) (*Session, error) {
	ttlSec := max(1, int64(ttl/time.Second))
	granted := time.Now() // the lease's TTL runs from (after) here
	gctx, gcancel := context.WithTimeout(ctx, rpc)
	grant, err := cli.Grant(gctx, ttlSec)
	gcancel()
	if err != nil {
		return nil, fmt.Errorf("etcd session: grant a lease: %w", err)
	}
	sess, err := concurrency.NewSession(cli, concurrency.WithLease(grant.ID), concurrency.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("etcd session: %w", err)
	}
	sctx, cancel := context.WithCancelCause(ctx)
	s := &Session{cli: cli, sess: sess, ctx: sctx, cancel: cancel, done: make(chan struct{}),
		window: time.Duration(ttlSec)*time.Second - time.Duration(ttlSec)*time.Second/3, lastOK: granted,
		rpc: rpc, held: map[string]chan struct{}{}}
	keep, err := cli.KeepAlive(sctx, grant.ID)
	if err != nil {
		cancel(err)
		sess.Close()
		return nil, fmt.Errorf("etcd keepalive: %w", err)
	}
	go s.watch(keep)
	return s, nil
}

// watch ends the session when the lease is lost or its window passes.
func (s *Session) watch(keep <-chan *clientv3.LeaseKeepAliveResponse) {
	defer close(s.done)
	check := time.NewTicker(s.window / 16)
	defer check.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.sess.Done():
			s.cancel(fmt.Errorf("etcd session expired: %w", ErrNotLeading))
			return
		case resp, ok := <-keep:
			if !ok {
				s.cancel(fmt.Errorf("etcd keepalive channel closed: %w", ErrNotLeading))
				return
			}
			if resp != nil {
				s.mu.Lock()
				s.lastOK = time.Now()
				s.mu.Unlock()
			}
		case <-check.C:
			if !s.Valid() {
				s.cancel(fmt.Errorf("no keepalive answer for %s: the lease may expire: %w", s.window, ErrNotLeading))
				return
			}
		}
	}
}

// Lease is the session's lease, for keys that live as long as it does.
func (s *Session) Lease() clientv3.LeaseID { return s.sess.Lease() }

// Window is how long after a keepalive answer the session is trusted.
func (s *Session) Window() time.Duration { return s.window }

// Context ends when the session does.
func (s *Session) Context() context.Context { return s.ctx }

// Err says why the session ended; nil while it lasts.
func (s *Session) Err() error { return context.Cause(s.ctx) }

// Deadline is when a holder of the session must have stopped acting
// unless a keepalive answers before.
func (s *Session) Deadline() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastOK.Add(s.window)
}

// Valid says the session is alive and within its window.
func (s *Session) Valid() bool { return s.ctx.Err() == nil && time.Now().Before(s.Deadline()) }

// Close ends the session and revokes its lease (its keys go with it),
// waiting at most two seconds for etcd.
func (s *Session) Close() {
	s.cancel(fmt.Errorf("session closed: %w", ErrNotLeading))
	<-s.done
	s.sess.Orphan()
	ctx, cancel := context.WithTimeout(context.Background(), resignTimeout)
	defer cancel()
	_, _ = s.cli.Revoke(ctx, s.sess.Lease())
}

// Term is one win of an election: it lasts until Resign, the campaign's
// context ends, or the session does.
type Term struct {
	// Token is the fencing token: the create revision of the term's
	// election key, the first created under the election's prefix while
	// the term lasts.
	Token int64
	// Key is the term's election key.
	Key string

	s      *Session
	el     *concurrency.Election
	ctx    context.Context
	cancel context.CancelCauseFunc
	stop   func() bool
}

// Campaign waits until this session leads election (whose keys are under
// election + "/"), with value as the leader's value, and returns the
// term. It returns an error when ctx or the session ends first, or when
// the session is not known to be alive as the campaign is won (the term
// is resigned then).
//
// Every term has a key of its own, created for it, so that its token is
// above every earlier term's and no earlier term's resignation can
// delete it. A session's key of an election is election/<lease>, the
// same for all its campaigns of that election: so a session holds one
// campaign or term of an election at a time (a campaign waits until the
// session's previous one has ended), and a campaign deletes the key the
// previous term left behind (ended, not yet or never resigned) before it
// creates its own.
func (s *Session) Campaign(ctx context.Context, election, value string) (*Term, error) {
	cctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(s.ctx, func() { cancel(s.Err()) })
	fail := func(err error) (*Term, error) {
		stop()
		cause := context.Cause(cctx)
		cancel(nil)
		if cause != nil {
			err = cause
		}
		return nil, fmt.Errorf("campaign for %s: %w", election, err)
	}
	release, err := s.hold(cctx, election)
	if err != nil {
		return fail(err)
	}
	el := concurrency.NewElection(s.sess, election)
	if err := s.clearKey(cctx, election); err != nil {
		release()
		return fail(err)
	}
	if err := el.Campaign(cctx, value); err != nil {
		release()
		return fail(err)
	}
	// The next campaign of this election may begin once this term ends.
	context.AfterFunc(cctx, release)
	t := &Term{Token: el.Rev(), Key: el.Key(), s: s, el: el, ctx: cctx, cancel: cancel, stop: stop}
	// Never act on a campaign that returned without a live lease.
	if !s.Valid() || cctx.Err() != nil {
		t.Resign(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("campaign for %s: won without a live lease: %w", election, ErrNotLeading)
	}
	go t.watchKey()
	return t, nil
}

// hold waits until this session has no campaign or term of election, and
// makes the caller's the one; release ends it (more calls do nothing).
func (s *Session) hold(ctx context.Context, election string) (release func(), err error) {
	for {
		s.emu.Lock()
		prev, busy := s.held[election]
		if !busy {
			mine := make(chan struct{})
			s.held[election] = mine
			s.emu.Unlock()
			var once sync.Once
			return func() {
				once.Do(func() {
					s.emu.Lock()
					delete(s.held, election)
					s.emu.Unlock()
					close(mine)
				})
			}, nil
		}
		s.emu.Unlock()
		select {
		case <-prev:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

// clearKey deletes this session's key of election, left by a term that
// has ended (its holder resigns late, or never), so that the campaign
// creates a key of its own: one created anew has a revision above every
// earlier term's token, and the late resignation (a delete on the
// condition of the old key's create revision) leaves it alone.
func (s *Session) clearKey(ctx context.Context, election string) error {
	rctx, cancel := context.WithTimeout(ctx, s.rpc)
	defer cancel()
	if _, err := s.cli.Delete(rctx, fmt.Sprintf("%s/%x", election, s.sess.Lease())); err != nil {
		return fmt.Errorf("delete the key of the session's previous term: %w", err)
	}
	return nil
}

// Context ends when the term does.
func (t *Term) Context() context.Context { return t.ctx }

// Valid says the term lasts and its session is within its window.
func (t *Term) Valid() bool { return t.ctx.Err() == nil && t.s.Valid() }

// Deadline is when the holder must have stopped acting unless a
// keepalive answers before.
func (t *Term) Deadline() time.Time { return t.s.Deadline() }

// WriteContext bounds a write made as leader by the session's deadline,
// so that nothing is written after etcd may have handed the election to
// someone else. It refuses (ErrNotLeading) when the term is not valid.
func (t *Term) WriteContext(ctx context.Context) (context.Context, context.CancelFunc, error) {
	if !t.Valid() {
		return nil, nil, fmt.Errorf("lease not confirmed within its safety window; not acting: %w", ErrNotLeading)
	}
	wctx, cancel := context.WithDeadline(ctx, t.Deadline())
	return wctx, cancel, nil
}

// resignTimeout bounds a resignation.
const resignTimeout = 2 * time.Second

// Resign ends the term and deletes its election key (if it is still
// this term's: a key gone with a lost lease is left alone), so that the
// next candidate is elected at once. ctx bounds the deletion, at most two
// seconds; pass a context that is not cancelled when the term ends on
// shutdown (context.WithoutCancel).
func (t *Term) Resign(ctx context.Context) error {
	t.stop()
	t.cancel(fmt.Errorf("resigned: %w", ErrNotLeading))
	rctx, cancel := context.WithTimeout(ctx, resignTimeout)
	defer cancel()
	if err := t.el.Resign(rctx); err != nil {
		return fmt.Errorf("resign %s: %w", t.Key, err)
	}
	return nil
}

// watchKey ends the term as soon as its key is deleted or replaced, by
// whomever: a term whose key is not in etcd leads nothing (agents refuse
// its steps, and another candidate may be elected), so its holder must
// stop, and may campaign again.
func (t *Term) watchKey() {
	from := t.Token + 1
	for t.ctx.Err() == nil {
		var gone bool
		from, gone = t.followKey(from)
		if !gone && t.ctx.Err() == nil {
			// The watch ended without a word on the key (history
			// compacted, etcd without a leader): read it.
			gctx, cancel := context.WithTimeout(t.ctx, t.s.rpc)
			resp, err := t.s.cli.Get(gctx, t.Key)
			cancel()
			switch {
			case t.ctx.Err() != nil:
				return
			case err != nil:
				// The session's window ends the term if etcd stays away.
				pause(t.ctx, t.s.window/8)
				continue
			case len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != t.Token:
				gone = true
			default:
				from = resp.Header.Revision + 1
			}
		}
		if gone {
			t.cancel(fmt.Errorf("election key %s deleted: %w", t.Key, ErrNotLeading))
			return
		}
	}
}

// followKey watches the term's key from revision from until it is gone
// (deleted, or created anew by another) or the watch ends; next is the
// revision to go on from.
func (t *Term) followKey(from int64) (next int64, gone bool) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(t.ctx))
	defer cancel()
	for wr := range t.s.cli.Watch(wctx, t.Key, clientv3.WithRev(from)) {
		if wr.Err() != nil {
			return from, false
		}
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypeDelete || ev.Kv.CreateRevision != t.Token {
				return from, true
			}
			from = max(from, ev.Kv.ModRevision+1)
		}
	}
	return from, false
}

func pause(ctx context.Context, d time.Duration) {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
	case <-tm.C:
	}
}
