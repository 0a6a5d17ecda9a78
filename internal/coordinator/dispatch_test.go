package coordinator_test

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/leadership"
	"github.com/dmgr/dmgr/internal/workqueue"
)

// nextStep fetches one step from the default pool's work queue as an
// agent does and acks it; the wait only ends a test that would hang.
func (b *bed) nextStep(c jetstream.Consumer) workqueue.Dispatch {
	b.t.Helper()
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); {
		batch, err := c.Fetch(1, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			b.t.Fatal(err)
		}
		for m := range batch.Messages() {
			d, err := workqueue.DecodeDispatch(m.Data())
			if err != nil {
				b.t.Fatalf("the coordinator dispatched %q: %v", m.Data(), err)
			}
			if err := m.DoubleAck(b.ctx); err != nil {
				b.t.Fatal(err)
			}
			return d
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			b.t.Fatal(err)
		}
	}
	b.t.Fatal("no step dispatched")
	return workqueue.Dispatch{}
}

func (b *bed) report(d workqueue.Dispatch, token int64, finished, ok bool) {
	b.t.Helper()
	r := workqueue.Result{Cluster: d.Cluster, Operation: d.Operation, Attempt: d.Attempt, Token: token, Step: d.Step,
		Host: "198.18.0.11", Agent: "agent-t", Finished: finished, OK: ok, Time: time.Now().UTC()}
	if finished && !ok {
		r.ExitCode, r.Error = 1, "forged failure"
	}
	if err := workqueue.PublishResult(b.ctx, b.js, r); err != nil {
		b.t.Fatal(err)
	}
}

func (b *bed) stepState(step string) domain.StepState {
	b.t.Helper()
	c := b.cluster()
	return c.FindOperation(b.op).Steps[step]
}

// The coordinator's loop on a real JetStream and etcd, without root or
// ClickHouse: it leads the cluster with its etcd leader key, dispatches
// the first ready step with that key's token, records the results of its
// token only (a result under another token changes nothing), and
// dispatches the next step once the first succeeded.
func TestCoordinatorDispatchesWithItsTokenAndRecordsItsResults(t *testing.T) {
	b := newBed(t)
	cons, err := b.js.CreateOrUpdateConsumer(b.ctx, workqueue.StepsStream, workqueue.AgentConsumerConfig(workqueue.DefaultPool, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	b.run()
	first := b.nextStep(cons)
	if first.Cluster != "c1" || first.Operation != b.op || first.Attempt != 1 {
		t.Fatalf("dispatched %+v, want a step of operation %s of c1, attempt 1", first, b.op)
	}
	resp, err := b.cfg.Etcd.Get(b.ctx, leadership.ClusterLeaderKeys("c1"), clientv3.WithFirstCreate()...)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != first.Token {
		t.Fatalf("step token %d, want the create revision of c1's leader key (%v)", first.Token, resp.Kvs)
	}
	if c := b.cluster(); c.LeaderToken != first.Token {
		t.Fatalf("the store records leader token %d, the step carries %d", c.LeaderToken, first.Token)
	}

	// The start; then a failure reported under another token, then the
	// real success: results are read in order, so the step ends succeeded
	// only if the failure was dropped.
	b.report(first, first.Token, false, false)
	b.waitFor("the start recorded", func() bool { return b.stepState(first.Step).Status == domain.StepStatusRunning })
	b.report(first, first.Token+1000, true, false)
	b.report(first, first.Token, true, true)
	b.waitFor("the success recorded", func() bool { return b.stepState(first.Step).Status != domain.StepStatusRunning })
	if st := b.stepState(first.Step); st.Status != domain.StepStatusSucceeded || st.Agent != "agent-t" {
		t.Fatalf("step %s: %+v, want succeeded by agent-t", first.Step, st)
	}
	second := b.nextStep(cons)
	if second.Step == first.Step || second.Token != first.Token || second.Operation != b.op {
		t.Fatalf("after %s succeeded, dispatched %+v", first.Step, second)
	}
	c := b.cluster()
	if op := c.FindOperation(b.op); op.Status != domain.OperationStatusRunning {
		t.Fatalf("operation %s (%s), want running", op.Status, op.Error)
	}
}
