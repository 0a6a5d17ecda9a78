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

// firstKey is the leader key of an election as the agents read it: the
// first created under its prefix.
func firstKey(t *testing.T, ctx context.Context, cli *clientv3.Client, cluster string) (key string, token int64) {
	t.Helper()
	resp, err := cli.Get(ctx, leadership.ClusterLeaderKeys(cluster), clientv3.WithFirstCreate()...)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return "", 0
	}
	return string(resp.Kvs[0].Key), resp.Kvs[0].CreateRevision
}

// A session's terms of one election follow each other, each under a key
// of its own: a campaign made while the previous term has ended but not
// yet resigned (a cluster released and given a new command at once) wins
// with a token above the previous one, and the late resignation of the
// previous term leaves the new term's key alone. Before, both terms
// shared the key election/<lease>: the new term led with the old token,
// and the old term's resignation deleted the key under it, so agents
// refused its steps ("no leader in etcd") and nothing ended the term.
func TestATermNeverReusesTheKeyOfAnEarlierTermOfItsSession(t *testing.T) {
	_, cli := testenv.Etcd(t)
	ctx := testenv.Context(t, time.Minute)
	s := session(t, ctx, cli)
	el := leadership.ClusterElection("live")

	cctx, cancel := context.WithCancel(ctx)
	first, err := s.Campaign(cctx, el, "server-1")
	if err != nil {
		t.Fatal(err)
	}
	cancel() // the cluster is released: the term ends; its holder resigns a moment later
	<-first.Context().Done()
	second, err := s.Campaign(ctx, el, "server-1")
	if err != nil {
		t.Fatal(err)
	}
	if second.Token <= first.Token {
		t.Fatalf("the second term's token is %d after the first's %d; want it higher (a fresh key)", second.Token, first.Token)
	}
	if err := first.Resign(ctx); err != nil { // the first term's late resignation
		t.Fatal(err)
	}
	if key, token := firstKey(t, ctx, cli, "live"); key != second.Key || token != second.Token || !second.Valid() {
		t.Fatalf("after the first term resigned, etcd's leader key is %q (%d) and the second term valid=%v; want %q (%d), valid",
			key, token, second.Valid(), second.Key, second.Token)
	}

	// A campaign of the same session while its term lasts waits for the
	// term to end: one process never holds two terms of one election.
	won := make(chan *leadership.Term, 1)
	go func() {
		term, err := s.Campaign(ctx, el, "server-1")
		if err != nil {
			t.Error(err)
		}
		won <- term
	}()
	select {
	case term := <-won:
		t.Fatalf("a second term (token %d) of the same session began while the term of token %d lasts", term.Token, second.Token)
	case <-time.After(300 * time.Millisecond):
	}
	if !second.Valid() {
		t.Fatal("a waiting campaign of the same session ended the term")
	}
	if err := second.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	third := <-won
	if third == nil || third.Token <= second.Token {
		t.Fatalf("third term %v after the second's token %d", third, second.Token)
	}
	if key, token := firstKey(t, ctx, cli, "live"); key != third.Key || token != third.Token {
		t.Fatalf("etcd's leader key is %q (%d); want the third term's %q (%d)", key, token, third.Key, third.Token)
	}

	// A term whose key is gone (deleted by hand, or by anything else) ends
	// at once, saying so: its holder must not go on believing it leads.
	if _, err := cli.Delete(ctx, third.Key); err != nil {
		t.Fatal(err)
	}
	select {
	case <-third.Context().Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the term lasts although its key is gone")
	}
	if cause := context.Cause(third.Context()); !errors.Is(cause, leadership.ErrNotLeading) {
		t.Fatalf("the term ended with %v, want ErrNotLeading", cause)
	}
	if third.Valid() {
		t.Fatal("a term whose key is gone is valid")
	}
}
