// Package coordinator drives operations: it turns an operation's plan into
// ready steps on the work queue, consumes the agents' results into events
// (StepStarted, StepSucceeded, StepFailed and the operation's outcome), and
// dispatches what became ready.
//
// Every dmgr server runs a coordinator, and each cluster has one leader
// among them, elected through etcd (one election per cluster, a session
// lease of SessionTTL; rendezvous hashing over the live coordinators picks
// who campaigns, so leadership spreads and moves back when a server
// returns). Only the leader of a cluster dispatches its steps and appends
// its progress, with its election key's revision as fencing token in every
// commit and step: the first thing a new leader appends is
// ClusterLeaderElected, after which the domain refuses the old token's
// writes and ignores its steps' results, and agents drop its queued steps.
// A leader stops all work for a cluster the moment its session ends or its
// keepalives stop answering for two thirds of the TTL, before etcd can
// expire its lease. The election (leadership.Session and Term, shared
// with the projector) and its keys (/dmgr/v1/leader/cluster/<cluster>,
// /dmgr/v1/coordinators/<id>) are package internal/leadership's.
//
// A coordinator campaigns only for the clusters that may have a running
// operation, not for every cluster it has ever seen: the coordinators
// share a durable, headers-only consumer of the clusters' commits
// (DiscoveryConsumer), and for every commit a command made (one without a
// fencing token) they write the cluster's active key in etcd
// (leadership.ActiveClusterKey) before they acknowledge it. Each
// coordinator reads those keys when its session starts and watches them:
// a key written makes its cluster one to campaign for (or kicks its
// driver), and the leader deletes the key, on the condition that it was
// not written again meanwhile, once it has read the cluster up to after
// that write and found no operation running. A start therefore reads the
// active keys and the commits not yet acknowledged, never the history;
// a new command on an idle cluster is campaigned for as soon as its
// commit is seen; and an operation that was running when every server
// stopped keeps its key, so it is led and finished after the restart.
// (The first start of a dmgr that had no such consumer reads the history
// once, and marks every cluster a command went to; their leaders release
// the idle ones.)
//
// A leader keeps its cluster's state in memory, folding in its own commits
// and reading only newer ones (service.TrackedCluster), so a step result
// costs one decision and one append. A result it cannot record or a step
// it cannot dispatch is tried again with a jittered, capped backoff; an
// operation whose failure can never pass, or lasts past GiveUpAfter, is
// failed with the error as its reason, never left stalled.
package coordinator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dmgr/dmgr/internal/leadership"
	"github.com/dmgr/dmgr/internal/service"
	"github.com/dmgr/dmgr/internal/workqueue"
)

// Config wires a coordinator.
type Config struct {
	ID      string // unique among the coordinators, e.g. the server's host and a random suffix
	Service *service.Service
	JS      jetstream.JetStream
	Etcd    *clientv3.Client
	// SessionTTL is the etcd lease behind leadership (default 5 s): a dead
	// leader's clusters are taken over about this long after it died.
	SessionTTL time.Duration
	Pool       string // agent pool for steps (default workqueue.DefaultPool)
	Log        zerolog.Logger

	// AdvanceTimeout bounds the reads and publishes of one pass over a
	// cluster (default 30 s); writes are bounded by the lease.
	AdvanceTimeout time.Duration
	// RetryMin and RetryMax bound the backoff between tries of an
	// operation that failed to advance (defaults 200 ms and 30 s).
	RetryMin, RetryMax time.Duration
	// GiveUpAfter is how long an operation may keep failing to advance
	// before the coordinator fails it with the error (default 10 min).
	GiveUpAfter time.Duration
	// EtcdTimeout bounds each etcd request of the leadership that is not
	// a wait by design (default 5 s).
	EtcdTimeout time.Duration
	// DownGiveUpAfter bounds how long Run goes on without an etcd session, or
	// without being able to mark the clusters commands went to, before it
	// fails (default 1 min, and at least three session TTLs): the process
	// then exits and is restarted rather than look alive while it cannot
	// lead anything.
	DownGiveUpAfter time.Duration
}

// Defaults of Config.
const (
	DefaultAdvanceTimeout = 30 * time.Second
	DefaultRetryMin       = 200 * time.Millisecond
	DefaultRetryMax       = 30 * time.Second
	DefaultGiveUpAfter    = 10 * time.Minute
	DefaultEtcdTimeout    = 5 * time.Second
	DefaultDownGiveUp     = time.Minute
)

