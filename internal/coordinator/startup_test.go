package coordinator_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/coordinator"
	"github.com/dmgr/dmgr/internal/embedded"
	"github.com/dmgr/dmgr/internal/leadership"
	"github.com/dmgr/dmgr/internal/service"
	"github.com/dmgr/dmgr/internal/workqueue"
)

// start runs a coordinator with id until stop is called (or the test
// ends); stop waits for it and returns what Run returned.
func (b *bed) start(id string) (*coordinator.Coordinator, func() error) {
	cfg := b.cfg
	cfg.ID = id
	c := coordinator.New(cfg)
	ctx, cancel := context.WithCancel(b.ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	var err error
	stop := func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	b.t.Cleanup(func() { _ = stop() })
	return c, stop
}

// deploy accepts a deploy of a one-master cluster on 198.18.0.11 with
// ports and directories of its own.
func (b *bed) deploy(name string, k int) string {
	b.t.Helper()
	acc, err := b.svc.DeployCluster(b.ctx, service.Meta{Actor: "admin"}, service.DeployClusterRequest{Name: name, Version: "v8.1.0",
		Topology: fmt.Sprintf("global:\n  deploy_dir: /dm/%s\nmaster_servers:\n  - host: 198.18.0.11\n    port: %d\n    peer_port: %d\n",
			name, 30000+2*k, 30001+2*k)})
	if err != nil {
		b.t.Fatal(err)
	}
	return acc.OperationID
}

// activeClusters lists the clusters with an active key in etcd.
func (b *bed) activeClusters() []string {
	b.t.Helper()
	resp, err := b.cfg.Etcd.Get(b.ctx, leadership.ActiveClustersPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		b.t.Fatal(err)
	}
	var out []string
	for _, kv := range resp.Kvs {
		if c, ok := leadership.ActiveCluster(string(kv.Key)); ok {
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return out
}

func (b *bed) opStatus(cluster, op string) string {
	b.t.Helper()
	c, _, _, err := b.svc.ClusterState(b.ctx, cluster)
	if err != nil {
		b.t.Fatal(err)
	}
	if o := c.FindOperation(op); o != nil {
		return o.Status
	}
	return ""
}

// electionsSince records every cluster whose election got a key from now
// on (the watch starts before the call returns).
func (b *bed) electionsSince() func() map[string]int {
	b.t.Helper()
	now, err := b.cfg.Etcd.Get(b.ctx, leadership.ReadyProbeKey)
	if err != nil {
		b.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(b.ctx)
	b.t.Cleanup(cancel)
	wch := b.cfg.Etcd.Watch(ctx, leadership.ClusterLeaderPrefix, clientv3.WithPrefix(), clientv3.WithRev(now.Header.Revision+1))
	var mu sync.Mutex
	seen := map[string]int{}
	go func() {
		for wr := range wch {
			for _, ev := range wr.Events {
				if !ev.IsCreate() {
					continue
				}
				rest := strings.TrimPrefix(string(ev.Kv.Key), leadership.ClusterLeaderPrefix)
				mu.Lock()
				seen[rest[:strings.LastIndexByte(rest, '/')]]++
				mu.Unlock()
			}
		}
	}()
	return func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(seen)
	}
}

// Issue [7]: at start a coordinator campaigns only for the clusters with
// a running operation, not for every cluster it has seen. c1's deploy
// runs through a restart and is led and finished after it; c2 and c3
// were cancelled before it, so nobody campaigns for them after the
// restart, until a command (a retry of c2's deploy) is committed to c2,
// which is then led at once. Once c1's deploy succeeded, its leader
// releases it too.
func TestOnlyClustersWithARunningOperationAreLedAfterARestart(t *testing.T) {
	b := newBed(t)
	op2, op3 := b.deploy("c2", 2), b.deploy("c3", 3)
	first, stopFirst := b.start("coord-1")
	for _, op := range []string{op2, op3} {
		if _, err := b.svc.CancelOperation(b.ctx, service.Meta{Actor: "admin"}, op); err != nil {
			t.Fatal(err)
		}
	}
	b.waitFor("c2 and c3 cancelled and released, c1 still active", func() bool {
		return b.opStatus("c2", op2) == domain.OperationStatusCancelled && b.opStatus("c3", op3) == domain.OperationStatusCancelled &&
			slices.Equal(b.activeClusters(), []string{"c1"})
	})
	if _, ok := first.Leading()["c1"]; !ok {
		t.Fatalf("coord-1 leads %v, want c1 among them", first.Leading())
	}
	if err := stopFirst(); err != nil {
		t.Fatalf("coord-1: %v", err)
	}

	// The restart.
	elected := b.electionsSince()
	second, _ := b.start("coord-2")
	b.waitFor("coord-2 to lead c1", func() bool { _, ok := second.Leading()["c1"]; return ok })
	acc, err := b.svc.RetryOperation(b.ctx, service.Meta{Actor: "admin"}, op2)
	if err != nil {
		t.Fatal(err)
	}
	b.waitFor("coord-2 to lead c2 after the retry", func() bool { _, ok := second.Leading()["c2"]; return ok })
	if got := elected(); got["c3"] != 0 || got["c1"] == 0 || got["c2"] == 0 {
		t.Fatalf("elections since the restart: %v; want c1 and c2, never c3", got)
	}
	if tracked := second.Tracked(); slices.Contains(tracked, "c3") {
		t.Fatalf("coord-2 tracks %v; c3 has no running operation", tracked)
	}
	if acc.CommitSeq == 0 {
		t.Fatalf("retry: %+v", acc)
	}

	// c1's deploy, led by coord-2, runs to its end (the test plays the
	// agent); then c1 is released and nobody leads it.
	cons, err := b.js.CreateOrUpdateConsumer(b.ctx, workqueue.StepsStream, workqueue.AgentConsumerConfig(workqueue.DefaultPool, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	token := second.Leading()["c1"]
	for b.opStatus("c1", b.op) != domain.OperationStatusSucceeded {
		d := b.nextStepOf(cons, "c1")
		if d.Token != token {
			// coord-1's dispatch, queued before the restart: an agent
			// drops it (stale token); coord-2 dispatched it again.
			continue
		}
		b.report(d, d.Token, true, true)
		b.waitFor("step "+d.Step+" recorded", func() bool {
			return b.stepState(d.Step).Status == domain.StepStatusSucceeded || b.opStatus("c1", b.op) == domain.OperationStatusSucceeded
		})
	}
	b.waitFor("c1 released", func() bool { _, ok := second.Leading()["c1"]; return !ok && !slices.Contains(b.activeClusters(), "c1") })
	if resp, err := b.cfg.Etcd.Get(b.ctx, leadership.ClusterLeaderKeys("c1"), clientv3.WithPrefix()); err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("c1's election after its release: %v %v; want no key (resigned)", resp.Kvs, err)
	}
}

// nextStepOf takes the next step of cluster from the work queue, acking
// (and dropping) the steps of other clusters.
func (b *bed) nextStepOf(cons jetstream.Consumer, cluster string) workqueue.Dispatch {
	b.t.Helper()
	for {
		if d := b.nextStep(cons); d.Cluster == cluster {
			return d
		}
	}
}

// The coordinator fails, with the reason, when it cannot lead anything:
// its etcd client closed (at once), or etcd refusing its keys for longer
// than DownGiveUpAfter (a real etcd whose role lost its permissions).
func TestCoordinatorFailsWhenItCannotKeepAnEtcdSession(t *testing.T) {
	t.Run("client closed", func(t *testing.T) {
		b := newBed(t)
		cli := b.etcdSrv.Client(t, embedded.EtcdServerUser)
		cfg := b.cfg
		cfg.ID, cfg.Etcd = "coord-closed", cli
		c := coordinator.New(cfg)
		done := make(chan error, 1)
		go func() { done <- c.Run(b.ctx) }()
		b.waitFor("the coordinator to lead c1", func() bool { _, ok := c.Leading()["c1"]; return ok })
		_ = cli.Close()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "etcd client closed") {
				t.Fatalf("Run: %v; want it to fail because its etcd client is closed", err)
			}
		case <-b.ctx.Done():
			t.Fatal("the coordinator runs on with its etcd client closed")
		}
	})

	t.Run("etcd refuses its keys", func(t *testing.T) {
		b := newBed(t)
		b.cfg.SessionTTL = time.Second
		b.cfg.DownGiveUpAfter = 3 * time.Second
		cfg := b.cfg
		cfg.ID = "coord-refused"
		c := coordinator.New(cfg)
		done := make(chan error, 1)
		go func() { done <- c.Run(b.ctx) }()
		b.waitFor("the coordinator to lead c1", func() bool { _, ok := c.Leading()["c1"]; return ok })

		root := b.etcdSrv.Client(t, embedded.EtcdRootUser)
		if _, err := root.RoleRevokePermission(b.ctx, embedded.EtcdServerUser, leadership.Root, clientv3.GetPrefixRangeEnd(leadership.Root)); err != nil {
			t.Fatal(err)
		}
		reg, err := root.Get(b.ctx, leadership.CoordinatorKey("coord-refused"))
		if err != nil || len(reg.Kvs) != 1 {
			t.Fatalf("the coordinator's key: %v %v", reg, err)
		}
		if _, err := root.Revoke(b.ctx, clientv3.LeaseID(reg.Kvs[0].Lease)); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "no etcd session for") || !strings.Contains(err.Error(), "permission denied") {
				t.Fatalf("Run: %v; want it to give up on the session, saying why", err)
			}
		case <-b.ctx.Done():
			t.Fatal("the coordinator runs on without an etcd session")
		}
		if len(c.Leading()) != 0 {
			t.Fatalf("still leading %v after it failed", c.Leading())
		}
	})
}
