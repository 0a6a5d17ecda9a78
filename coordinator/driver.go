package coordinator

import (
	"context"
	"fmt"

	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/workqueue"
)

// driver does one cluster's work, one thing at a time: record a result,
// then dispatch what became ready.
type driver struct {
	c       *Coordinator
	cluster string
	log     zerolog.Logger
	kicks   chan struct{}
	reports chan reportRequest
	cancel  context.CancelFunc
	done    chan struct{}

	// dispatched remembers the steps published in this process, so that a
	// kick does not publish them again; after a restart they are published
	// again and JetStream drops the duplicates by message id.
	dispatched map[string]bool
}

type reportRequest struct {
	result workqueue.Result
	errc   chan error
}

func newDriver(ctx context.Context, c *Coordinator, cluster string) *driver {
	ctx, cancel := context.WithCancel(ctx)
	d := &driver{c: c, cluster: cluster, log: c.log.With().Str("cluster", cluster).Logger(),
		kicks: make(chan struct{}, 1), reports: make(chan reportRequest), cancel: cancel, done: make(chan struct{}),
		dispatched: map[string]bool{}}
	go d.loop(ctx)
	return d
}

func (d *driver) stop() {
	d.cancel()
	<-d.done
}

// kick asks the driver to look at the cluster again; kicks coalesce.
func (d *driver) kick() {
	select {
	case d.kicks <- struct{}{}:
	default:
	}
}

// report records a result through the driver and waits until it is stored.
func (d *driver) report(ctx context.Context, r workqueue.Result) error {
	req := reportRequest{result: r, errc: make(chan error, 1)}
	select {
	case d.reports <- req:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.errc:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (d *driver) loop(ctx context.Context) {
	defer close(d.done)
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.kicks:
		case req := <-d.reports:
			req.errc <- d.record(ctx, req.result)
		}
		if err := d.advance(ctx); err != nil && ctx.Err() == nil {
			d.log.Warn().Err(err).Msg("dispatch ready steps")
		}
	}
}

// record appends the events a result decides.
func (d *driver) record(ctx context.Context, r workqueue.Result) error {
	acc, recorded, err := d.c.cfg.Service.ReportStep(ctx, d.cluster, r.Report())
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

// advance re-reads the cluster and publishes every ready step of its
// active operation that this process has not published yet.
func (d *driver) advance(ctx context.Context) error {
	c, _, ok, err := d.c.cfg.Service.ClusterState(ctx, d.cluster)
	if err != nil || !ok {
		return err
	}
	op := c.ActiveOperation()
	if op == nil {
		clear(d.dispatched)
		return nil
	}
	p := domain.ProgressOf(op.Plan, op.Steps)
	machines := map[string]domain.Machine{}
	for _, s := range p.Ready {
		key := fmt.Sprintf("%s/%d/%s", op.ID, op.Attempt, s.ID)
		if d.dispatched[key] {
			continue
		}
		m, ok := machines[s.Host]
		if !ok {
			m, err = d.c.cfg.Service.Machine(ctx, s.Host)
			if err != nil {
				if domain.ErrorCode(err) == domain.NotFound {
					if err := d.failUnreachable(ctx, op, s, err); err != nil {
						return err
					}
					d.dispatched[key] = true
					continue
				}
				return err
			}
			machines[s.Host] = m
		}
		disp := workqueue.Dispatch{Cluster: d.cluster, Operation: op.ID, Attempt: op.Attempt, Step: s,
			Target: workqueue.Target{Host: m.Host, Port: m.SSHPort, User: m.User, Credential: m.Credential, HostKey: m.HostKey.Key}}
		if err := workqueue.PublishDispatch(ctx, d.c.cfg.JS, d.c.cfg.Pool, disp); err != nil {
			return err
		}
		d.dispatched[key] = true
		d.log.Debug().Str("operation", op.ID).Str("step", s.ID).Str("host", s.Host).Msg("step dispatched")
	}
	return nil
}

// failUnreachable records a step that cannot be dispatched because its
// machine is gone.
func (d *driver) failUnreachable(ctx context.Context, op *domain.Operation, s domain.Step, cause error) error {
	_, _, err := d.c.cfg.Service.ReportStep(ctx, d.cluster, domain.StepReport{Operation: op.ID, Step: s.ID,
		Attempt: op.Attempt, Agent: "coordinator", Finished: true,
		Error: fmt.Sprintf("step %s on %s: %s", s.ID, s.Host, domain.ErrorMessage(cause))})
	return err
}
