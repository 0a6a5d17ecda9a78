package coordinator

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/dmgr/dmgr/workqueue"
)

// coordinatorsPrefix holds every live coordinator's key, under its
// session's lease; each cluster's leader holds an election key
// (workqueue.LeaderKeyPrefix) under the same lease.
const coordinatorsPrefix = "/dmgr/coordinators/"

// lease is the coordinator's view of its etcd session: it may act as a
// leader only while its last keepalive answer is recent enough that etcd
// cannot have expired the lease yet.
type lease struct {
	mu     sync.Mutex
	lastOK time.Time
	window time.Duration // TTL minus a safety margin
}

func (l *lease) renewed(at time.Time) {
	l.mu.Lock()
	l.lastOK = at
	l.mu.Unlock()
}

// deadline is when the coordinator must have stopped acting unless a
// keepalive answers before.
func (l *lease) deadline() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastOK.Add(l.window)
}

func (l *lease) valid() bool { return time.Now().Before(l.deadline()) }

// leadership campaigns, per cluster, for the clusters this coordinator is
// preferred for, and runs lead for each one it wins, under a context that
// ends the moment leadership does (resigned, session gone, or the lease's
// safety window passed without a keepalive).
//
// Preference is rendezvous hashing over the live coordinators: every
// coordinator computes the same preferred server for a cluster, so leaders
// spread evenly, and when the preferred one dies the next one takes over
// once the dead one's lease (and with it its election keys) expires.
type leadership struct {
	cli  *clientv3.Client
	id   string
	ttl  time.Duration
	rpc  time.Duration // bound of an etcd request that is not a wait by design
	log  zerolog.Logger
	lead func(ctx context.Context, cluster string, token int64, l *lease)

	mu        sync.Mutex
	live      map[string]bool
	clusters  map[string]*campaign // tracked clusters; nil value: not campaigning
	sess      *concurrency.Session
	sessCtx   context.Context
	lease     *lease
	sessionUp bool
}

// campaign is one cluster's election as seen by this coordinator.
type campaign struct {
	cancel  context.CancelFunc
	leading bool
	done    chan struct{}
}

func newLeadership(cli *clientv3.Client, id string, ttl, rpc time.Duration, log zerolog.Logger,
	lead func(ctx context.Context, cluster string, token int64, l *lease)) *leadership {
	return &leadership{cli: cli, id: id, ttl: ttl, rpc: rpc, log: log, lead: lead,
		live: map[string]bool{}, clusters: map[string]*campaign{}}
}

// track makes a cluster one this coordinator may lead.
func (ld *leadership) track(cluster string) {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	if _, ok := ld.clusters[cluster]; ok {
		return
	}
	ld.clusters[cluster] = nil
	ld.rebalanceLocked(cluster)
}

// preferred is the live coordinator with the highest rendezvous hash for
// the cluster.
func (ld *leadership) preferredLocked(cluster string) string {
	best, bestHash := ld.id, rendezvous(ld.id, cluster)
	for id := range ld.live {
		if h := rendezvous(id, cluster); h > bestHash || (h == bestHash && id > best) {
			best, bestHash = id, h
		}
	}
	return best
}

// rendezvous is the weight of a server for a cluster. A cryptographic hash,
// because FNV of names that differ in one byte ranks servers the same way
// for most clusters.
func rendezvous(server, cluster string) uint64 {
	sum := sha256.Sum256([]byte(server + "\x00" + cluster))
	return binary.BigEndian.Uint64(sum[:8])
}

// rebalanceLocked starts or stops the campaign for one cluster (every
// cluster when cluster is empty) to follow the preference.
func (ld *leadership) rebalanceLocked(only string) {
	if !ld.sessionUp {
		return
	}
	for cluster, c := range ld.clusters {
		if only != "" && cluster != only {
			continue
		}
		want := ld.preferredLocked(cluster) == ld.id
		switch {
		case want && c == nil:
			ld.clusters[cluster] = ld.campaignLocked(cluster)
		case !want && c != nil:
			c.cancel() // resigns when it leads
			ld.clusters[cluster] = nil
		}
	}
}

// campaignLocked starts campaigning for a cluster under the session.
func (ld *leadership) campaignLocked(cluster string) *campaign {
	ctx, cancel := context.WithCancel(ld.sessCtx)
	c := &campaign{cancel: cancel, done: make(chan struct{})}
	sess, l := ld.sess, ld.lease
	go func() {
		defer close(c.done)
		el := concurrency.NewElection(sess, strings.TrimSuffix(workqueue.LeaderKeyPrefix(cluster), "/"))
		if err := el.Campaign(ctx, ld.id); err != nil {
			if ctx.Err() == nil {
				ld.log.Warn().Err(err).Str("cluster", cluster).Msg("campaign")
			}
			return
		}
		defer func() {
			// Resign unless the session is gone (then the key goes with it).
			rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer rcancel()
			if err := el.Resign(rctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
				ld.log.Debug().Err(err).Str("cluster", cluster).Msg("resign")
			}
		}()
		// Never act on a Campaign that returned without a live lease.
		if !l.valid() || ctx.Err() != nil {
			return
		}
		token := el.Rev()
		ld.log.Info().Str("cluster", cluster).Int64("token", token).Msg("leading cluster")
		ld.lead(ctx, cluster, token, l)
		ld.log.Info().Str("cluster", cluster).Int64("token", token).Msg("no longer leading cluster")
	}()
	return c
}

