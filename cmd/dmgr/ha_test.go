package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/internal/busauth"
	"github.com/dmgr/dmgr/internal/chserver"
	"github.com/dmgr/dmgr/internal/embedded"
	"github.com/dmgr/dmgr/internal/leadership"
	"github.com/dmgr/dmgr/internal/service"
	"github.com/dmgr/dmgr/internal/testenv"
)

// sessionTTL is the servers' etcd session TTL in these tests.
const sessionTTL = 5 * time.Second

// runEtcdMember is the test binary acting as one etcd member process.
func runEtcdMember() int {
	e, err := embedded.StartEtcdMember(embedded.Member{Name: os.Getenv("DMGR_ETCD_NAME"), Dir: os.Getenv("DMGR_ETCD_DIR"),
		ClientURL: os.Getenv("DMGR_ETCD_CLIENT"), PeerURL: os.Getenv("DMGR_ETCD_PEER"), InitialCluster: os.Getenv("DMGR_ETCD_CLUSTER")})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	e.Close()
	return 0
}

// haCluster is several `dmgr server` processes against one NATS and a
// 3-member etcd cluster (member processes), with agents as processes.
type haCluster struct {
	*controlPlane
	etcd    []*childProcess
	etcdCli *clientv3.Client   // all members
	single  []*clientv3.Client // one per member, so a frozen member does not stall a query
	chAddr  string
	// The servers' login flags: etcd as dmgr-server, ClickHouse as dmgr.
	etcdServer, chFlags []string

	mu      sync.Mutex
	servers map[string]*childProcess // by coordinator id
}

// childProcess is the test binary running as dmgr or as an etcd member.
type childProcess struct {
	name     string
	url      string // server: its API; etcd: its client URL
	endpoint string // server: the one etcd member it talks to
	cmd      *exec.Cmd
	done     chan struct{}
	log      *testenv.Buffer
}

func startChild(t testing.TB, name string, env []string, args ...string) *childProcess {
	t.Helper()
	p := &childProcess{name: name, cmd: exec.Command(os.Args[0], args...), done: make(chan struct{}), log: &testenv.Buffer{}}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stderr = p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

func (p *childProcess) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *childProcess) kill(t testing.TB) {
	t.Helper()
	_ = p.cmd.Process.Kill()
	<-p.done
}

func (p *childProcess) terminate(t testing.TB) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not stop within 30s of SIGTERM", p.name)
	}
}

