package embedded_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/dmgr/dmgr/internal/embedded"
	"github.com/dmgr/dmgr/internal/leadership"
	"github.com/dmgr/dmgr/internal/testenv"
)

func must(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// refused checks that err is etcd refusing the request for want of a login
// or of a permission.
func refused(t *testing.T, err error, what string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: accepted, want refused", what)
	}
	if !errors.Is(err, rpctypes.ErrPermissionDenied) && !errors.Is(err, rpctypes.ErrUserEmpty) {
		t.Fatalf("%s: got %v, want permission denied or user name empty", what, err)
	}
}

// absent checks, as root, that nothing was written at key.
func absent(t *testing.T, ctx context.Context, root *clientv3.Client, key string) {
	t.Helper()
	resp, err := root.Get(ctx, key, clientv3.WithPrefix())
	must(t, err, "root get "+key)
	if len(resp.Kvs) != 0 {
		t.Fatalf("%s holds %q after a refused write", key, resp.Kvs[0].Value)
	}
}

// An anonymous client can neither read nor write, nor take a lease.
func TestEtcdRefusesAnonymousRequests(t *testing.T) {
	e, _ := testenv.Etcd(t)
	ctx := testenv.Context(t, time.Minute)
	anon := e.Client(t, "")
	root := e.Client(t, embedded.EtcdRootUser)
	_, err := anon.Put(ctx, leadership.ClusterLeaderKeys("prod")+"forged", "x")
	refused(t, err, "anonymous put")
	_, err = anon.Put(ctx, "/elsewhere", "x")
	refused(t, err, "anonymous put outside /dmgr/")
	_, err = anon.Get(ctx, leadership.Root, clientv3.WithPrefix())
	refused(t, err, "anonymous get")
	_, err = anon.Delete(ctx, leadership.Root, clientv3.WithPrefix())
	refused(t, err, "anonymous delete")
	_, err = anon.Grant(ctx, 10)
	refused(t, err, "anonymous lease grant")
	_, err = anon.UserAdd(ctx, "mallory", "pw")
	refused(t, err, "anonymous user add")
	_, err = anon.AuthDisable(ctx)
	refused(t, err, "anonymous auth disable")
	absent(t, ctx, root, leadership.LeaderPrefix)
	absent(t, ctx, root, "/elsewhere")

	// A wrong password does not log in.
	_, err = clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint()}, DialTimeout: 5 * time.Second,
		Username: embedded.EtcdServerUser, Password: e.Passwords.Server + "x"})
	if !errors.Is(err, rpctypes.ErrAuthFailed) {
		t.Fatalf("wrong password: got %v, want authentication failed", err)
	}
}

