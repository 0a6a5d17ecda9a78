package coordinator

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
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
// It tracks only the clusters with an active key in etcd
// (leadership.ActiveClusterKey: a command was committed to the cluster
// and its leader has not yet seen it idle), read once per session and
// then watched: a start costs one etcd read of those keys, whatever the
// number of clusters or commits. A key written again (another command)
// kicks the cluster's driver; a key deleted (its leader saw no operation
// running) ends the campaign, and with it the leadership.
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
	kick func(cluster string) // a command was committed to a tracked cluster
	// giveUp is how long Run goes on without a session before it fails.
	giveUp time.Duration

	mu        sync.Mutex
	live      map[string]bool
	clusters  map[string]*campaign     // tracked (active) clusters; nil value: not campaigning
	ending    map[string]chan struct{} // per cluster, the last campaign stopped while the session lasts, until it is done
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

func newElections(cli *clientv3.Client, id string, ttl, rpc, giveUp time.Duration, log zerolog.Logger,
	lead func(ctx context.Context, cluster string, term *leadership.Term), kick func(string)) *elections {
	return &elections{cli: cli, id: id, ttl: ttl, rpc: rpc, giveUp: giveUp, log: log, lead: lead, kick: kick,
		live: map[string]bool{}, clusters: map[string]*campaign{}, ending: map[string]chan struct{}{}}
}

// trackLocked makes a cluster one this coordinator may lead; a cluster
// tracked already is kicked (its key was written again: a new command).
func (ld *elections) trackLocked(cluster string) {
	if _, ok := ld.clusters[cluster]; ok {
		ld.kick(cluster)
		return
	}
	ld.clusters[cluster] = nil
	ld.rebalanceLocked(cluster)
}

// untrackLocked stops campaigning for a cluster (resigning when it leads
// it): its leader saw it idle and deleted its active key.
func (ld *elections) untrackLocked(cluster string) {
	if c := ld.clusters[cluster]; c != nil {
		ld.endLocked(cluster, c)
	}
	delete(ld.clusters, cluster)
}

// endLocked stops a cluster's campaign (it resigns when it leads) and
// remembers it until it is done: the cluster's next campaign begins only
// then, and the end of the session waits for it. Those done already are
// forgotten.
func (ld *elections) endLocked(cluster string, c *campaign) {
	c.cancel()
	maps.DeleteFunc(ld.ending, func(_ string, done chan struct{}) bool { return isDone(done) })
	// A campaign ends only after the one it followed: c.done stands for both.
	ld.ending[cluster] = c.done
}

func isDone(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// tracked lists the clusters this coordinator tracks now.
func (ld *elections) tracked() []string {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	out := make([]string, 0, len(ld.clusters))
	for c := range ld.clusters {
		out = append(out, c)
	}
	return out
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
			ld.endLocked(cluster, c)
			ld.clusters[cluster] = nil
		}
	}
}

// campaignLocked starts campaigning for a cluster under the session, once
// the cluster's previous campaign, if one is ending, is done: its driver
// has stopped and its term resigned, so that one coordinator never drives
// a cluster twice at once. While the campaign lasts (the cluster is
// tracked and this coordinator preferred for it), a term that ends (its
// key deleted) or a campaign that fails is followed by another: a cluster
// with pending work is never left without a candidate here.
func (ld *elections) campaignLocked(cluster string) *campaign {
	ctx, cancel := context.WithCancel(ld.sessCtx)
	c := &campaign{cancel: cancel, done: make(chan struct{})}
	prev := ld.ending[cluster]
	delete(ld.ending, cluster)
	sess := ld.sess
	log := ld.log.With().Str("cluster", cluster).Logger()
	go func() {
		defer close(c.done)
		if prev != nil {
			<-prev // bounded: its context has ended, its resignation takes at most two seconds
		}
		// n counts the campaigns that failed and the terms lost early in
		// a row: the pause before the next campaign grows with it.
		for n := 0; ctx.Err() == nil; {
			term, err := sess.Campaign(ctx, leadership.ClusterElection(cluster), ld.id)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				n++
				wait := backoff(n, campaignRetryMin, max(campaignRetryMin, ld.ttl))
				log.Warn().Err(err).Dur("retry_in", wait).Msg("campaign")
				sleep(ctx, wait)
				continue
			}
			began := time.Now()
			ld.leadTerm(ctx, log, cluster, term)
			if ctx.Err() != nil {
				return
			}
			// The term ended while the cluster is still active and this
			// coordinator preferred for it (its key was deleted): campaign
			// again.
			if time.Since(began) >= ld.ttl {
				n = 0
			}
			n++
			wait := backoff(n, campaignRetryMin, max(campaignRetryMin, ld.ttl))
			log.Warn().Err(context.Cause(term.Context())).Int64("token", term.Token).Dur("retry_in", wait).
				Msg("leadership lost while the cluster is active; campaigning again")
			sleep(ctx, wait)
		}
	}()
	return c
}

// campaignRetryMin is the first pause before a campaign is tried again.
const campaignRetryMin = 100 * time.Millisecond

// leadTerm leads a cluster for one term and resigns it.
func (ld *elections) leadTerm(ctx context.Context, log zerolog.Logger, cluster string, term *leadership.Term) {
	defer func() {
		// Resign, so that the next candidate need not wait for the lease
		// (a key gone with its lease, or deleted, is left alone).
		if err := term.Resign(context.WithoutCancel(ctx)); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			log.Debug().Err(err).Msg("resign")
		}
	}()
	log.Info().Int64("token", term.Token).Msg("leading cluster")
	ld.lead(term.Context(), cluster, term)
	log.Info().Int64("token", term.Token).Msg("no longer leading cluster")
}

