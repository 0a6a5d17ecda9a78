package coordinator

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/workqueue"
)

// driver does one cluster's work while this coordinator leads it, one
// thing at a time: record a result, then dispatch what became ready. Every
// write and dispatch carries the leader's token and happens only while the
// lease is known to be alive.
type driver struct {
	c       *Coordinator
	cluster string
	token   int64
	lease   *lease
	log     zerolog.Logger
	kicks   chan struct{}
	results chan workqueue.Result
	sub     jetstream.ConsumeContext // the cluster's results, while an operation runs
	subDone chan struct{}            // closed before sub stops: its callback must not wait for the driver then

	// active is the running operation and attempt as the last read of the
	// cluster found them: results of anything else are skipped without a
	// read of the cluster (a new operation's results subscription replays
	// the cluster's older results first).
	activeOp      string
	activeAttempt int

	// dispatched remembers the steps published under this leadership, so
	// that a kick does not publish them again; a new leader publishes them
	// again with its own token.
	dispatched map[string]bool
}

func newDriver(c *Coordinator, cluster string, token int64, l *lease) *driver {
	return &driver{c: c, cluster: cluster, token: token, lease: l,
		log:   c.log.With().Str("cluster", cluster).Int64("token", token).Logger(),
		kicks: make(chan struct{}, 1), results: make(chan workqueue.Result), dispatched: map[string]bool{}}
}

// kick asks the driver to look at the cluster again; kicks coalesce.
func (d *driver) kick() {
	select {
	case d.kicks <- struct{}{}:
	default:
	}
}

// run drives the cluster until ctx (the leadership) ends.
func (d *driver) run(ctx context.Context) {
	defer d.stopResults()
	d.kick()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.kicks:
		case r := <-d.results:
			if err := d.record(ctx, r); err != nil && ctx.Err() == nil {
				d.log.Warn().Err(err).Str("operation", r.Operation).Str("step", r.Step).Msg("record step result")
				d.kick() // the result is in the stream; the next read of it retries
			}
		}
		if err := d.advance(ctx); err != nil && ctx.Err() == nil {
			d.log.Warn().Err(err).Msg("advance operation")
		}
	}
}

// leaderCtx bounds a write by the lease's safety deadline, so that nothing
// is written after etcd may have handed the cluster to someone else.
func (d *driver) leaderCtx(ctx context.Context) (context.Context, context.CancelFunc, error) {
	if !d.lease.valid() {
		return nil, nil, fmt.Errorf("lease not confirmed within its safety window; not acting")
	}
	wctx, cancel := context.WithDeadline(ctx, d.lease.deadline())
	return wctx, cancel, nil
}

