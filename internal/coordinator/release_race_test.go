package coordinator_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/leadership"
	"github.com/dmgr/dmgr/internal/service"
	"github.com/dmgr/dmgr/internal/workqueue"
)

// leaderToken is the token of cluster's leader in etcd as an agent reads
// it (agents/verify.go): the create revision of the first key created
// under the cluster's election; 0 when there is none.
func (b *bed) leaderToken(cluster string) int64 {
	b.t.Helper()
	resp, err := b.cfg.Etcd.Get(b.ctx, leadership.ClusterLeaderKeys(cluster), clientv3.WithFirstCreate()...)
	if err != nil {
		b.t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return 0
	}
	return resp.Kvs[0].CreateRevision
}

// agentStep plays an agent: it takes the next step of cluster from the
// work queue and runs it (reports its success) only if its token is the
// leader's in etcd, as agents check it; a step it refuses is dropped, as
// agents drop it. It returns the step run.
func (b *bed) agentStep(cons jetstream.Consumer, cluster string) workqueue.Dispatch {
	b.t.Helper()
	for {
		d := b.nextStepOf(cons, cluster)
		if leader := b.leaderToken(cluster); leader == 0 || leader != d.Token {
			b.t.Logf("step %s (token %d) refused as an agent refuses it: etcd's leader token is %d", d.Step, d.Token, leader)
			continue
		}
		b.report(d, d.Token, true, true)
		return d
	}
}

// termTokens are the tokens of the terms coordinator id logged, in order.
func termTokens(t *testing.T, log, id string) []int64 {
	t.Helper()
	var out []int64
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var line struct {
			Message     string `json:"message"`
			Coordinator string `json:"coordinator"`
			Token       int64  `json:"token"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Message == "leading cluster" && line.Coordinator == id {
			out = append(out, line.Token)
		}
	}
	return out
}

// A cluster released by its leader and given work again at once (its
// active key deleted and written again) is led by a new term under a
// key of its own, and its operations run to their end. Before, the new
// campaign reused the key of the ending term (election/<lease>), so it
// led with the old token, and the old term's resignation then deleted
// the key under it: the coordinator believed it led while etcd had no
// leader, agents refused its steps ("no leader in etcd"), and the
// operation stalled.
//
// The active key is first flipped by hand (deleted and written again at
// once, as a release followed by a command's mark) between the steps of
// the deploy, and the leader's key is deleted once; then restarts are committed each as soon as the leader has
// released the cluster after the previous one. After every such change,
// coord-1 leads c1 under a new term whose token is etcd's leader key's,
// tokens only grow, and every operation succeeds with the steps played
// as agents play them (checking the token against etcd).
func TestAClusterReleasedAndActiveAgainIsLedUnderANewKey(t *testing.T) {
	b := newBed(t)
	cons, err := b.js.CreateOrUpdateConsumer(b.ctx, workqueue.StepsStream, workqueue.AgentConsumerConfig(workqueue.DefaultPool, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	coord, _ := b.start("coord-1")
	var last int64
	// newTerm waits until coord-1 leads c1 under a term newer than the
	// last one seen, and etcd's leader key is that term's. The bound only
	// ends a test that would otherwise hang.
	newTerm := func(what string) {
		t.Helper()
		var lead, key int64
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			lead, key = coord.Leading()["c1"], b.leaderToken("c1")
			if lead > last && lead == key {
				last = lead
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: coord-1 leads c1 with token %d (0: not), etcd's leader key has token %d (0: none); "+
					"the previous term's token is %d; want a new term, under its own key", what, lead, key, last)
			}
		}
	}
	newTerm("first election")

	active := leadership.ActiveClusterKey("c1")
	var released <-chan struct{}
	flips, keyDeleted := 0, false
	for b.opStatus("c1", b.op) != domain.OperationStatusSucceeded {
		for i := 0; i < 3 && flips < 20; i++ {
			flips++
			if _, err := b.cfg.Etcd.Delete(b.ctx, active); err != nil {
				t.Fatal(err)
			}
			if _, err := b.cfg.Etcd.Put(b.ctx, active, "0"); err != nil {
				t.Fatal(err)
			}
			newTerm(fmt.Sprintf("active key flipped (%d)", flips))
		}
		if flips == 9 && !keyDeleted {
			// The leader's key deleted under it (by hand): the term ends,
			// and coord-1 campaigns again, the deploy still running.
			keyDeleted = true
			if _, err := b.cfg.Etcd.Delete(b.ctx, leadership.ClusterLeaderKeys("c1"), clientv3.WithPrefix()); err != nil {
				t.Fatal(err)
			}
			newTerm("leader key deleted")
		}
		d := b.agentStep(cons, "c1")
		b.waitFor("step "+d.Step+" recorded", func() bool {
			return b.stepState(d.Step).Status == domain.StepStatusSucceeded || b.opStatus("c1", b.op) == domain.OperationStatusSucceeded
		})
	}

	// Restarts, each committed as soon as the previous operation's leader
	// has released c1 (deleted its active key).
	b.waitFor("c1 released after its deploy", func() bool { return !slices.Contains(b.activeClusters(), "c1") })
	for i := range 5 {
		var acc service.Accepted
		if i > 0 {
			select {
			case <-released:
			case <-time.After(30 * time.Second):
				t.Fatalf("restart %d: c1 not released after the previous restart", i)
			}
		}
		acc, err = b.svc.ControlCluster(b.ctx, service.Meta{Actor: "admin"},
			service.ControlClusterRequest{Kind: domain.OperationRestart, Name: "c1"})
		if err != nil {
			t.Fatal(err)
		}
		// Its release comes once the steps below are played.
		released = b.deleted(active)
		newTerm(fmt.Sprintf("restart %d committed after the release", i))
		for b.opStatus("c1", acc.OperationID) != domain.OperationStatusSucceeded {
			d := b.agentStep(cons, "c1")
			b.waitFor("restart step "+d.Step+" recorded", func() bool {
				c := b.cluster()
				op := c.FindOperation(acc.OperationID)
				return op.Steps[d.Step].Status == domain.StepStatusSucceeded || op.Status == domain.OperationStatusSucceeded
			})
		}
	}
	b.waitFor("c1 released after the last restart", func() bool {
		_, leads := coord.Leading()["c1"]
		return !leads && b.leaderToken("c1") == 0
	})

	tokens := termTokens(t, b.log.String(), "coord-1")
	if want := 1 + flips + 1 + 5; len(tokens) != want { // the first election, the flips, the key deleted, the restarts
		t.Fatalf("coord-1 logged %d terms (%v); want %d", len(tokens), tokens, want)
	}
	for i := 1; i < len(tokens); i++ {
		if tokens[i] <= tokens[i-1] {
			t.Fatalf("term %d has token %d after %d: a token reused or going back (%v)", i, tokens[i], tokens[i-1], tokens)
		}
	}
}

// deleted signals once key is deleted from now on.
func (b *bed) deleted(key string) <-chan struct{} {
	b.t.Helper()
	now, err := b.cfg.Etcd.Get(b.ctx, key)
	if err != nil {
		b.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(b.ctx)
	b.t.Cleanup(cancel)
	wch := b.cfg.Etcd.Watch(ctx, key, clientv3.WithRev(now.Header.Revision+1), clientv3.WithFilterPut())
	out := make(chan struct{})
	go func() {
		defer cancel()
		for wr := range wch {
			if len(wr.Events) > 0 {
				close(out)
				return
			}
		}
	}()
	return out
}