func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startHA(t testing.TB, servers int) *haCluster {
	t.Helper()
	testenv.RequireClickHouse(t)
	ctx := testenv.Context(t, 10*time.Minute)
	ns := testenv.NATS(t)
	h := &haCluster{servers: map[string]*childProcess{}}

	// Three etcd members, each its own process.
	var members []embedded.Member
	var initial []string
	for i := 1; i <= 3; i++ {
		cu, err1 := embedded.FreeURL("127.0.0.1")
		pu, err2 := embedded.FreeURL("127.0.0.1")
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		m := embedded.Member{Name: fmt.Sprintf("etcd%d", i), Dir: t.TempDir(), ClientURL: cu, PeerURL: pu}
		members = append(members, m)
		initial = append(initial, m.Name+"="+pu)
	}
	var endpoints []string
	for _, m := range members {
		p := startChild(t, m.Name, []string{"DMGR_TEST_RUN_ETCD=1", "DMGR_ETCD_NAME=" + m.Name, "DMGR_ETCD_DIR=" + m.Dir,
			"DMGR_ETCD_CLIENT=" + m.ClientURL, "DMGR_ETCD_PEER=" + m.PeerURL, "DMGR_ETCD_CLUSTER=" + strings.Join(initial, ",")})
		p.url = m.ClientURL
		h.etcd = append(h.etcd, p)
		endpoints = append(endpoints, m.ClientURL)
	}
	anon, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(60 * time.Second); ; {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := anon.Put(pctx, "/dmgr/test/ready", "1")
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd cluster not ready: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	anon.Close()
	// The cluster requires a login from here on, as dev's etcd does.
	pw := embedded.EtcdPasswords{Root: "ha-root-password", Server: "ha-server-password", Agent: "ha-agent-password"}
	if err := embedded.EnableEtcdAuth(ctx, endpoints, nil, pw); err != nil {
		t.Fatalf("enable etcd auth: %v", err)
	}
	h.etcdServer = []string{"--etcd-user", embedded.EtcdServerUser, "--etcd-password-file", testenv.PasswordFile(t, pw.Server)}
	login := func(cfg clientv3.Config) clientv3.Config {
		cfg.Username, cfg.Password = embedded.EtcdServerUser, pw.Server
		return cfg
	}
	cli, err := clientv3.New(login(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	h.etcdCli = cli
	for _, ep := range endpoints {
		c, err := clientv3.New(login(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 2 * time.Second}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		h.single = append(h.single, c)
	}

	ch, err := chserver.Start(ctx, chserver.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("start clickhouse: %v", err)
	}
	t.Cleanup(func() { _ = ch.Stop() })
	h.chAddr = ch.Addr()
	h.chFlags = testenv.ClickHouseFlags(t, ch)

	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i*11 + 5)
	}
	cp := &controlPlane{natsURL: ns.URL(), natsSeeds: testSeeds(t, ns), etcdURL: strings.Join(endpoints, ","), masterKey: base64.StdEncoding.EncodeToString(key),
		etcdAgent: []string{"--etcd-user", embedded.EtcdAgentUser, "--etcd-password-file", testenv.PasswordFile(t, pw.Agent)},
		token:     "test-admin-token-0123456789", logs: &testenv.Buffer{}, agents: map[string]*agentProcess{}}
	cp.baseURL = h.anyServerURL
	_, cp.js = testenv.JetStream(t, ns)
	if cp.store, err = eventstore.Open(ctx, cp.js, eventstore.Config{}); err != nil {
		t.Fatal(err)
	}
	h.controlPlane = cp
	for i := 1; i <= servers; i++ {
		h.startServer(t, fmt.Sprintf("server-%d", i), h.etcd[(i-1)%len(h.etcd)].url)
	}
	t.Cleanup(func() {
		if t.Failed() {
			h.mu.Lock()
			for id, s := range h.servers {
				t.Logf("%s log (tail):\n%s", id, tailOf(s.log.String(), 6000))
			}
			h.mu.Unlock()
			cp.mu.Lock()
			for id, a := range cp.agents {
				t.Logf("agent %s log (tail):\n%s", id, tailOf(a.stderr.String(), 3000))
			}
			cp.mu.Unlock()
		}
	})
	return h
}

// startServer runs `dmgr server` as coordinator id, talking to one etcd
// member only (so that a test can cut it off from etcd).
func (h *haCluster) startServer(t testing.TB, id, etcdEndpoint string) *childProcess {
	t.Helper()
	addr := freePort(t)
	args := []string{"server", "--http-addr", addr, "--nats-url", h.natsURL, "--nats-nkey-file", h.natsSeeds[busauth.Server], "--etcd-endpoints", etcdEndpoint,
		"--coordinator-id", id, "--session-ttl", sessionTTL.String(), "--log-level", "debug"}
	args = append(append(args, h.etcdServer...), h.chFlags...)
	p := startChild(t, id, []string{"DMGR_TEST_RUN_MAIN=1", "DMGR_ADMIN_TOKEN=" + h.token, "DMGR_MASTER_KEY=" + h.masterKey}, args...)
	p.url, p.endpoint = "http://"+addr, etcdEndpoint
	for deadline := time.Now().Add(60 * time.Second); ; {
		resp, err := http.Get(p.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) || !p.alive() {
			t.Fatalf("%s did not start: %v\n%s", id, err, p.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	h.mu.Lock()
	h.servers[id] = p
	h.mu.Unlock()
	return p
}

func (h *haCluster) server(id string) *childProcess {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.servers[id]
}

// anyServerURL is the API of a live server, a different one each call.
func (h *haCluster) anyServerURL() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var live []string
	for _, s := range h.servers {
		if s.alive() {
			live = append(live, s.url)
		}
	}
	if len(live) == 0 {
		return "http://127.0.0.1:1"
	}
	return live[time.Now().UnixNano()%int64(len(live))]
}

// leaderOf answers the coordinator leading a cluster and its token, from
// the first-created election key.
func (h *haCluster) leaderOf(t testing.TB, cluster string) (string, int64) {
	t.Helper()
	id, token, err := h.readLeader(cluster)
	if err != nil {
		t.Fatal(err)
	}
	return id, token
}

// readLeader reads a cluster's leader through the first member that
// answers within a second.
func (h *haCluster) readLeader(cluster string) (string, int64, error) {
	var last error
	for _, c := range h.single {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := c.Get(ctx, leadership.ClusterLeaderKeys(cluster), clientv3.WithFirstCreate()...)
		cancel()
		if err != nil {
			last = err
			continue
		}
		if len(resp.Kvs) == 0 {
			return "", 0, nil
		}
		return string(resp.Kvs[0].Value), resp.Kvs[0].CreateRevision, nil
	}
	return "", 0, fmt.Errorf("no etcd member answers: %w", last)
}

// waitLeader waits until a cluster has a leader other than not. Members
// that do not answer meanwhile (etcd electing a new raft leader after
// one was frozen) are asked again until the timeout.
func (h *haCluster) waitLeader(t testing.TB, cluster, not string, timeout time.Duration) (string, int64) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		id, token, err := h.readLeader(cluster)
		if err == nil && id != "" && id != not {
			return id, token
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster %s: no leader other than %q after %s (now %q, %v)", cluster, not, timeout, id, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// leaderWatch records every key that led a cluster, to check afterwards
// that every coordinator commit was made under the token of a key that led
// the cluster. It watches through every member separately, so that a frozen
// member does not blind it.
type leaderWatch struct {
	mu     sync.Mutex
	tokens map[string]map[int64]string // cluster → token → coordinator, for every key that ever led
}

func (h *haCluster) watchLeaders(t testing.TB) *leaderWatch {
	t.Helper()
	w := &leaderWatch{tokens: map[string]map[int64]string{}}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for _, cli := range h.single {
		wch := cli.Watch(ctx, leadership.ClusterLeaderPrefix, clientv3.WithPrefix(), clientv3.WithRev(1))
		go w.follow(wch)
	}
	return w
}

// follow folds one member's watch: the leader of a cluster is its live key
// created first.
func (w *leaderWatch) follow(wch clientv3.WatchChan) {
	type key struct {
		rev   int64
		value string
	}
	keys := map[string]map[string]key{} // cluster → key → create revision, coordinator
	for wr := range wch {
		for _, ev := range wr.Events {
			rest := strings.TrimPrefix(string(ev.Kv.Key), leadership.ClusterLeaderPrefix)
			cluster := rest[:strings.LastIndexByte(rest, '/')]
			if keys[cluster] == nil {
				keys[cluster] = map[string]key{}
			}
			if ev.Type == clientv3.EventTypeDelete {
				delete(keys[cluster], string(ev.Kv.Key))
			} else if ev.IsCreate() {
				keys[cluster][string(ev.Kv.Key)] = key{ev.Kv.CreateRevision, string(ev.Kv.Value)}
			}
			var leader key
			for _, k := range keys[cluster] {
				if leader.rev == 0 || k.rev < leader.rev {
					leader = k
				}
			}
			if leader.rev == 0 {
				continue
			}
			w.mu.Lock()
			if w.tokens[cluster] == nil {
				w.tokens[cluster] = map[int64]string{}
			}
			w.tokens[cluster][leader.rev] = leader.value
			w.mu.Unlock()
		}
	}
}

// assertFenced checks a cluster's commits over the stream: the
// coordinator's commits carry non-decreasing tokens (no commit of an old
// leader after the first one of a newer), each token is one that led the
// cluster in etcd, and each leader's first commit is ClusterLeaderElected.
func (h *haCluster) assertFenced(t testing.TB, w *leaderWatch, cluster string) (leaders []int64) {
	t.Helper()
	st, err := h.store.Load(testenv.Context(t, 10*time.Second), domain.AggregateCluster, cluster)
	if err != nil {
		t.Fatal(err)
	}
	var last int64
	seen := map[int64]bool{}
	for _, e := range st.Events {
		if e.Actor != service.CoordinatorActor {
			continue
		}
		tok := e.FencingToken
		if tok < last {
			t.Errorf("cluster %s: commit seq %d (%s) has token %d after a commit with token %d", cluster, e.Seq, e.Type, tok, last)
		}
		if !seen[tok] {
			seen[tok] = true
			leaders = append(leaders, tok)
			if e.Type != domain.TypeClusterLeaderElected {
				t.Errorf("cluster %s: the first commit of token %d is %s, want ClusterLeaderElected", cluster, tok, e.Type)
			}
			w.mu.Lock()
			who, led := w.tokens[cluster][tok]
			w.mu.Unlock()
			if !led {
				t.Errorf("cluster %s: token %d never led the cluster in etcd", cluster, tok)
			} else {
				t.Logf("cluster %s: token %d of %s", cluster, tok, who)
			}
		}
		last = max(last, tok)
	}
	return leaders
}

// startedOnce checks that every instance of a cluster deployed with
// threeHostTopology was started exactly once.
func startedOnce(t testing.TB, bed interface {
	Exec(testing.TB, int, string) (string, error)
}) {
	t.Helper()
	for i := 1; i <= 3; i++ {
		out, err := bed.Exec(t, i, `for d in /srv/dm/data/dm-master-8261 /srv/dm/deploy/dm-worker-8262/log; do ls $d | grep -c '^started-'; done`)
		if err != nil {
			t.Fatalf("host %d: %v %s", i, err, out)
		}
		if got := strings.Fields(out); len(got) != 2 || got[0] != "1" || got[1] != "1" {
			t.Errorf("host %d: master and worker started %v times, want once each", i, got)
		}
	}
}

// waitStepRunning waits until a step of an operation runs and returns its
// agent.
func (cp *controlPlane) waitStepRunning(t testing.TB, opID, step string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var op domain.OperationView
		cp.api(t, "GET", "/api/v1/operations/"+opID, nil, &op)
		for _, s := range op.Steps {
			if s.ID == step && s.Status == "running" {
				return s.Agent
			}
		}
		if op.Status == domain.OperationStatusFailed || op.Status == domain.OperationStatusSucceeded || time.Now().After(deadline) {
			t.Fatalf("step %s never ran (operation %s): %s", step, op.Status, describeSteps(op))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
