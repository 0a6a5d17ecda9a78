package agents_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/workqueue"
)

// queued is how many steps wait in the work queue (delivered and not yet
// acked or terminated ones included).
func (f *fixture) queued() uint64 {
	f.t.Helper()
	s, err := f.js.Stream(f.ctx, workqueue.StepsStream)
	if err != nil {
		f.t.Fatal(err)
	}
	info, err := s.Info(f.ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	return info.State.Msgs
}

// waitQueued waits until n steps are queued.
func (f *fixture) waitQueued(n uint64) {
	f.t.Helper()
	for f.queued() != n {
		if f.ctx.Err() != nil {
			f.t.Fatalf("%d steps queued, want %d", f.queued(), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// setResultsFull makes the results stream refuse every new result (full,
// discarding new messages) or take them again.
func (f *fixture) setResultsFull(full bool) {
	f.t.Helper()
	s, err := f.js.Stream(f.ctx, workqueue.ResultsStream)
	if err != nil {
		f.t.Fatal(err)
	}
	info, err := s.Info(f.ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	cfg := info.Config
	cfg.Discard, cfg.MaxMsgs = jetstream.DiscardOld, -1
	if full {
		cfg.Discard, cfg.MaxMsgs = jetstream.DiscardNew, int64(info.State.Msgs)
	}
	if _, err := f.js.UpdateStream(f.ctx, cfg); err != nil {
		f.t.Fatalf("update %s: %v", workqueue.ResultsStream, err)
	}
}

// TestAgentAcksAStepOnlyOnceItsResultIsStored: the agent's ack logic on a
// real JetStream and etcd, with steps that run nothing on a host (no
// root, no sshd, no ClickHouse). A step whose result cannot be stored is
// handed back, never acked, and finishes once results are stored again; a
// step the store did not order is terminated with no result; a step whose
// machine cannot be used is reported failed and acked.
func TestAgentAcksAStepOnlyOnceItsResultIsStored(t *testing.T) {
	f := newAgentFixture(t, false)
	noop := domain.Step{ID: "noop", Kind: domain.StepNoop}

	// A warm-up step, so that the results stream holds one result when it
	// is made full.
	tok := f.newCluster("c-warm", "op-warm", true, noop)
	f.dispatch(workqueue.Dispatch{Cluster: "c-warm", Operation: "op-warm", Attempt: 1, Token: tok, Step: "noop"})
	f.waitResult("op-warm", "noop", 1, true)
	f.waitQueued(0)

	f.setResultsFull(true)
	tok = f.newCluster("c1", "op-1", true, noop)
	f.dispatch(workqueue.Dispatch{Cluster: "c1", Operation: "op-1", Attempt: 1, Token: tok, Step: "noop"})
	f.waitLog("could not report the start; handing the step back", map[string]string{"cluster": "c1", "operation": "op-1", "step": "noop"}, "")
	if n := f.queued(); n != 1 {
		t.Fatalf("a step whose start could not be stored: %d queued, want 1 (handed back, not acked)", n)
	}
	if rs := f.resultsOf("op-1"); len(rs) != 0 {
		t.Fatalf("results of op-1 while the results stream is full: %+v", rs)
	}
	f.setResultsFull(false)
	if r := f.waitResult("op-1", "noop", 1, true); !r.OK {
		t.Fatalf("the handed-back step: %+v", r)
	}
	f.waitQueued(0) // acked once its result is stored

	// Not ordered: a wrong token. Terminated, no result.
	f.dispatch(workqueue.Dispatch{Cluster: "c1", Operation: "op-1", Attempt: 1, Token: tok + 1000, Step: "noop"})
	f.waitRefused(map[string]string{"cluster": "c1", "operation": "op-1"}, "is not the leader token")
	f.waitQueued(0)

	// Ordered, on a machine no commit registered: failed with the reason,
	// and acked.
	tok = f.newCluster("c2", "op-2", true, domain.Step{ID: "mk", Kind: domain.StepMakeDirs, Host: "198.18.0.99", User: "root", Dirs: []string{"/nonexistent/dmgr-test"}})
	f.dispatch(workqueue.Dispatch{Cluster: "c2", Operation: "op-2", Attempt: 1, Token: tok, Step: "mk"})
	if r := f.waitResult("op-2", "mk", 1, true); r.OK || r.Error == "" {
		t.Fatalf("a step on an unregistered machine: %+v", r)
	}
	f.waitQueued(0)
	for _, r := range f.resultsOf("op-2") {
		if !r.Finished {
			t.Fatalf("a step that could not run reported a start: %+v", r)
		}
	}
	if rs := len(f.resultsOf("op-1")); rs != 2 {
		t.Fatalf("op-1 has %d results, want its start and its end (none for the refused message)", rs)
	}
}
