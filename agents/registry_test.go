package agents_test

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dmgr/dmgr/agents"
	"github.com/dmgr/dmgr/agents/remote"
	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/internal/embedded"
	"github.com/dmgr/dmgr/internal/leadership"
	"github.com/dmgr/dmgr/internal/pkgstore"
	"github.com/dmgr/dmgr/internal/secrets"
	"github.com/dmgr/dmgr/internal/testenv"
	"github.com/dmgr/dmgr/internal/workqueue"
)

// onlineLease is the lease of an agent's online key, 0 while it has none.
func onlineLease(t *testing.T, ctx context.Context, cli *clientv3.Client, id string) clientv3.LeaseID {
	t.Helper()
	resp, err := cli.Get(ctx, leadership.AgentOnlineKey(id))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return 0
	}
	return clientv3.LeaseID(resp.Kvs[0].Lease)
}

// waitUntil polls cond; the context only ends a test that would hang.
func waitUntil(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		if ctx.Err() != nil {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Issue [7]: an agent whose etcd lease is lost (revoked here, as etcd
// expires it after a partition) registers again under a new lease: it is
// listed online again, and it still runs steps.
func TestAgentRegistersAgainWhenItsLeaseIsLost(t *testing.T) {
	f := newAgentFixture(t, false)
	const id = "agent-under-test"
	waitUntil(t, f.ctx, "the agent registered", func() bool { return onlineLease(t, f.ctx, f.etcd, id) != 0 })
	first := onlineLease(t, f.ctx, f.etcd, id)
	for range 2 { // twice: registering again is not a one-off
		lost := onlineLease(t, f.ctx, f.etcd, id)
		if _, err := f.etcd.Revoke(f.ctx, lost); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, f.ctx, "the agent registered again", func() bool {
			l := onlineLease(t, f.ctx, f.etcd, id)
			return l != 0 && l != lost
		})
	}
	if now := onlineLease(t, f.ctx, f.etcd, id); now == first {
		t.Fatalf("the online key is under lease %x still", now)
	}
	list, _, err := agents.List(f.ctx, f.etcd, "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != id || !list[0].Online {
		t.Fatalf("agents listed %+v; want %s online", list, id)
	}
	if n := strings.Count(f.logs.String(), "etcd lease lost"); n != 2 {
		t.Fatalf("%d lost leases logged, want 2:\n%s", n, f.logs.String())
	}

	// It still runs steps.
	noop := domain.Step{ID: "noop", Kind: domain.StepNoop}
	tok := f.newCluster("c-reg", "op-reg", true, noop)
	f.dispatch(workqueue.Dispatch{Cluster: "c-reg", Operation: "op-reg", Attempt: 1, Token: tok, Step: "noop"})
	if r := f.waitResult("op-reg", "noop", 1, true); !r.OK || r.Agent != id {
		t.Fatalf("result after registering again: %+v", r)
	}
}

// An agent that cannot register again (etcd refuses its keys: its role
// lost the permission) stops, with the reason, once RegisterGiveUpAfter
// has passed; it does not run on unlisted.
func TestAgentFailsWhenItCannotRegisterAgain(t *testing.T) {
	ctx := testenv.Context(t, 2*time.Minute)
	ns := testenv.NATS(t)
	_, js := testenv.JetStream(t, ns)
	etcdSrv, etcd := testenv.Etcd(t)
	if _, err := eventstore.Open(ctx, js, eventstore.Config{}); err != nil {
		t.Fatal(err)
	}
	if err := workqueue.Setup(ctx, js, workqueue.Config{}); err != nil {
		t.Fatal(err)
	}
	key := bytes.Repeat([]byte{7}, secrets.KeySize)
	if _, err := secrets.Open(ctx, js, key, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := pkgstore.Open(ctx, js, 1); err != nil {
		t.Fatal(err)
	}
	as := openAgentStores(t, ctx, ns, key)
	var logs testenv.Buffer
	a, err := agents.New(agents.Config{ID: "agent-refused", JS: as.js, Etcd: etcdSrv.AgentClient(t), Vault: as.vault, Packages: as.pkgs,
		Events: as.events, Remote: remote.NewPool(remote.Options{}), Log: zerolog.New(&logs), CacheDir: t.TempDir(),
		RegisterGiveUpAfter: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	waitUntil(t, ctx, "the agent registered", func() bool { return onlineLease(t, ctx, etcd, "agent-refused") != 0 })

	root := etcdSrv.Client(t, embedded.EtcdRootUser)
	if _, err := root.RoleRevokePermission(ctx, embedded.EtcdAgentUser, leadership.AgentsPrefix, clientv3.GetPrefixRangeEnd(leadership.AgentsPrefix)); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Revoke(ctx, onlineLease(t, ctx, etcd, "agent-refused")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not registered in etcd for") || !strings.Contains(err.Error(), "permission denied") {
			t.Fatalf("Run: %v; want it to give up registering, saying why", err)
		}
	case <-ctx.Done():
		t.Fatalf("the agent runs on unregistered:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), `"message":"register the agent in etcd"`) {
		t.Fatalf("the failed tries are not logged:\n%s", logs.String())
	}
}

// The agents list pages by id: each page reads at most limit agents
// whatever the number registered, marks each one online or not, and the
// pages together list every agent once, in order.
func TestAgentsListPagesByID(t *testing.T) {
	ctx := testenv.Context(t, time.Minute)
	_, etcd := testenv.Etcd(t)
	ids := []string{"a-1", "a-2", "b/slash", "c 3", "d-4"}
	for i, id := range ids {
		v, _ := json.Marshal(agents.Info{ID: id, Pool: "default", Hostname: "h", PID: i + 1})
		if _, err := etcd.Put(ctx, leadership.AgentSeenKey(id), string(v)); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if _, err := etcd.Put(ctx, leadership.AgentOnlineKey(id), "x"); err != nil {
				t.Fatal(err)
			}
		}
	}
	var got []string
	pages := 0
	for after := ""; ; {
		list, next, err := agents.List(ctx, etcd, after, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) > 2 {
			t.Fatalf("page of %d agents, limit 2", len(list))
		}
		for _, a := range list {
			want := slices.Index(ids, a.ID)%2 == 0
			if want != a.Online {
				t.Fatalf("agent %q listed online=%v, want %v", a.ID, a.Online, want)
			}
			got = append(got, a.ID)
		}
		if pages++; pages > len(ids) {
			t.Fatalf("more pages than agents: the pages repeat %q", got)
		}
		if next == "" {
			break
		}
		after = next
	}
	// Sorted by the key, where an id is path-escaped ("b/slash" as "b%2Fslash").
	want := []string{"a-1", "a-2", "b/slash", "c 3", "d-4"}
	if !slices.Equal(got, want) || pages != 3 {
		t.Fatalf("pages listed %q in %d pages; want %q in 3", got, pages, want)
	}
	if _, _, err := agents.List(ctx, etcd, "", 0); err == nil {
		t.Fatal("limit 0 accepted")
	}
}