// Coordinator drives the operations of the clusters it leads.
type Coordinator struct {
	cfg    Config
	log    zerolog.Logger
	leader *elections

	mu      sync.Mutex
	drivers map[string]*driver // the clusters this coordinator leads now
}

// New returns a coordinator; Run starts it.
func New(cfg Config) *Coordinator {
	if cfg.Pool == "" {
		cfg.Pool = workqueue.DefaultPool
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 5 * time.Second
	}
	if cfg.AdvanceTimeout <= 0 {
		cfg.AdvanceTimeout = DefaultAdvanceTimeout
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = DefaultRetryMin
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = max(DefaultRetryMax, cfg.RetryMin)
	}
	if cfg.GiveUpAfter <= 0 {
		cfg.GiveUpAfter = DefaultGiveUpAfter
	}
	if cfg.EtcdTimeout <= 0 {
		cfg.EtcdTimeout = DefaultEtcdTimeout
	}
	if cfg.DownGiveUpAfter <= 0 {
		cfg.DownGiveUpAfter = DefaultDownGiveUp
	}
	cfg.DownGiveUpAfter = max(cfg.DownGiveUpAfter, 3*cfg.SessionTTL)
	c := &Coordinator{cfg: cfg, drivers: map[string]*driver{},
		log: cfg.Log.With().Str("component", "coordinator").Str("coordinator", cfg.ID).Logger()}
	c.leader = newElections(cfg.Etcd, cfg.ID, cfg.SessionTTL, cfg.EtcdTimeout, cfg.DownGiveUpAfter, c.log, c.lead, c.kick)
	return c
}

// Run drives operations until ctx ends: it keeps an etcd session,
// campaigns for the active clusters it is preferred for, and marks the
// clusters that commands go to as active (see the package doc). It
// returns nil when ctx ends, and an error when it cannot go on: no etcd
// session, or no way to mark active clusters, for DownGiveUpAfter, or its
// etcd client closed.
func (c *Coordinator) Run(ctx context.Context) error {
	if c.cfg.ID == "" || c.cfg.Etcd == nil || c.cfg.JS == nil || c.cfg.Service == nil {
		return errors.New("coordinator: an id, an etcd client, JetStream and the service are required")
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 2)
	go func() { errs <- wrapErr("leadership", c.leader.Run(runCtx)) }()
	go func() { errs <- wrapErr("discovery", c.discover(runCtx)) }()
	c.log.Info().Str("pool", c.cfg.Pool).Dur("session_ttl", c.cfg.SessionTTL).Msg("coordinator started")
	var failure error
	received := 0
	select {
	case <-ctx.Done():
	case failure = <-errs:
		received++
	}
	cancel()
	for ; received < 2; received++ {
		<-errs
	}
	if ctx.Err() != nil {
		c.log.Info().Msg("coordinator stopped")
		return nil
	}
	if failure == nil {
		failure = errors.New("it stopped without an error")
	}
	return fmt.Errorf("coordinator %s: %w", c.cfg.ID, failure)
}

// kick asks the driver of a cluster this coordinator leads to look at the
// cluster again (a command was committed to it).
func (c *Coordinator) kick(cluster string) {
	c.mu.Lock()
	d := c.drivers[cluster]
	c.mu.Unlock()
	if d != nil {
		d.kick()
	}
}

// Tracked lists the clusters this coordinator tracks now: those with an
// active key, whether it campaigns for them or another coordinator does.
func (c *Coordinator) Tracked() []string { return c.leader.tracked() }

// lead drives one cluster while this coordinator leads it; ctx ends with
// the leadership.
func (c *Coordinator) lead(ctx context.Context, cluster string, term *leadership.Term) {
	d := newDriver(c, cluster, term)
	c.mu.Lock()
	c.drivers[cluster] = d
	c.mu.Unlock()
	d.run(ctx)
	c.mu.Lock()
	if c.drivers[cluster] == d {
		delete(c.drivers, cluster)
	}
	c.mu.Unlock()
}

// Leading lists the clusters this coordinator leads now, with their tokens.
func (c *Coordinator) Leading() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.drivers))
	for name, d := range c.drivers {
		out[name] = d.token
	}
	return out
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