// record appends the events a result decides. Results of another leader's
// dispatches are not taken: their steps are dispatched again.
func (d *driver) record(ctx context.Context, r workqueue.Result) error {
	if r.Token != d.token || r.Operation != d.activeOp || r.Attempt != d.activeAttempt {
		return nil
	}
	wctx, cancel, err := d.leaderCtx(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	acc, recorded, err := d.c.cfg.Service.ReportStep(wctx, d.cluster, r.Report(), d.token)
	if err != nil {
		return err
	}
	if recorded {
		ev := d.log.Debug()
		if r.Finished && !r.OK {
			ev = d.log.Warn().Str("error", r.Error)
		}
		ev.Str("operation", r.Operation).Str("step", r.Step).Str("agent", r.Agent).Bool("finished", r.Finished).
			Uint64("commit_seq", acc.CommitSeq).Msg("step result recorded")
	}
	return nil
}

// advance re-reads the cluster; when an operation runs it records the
// leadership (once), follows the cluster's results, settles an operation
// with nothing left to run, and publishes every ready step not published
// yet under this leadership.
func (d *driver) advance(ctx context.Context) error {
	c, _, ok, err := d.c.cfg.Service.ClusterState(ctx, d.cluster)
	if err != nil || !ok {
		return err
	}
	op := c.ActiveOperation()
	if op == nil {
		d.activeOp, d.activeAttempt = "", 0
		d.stopResults()
		clear(d.dispatched)
		return nil
	}
	d.activeOp, d.activeAttempt = op.ID, op.Attempt
	switch {
	case c.LeaderToken > d.token:
		return fmt.Errorf("cluster is led by token %d; this leadership is stale", c.LeaderToken)
	case c.LeaderToken < d.token:
		wctx, cancel, err := d.leaderCtx(ctx)
		if err != nil {
			return err
		}
		defer cancel()
		if _, err := d.c.cfg.Service.TakeLeadership(wctx, d.cluster, op.ID, d.token, d.c.cfg.ID); err != nil {
			return fmt.Errorf("record leadership: %w", err)
		}
		d.log.Info().Str("operation", op.ID).Msg("took over the running operation")
		d.kick() // re-read with the leadership recorded
		return nil
	}
	if err := d.followResults(ctx); err != nil {
		return err
	}
	p := op.Progress()
	if p.Done {
		wctx, cancel, err := d.leaderCtx(ctx)
		if err != nil {
			return err
		}
		defer cancel()
		_, err = d.c.cfg.Service.SettleOperation(wctx, d.cluster, op.ID, d.token)
		return err
	}
	var machines map[string]domain.Machine
	for _, s := range p.Ready {
		key := fmt.Sprintf("%s/%d/%s", op.ID, op.Attempt, s.ID)
		if d.dispatched[key] {
			continue
		}
		if machines == nil {
			machines = map[string]domain.Machine{}
		}
		m, ok := machines[s.Host]
		if !ok && s.Host != "" {
			m, err = d.c.cfg.Service.Machine(ctx, s.Host)
			if err != nil {
				if domain.ErrorCode(err) == domain.NotFound {
					if err := d.failUndeliverable(ctx, op, s, err); err != nil {
						return err
					}
					d.dispatched[key] = true
					continue
				}
				return err
			}
			machines[s.Host] = m
		}
		if !d.lease.valid() {
			return fmt.Errorf("lease not confirmed within its safety window; not dispatching")
		}
		// The message names the step only: agents read its definition,
		// machine and credential from the committed events.
		disp := workqueue.Dispatch{Cluster: d.cluster, Operation: op.ID, Attempt: op.Attempt, Token: d.token, Step: s.ID}
		if err := workqueue.PublishDispatch(ctx, d.c.cfg.JS, d.c.cfg.Pool, disp); err != nil {
			return err
		}
		d.dispatched[key] = true
		d.log.Debug().Str("operation", op.ID).Str("step", s.ID).Str("host", s.Host).Msg("step dispatched")
	}
	return nil
}

// followResults reads the cluster's results from the start of the stream:
// what was recorded before is recognised and skipped, so a new leader
// misses nothing that arrived while nobody led.
func (d *driver) followResults(ctx context.Context) error {
	if d.sub != nil {
		return nil
	}
	cons, err := d.c.cfg.JS.OrderedConsumer(ctx, workqueue.ResultsStream, jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{workqueue.ResultSubject(d.cluster)},
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: 30 * time.Second, // gone soon after the operation ends
	})
	if err != nil {
		return fmt.Errorf("follow results: %w", err)
	}
	done := make(chan struct{})
	d.sub, err = cons.Consume(func(msg jetstream.Msg) {
		var r workqueue.Result
		if err := workqueue.Decode(msg, &r); err != nil {
			d.log.Error().Err(err).Msg("undecodable result skipped")
			return
		}
		select {
		case d.results <- r:
		case <-done:
		case <-ctx.Done():
		}
	})
	d.subDone = done
	if err != nil {
		return fmt.Errorf("follow results: %w", err)
	}
	return nil
}

// stopResults stops following the results. The driver is the only reader
// of the callback's channel, so the callback is released first: Stop waits
// for a callback in flight.
func (d *driver) stopResults() {
	if d.sub != nil {
		close(d.subDone)
		d.sub.Stop()
		d.sub, d.subDone = nil, nil
	}
}

// failUndeliverable records a step that cannot be dispatched because its
// machine is gone.
func (d *driver) failUndeliverable(ctx context.Context, op *domain.Operation, s domain.Step, cause error) error {
	wctx, cancel, err := d.leaderCtx(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	_, _, err = d.c.cfg.Service.ReportStep(wctx, d.cluster, domain.StepReport{Operation: op.ID, Step: s.ID,
		Attempt: op.Attempt, Token: d.token, Agent: "coordinator", Finished: true,
		Error: fmt.Sprintf("step %s on %s: %s", s.ID, s.Host, domain.ErrorMessage(cause))}, d.token)
	return err
}