// dmgr-server campaigns for a cluster and keeps its session; dmgr-agent
// reads the leader key as the agent's stale-dispatch check does, registers
// under its lease, and can do nothing else: not take, overwrite or delete
// a leader key, not revoke the leader's lease, not read or write outside
// its prefixes, not change users or roles.
func TestEtcdRolesServerLeadsAgentOnlyReadsLeaders(t *testing.T) {
	e, server := testenv.Etcd(t)
	ctx := testenv.Context(t, 2*time.Minute)
	agent := e.AgentClient(t)
	root := e.Client(t, embedded.EtcdRootUser)

	// The server: a session (lease grant and keepalive) and an election
	// of a cluster, as the coordinator runs them.
	sess, err := concurrency.NewSession(server, concurrency.WithTTL(2), concurrency.WithContext(ctx))
	must(t, err, "server session")
	defer sess.Close()
	el := concurrency.NewElection(sess, leadership.ClusterElection("prod"))
	must(t, el.Campaign(ctx, "server-1"), "server campaign")
	_, err = server.Put(ctx, leadership.CoordinatorKey("server-1"), "server-1", clientv3.WithLease(sess.Lease()))
	must(t, err, "server coordinator key")
	leader, err := el.Leader(ctx)
	must(t, err, "leader")
	leaderKey, token := string(leader.Kvs[0].Key), leader.Kvs[0].CreateRevision
	// The lease outlives its TTL: the session keeps it alive.
	time.Sleep(3 * time.Second)
	select {
	case <-sess.Done():
		t.Fatal("the server's session ended")
	default:
	}
	ttl, err := server.TimeToLive(ctx, sess.Lease())
	must(t, err, "lease ttl")
	if ttl.TTL <= 0 {
		t.Fatalf("the server's lease expired: ttl %d", ttl.TTL)
	}

	// The agent reads the first-created key under the cluster's prefix
	// (agents.staleDispatch).
	resp, err := agent.Get(ctx, leadership.ClusterLeaderKeys("prod"), clientv3.WithFirstCreate()...)
	must(t, err, "agent reads the leader key")
	if len(resp.Kvs) != 1 || resp.Kvs[0].CreateRevision != token || string(resp.Kvs[0].Value) != "server-1" {
		t.Fatalf("agent read %v, want the server's key (token %d)", resp.Kvs, token)
	}
	// The agent registers as agents.register does: a lease, a txn of two
	// puts under the agents' prefix, a keepalive, and revokes its lease.
	lease, err := agent.Grant(ctx, 10)
	must(t, err, "agent lease")
	_, err = agent.Txn(ctx).Then(
		clientv3.OpPut(leadership.AgentSeenKey("a1"), "{}"),
		clientv3.OpPut(leadership.AgentOnlineKey("a1"), "{}", clientv3.WithLease(lease.ID)),
	).Commit()
	must(t, err, "agent registers")
	_, err = agent.KeepAliveOnce(ctx, lease.ID)
	must(t, err, "agent keepalive")
	got, err := server.Get(ctx, leadership.AgentsOnlinePrefix, clientv3.WithPrefix())
	must(t, err, "server lists agents")
	if len(got.Kvs) != 1 {
		t.Fatalf("server sees %d online agents, want 1", len(got.Kvs))
	}
	_, err = agent.Revoke(ctx, lease.ID)
	must(t, err, "agent revokes its own lease")

	// What the agent may not do.
	_, err = agent.Put(ctx, leaderKey, "agent")
	refused(t, err, "agent overwrites the leader key")
	_, err = agent.Put(ctx, leadership.ClusterLeaderKeys("prod")+"forged", "agent")
	refused(t, err, "agent writes a leader key")
	_, err = agent.Delete(ctx, leaderKey)
	refused(t, err, "agent deletes the leader key")
	_, err = agent.Txn(ctx).Then(clientv3.OpPut(leadership.AgentOnlineKey("a2"), "{}"), clientv3.OpPut(leadership.ClusterLeaderKeys("prod")+"x", "y")).Commit()
	refused(t, err, "agent txn that also writes a leader key")
	absent(t, ctx, root, leadership.AgentOnlineKey("a2"))
	_, err = agent.Revoke(ctx, sess.Lease())
	refused(t, err, "agent revokes the leader's lease")
	agentSess, err := concurrency.NewSession(agent, concurrency.WithTTL(10), concurrency.WithContext(ctx))
	must(t, err, "agent session (a lease needs no key permission)")
	defer agentSess.Close()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err = concurrency.NewElection(agentSess, leadership.ClusterElection("other")).Campaign(cctx, "agent")
	cancel()
	refused(t, err, "agent campaigns")
	for _, key := range []string{leadership.CoordinatorsPrefix, leadership.ActiveClustersPrefix, leadership.Root, leadership.ReadyProbeKey, "/elsewhere",
		leadership.LeaderPrefix + "clusterx", leadership.ProjectorLeaderKeys, leadership.LeaderPrefix, "/dmgr/leader/"} {
		_, err = agent.Get(ctx, key, clientv3.WithPrefix())
		refused(t, err, "agent reads "+key)
	}
	for _, key := range []string{leadership.CoordinatorKey("agent"), leadership.ActiveClusterKey("prod"), leadership.Root + "x", "/elsewhere",
		leadership.Root + "agentsx", leadership.ProjectorLeaderKeys + "x", "/dmgr/agents/online/x"} {
		_, err = agent.Put(ctx, key, "agent")
		refused(t, err, "agent writes "+key)
		absent(t, ctx, root, key)
	}
	// Neither role administers users or roles.
	for name, cli := range map[string]*clientv3.Client{"agent": agent, "server": server} {
		_, err = cli.RoleGrantPermission(ctx, embedded.EtcdAgentUser, "/", "\x00", embedded.PermReadWrite)
		refused(t, err, name+" widens the agent role")
		_, err = cli.UserGrantRole(ctx, embedded.EtcdAgentUser, "root")
		refused(t, err, name+" grants root")
		_, err = cli.AuthDisable(ctx)
		refused(t, err, name+" disables auth")
	}
	// The server may not write outside /dmgr/v1/ either.
	for _, key := range []string{"/elsewhere", "/dmgr/leader/prod/x"} {
		_, err = server.Put(ctx, key, "server")
		refused(t, err, "server writes "+key)
	}

	// After all that, the server still leads with the same key.
	leader, err = el.Leader(ctx)
	must(t, err, "leader after the attempts")
	if string(leader.Kvs[0].Key) != leaderKey || leader.Kvs[0].CreateRevision != token || string(leader.Kvs[0].Value) != "server-1" {
		t.Fatalf("leader changed to %s (token %d)", leader.Kvs[0].Key, leader.Kvs[0].CreateRevision)
	}

	// A second server waits for the first to resign, then leads.
	sess2, err := concurrency.NewSession(server, concurrency.WithTTL(2), concurrency.WithContext(ctx))
	must(t, err, "second session")
	defer sess2.Close()
	won := make(chan error, 1)
	go func() {
		won <- concurrency.NewElection(sess2, leadership.ClusterElection("prod")).Campaign(ctx, "server-2")
	}()
	must(t, el.Resign(ctx), "resign")
	must(t, <-won, "second campaign")
	leader, err = el.Leader(ctx)
	must(t, err, "leader after resign")
	if string(leader.Kvs[0].Value) != "server-2" {
		t.Fatalf("leader after resign: %s", leader.Kvs[0].Value)
	}
}

