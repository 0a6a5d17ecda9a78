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
		window: time.Duration(ttlSec)*time.Second - time.Duration(ttlSec)*time.Second/3, lastOK: granted}
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
func (s *Session) Campaign(ctx context.Context, election, value string) (*Term, error) {
	cctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(s.ctx, func() { cancel(s.Err()) })
	el := concurrency.NewElection(s.sess, election)
	if err := el.Campaign(cctx, value); err != nil {
		stop()
		cause := context.Cause(cctx)
		cancel(nil)
		if cause != nil {
			err = cause
		}
		return nil, fmt.Errorf("campaign for %s: %w", election, err)
	}
	t := &Term{Token: el.Rev(), Key: el.Key(), s: s, el: el, ctx: cctx, cancel: cancel, stop: stop}
	// Never act on a campaign that returned without a live lease.
	if !s.Valid() || cctx.Err() != nil {
		t.Resign(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("campaign for %s: won without a live lease: %w", election, ErrNotLeading)
	}
	return t, nil
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