// Run keeps a session and the campaigns until ctx ends. When the session
// ends, or its keepalives stop answering for longer than the safety
// window, every campaign and everything it leads stops at once, and a new
// session starts. Run fails when no session could be kept for giveUp
// (etcd unreachable, or refusing the coordinator's keys), or at once when
// the etcd client is closed: a coordinator that cannot lead anything must
// not look alive.
func (ld *elections) Run(ctx context.Context) error {
	var down time.Time // since when no session could be started; zero while one could
	for ctx.Err() == nil {
		up, err := ld.session(ctx)
		if ctx.Err() != nil {
			break
		}
		if up {
			down = time.Time{}
		} else if down.IsZero() {
			down = time.Now()
		}
		if cerr := ld.cli.Ctx().Err(); cerr != nil {
			return fmt.Errorf("etcd client closed: %w", errors.Join(err, cerr))
		}
		if !down.IsZero() && time.Since(down) >= ld.giveUp {
			return fmt.Errorf("no etcd session for %s: %w", time.Since(down).Round(time.Second), err)
		}
		ld.log.Warn().Err(err).Msg("coordinator session ended; starting a new one")
		sleep(ctx, time.Second)
	}
	return nil
}

// session runs one session; up reports whether it got as far as leading
// (registered, and the live coordinators and active clusters read).
func (ld *elections) session(ctx context.Context) (up bool, err error) {
	sess, err := leadership.NewSession(ctx, ld.cli, ld.ttl, ld.rpc)
	if err != nil {
		return false, err
	}
	defer sess.Close()
	sessCtx, cancel := context.WithCancel(sess.Context())
	defer cancel()
	pctx, pcancel := context.WithTimeout(sessCtx, ld.rpc)
	_, err = ld.cli.Put(pctx, leadership.CoordinatorKey(ld.id), ld.id, clientv3.WithLease(sess.Lease()))
	pcancel()
	if err != nil {
		return false, fmt.Errorf("register coordinator: %w", err)
	}
	// The live coordinators and the active clusters, read at one revision:
	// the only read a start makes, whatever the history holds.
	gctx, gcancel := context.WithTimeout(sessCtx, ld.rpc)
	snap, err := ld.cli.Txn(gctx).Then(
		clientv3.OpGet(leadership.CoordinatorsPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		clientv3.OpGet(leadership.ActiveClustersPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly()),
	).Commit()
	gcancel()
	if err != nil {
		return false, fmt.Errorf("read coordinators and active clusters: %w", err)
	}
	ld.mu.Lock()
	ld.sess, ld.sessCtx, ld.sessionUp = sess, sessCtx, true
	for _, kv := range snap.Responses[0].GetResponseRange().Kvs {
		if id, ok := leadership.CoordinatorID(string(kv.Key)); ok {
			ld.live[id] = true
		}
	}
	active := snap.Responses[1].GetResponseRange().Kvs
	for _, kv := range active {
		if cluster, ok := leadership.ActiveCluster(string(kv.Key)); ok {
			ld.clusters[cluster] = nil
		}
	}
	ld.rebalanceLocked("")
	ld.mu.Unlock()
	ld.log.Info().Int64("lease", int64(sess.Lease())).Dur("ttl", ld.ttl).
		Int("active_clusters", len(active)).Msg("coordinator session started")

	watchErr := make(chan error, 2)
	from := snap.Header.Revision + 1
	go func() { watchErr <- wrapErr("watch coordinators", ld.watchLive(sessCtx, from)) }()
	go func() { watchErr <- wrapErr("watch active clusters", ld.watchActive(sessCtx, from)) }()

	var why error
	select {
	case <-ctx.Done():
	case <-sessCtx.Done():
		why = sess.Err()
	case why = <-watchErr:
	}
	// Stop leading everything before anything else happens.
	cancel()
	ld.mu.Lock()
	ld.sessionUp = false
	var waits []chan struct{}
	for _, c := range ld.clusters {
		if c != nil {
			waits = append(waits, c.done)
		}
	}
	for _, done := range ld.ending {
		waits = append(waits, done)
	}
	clear(ld.ending)
	// The next session reads the active clusters again.
	clear(ld.clusters)
	clear(ld.live)
	ld.mu.Unlock()
	for _, w := range waits {
		<-w
	}
	return true, why
}

func wrapErr(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}

// watchActive follows the active clusters' keys from revision from on: a
// key written tracks its cluster (or kicks it when tracked), a key
// deleted stops its campaign.
func (ld *elections) watchActive(ctx context.Context, from int64) error {
	wch := ld.cli.Watch(clientv3.WithRequireLeader(ctx), leadership.ActiveClustersPrefix, clientv3.WithPrefix(),
		clientv3.WithRev(from), clientv3.WithKeysOnly())
	for wr := range wch {
		if err := wr.Err(); err != nil {
			return err
		}
		ld.mu.Lock()
		for _, ev := range wr.Events {
			cluster, ok := leadership.ActiveCluster(string(ev.Kv.Key))
			if !ok {
				continue
			}
			if ev.Type == clientv3.EventTypeDelete {
				ld.untrackLocked(cluster)
			} else {
				ld.trackLocked(cluster)
			}
		}
		ld.mu.Unlock()
	}
	if ctx.Err() != nil {
		return nil
	}
	return errors.New("watch closed")
}

// watchLive keeps the set of live coordinators from revision from on and
// rebalances on change.
func (ld *elections) watchLive(ctx context.Context, from int64) error {
	wch := ld.cli.Watch(clientv3.WithRequireLeader(ctx), leadership.CoordinatorsPrefix, clientv3.WithPrefix(), clientv3.WithRev(from))
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
