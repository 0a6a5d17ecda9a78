package coordinator_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/internal/coordinator"
	"github.com/dmgr/dmgr/internal/pkgstore"
	"github.com/dmgr/dmgr/internal/secrets"
	"github.com/dmgr/dmgr/internal/service"
	"github.com/dmgr/dmgr/internal/testenv"
	"github.com/dmgr/dmgr/internal/workqueue"
)

// bed is a real NATS JetStream and etcd with the event store, the work
// queue and a service, and one cluster whose deploy was accepted and
// waits for a coordinator.
type bed struct {
	t     *testing.T
	ctx   context.Context
	js    jetstream.JetStream
	store *eventstore.Store
	svc   *service.Service
	op    string // the deploy's operation
	log   *testenv.Buffer
	cfg   coordinator.Config

	etcdSrv *testenv.EtcdServer
}

func newBed(t *testing.T) *bed {
	t.Helper()
	ctx := testenv.Context(t, 3*time.Minute)
	n := testenv.NATS(t)
	_, js := testenv.JetStream(t, n)
	etcdSrv, etcd := testenv.Etcd(t)
	store, err := eventstore.Open(ctx, js, eventstore.Config{Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	vault, err := secrets.Open(ctx, js, bytes.Repeat([]byte{1}, secrets.KeySize), 1)
	if err != nil {
		t.Fatal(err)
	}
	pkgs, err := pkgstore.Open(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := workqueue.Setup(ctx, js, workqueue.Config{Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	log := &testenv.Buffer{}
	svc := service.New(service.Config{Store: store, Vault: vault, Packages: pkgs, PackageLimits: pkgstore.DefaultLimits(),
		Log: zerolog.New(log)})
	if _, err := svc.RegisterMachine(ctx, service.Meta{Actor: "admin"}, service.RegisterMachineRequest{
		Host: "198.18.0.11", User: "tidb", Password: "pw", HostKey: testenv.HostKey}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.UploadPackage(ctx, service.Meta{Actor: "admin"}, service.UploadPackageRequest{Name: "dm", Version: "v8.1.0",
		Body: bytes.NewReader(testenv.DMPackage(t, "v8.1.0"))}); err != nil {
		t.Fatal(err)
	}
	acc, err := svc.DeployCluster(ctx, service.Meta{Actor: "admin"}, service.DeployClusterRequest{Name: "c1", Version: "v8.1.0",
		Topology: "global:\n  deploy_dir: /dm/c1\nmaster_servers:\n  - host: 198.18.0.11\n"})
	if err != nil {
		t.Fatal(err)
	}
	b := &bed{t: t, ctx: ctx, js: js, store: store, svc: svc, op: acc.OperationID, log: log, etcdSrv: etcdSrv}
	b.cfg = coordinator.Config{ID: "coord-1", Service: svc, JS: js, Etcd: etcd, SessionTTL: 3 * time.Second,
		Log: zerolog.New(log).Level(zerolog.DebugLevel), RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond,
		GiveUpAfter: time.Hour}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", tail(log.String(), 6000))
		}
	})
	return b
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// run starts the coordinator; it stops when the test ends.
func (b *bed) run() {
	ctx, cancel := context.WithCancel(b.ctx)
	done := make(chan struct{})
	c := coordinator.New(b.cfg)
	go func() { defer close(done); _ = c.Run(ctx) }()
	b.t.Cleanup(func() { cancel(); <-done })
}

// waitFor polls cond until it holds; the bound only ends a test that
// would otherwise hang.
func (b *bed) waitFor(what string, cond func() bool) {
	b.t.Helper()
	for deadline := time.Now().Add(90 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.t.Fatalf("gave up waiting for %s", what)
		}
	}
}

// cluster is c1 as the store has it.
func (b *bed) cluster() domain.Cluster {
	b.t.Helper()
	c, _, _, err := b.svc.ClusterState(b.ctx, "c1")
	if err != nil {
		b.t.Fatal(err)
	}
	return c
}

// steps is how many steps wait on the work queue.
func (b *bed) steps() uint64 {
	b.t.Helper()
	s, err := b.js.Stream(b.ctx, workqueue.StepsStream)
	if err != nil {
		b.t.Fatal(err)
	}
	return s.CachedInfo().State.Msgs
}

// updateStream changes a stream's configuration.
func (b *bed) updateStream(name string, change func(*jetstream.StreamConfig)) {
	b.t.Helper()
	s, err := b.js.Stream(b.ctx, name)
	if err != nil {
		b.t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	change(&cfg)
	if _, err := b.js.UpdateStream(b.ctx, cfg); err != nil {
		b.t.Fatalf("update stream %s: %v", name, err)
	}
}

// An advance whose append fails (the event stream takes nothing more) is
// retried with backoff: nothing is dispatched while it fails, and once the
// stream takes appends again the operation goes on.
func TestDriverRetriesAFailedAdvance(t *testing.T) {
	b := newBed(t)
	last, err := b.store.LastSeq(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	b.updateStream(eventstore.StreamName, func(c *jetstream.StreamConfig) { c.MaxMsgs = int64(last) })
	b.run()
	b.waitFor("three failed advances", func() bool { return strings.Count(b.log.String(), `"message":"advance operation"`) >= 3 })
	if c := b.cluster(); c.LeaderToken != 0 {
		t.Fatalf("leadership recorded while the stream refused appends: token %d", c.LeaderToken)
	}
	if n := b.steps(); n != 0 {
		t.Fatalf("%d steps dispatched before the leadership was recorded", n)
	}
	if !strings.Contains(b.log.String(), "maximum messages") {
		t.Fatalf("the failures do not say why")
	}

	b.updateStream(eventstore.StreamName, func(c *jetstream.StreamConfig) { c.MaxMsgs = -1 })
	b.waitFor("the leadership recorded and the first step dispatched", func() bool {
		return b.cluster().LeaderToken != 0 && b.steps() > 0
	})
	if !strings.Contains(b.log.String(), `"message":"operation advances again"`) {
		t.Fatalf("no recovery logged")
	}
	if c := b.cluster(); !c.FindOperation(b.op).Active() {
		op := c.FindOperation(b.op)
		t.Fatalf("operation is %s (%s), want it still running", op.Status, op.Error)
	}
}

// An operation whose advance keeps failing ends failed with the error as
// its reason: at once when the failure can never pass (a step larger than
// the work queue takes), after GiveUpAfter when it lasts (a full queue).
func TestDriverFailsAnOperationThatKeepsFailingWithTheReason(t *testing.T) {
	tests := []struct {
		name      string
		giveUp    time.Duration
		limit     func(*jetstream.StreamConfig)
		prefill   bool
		wantError string
	}{
		{name: "permanent", giveUp: time.Hour, limit: func(c *jetstream.StreamConfig) { c.MaxMsgSize = 64 },
			wantError: "message size exceeds maximum allowed"},
		{name: "past the bound", giveUp: 500 * time.Millisecond,
			limit:   func(c *jetstream.StreamConfig) { c.MaxMsgs, c.Discard = 1, jetstream.DiscardNew },
			prefill: true, wantError: "maximum messages exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBed(t)
			b.updateStream(workqueue.StepsStream, tt.limit)
			if tt.prefill {
				if _, err := b.js.Publish(b.ctx, workqueue.StepSubject("elsewhere"), []byte("{}")); err != nil {
					t.Fatal(err)
				}
			}
			b.cfg.GiveUpAfter = tt.giveUp
			b.run()
			b.waitFor("the operation to end", func() bool { c := b.cluster(); return !c.FindOperation(b.op).Active() })
			c := b.cluster()
			op := c.FindOperation(b.op)
			if op.Status != domain.OperationStatusFailed || c.Status != domain.ClusterStatusDeployFailed {
				t.Fatalf("operation %s, cluster %s; want failed, deploy_failed", op.Status, c.Status)
			}
			if !strings.HasPrefix(op.Error, "the coordinator gave up on the operation: ") || !strings.Contains(op.Error, tt.wantError) {
				t.Fatalf("operation error %q, want the coordinator's reason with %q", op.Error, tt.wantError)
			}
			if n := strings.Count(b.log.String(), `"message":"advance operation"`); tt.prefill && n < 2 {
				t.Fatalf("failed %d times before giving up; want it to retry first", n)
			}
			// Nothing runs or waits for it.
			if n := b.steps(); tt.prefill && n != 1 || !tt.prefill && n != 0 {
				t.Fatalf("%d steps on the work queue", n)
			}
		})
	}
}
