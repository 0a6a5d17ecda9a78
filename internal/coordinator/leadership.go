package coordinator

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dmgr/dmgr/internal/leadership"
)

// elections campaigns, per cluster, for the clusters this coordinator is
// preferred for, and runs lead for each one it wins, under a context that
// ends the moment leadership does (resigned, session gone, or the lease's
// safety window passed without a keepalive).
//
// Preference is rendezvous hashing over the live coordinators: every
// coordinator computes the same preferred server for a cluster, so leaders
// spread evenly, and when the preferred one dies the next one takes over
// once the dead one's lease (and with it its election keys) expires.
type elections struct {
	cli  *clientv3.Client
	id   string
	ttl  time.Duration
	rpc  time.Duration // bound of an etcd request that is not a wait by design
	log  zerolog.Logger
	lead func(ctx context.Context, cluster string, term *leadership.Term)

	mu        sync.Mutex
	live      map[string]bool
	clusters  map[string]*campaign // tracked clusters; nil value: not campaigning
	sess      *leadership.Session
	sessCtx   context.Context // ends when the session does, or when the coordinator stops leading
	sessionUp bool
}

// campaign is one cluster's election as seen by this coordinator.
type campaign struct {
	cancel  context.CancelFunc
	leading bool
	done    chan struct{}
}

func newElections(cli *clientv3.Client, id string, ttl, rpc time.Duration, log zerolog.Logger,
	lead func(ctx context.Context, cluster string, term *leadership.Term)) *elections {
	return &elections{cli: cli, id: id, ttl: ttl, rpc: rpc, log: log, lead: lead,
		live: map[string]bool{}, clusters: map[string]*campaign{}}
}

// track makes a cluster one this coordinator may lead.
func (ld *elections) track(cluster string) {
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
func (ld *elections) preferredLocked(cluster string) string {
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
func (ld *elections) rebalanceLocked(only string) {
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
func (ld *elections) campaignLocked(cluster string) *campaign {
	ctx, cancel := context.WithCancel(ld.sessCtx)
	c := &campaign{cancel: cancel, done: make(chan struct{})}
	sess := ld.sess
	go func() {
		defer close(c.done)
		term, err := sess.Campaign(ctx, leadership.ClusterElection(cluster), ld.id)
		if err != nil {
			if ctx.Err() == nil {
				ld.log.Warn().Err(err).Str("cluster", cluster).Msg("campaign")
			}
			return
		}
		defer func() {
			// Resign, so that the next candidate need not wait for the
			// lease (a key gone with its lease is left alone).
			if err := term.Resign(context.WithoutCancel(ctx)); err != nil && !errors.Is(err, context.DeadlineExceeded) {
				ld.log.Debug().Err(err).Str("cluster", cluster).Msg("resign")
			}
		}()
		ld.log.Info().Str("cluster", cluster).Int64("token", term.Token).Msg("leading cluster")
		ld.lead(term.Context(), cluster, term)
		ld.log.Info().Str("cluster", cluster).Int64("token", term.Token).Msg("no longer leading cluster")
	}()
	return c
}

// Run keeps a session and the campaigns until ctx ends. When the session
// ends, or its keepalives stop answering for longer than the safety
// window, every campaign and everything it leads stops at once, and a new
// session starts.
func (ld *elections) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		if err := ld.session(ctx); err != nil && ctx.Err() == nil {
			ld.log.Warn().Err(err).Msg("coordinator session ended; starting a new one")
			sleep(ctx, time.Second)
		}
	}
	return nil
}

func (ld *elections) session(ctx context.Context) error {
	sess, err := leadership.NewSession(ctx, ld.cli, ld.ttl, ld.rpc)
	if err != nil {
		return err
	}
	defer sess.Close()
	sessCtx, cancel := context.WithCancel(sess.Context())
	defer cancel()
	pctx, pcancel := context.WithTimeout(sessCtx, ld.rpc)
	_, err = ld.cli.Put(pctx, leadership.CoordinatorKey(ld.id), ld.id, clientv3.WithLease(sess.Lease()))
	pcancel()
	if err != nil {
		return fmt.Errorf("register coordinator: %w", err)
	}
	ld.mu.Lock()
	ld.sess, ld.sessCtx, ld.sessionUp = sess, sessCtx, true
	ld.mu.Unlock()
	ld.log.Info().Str("coordinator", ld.id).Int64("lease", int64(sess.Lease())).Dur("ttl", ld.ttl).Msg("coordinator session started")

	watchErr := make(chan error, 1)
	go func() { watchErr <- ld.watchLive(sessCtx) }()

	var why error
	select {
	case <-ctx.Done():
	case <-sessCtx.Done():
		why = sess.Err()
	case err := <-watchErr:
		why = fmt.Errorf("watch coordinators: %w", err)
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
func (ld *elections) watchLive(ctx context.Context) error {
	gctx, cancel := context.WithTimeout(ctx, ld.rpc)
	resp, err := ld.cli.Get(gctx, leadership.CoordinatorsPrefix, clientv3.WithPrefix())
	cancel()
	if err != nil {
		return err
	}
	ld.mu.Lock()
	clear(ld.live)
	for _, kv := range resp.Kvs {
		if id, ok := leadership.CoordinatorID(string(kv.Key)); ok {
			ld.live[id] = true
		}
	}
	ld.rebalanceLocked("")
	ld.mu.Unlock()
	wch := ld.cli.Watch(clientv3.WithRequireLeader(ctx), leadership.CoordinatorsPrefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	for wr := range wch {
		if err := wr.Err(); err != nil {
			return err
		}
		ld.mu.Lock()
		for _, ev := range wr.Events {
			id, ok := leadership.CoordinatorID(string(ev.Kv.Key))
			if !ok {
				continue
			}
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
