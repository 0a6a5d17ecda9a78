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

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
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
}

// Defaults of Config.
const (
	DefaultAdvanceTimeout = 30 * time.Second
	DefaultRetryMin       = 200 * time.Millisecond
	DefaultRetryMax       = 30 * time.Second
	DefaultGiveUpAfter    = 10 * time.Minute
	DefaultEtcdTimeout    = 5 * time.Second
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
	c := &Coordinator{cfg: cfg, drivers: map[string]*driver{},
		log: cfg.Log.With().Str("component", "coordinator").Str("coordinator", cfg.ID).Logger()}
	c.leader = newElections(cfg.Etcd, cfg.ID, cfg.SessionTTL, cfg.EtcdTimeout, c.log, c.lead)
	return c
}

// Run drives operations until ctx ends: it keeps an etcd session, campaigns
// for the clusters it is preferred for, and watches the clusters' events
// (from the start of the stream, so that it knows every cluster and picks
// up operations an earlier leader left running).
func (c *Coordinator) Run(ctx context.Context) error {
	if c.cfg.ID == "" || c.cfg.Etcd == nil {
		return errors.New("coordinator: an id and an etcd client are required")
	}
	watch, err := c.cfg.JS.OrderedConsumer(ctx, eventstore.StreamName, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{eventstore.TypeSubjects(domain.AggregateCluster)},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("coordinator: watch cluster events: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); c.watchEvents(ctx, watch) }()
	go func() { defer wg.Done(); _ = c.leader.Run(ctx) }()
	c.log.Info().Str("pool", c.cfg.Pool).Dur("session_ttl", c.cfg.SessionTTL).Msg("coordinator started")
	<-ctx.Done()
	wg.Wait()
	c.log.Info().Msg("coordinator stopped")
	return nil
}

// watchEvents tracks every cluster and kicks the driver of a cluster this
// coordinator leads on every commit to it.
func (c *Coordinator) watchEvents(ctx context.Context, cons jetstream.Consumer) {
	for ctx.Err() == nil {
		msgs, err := cons.Messages()
		if err != nil {
			c.log.Warn().Err(err).Msg("watch cluster events")
			sleep(ctx, time.Second)
			continue
		}
		stop := context.AfterFunc(ctx, msgs.Stop)
		for {
			msg, err := msgs.Next()
			if err != nil {
				if ctx.Err() == nil && !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
					c.log.Warn().Err(err).Msg("watch cluster events")
				}
				break
			}
			if cluster := msg.Headers().Get(eventstore.HeaderAggregateID); cluster != "" {
				c.leader.track(cluster)
				c.mu.Lock()
				d := c.drivers[cluster]
				c.mu.Unlock()
				if d != nil {
					d.kick()
				}
			}
		}
		stop()
	}
}

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