// Run keeps a session and the campaigns until ctx ends. When the session
// ends, or its keepalives stop answering for longer than the safety
// window, every campaign and everything it leads stops at once, and a new
// session starts.
func (ld *leadership) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		if err := ld.session(ctx); err != nil && ctx.Err() == nil {
			ld.log.Warn().Err(err).Msg("coordinator session ended; starting a new one")
			sleep(ctx, time.Second)
		}
	}
	return nil
}

func (ld *leadership) session(ctx context.Context) error {
	ttlSec := max(1, int(ld.ttl/time.Second))
	// The lease is granted under a deadline (a session would wait for etcd
	// as long as ctx lasts), then kept by the session.
	granted := time.Now() // the lease's TTL runs from (after) here
	gctx, gcancel := context.WithTimeout(ctx, ld.rpc)
	grant, err := ld.cli.Grant(gctx, int64(ttlSec))
	gcancel()
	if err != nil {
		return fmt.Errorf("etcd session: grant a lease: %w", err)
	}
	sess, err := concurrency.NewSession(ld.cli, concurrency.WithLease(grant.ID), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("etcd session: %w", err)
	}
	defer sess.Close()
	sessCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	l := &lease{window: ld.ttl - ld.ttl/3}
	l.renewed(granted)
	keep, err := ld.cli.KeepAlive(sessCtx, sess.Lease())
	if err != nil {
		return fmt.Errorf("etcd keepalive: %w", err)
	}
	pctx, pcancel := context.WithTimeout(sessCtx, ld.rpc)
	_, err = ld.cli.Put(pctx, coordinatorsPrefix+ld.id, ld.id, clientv3.WithLease(sess.Lease()))
	pcancel()
	if err != nil {
		return fmt.Errorf("register coordinator: %w", err)
	}
	ld.mu.Lock()
	ld.sess, ld.sessCtx, ld.lease, ld.sessionUp = sess, sessCtx, l, true
	ld.mu.Unlock()
	ld.log.Info().Str("coordinator", ld.id).Int64("lease", int64(sess.Lease())).Dur("ttl", ld.ttl).Msg("coordinator session started")

	watchErr := make(chan error, 1)
	go func() { watchErr <- ld.watchLive(sessCtx) }()

	check := time.NewTicker(ld.ttl / 20)
	defer check.Stop()
	var why error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-sess.Done():
			why = errors.New("etcd session expired")
			break loop
		case resp, ok := <-keep:
			if !ok {
				why = errors.New("etcd keepalive channel closed")
				break loop
			}
			if resp != nil {
				l.renewed(time.Now())
			}
		case <-check.C:
			if !l.valid() {
				why = fmt.Errorf("no keepalive answer for %s: the lease may expire", l.window)
				break loop
			}
		case err := <-watchErr:
			why = fmt.Errorf("watch coordinators: %w", err)
			break loop
		}
	}
	// Stop leading everything before anything else happens.
	cancel()
	ld.mu.Lock()
	ld.sessionUp = false
	var waits []chan struct{}
	for cluster, c := range ld.clusters {
		if c != nil {
			waits = append(waits, c.done)
			ld.clusters[cluster] = nil
		}
	}
	clear(ld.live)
	ld.mu.Unlock()
	for _, w := range waits {
		<-w
	}
	return why
}

// watchLive keeps the set of live coordinators and rebalances on change.
func (ld *leadership) watchLive(ctx context.Context) error {
	gctx, cancel := context.WithTimeout(ctx, ld.rpc)
	resp, err := ld.cli.Get(gctx, coordinatorsPrefix, clientv3.WithPrefix())
	cancel()
	if err != nil {
		return err
	}
	ld.mu.Lock()
	clear(ld.live)
	for _, kv := range resp.Kvs {
		ld.live[strings.TrimPrefix(string(kv.Key), coordinatorsPrefix)] = true
	}
	ld.rebalanceLocked("")
	ld.mu.Unlock()
	wch := ld.cli.Watch(clientv3.WithRequireLeader(ctx), coordinatorsPrefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	for wr := range wch {
		if err := wr.Err(); err != nil {
			return err
		}
		ld.mu.Lock()
		for _, ev := range wr.Events {
			id := strings.TrimPrefix(string(ev.Kv.Key), coordinatorsPrefix)
			if ev.Type == clientv3.EventTypeDelete {
				delete(ld.live, id)
			} else {
				ld.live[id] = true
			}
		}
		ld.rebalanceLocked("")
		ld.mu.Unlock()
	}
	if ctx.Err() != nil {
		return nil
	}
	return errors.New("watch closed")
}