// EnableEtcdAuth reconciles: run again it changes nothing; it takes back a
// permission or role granted by hand; a changed password replaces the old
// one; without root's password it says what to do; and the member keeps
// requiring a login across a restart.
func TestEnableEtcdAuthReconcilesAndSurvivesRestart(t *testing.T) {
	ctx := testenv.Context(t, 2*time.Minute)
	dir := t.TempDir()
	e, err := embedded.StartEtcd(dir, "127.0.0.1:0", "127.0.0.1:0")
	must(t, err, "start etcd")
	defer func() { e.Close() }()
	pw := embedded.EtcdPasswords{Root: "root-pw", Server: "server-pw", Agent: "agent-pw"}
	must(t, e.EnableAuth(ctx, pw), "enable auth")
	must(t, e.EnableAuth(ctx, pw), "enable auth again")
	login := func(user, password string) (*clientv3.Client, error) {
		return clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint()}, DialTimeout: 5 * time.Second,
			Username: user, Password: password})
	}
	root, err := login(embedded.EtcdRootUser, pw.Root)
	must(t, err, "root login")
	defer root.Close()
	// Widen the agent by hand, twice over.
	_, err = root.RoleGrantPermission(ctx, embedded.EtcdAgentUser, leadership.LeaderPrefix, clientv3.GetPrefixRangeEnd(leadership.LeaderPrefix), embedded.PermReadWrite)
	must(t, err, "widen agent role")
	_, err = root.RoleGrantPermission(ctx, embedded.EtcdAgentUser, "/", "\x00", embedded.PermRead)
	must(t, err, "widen agent role")
	_, err = root.UserGrantRole(ctx, embedded.EtcdAgentUser, embedded.EtcdServerUser)
	must(t, err, "grant server role to agent")

	pw.Server = "server-pw-2"
	must(t, e.EnableAuth(ctx, pw), "reconcile")
	role, err := root.RoleGet(ctx, embedded.EtcdAgentUser)
	must(t, err, "agent role")
	var perms []string
	for _, p := range role.Perm {
		perms = append(perms, embedded.EtcdPermission{Prefix: string(p.Key), Type: clientv3.PermissionType(p.PermType)}.String()+"<"+string(p.RangeEnd))
	}
	if got, want := strings.Join(perms, " "), "readwrite /dmgr/v1/agents/*</dmgr/v1/agents0 read /dmgr/v1/leader/cluster/*</dmgr/v1/leader/cluster0"; got != want {
		t.Fatalf("agent role after reconcile: %s, want %s", got, want)
	}
	user, err := root.UserGet(ctx, embedded.EtcdAgentUser)
	must(t, err, "agent user")
	if strings.Join(user.Roles, ",") != embedded.EtcdAgentUser {
		t.Fatalf("agent user's roles after reconcile: %v", user.Roles)
	}
	if _, err := login(embedded.EtcdServerUser, "server-pw"); !errors.Is(err, rpctypes.ErrAuthFailed) {
		t.Fatalf("old server password: %v, want refused", err)
	}
	srv, err := login(embedded.EtcdServerUser, pw.Server)
	must(t, err, "new server password")
	srv.Close()

	wrongRoot := pw
	wrongRoot.Root = "not-root-pw"
	if err := e.EnableAuth(ctx, wrongRoot); err == nil || !strings.Contains(err.Error(), "root password given does not log in") {
		t.Fatalf("reconcile with a wrong root password: %v", err)
	}

	root.Close()
	e.Close()
	e, err = embedded.StartEtcd(dir, "127.0.0.1:0", "127.0.0.1:0")
	must(t, err, "restart etcd")
	must(t, e.EnableAuth(ctx, pw), "enable auth after restart")
	anon, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint()}, DialTimeout: 5 * time.Second})
	must(t, err, "anonymous client")
	defer anon.Close()
	_, err = anon.Put(ctx, leadership.Root+"x", "y")
	refused(t, err, "anonymous put after restart")
	agent, err := login(embedded.EtcdAgentUser, pw.Agent)
	must(t, err, "agent login after restart")
	defer agent.Close()
	_, err = agent.Put(ctx, leadership.AgentSeenKey("a"), "{}")
	must(t, err, "agent put after restart")
}

func TestEnableEtcdAuthNeedsEveryPassword(t *testing.T) {
	err := embedded.EnableEtcdAuth(context.Background(), []string{"http://127.0.0.1:1"}, nil,
		embedded.EtcdPasswords{Root: "r", Server: "s"})
	if err == nil || !strings.Contains(err.Error(), "no password for user dmgr-agent") {
		t.Fatalf("got %v", err)
	}
}
