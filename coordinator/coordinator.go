// Package coordinator drives operations: it turns an operation's plan into
// ready steps on the work queue, consumes the agents' results into events
// (StepStarted, StepSucceeded, StepFailed and the operation's outcome), and
// dispatches what became ready.
//
// All work for one cluster goes through that cluster's driver, which runs
// one thing at a time and re-reads the cluster's events before it acts.
// A driver is the unit that leadership (one writer per cluster, elected
// through etcd) turns on and off; with a single coordinator every driver
// runs.
package coordinator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/service"
	"github.com/dmgr/dmgr/workqueue"
)

// Config wires a coordinator.
type Config struct {
	Service *service.Service
	JS      jetstream.JetStream
	Pool    string // agent pool for steps (default workqueue.DefaultPool)
	Log     zerolog.Logger
}

// Coordinator drives every cluster's operations.
type Coordinator struct {
	cfg Config
	log zerolog.Logger

	mu      sync.Mutex
	drivers map[string]*driver
}

// New returns a coordinator; Run starts it.
func New(cfg Config) *Coordinator {
	if cfg.Pool == "" {
		cfg.Pool = workqueue.DefaultPool
	}
	return &Coordinator{cfg: cfg, log: cfg.Log.With().Str("component", "coordinator").Logger(), drivers: map[string]*driver{}}
}

// Run drives operations until ctx ends: it watches the clusters' events
// (from the start of the stream, so that operations left running by an
// earlier process resume) and consumes step results.
func (c *Coordinator) Run(ctx context.Context) error {
	results, err := c.cfg.JS.CreateOrUpdateConsumer(ctx, workqueue.ResultsStream, workqueue.ResultsConsumerConfig())
	if err != nil {
		return fmt.Errorf("coordinator: results consumer: %w", err)
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
	go func() { defer wg.Done(); c.consumeResults(ctx, results) }()
	c.log.Info().Str("pool", c.cfg.Pool).Msg("coordinator started")
	<-ctx.Done()
	wg.Wait()
	c.mu.Lock()
	for _, d := range c.drivers {
		d.stop()
	}
	c.mu.Unlock()
	c.log.Info().Msg("coordinator stopped")
	return nil
}

// watchEvents kicks a cluster's driver on every commit to the cluster.
func (c *Coordinator) watchEvents(ctx context.Context, cons jetstream.Consumer) {
	for ctx.Err() == nil {
		msgs, err := cons.Messages()
		if err != nil {
			c.log.Warn().Err(err).Msg("watch cluster events")
			sleep(ctx, time.Second)
			continue
		}
		go func() { <-ctx.Done(); msgs.Stop() }()
		for {
			msg, err := msgs.Next()
			if err != nil {
				if ctx.Err() == nil && !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
					c.log.Warn().Err(err).Msg("watch cluster events")
				}
				break
			}
			if cluster := msg.Headers().Get(eventstore.HeaderAggregateID); cluster != "" {
				c.driver(ctx, cluster).kick()
			}
		}
	}
}

// consumeResults turns results into events, one at a time per cluster, and
// acks each once its events are stored (or it is known to be stale).
func (c *Coordinator) consumeResults(ctx context.Context, cons jetstream.Consumer) {
	for ctx.Err() == nil {
		batch, err := cons.Fetch(64, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			if ctx.Err() == nil {
				c.log.Warn().Err(err).Msg("fetch results")
				sleep(ctx, time.Second)
			}
			continue
		}
		for msg := range batch.Messages() {
			var r workqueue.Result
			if err := workqueue.Decode(msg, &r); err != nil {
				c.log.Error().Err(err).Msg("undecodable result dropped")
				_ = msg.Term()
				continue
			}
			if err := c.driver(ctx, r.Cluster).report(ctx, r); err != nil {
				if code := domain.ErrorCode(err); code == domain.NotFound || code == domain.Invalid {
					// Redelivery cannot help a result for a cluster that
					// does not exist.
					c.log.Warn().Err(err).Str("cluster", r.Cluster).Str("operation", r.Operation).Str("step", r.Step).
						Msg("step result dropped")
					_ = msg.Term()
					continue
				}
				if ctx.Err() == nil {
					c.log.Warn().Err(err).Str("cluster", r.Cluster).Str("operation", r.Operation).Str("step", r.Step).
						Msg("record step result; it will be redelivered")
				}
				_ = msg.NakWithDelay(time.Second)
				continue
			}
			_ = msg.Ack()
		}
	}
}

// driver returns the cluster's driver, starting it on first use.
func (c *Coordinator) driver(ctx context.Context, cluster string) *driver {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := c.drivers[cluster]
	if d == nil {
		d = newDriver(ctx, c, cluster)
		c.drivers[cluster] = d
	}
	return d
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
