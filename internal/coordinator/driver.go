package coordinator

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/leadership"
	"github.com/dmgr/dmgr/internal/service"
	"github.com/dmgr/dmgr/internal/workqueue"
)

// driver does one cluster's work while this coordinator leads it, one
// thing at a time: record a result, then dispatch what became ready. Every
// write and dispatch carries the leader's token and happens only while the
// lease is known to be alive.
//
// The driver keeps the cluster's state in memory (service.TrackedCluster):
// a result is decided on it and its events folded in after the append; a
// kick (a commit to the cluster, seen by the watch) reads only the commits
// after the last one folded.
//
// When recording a result or advancing fails, the driver tries again after
// a jittered, capped, exponential backoff. A failure that can never pass
// (failurePermanent), or one that lasts past Config.GiveUpAfter, fails the
// operation with the error as its reason (domain.DecideAbandonOperation),
// so that an accepted operation never stalls without saying why.
type driver struct {
	c       *Coordinator
	cluster string
	token   int64
	term    *leadership.Term
	log     zerolog.Logger
	tracked *service.TrackedCluster
	failing failure // the current run of failures, if any
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

// failure is a run of consecutive failures to drive an operation.
type failure struct {
	op    string // operation/attempt that was active when the run began ("" none)
	since time.Time
	n     int
}

// errNotLeading marks failures that say this coordinator must not act
// (stale leadership, lease not confirmed): retried, never a reason to fail
// the operation.
var errNotLeading = errors.New("not acting as leader")

func newDriver(c *Coordinator, cluster string, term *leadership.Term) *driver {
	token := term.Token
	return &driver{c: c, cluster: cluster, token: token, term: term, tracked: c.cfg.Service.TrackCluster(cluster),
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
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	d.kick()
	for {
		var err error
		refresh := true
		select {
		case <-ctx.Done():
			return
		case <-d.kicks:
		case <-retry.C:
		case r := <-d.results:
			// The state in memory is current as far as this driver knows:
			// a commit of someone else's kicks, and a conflict re-reads.
			refresh = false
			if err = d.record(ctx, r); err != nil {
				// The result stays in its stream: following the results
				// again from the start delivers it again (what was recorded
				// is recognised and skipped).
				d.stopResults()
				err = fmt.Errorf("record result of step %s of operation %s: %w", r.Step, r.Operation, err)
			}
		}
		if err == nil {
			err = d.advance(ctx, refresh)
		}
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			if d.failing.n > 0 {
				d.log.Info().Str("operation", d.failing.op).Int("failures", d.failing.n).Msg("operation advances again")
			}
			d.failing = failure{}
			retry.Stop()
			continue
		}
		retry.Reset(d.failed(ctx, err))
	}
}

// failed handles a failure to record or advance: it fails the operation
// when the failure is permanent or has lasted past GiveUpAfter, and
// returns how long to wait before trying again.
func (d *driver) failed(ctx context.Context, err error) time.Duration {
	op := ""
	if d.activeOp != "" {
		op = fmt.Sprintf("%s/%d", d.activeOp, d.activeAttempt)
	}
	now := time.Now()
	if d.failing.n == 0 || d.failing.op != op {
		d.failing = failure{op: op, since: now}
	}
	d.failing.n++
	permanent := failurePermanent(err)
	if d.activeOp != "" && !errors.Is(err, errNotLeading) &&
		(permanent || now.Sub(d.failing.since) >= d.c.cfg.GiveUpAfter) {
		if aerr := d.abandon(ctx, err); aerr == nil {
			d.failing = failure{}
			d.kick()
			return d.c.cfg.RetryMin
		} else if ctx.Err() == nil {
			d.log.Warn().Err(aerr).Str("operation", d.activeOp).Msg("fail operation that cannot advance")
		}
	}
	wait := backoff(d.failing.n, d.c.cfg.RetryMin, d.c.cfg.RetryMax)
	d.log.Warn().Err(err).Str("operation", d.activeOp).Int("failures", d.failing.n).Bool("permanent", permanent).
		Dur("retry_in", wait).Msg("advance operation")
	return wait
}

// abandon fails the active operation with the error as its reason.
func (d *driver) abandon(ctx context.Context, cause error) error {
	wctx, cancel, err := d.leaderCtx(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	reason := cause.Error()
	if msg := domain.ErrorMessage(cause); domain.ErrorCode(cause) != domain.Internal {
		reason = msg
	}
	acc, err := d.tracked.AbandonOperation(wctx, domain.AbandonOperation{ID: d.activeOp, Attempt: d.activeAttempt,
		Reason: reason}, d.token)
	if err != nil {
		return err
	}
	d.log.Error().Str("operation", d.activeOp).Int("attempt", d.activeAttempt).Str("reason", reason).
		Uint64("commit_seq", acc.CommitSeq).Msg("operation failed: the coordinator could not advance it")
	return nil
}

// failurePermanent reports whether a failure will never pass by trying
// again: a decision the domain refuses for good, or a message the bus
// will never take.
func failurePermanent(err error) bool {
	switch domain.ErrorCode(err) {
	case domain.Invalid, domain.NotFound, domain.TooLarge:
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum {
		return true
	}
	return errors.Is(err, nats.ErrMaxPayload)
}

// backoff is the wait before try n+1: min doubled per failure, capped at
// max, with its upper half jittered so that drivers that failed together
// do not try again together.
func backoff(n int, min, max time.Duration) time.Duration {
	d := max
	if n < 32 {
		if b := min << (n - 1); b > 0 && b < max {
			d = b
		}
	}
	return d/2 + rand.N(d/2+1)
}

// leaderCtx bounds a write by the lease's safety deadline, so that nothing
// is written after etcd may have handed the cluster to someone else.
func (d *driver) leaderCtx(ctx context.Context) (context.Context, context.CancelFunc, error) {
	wctx, cancel, err := d.term.WriteContext(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", errNotLeading, err)
	}
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
	acc, recorded, err := d.tracked.ReportStep(wctx, r.Report(), d.token)
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

// advance brings the cluster's state up to date (when refresh is set);
// when an operation runs it records the leadership (once), follows the
// cluster's results, settles an operation with nothing left to run, and
// publishes every ready step not published yet under this leadership.
// Its reads and publishes are bounded by AdvanceTimeout, its writes by the
// lease.
func (d *driver) advance(lead context.Context, refresh bool) error {
	ctx, cancel := context.WithTimeout(lead, d.c.cfg.AdvanceTimeout)
	defer cancel()
	if refresh {
		if _, err := d.tracked.Refresh(ctx); err != nil {
			return err
		}
	}
	c, ok := d.tracked.State()
	var op *domain.Operation
	if ok {
		op = c.ActiveOperation()
	}
	if op == nil {
		d.activeOp, d.activeAttempt = "", 0
		d.stopResults()
		clear(d.dispatched)
		return d.release(ctx)
	}
	var err error
	d.activeOp, d.activeAttempt = op.ID, op.Attempt
	switch {
	case c.LeaderToken > d.token:
		return fmt.Errorf("cluster is led by token %d; this leadership is stale: %w", c.LeaderToken, errNotLeading)
	case c.LeaderToken < d.token:
		wctx, cancel, err := d.leaderCtx(ctx)
		if err != nil {
			return err
		}
		defer cancel()
		if _, err := d.tracked.TakeLeadership(wctx, op.ID, d.token, d.c.cfg.ID); err != nil {
			if domain.ErrorCode(err) == domain.Conflict {
				err = fmt.Errorf("%w: %w", err, errNotLeading)
			}
			return fmt.Errorf("record leadership: %w", err)
		}
		d.log.Info().Str("operation", op.ID).Msg("took over the running operation")
		d.kick() // go on with the leadership recorded
		return nil
	}
	if err := d.followResults(lead, ctx); err != nil {
		return err
	}
	p := op.Progress()
	if p.Done {
		wctx, cancel, err := d.leaderCtx(ctx)
		if err != nil {
			return err
		}
		defer cancel()
		_, err = d.tracked.SettleOperation(wctx, op.ID, d.token)
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
		if !d.term.Valid() {
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

// release deletes the cluster's active key once no operation runs, so
// that no coordinator campaigns for it until the next command: the key is
// read first, the cluster is read up to now, and the key is deleted only
// if it was not written again meanwhile. Every commit that made the key
// what it is was committed before the key was read, so the read saw it;
// a command committed since writes the key again, and the delete does not
// happen (the driver looks at the cluster again).
func (d *driver) release(ctx context.Context) error {
	key := leadership.ActiveClusterKey(d.cluster)
	ectx, cancel := context.WithTimeout(ctx, d.c.cfg.EtcdTimeout)
	defer cancel()
	resp, err := d.c.cfg.Etcd.Get(ectx, key)
	if err != nil {
		return fmt.Errorf("read the cluster's active key: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil // released already; the campaign ends with the key
	}
	rev := resp.Kvs[0].ModRevision
	if _, err := d.tracked.Refresh(ctx); err != nil {
		return err
	}
	if c, ok := d.tracked.State(); ok && c.ActiveOperation() != nil {
		d.kick()
		return nil
	}
	tctx, tcancel := context.WithTimeout(ctx, d.c.cfg.EtcdTimeout)
	defer tcancel()
	txn, err := d.c.cfg.Etcd.Txn(tctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(clientv3.OpDelete(key)).Commit()
	if err != nil {
		return fmt.Errorf("delete the cluster's active key: %w", err)
	}
	if !txn.Succeeded {
		d.kick() // a command came in meanwhile
		return nil
	}
	d.log.Info().Uint64("commit_seq", d.tracked.LastSeq()).Msg("no operation runs: the cluster is released until its next command")
	return nil
}

// followResults reads the cluster's results from the start of the stream:
// what was recorded before is recognised and skipped, so a new leader
// misses nothing that arrived while nobody led. The results are handed
// over while lead (the leadership) lasts; ctx bounds setting it up.
func (d *driver) followResults(lead, ctx context.Context) error {
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
		case <-lead.Done():
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
	_, _, err = d.tracked.ReportStep(wctx, domain.StepReport{Operation: op.ID, Step: s.ID,
		Attempt: op.Attempt, Token: d.token, Agent: "coordinator", Finished: true,
		Error: fmt.Sprintf("step %s on %s: %s", s.ID, s.Host, domain.ErrorMessage(cause))}, d.token)
	return err
}
