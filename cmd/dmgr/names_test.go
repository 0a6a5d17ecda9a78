package main

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/leadership"
	"github.com/dmgr/dmgr/internal/testbed/hosts"
)

// collidingNames are cluster names that are, or were, names of dmgr's
// own etcd keys: the projector's election before v1 ("projections"), the
// folders of the layout, and names that are prefixes of one another.
var collidingNames = []string{"projections", "projector", "leader", "cluster", "v1", "agents", "coordinators", "online", "seen", "ready-probe",
	"active-clusters", "active", "c", "c1"}

// electedKey reads the first-created key under prefix: an election's
// leader, as the agents read it.
func electedKey(t testing.TB, cli *clientv3.Client, prefix string) (string, int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, prefix, clientv3.WithFirstCreate()...)
	if err != nil {
		t.Fatalf("read %s: %v", prefix, err)
	}
	if len(resp.Kvs) == 0 {
		return "", 0
	}
	return string(resp.Kvs[0].Value), resp.Kvs[0].CreateRevision
}

// Issue [7]: clusters named like dmgr's own etcd keys (a cluster named
// "projections" used to share the projector's election and stayed pending
// forever) deploy on the test hosts, each led in an election of its own,
// while the projector keeps its one term and projects every deploy into
// ClickHouse (the operations and clusters read here are its projections).
func TestClustersNamedLikeLeadershipKeysDeployWhileTheProjectorProjects(t *testing.T) {
	bed := hosts.Start(t, 3)
	cp := startControlPlane(t)
	cp.prepareBed(t, bed)
	etcd := cp.main.etcd

	// The projector is elected when the server starts, before any cluster
	// exists to campaign.
	var projector string
	var projToken int64
	for deadline := time.Now().Add(time.Minute); projToken == 0; time.Sleep(100 * time.Millisecond) {
		if projector, projToken = electedKey(t, etcd, leadership.ProjectorLeaderKeys); projToken == 0 && time.Now().After(deadline) {
			t.Fatal("no projector elected")
		}
	}

	ops := map[string]string{}
	for k, name := range collidingNames {
		acc := cp.mustAccept(t, "POST", "/api/v1/clusters", map[string]any{"name": name, "version": "v8.1.0",
			"topology": smallTopology(bed, 1+k%3, k+1)})
		ops[name] = acc.OperationID
	}
	for _, name := range collidingNames {
		if op := cp.waitOperation(t, ops[name], 3*time.Minute); op.Status != domain.OperationStatusSucceeded {
			t.Fatalf("deploy of cluster %q: %s %s%s", name, op.Status, op.Error, describeSteps(op))
		}
		var c domain.Cluster
		cp.api(t, "GET", "/api/v1/clusters/"+name, nil, &c)
		if c.Status != domain.ClusterStatusRunning {
			t.Errorf("cluster %q: status %q, want running", name, c.Status)
		}
	}

	// Every cluster was led under a key of its own, by the coordinator,
	// with a token other than the projector's and every other cluster's;
	// once its deploy succeeded its leader released it (no running
	// operation: no election, no active key), and the projector's term
	// went on.
	tokens := map[int64]string{}
	for _, name := range collidingNames {
		var c domain.Cluster
		cp.api(t, "GET", "/api/v1/clusters/"+name, nil, &c)
		if c.LeaderToken == 0 || c.LeaderToken == projToken || tokens[c.LeaderToken] != "" {
			t.Errorf("cluster %q: led with token %d; the projector's is %d, other clusters' %v", name, c.LeaderToken, projToken, tokens)
		}
		tokens[c.LeaderToken] = name
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		var held []string
		for _, name := range collidingNames {
			if holder, _ := electedKey(t, etcd, leadership.ClusterLeaderKeys(name)); holder != "" {
				held = append(held, name)
			}
		}
		if len(held) == 0 && len(cp.main.Coordinator.Leading()) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("clusters still led after their deploys succeeded: %v (coordinator: %v)", held, cp.main.Coordinator.Leading())
		}
	}
	// The projector kept its term throughout.
	if holder, token := electedKey(t, etcd, leadership.ProjectorLeaderKeys); holder != projector || token != projToken {
		t.Errorf("projector: %q token %d now, %q token %d before the deploys", holder, token, projector, projToken)
	}
}
