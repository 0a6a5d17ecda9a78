package workqueue_test

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/dmgr/dmgr/internal/testenv"
	"github.com/dmgr/dmgr/internal/workqueue"
)

// setup is the two streams and pool "default"'s agent consumer on a real
// embedded JetStream server (no root, no ClickHouse).
func setup(t *testing.T, ackWait time.Duration) (jetstream.JetStream, jetstream.Consumer) {
	t.Helper()
	n := testenv.NATS(t, "other")
	_, js := testenv.JetStream(t, n)
	ctx := testenv.Context(t, 30*time.Second)
	if err := workqueue.Setup(ctx, js, workqueue.Config{Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	// Setup again: it updates, it does not fail on existing streams.
	if err := workqueue.Setup(ctx, js, workqueue.Config{Replicas: 1}); err != nil {
		t.Fatalf("second Setup: %v", err)
	}
	c, err := js.CreateOrUpdateConsumer(ctx, workqueue.StepsStream, workqueue.AgentConsumerConfig("default", ackWait))
	if err != nil {
		t.Fatal(err)
	}
	return js, c
}

func streamMsgs(t *testing.T, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	s, err := js.Stream(testenv.Context(t, 10*time.Second), name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(testenv.Context(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// next fetches one message, waiting at most wait (a deadline for the test
// not to hang, not a timed assertion).
func next(t *testing.T, c jetstream.Consumer, wait time.Duration) (jetstream.Msg, bool) {
	t.Helper()
	batch, err := c.Fetch(1, jetstream.FetchMaxWait(wait))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		return m, true
	}
	if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
		t.Fatal(err)
	}
	return nil, false
}

// A step dispatched twice (a coordinator that retries its publish, or a
// new leader that re-sends what it cannot know was sent) is queued once;
// the same step under a newer fencing token is a new message. A step
// nobody acks is delivered again, to whichever agent asks; an acked one
// leaves the work queue. Steps of another pool never reach this pool.
func TestStepsAreQueuedOnceAndRedeliveredUntilAcked(t *testing.T) {
	js, c := setup(t, 300*time.Millisecond)
	ctx := testenv.Context(t, time.Minute)
	d := workqueue.Dispatch{Cluster: "c1", Operation: "op-1", Attempt: 1, Token: 7, Step: "start/198.18.0.11:8261"}
	for range 3 {
		if err := workqueue.PublishDispatch(ctx, js, "default", d); err != nil {
			t.Fatal(err)
		}
	}
	if got := streamMsgs(t, js, workqueue.StepsStream); got != 1 {
		t.Fatalf("a step published 3 times is queued %d times, want 1", got)
	}
	if err := workqueue.PublishDispatch(ctx, js, "other", workqueue.Dispatch{Cluster: "c2", Operation: "op-2", Attempt: 1, Token: 1, Step: "s"}); err != nil {
		t.Fatal(err)
	}

	m, ok := next(t, c, 10*time.Second)
	if !ok {
		t.Fatal("the queued step was not delivered")
	}
	got, err := workqueue.DecodeDispatch(m.Data())
	if err != nil || got != d {
		t.Fatalf("delivered %+v (%v), want %+v", got, err, d)
	}
	// Not acked: delivered again once the ack wait is over.
	again, ok := next(t, c, 10*time.Second)
	if !ok {
		t.Fatal("an unacked step was not delivered again")
	}
	meta, err := again.Metadata()
	if err != nil {
		t.Fatal(err)
	}
	if string(again.Data()) != string(m.Data()) || meta.NumDelivered < 2 {
		t.Fatalf("redelivered %s (delivery %d), want the same step again", again.Data(), meta.NumDelivered)
	}
	if err := again.DoubleAck(ctx); err != nil {
		t.Fatalf("ack: %v", err)
	}
	// Acked: gone from the work queue (the other pool's step stays), and
	// never delivered again.
	if got := streamMsgs(t, js, workqueue.StepsStream); got != 1 {
		t.Fatalf("after the ack the queue holds %d steps, want only the other pool's 1", got)
	}
	if m, ok := next(t, c, time.Second); ok {
		t.Fatalf("delivered after its ack, or another pool's step: %s", m.Data())
	}

	// The same step under a newer token (a new leader) is queued anew.
	d.Token = 8
	if err := workqueue.PublishDispatch(ctx, js, "default", d); err != nil {
		t.Fatal(err)
	}
	m, ok = next(t, c, 10*time.Second)
	if !ok {
		t.Fatal("the step under a newer token was not queued")
	}
	if got, err := workqueue.DecodeDispatch(m.Data()); err != nil || got.Token != 8 {
		t.Fatalf("delivered %+v (%v), want token 8", got, err)
	}
}

// A result is stored once per phase: an agent that re-sends its
// "started" or "finished" report (it cannot know the first one landed)
// adds nothing, and "started" and "finished" are two results.
func TestResultsAreStoredOncePerPhase(t *testing.T) {
	js, _ := setup(t, time.Second)
	ctx := testenv.Context(t, time.Minute)
	r := workqueue.Result{Cluster: "c1", Operation: "op-1", Attempt: 1, Token: 7, Step: "start/198.18.0.11:8261", Host: "198.18.0.11", Agent: "agent-1", Time: time.Unix(1, 0)}
	for _, finished := range []bool{false, false, true, true} {
		r.Finished, r.OK = finished, finished
		if err := workqueue.PublishResult(ctx, js, r); err != nil {
			t.Fatal(err)
		}
	}
	if got := streamMsgs(t, js, workqueue.ResultsStream); got != 2 {
		t.Fatalf("results stored: %d, want 2 (started, finished)", got)
	}
	// Another agent's result of the same step is its own.
	r.Agent = "agent-2"
	if err := workqueue.PublishResult(ctx, js, r); err != nil {
		t.Fatal(err)
	}
	if got := streamMsgs(t, js, workqueue.ResultsStream); got != 3 {
		t.Fatalf("results stored: %d, want 3", got)
	}
}
