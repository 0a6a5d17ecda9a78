package coordinator

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/internal/leadership"
)

// DiscoveryConsumer is the durable consumer of the event stream, shared
// by every coordinator, through which the coordinators learn which
// clusters commands went to. It delivers headers only, and a commit is
// acknowledged once its cluster's active key is written: a restart
// resumes after the last acknowledged commit, so it reads what it has not
// seen, never the history.
const DiscoveryConsumer = "dmgr-coordinator-discovery"

// discoveryBatch is the most commits marked with one etcd transaction
// (and the consumer's buffer).
const discoveryBatch = 512

// etcdTxnOps is how many puts go into one etcd transaction (etcd's
// default --max-txn-ops is 128).
const etcdTxnOps = 100

// errGiveUp marks a discovery failure that lasted past DownGiveUpAfter.
var errGiveUp = errors.New("gave up")

// DiscoveryConsumerConfig is the configuration of DiscoveryConsumer.
func DiscoveryConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       DiscoveryConsumer,
		Description:   "dmgr coordinators: marks the clusters that commands go to as active",
		FilterSubject: eventstore.TypeSubjects(domain.AggregateCluster),
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 4 * discoveryBatch,
		HeadersOnly:   true,
	}
}

// discover marks the clusters that commands go to as active, until ctx
// ends. It fails when the consumer cannot be opened, or a batch cannot be
// marked, for DownGiveUpAfter.
func (c *Coordinator) discover(ctx context.Context) error {
	var down time.Time // since when the consumer could not be opened; zero while it could
	for n := 1; ctx.Err() == nil; n++ {
		opened, err := c.discoverOnce(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, errGiveUp):
			return err
		case opened:
			down, n = time.Time{}, 1
		case down.IsZero():
			down = time.Now()
		}
		if !down.IsZero() && time.Since(down) >= c.cfg.DownGiveUpAfter {
			return fmt.Errorf("consumer %s not open for %s: %w", DiscoveryConsumer, time.Since(down).Round(time.Second), err)
		}
		wait := backoff(n, c.cfg.RetryMin, c.cfg.RetryMax)
		c.log.Warn().Err(err).Dur("retry_in", wait).Msg("discovery of active clusters")
		sleep(ctx, wait)
	}
	return nil
}

// discoverOnce opens the consumer and marks what it delivers until ctx
// ends or the consumer fails; opened reports whether it got that far.
func (c *Coordinator) discoverOnce(ctx context.Context) (opened bool, err error) {
	cctx, cancel := context.WithTimeout(ctx, c.cfg.AdvanceTimeout)
	cons, err := c.cfg.JS.CreateOrUpdateConsumer(cctx, eventstore.StreamName, DiscoveryConsumerConfig())
	cancel()
	if err != nil {
		return false, fmt.Errorf("open consumer %s: %w", DiscoveryConsumer, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(discoveryBatch))
	if err != nil {
		return false, fmt.Errorf("consume %s: %w", DiscoveryConsumer, err)
	}
	defer it.Stop()
	stopIt := context.AfterFunc(ctx, it.Stop)
	defer stopIt()

	// A pump hands messages over, so that what is buffered is marked in
	// one batch and the first message is marked without waiting for more.
	msgs := make(chan jetstream.Msg, discoveryBatch)
	pumpErr := make(chan error, 1)
	done := make(chan struct{})
	defer close(done)
	go func() {
		defer close(msgs)
		for {
			m, err := it.Next()
			if err != nil {
				pumpErr <- err
				return
			}
			select {
			case msgs <- m:
			case <-done:
				return
			}
		}
	}()
	for {
		var batch []jetstream.Msg
		select {
		case <-ctx.Done():
			return true, nil
		case m, ok := <-msgs:
			if !ok {
				return true, fmt.Errorf("consume %s: %w", DiscoveryConsumer, <-pumpErr)
			}
			batch = append(batch, m)
		}
	drain:
		for len(batch) < discoveryBatch {
			select {
			case m, ok := <-msgs:
				if !ok {
					break drain
				}
				batch = append(batch, m)
			default:
				break drain
			}
		}
		if err := c.markBatch(ctx, batch); err != nil {
			return true, err
		}
	}
}

// markBatch writes the active key of every cluster a command in batch
// went to, then acknowledges the batch. A failed write is tried again
// with backoff (the messages kept in progress meanwhile) until it passes,
// ctx ends, or DownGiveUpAfter passes.
func (c *Coordinator) markBatch(ctx context.Context, batch []jetstream.Msg) error {
	marks := map[string]uint64{}
	for _, m := range batch {
		h := m.Headers()
		// The leaders' own progress carries their token: its cluster is
		// active already, and stays so until its leader sees it idle.
		if h.Get(eventstore.HeaderFencingToken) != "" {
			continue
		}
		cluster := h.Get(eventstore.HeaderAggregateID)
		if cluster == "" {
			continue
		}
		var seq uint64
		if md, err := m.Metadata(); err == nil {
			seq = md.Sequence.Stream
		}
		marks[cluster] = max(marks[cluster], seq)
	}
	var since time.Time
	for n := 1; len(marks) > 0; n++ {
		err := c.mark(ctx, marks)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		if since.IsZero() {
			since = time.Now()
		}
		if time.Since(since) >= c.cfg.DownGiveUpAfter {
			return fmt.Errorf("%w: could not mark %d clusters active for %s: %w", errGiveUp, len(marks), time.Since(since).Round(time.Second), err)
		}
		wait := backoff(n, c.cfg.RetryMin, c.cfg.RetryMax)
		c.log.Warn().Err(err).Int("clusters", len(marks)).Dur("retry_in", wait).Msg("mark clusters active")
		for _, m := range batch {
			_ = m.InProgress()
		}
		sleep(ctx, wait)
	}
	for _, m := range batch {
		if err := m.Ack(); err != nil && ctx.Err() == nil {
			// Delivered again later: marked again, which only kicks.
			c.log.Debug().Err(err).Msg("ack discovered commit")
		}
	}
	return nil
}

// mark writes the active keys of clusters (cluster → the last commit seen),
// in transactions of etcdTxnOps puts.
func (c *Coordinator) mark(ctx context.Context, clusters map[string]uint64) error {
	ops := make([]clientv3.Op, 0, min(len(clusters), etcdTxnOps))
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		tctx, cancel := context.WithTimeout(ctx, c.cfg.EtcdTimeout)
		defer cancel()
		if _, err := c.cfg.Etcd.Txn(tctx).Then(ops...).Commit(); err != nil {
			return fmt.Errorf("write active keys: %w", err)
		}
		ops = ops[:0]
		return nil
	}
	for cluster, seq := range clusters {
		ops = append(ops, clientv3.OpPut(leadership.ActiveClusterKey(cluster), strconv.FormatUint(seq, 10)))
		if len(ops) == etcdTxnOps {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	for cluster, seq := range clusters {
		c.log.Debug().Str("cluster", cluster).Uint64("commit_seq", seq).Msg("cluster marked active")
		delete(clusters, cluster)
	}
	return nil
}
