package leadership_test

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dmgr/dmgr/internal/leadership"
	"github.com/dmgr/dmgr/internal/testenv"
)

func session(t *testing.T, ctx context.Context, cli *clientv3.Client) *leadership.Session {
	t.Helper()
	s, err := leadership.NewSession(ctx, cli, 5*time.Second, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// The projector and a cluster named after any folder of the layout each
// win their own election at once, as dmgr-server on a real etcd with
// login; each term's token is the first-created key under its election,
// as the agents read it; a second candidate waits, and leads with a
// higher token once the first resigns.
func TestProjectorAndClustersOfEveryNameLeadApart(t *testing.T) {
	_, cli := testenv.Etcd(t)
	ctx := testenv.Context(t, time.Minute)
	// The projector and the coordinator of a server keep sessions of
	// their own, as in dmgr.
	s0, s1, s2 := session(t, ctx, cli), session(t, ctx, cli), session(t, ctx, cli)

	proj, err := s0.Campaign(ctx, leadership.ProjectorElection, "server-1")
	if err != nil {
		t.Fatal(err)
	}
	terms := map[string]*leadership.Term{}
	for _, name := range []string{"projections", "projector", "leader", "cluster", "v1", "agents", "coordinators", "online", "seen"} {
		// Under the old layout the campaign for "projections" waits for
		// the projector's term: bound it, so that the test says so.
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		term, err := s1.Campaign(cctx, leadership.ClusterElection(name), "server-1")
		cancel()
		if err != nil {
			t.Fatalf("cluster %q: %v (while the projector leads)", name, err)
		}
		terms[name] = term
		resp, err := cli.Get(ctx, leadership.ClusterLeaderKeys(name), clientv3.WithFirstCreate()...)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 1 || resp.Kvs[0].CreateRevision != term.Token || string(resp.Kvs[0].Key) != term.Key {
			t.Fatalf("cluster %q: first key under %s is %v, want the term's %s (token %d)", name, leadership.ClusterLeaderKeys(name), resp.Kvs, term.Key, term.Token)
		}
	}
	if !proj.Valid() {
		t.Fatal("the projector's term ended while clusters were elected")
	}

	// A second candidate for "projections" waits for the first term.
	won := make(chan *leadership.Term, 1)
	go func() {
		term, err := s2.Campaign(ctx, leadership.ClusterElection("projections"), "server-2")
		if err != nil {
			t.Error(err)
		}
		won <- term
	}()
	select {
	case term := <-won:
		t.Fatalf("server-2 won a term (token %d) while server-1 leads", term.Token)
	case <-time.After(500 * time.Millisecond):
	}
	first := terms["projections"]
	if err := first.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if first.Valid() || first.Context().Err() == nil {
		t.Fatal("a resigned term is still valid")
	}
	if _, _, err := first.WriteContext(ctx); !errors.Is(err, leadership.ErrNotLeading) {
		t.Fatalf("write under a resigned term: %v, want ErrNotLeading", err)
	}
	second := <-won
	if second == nil || second.Token <= first.Token {
		t.Fatalf("server-2's term %v after server-1's token %d", second, first.Token)
	}
	if !proj.Valid() {
		t.Fatal("the projector's term ended when a cluster's leader resigned")
	}
}

// When the session's lease is gone, every term under it ends at once with
// ErrNotLeading, and writes are refused.
func TestLostLeaseEndsEveryTerm(t *testing.T) {
	_, cli := testenv.Etcd(t)
	ctx := testenv.Context(t, time.Minute)
	s := session(t, ctx, cli)
	proj, err := s.Campaign(ctx, leadership.ProjectorElection, "server-1")
	if err != nil {
		t.Fatal(err)
	}
	cluster, err := s.Campaign(ctx, leadership.ClusterElection("prod"), "server-1")
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel, err := cluster.WriteContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := wctx.Deadline(); !ok || d.After(time.Now().Add(s.Window())) {
		t.Fatalf("write deadline %v, want within the window %s", d, s.Window())
	}
	cancel()
	if _, err := cli.Revoke(ctx, s.Lease()); err != nil {
		t.Fatal(err)
	}
	for name, term := range map[string]*leadership.Term{"projector": proj, "prod": cluster} {
		<-term.Context().Done()
		if cause := context.Cause(term.Context()); !errors.Is(cause, leadership.ErrNotLeading) {
			t.Errorf("%s: term ended with %v, want ErrNotLeading", name, cause)
		}
		if _, _, err := term.WriteContext(ctx); !errors.Is(err, leadership.ErrNotLeading) {
			t.Errorf("%s: write after the lease is gone: %v, want ErrNotLeading", name, err)
		}
	}
	if _, err := s.Campaign(ctx, leadership.ClusterElection("other"), "server-1"); err == nil {
		t.Fatal("campaign under a lost session won")
	}
}
