package agents_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dmgr/dmgr/agents"
	"github.com/dmgr/dmgr/agents/remote"
	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/internal/busauth"
	"github.com/dmgr/dmgr/internal/embedded"
	"github.com/dmgr/dmgr/internal/leadership"
	"github.com/dmgr/dmgr/internal/pkgstore"
	"github.com/dmgr/dmgr/internal/secrets"
	"github.com/dmgr/dmgr/internal/testenv"
	"github.com/dmgr/dmgr/internal/workqueue"
)

// fixture is a real NATS JetStream, etcd and sshd with one agent running
// in-process; the test plays the coordinator: it takes clusters' leader
// keys, commits their events and publishes steps.
type fixture struct {
	t     *testing.T
	ctx   context.Context
	js    jetstream.JetStream
	nc    *nats.Conn
	etcd  *clientv3.Client
	store *eventstore.Store
	vault *secrets.Vault
	sshd  *testenv.SSHServer
	logs  *testenv.Buffer
	dir   string // where steps create their marker directories

	credA string // credential of machine 127.0.0.1 (the sshd)

	mu       sync.Mutex
	results  []workqueue.Result
	clusters map[string]*testCluster
	stop     func()
}

// testCluster is a cluster's committed state as the test's coordinator
// knows it.
type testCluster struct {
	state   domain.Cluster
	lastSeq uint64
	version uint64
	token   int64
}

const hostA = "127.0.0.1"

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newAgentFixture(t, true)
}

// newAgentFixture is newFixture, with machine A and its sshd only when
// withSSHD (without, the fixture needs neither root nor sshd: for steps
// that run nothing on a host).
func newAgentFixture(t *testing.T, withSSHD bool) *fixture {
	t.Helper()
	ctx := testenv.Context(t, 3*time.Minute)
	ns := testenv.NATS(t)
	nc, js := testenv.JetStream(t, ns)
	etcdSrv, etcd := testenv.Etcd(t)
	var sshd *testenv.SSHServer
	if withSSHD {
		sshd = testenv.SSHD(t, testenv.SSHDOptions{})
	}
	store, err := eventstore.Open(ctx, js, eventstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := workqueue.Setup(ctx, js, workqueue.Config{}); err != nil {
		t.Fatal(err)
	}
	key := make([]byte, secrets.KeySize)
	for i := range key {
		key[i] = byte(i*13 + 5)
	}
	vault, err := secrets.Open(ctx, js, key, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pkgstore.Open(ctx, js, 1); err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, ctx: ctx, js: js, nc: nc, etcd: etcd, store: store, vault: vault, sshd: sshd,
		logs: &testenv.Buffer{}, dir: t.TempDir(), clusters: map[string]*testCluster{}}

	// Every result any agent publishes.
	cons, err := js.OrderedConsumer(ctx, workqueue.ResultsStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		var r workqueue.Result
		if err := json.Unmarshal(msg.Data(), &r); err != nil {
			t.Errorf("result %q: %v", msg.Data(), err)
			return
		}
		f.mu.Lock()
		f.results = append(f.results, r)
		f.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)

	// Machine A: the sshd, with its real credential.
	if withSSHD {
		if f.credA, err = vault.Put(ctx, secrets.KindPrivateKey, sshd.ClientKey, hostA); err != nil {
			t.Fatal(err)
		}
		f.registerMachine(hostA, sshd.Port, f.credA, sshd.HostKey)
	}

	// The agent connects as an agent of pool default (NATS) and as
	// dmgr-agent (etcd), and opens the stores read-only, as dmgr agent does.
	as := openAgentStores(t, ctx, ns, key)
	log := zerolog.New(f.logs).With().Timestamp().Logger()
	a, err := agents.New(agents.Config{ID: "agent-under-test", JS: as.js, Etcd: etcdSrv.AgentClient(t), Vault: as.vault,
		Packages: as.pkgs, Events: as.events,
		Remote: remote.NewPool(remote.Options{DialTimeout: 5 * time.Second}), Log: log,
		AckWait: 5 * time.Second, Retries: -1, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	var once sync.Once
	f.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("agent: %v", err)
			}
		})
	}
	t.Cleanup(func() {
		f.stop()
		if t.Failed() || os.Getenv("DMGR_TEST_SHOW_LOG") != "" {
			t.Logf("agent log:\n%s", f.logs.String())
		}
	})
	return f
}

// appendEvents commits events to one aggregate, as one commit.
func (f *fixture) appendEvents(aggType, id string, lastSeq, version uint64, token int64, evs ...domain.Event) uint64 {
	f.t.Helper()
	c := eventstore.Commit{CommitID: uuid.NewString(), AggregateType: aggType, AggregateID: id, Time: time.Now().UTC(),
		Actor: "test", FencingToken: token}
	for _, e := range evs {
		payload, err := json.Marshal(e)
		if err != nil {
			f.t.Fatal(err)
		}
		c.Events = append(c.Events, eventstore.NewEvent{Type: e.EventType(), SchemaVersion: 1, Payload: payload})
	}
	seq, err := f.store.Append(f.ctx, c, eventstore.Expect{LastSeq: lastSeq, Version: version})
	if err != nil {
		f.t.Fatalf("append to %s %s: %v", aggType, id, err)
	}
	return seq
}

// registerMachine commits a machine's registration, as the server does.
func (f *fixture) registerMachine(host string, port int, credID, hostKey string) {
	f.t.Helper()
	fp, err := remote.Fingerprint(hostKey)
	if err != nil {
		f.t.Fatal(err)
	}
	f.appendEvents(domain.AggregateMachine, host, 0, 0, 0, domain.MachineRegistered{Host: host, SSHPort: port, User: "root",
		Credential: domain.CredentialRef{ID: credID, Kind: domain.CredentialPrivateKey},
		HostKey:    domain.HostKey{Key: hostKey, Fingerprint: fp}})
}

// newCluster takes the cluster's leader key in etcd, unless lead is
// false, and commits the leadership and an operation with plan: what a
// coordinator does before it dispatches. It returns the leader token.
func (f *fixture) newCluster(name, op string, lead bool, plan ...domain.Step) int64 {
	f.t.Helper()
	token := int64(1_000_000) // a token no leader key has
	if lead {
		token = f.takeLead(name)
	} else {
		f.mu.Lock()
		f.clusters[name] = &testCluster{token: token}
		f.mu.Unlock()
	}
	f.startOperation(name, op, plan...)
	return token
}

// takeLead takes the cluster's leader key in etcd and returns its token.
func (f *fixture) takeLead(name string) int64 {
	f.t.Helper()
	resp, err := f.etcd.Put(f.ctx, leadership.ClusterLeaderKeys(name)+"test-coordinator", "test")
	if err != nil {
		f.t.Fatal(err)
	}
	f.mu.Lock()
	f.clusters[name] = &testCluster{token: resp.Header.Revision}
	f.mu.Unlock()
	return resp.Header.Revision
}

// startOperation commits the leadership and an operation with plan.
func (f *fixture) startOperation(name, op string, plan ...domain.Step) {
	f.t.Helper()
	f.commit(name, domain.OperationRequested{ID: op, Kind: domain.OperationDeploy, Cluster: name, Plan: plan},
		domain.ClusterLeaderElected{Token: f.clusters[name].token, Coordinator: "test-coordinator"})
}

// commit appends events to a cluster and folds them into the test's copy.
func (f *fixture) commit(cluster string, evs ...domain.Event) {
	f.t.Helper()
	f.mu.Lock()
	c := f.clusters[cluster]
	f.mu.Unlock()
	c.lastSeq = f.appendEvents(domain.AggregateCluster, cluster, c.lastSeq, c.version, c.token, evs...)
	c.version += uint64(len(evs))
	for _, e := range evs {
		c.state = domain.EvolveCluster(c.state, e)
	}
}

// record commits what a result decides, as the coordinator does.
func (f *fixture) record(r workqueue.Result) {
	f.t.Helper()
	c := f.clusters[r.Cluster]
	evs, err := domain.DecideStepReport(&c.state, r.Report(), c.token)
	if err != nil {
		f.t.Fatalf("decide %+v: %v", r, err)
	}
	if len(evs) > 0 {
		f.commit(r.Cluster, evs...)
	}
}

// dispatch publishes a step message, as the coordinator does.
func (f *fixture) dispatch(d workqueue.Dispatch) {
	f.t.Helper()
	if err := workqueue.PublishDispatch(f.ctx, f.js, workqueue.DefaultPool, d); err != nil {
		f.t.Fatal(err)
	}
}

// publishRaw puts any bytes on the default pool's queue, as anyone with
// the right to publish steps (a server's or an admin's credentials) can.
func (f *fixture) publishRaw(data []byte) {
	f.t.Helper()
	if _, err := f.js.Publish(f.ctx, workqueue.StepSubject(workqueue.DefaultPool), data, jetstream.WithMsgID(uuid.NewString())); err != nil {
		f.t.Fatal(err)
	}
}

// waitResult waits for the result of a step's run (finished or not).
func (f *fixture) waitResult(op, step string, attempt int, finished bool) workqueue.Result {
	f.t.Helper()
	for {
		f.mu.Lock()
		for _, r := range f.results {
			if r.Operation == op && r.Step == step && r.Attempt == attempt && r.Finished == finished {
				f.mu.Unlock()
				return r
			}
		}
		f.mu.Unlock()
		if f.ctx.Err() != nil {
			f.t.Fatalf("no result (finished %t) of step %s of %s attempt %d", finished, step, op, attempt)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// resultsOf are the results published about operation op.
func (f *fixture) resultsOf(op string) []workqueue.Result {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []workqueue.Result
	for _, r := range f.results {
		if r.Operation == op {
			out = append(out, r)
		}
	}
	return out
}

// logEntry is one line of the agent's log.
type logEntry map[string]any

func (e logEntry) str(k string) string { s, _ := e[k].(string); return s }

// waitLog waits for a log line with message msg whose string fields
// include want and whose reason contains reason.
func (f *fixture) waitLog(msg string, want map[string]string, reason string) logEntry {
	f.t.Helper()
	for {
		for _, line := range strings.Split(f.logs.String(), "\n") {
			var e logEntry
			if json.Unmarshal([]byte(line), &e) != nil || e.str("message") != msg || !strings.Contains(e.str("reason"), reason) {
				continue
			}
			match := true
			for k, v := range want {
				if e.str(k) != v {
					match = false
				}
			}
			if match {
				return e
			}
		}
		if f.ctx.Err() != nil {
			f.t.Fatalf("no log line %q with %v and a reason containing %q", msg, want, reason)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

const refusedMsg = "step refused: the event store did not order it"

// waitRefused waits for the refusal of a step, logged as a warning with
// the step's fields and the reason.
func (f *fixture) waitRefused(fields map[string]string, reason string) {
	f.t.Helper()
	if e := f.waitLog(refusedMsg, fields, reason); e.str("level") != "warn" {
		f.t.Fatalf("refusal %v is not a warning", e)
	}
}

// makeDirs is a step that creates a marker directory on the sshd's host
// (this machine): it exists exactly when the step ran.
func (f *fixture) makeDirs(id, marker string, needs ...string) domain.Step {
	return domain.Step{ID: id, Kind: domain.StepMakeDirs, Host: hostA, User: "root", Needs: needs,
		Dirs: []string{filepath.Join(f.dir, marker)}}
}

func (f *fixture) exists(marker string) bool {
	_, err := os.Stat(filepath.Join(f.dir, marker))
	return err == nil
}

// countingListener accepts TCP connections and counts what it is sent.
type countingListener struct {
	ln    net.Listener
	conns atomic.Int64
	bytes atomic.Int64
	wg    sync.WaitGroup
}

func listen(t *testing.T, addr string) *countingListener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	l := &countingListener{ln: ln}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			l.conns.Add(1)
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				// Speak first, as an SSH server does, so that a client would
				// go on to send its credential.
				_, _ = c.Write([]byte("SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"))
				n, _ := io.Copy(io.Discard, c)
				l.bytes.Add(n)
				c.Close()
			}()
		}
	}()
	t.Cleanup(l.close)
	return l
}

func (l *countingListener) port() int { return l.ln.Addr().(*net.TCPAddr).Port }

func (l *countingListener) close() {
	l.ln.Close()
	l.wg.Wait()
}

// TestAgentRunsOnlyWhatTheStoreOrdered attacks an agent through its work
// queue with the rights of a server or an admin (anyone who can publish
// steps): forged steps, replayed steps and steps re-targeted at a listener
// of the test's own. Each is refused with its reason in the log; nothing
// runs on the host (the marker each step would create is absent), no start
// or result is published for it, and the listener never receives a byte.
// A legitimate step, and a step of an operation's new attempt, run.
func TestAgentRunsOnlyWhatTheStoreOrdered(t *testing.T) {
	f := newFixture(t)

	// A legitimate step runs, and is recorded as the coordinator would.
	tokOK := f.newCluster("c-ok", "op-ok", true, f.makeDirs("mk", "ok"))
	legit := workqueue.Dispatch{Cluster: "c-ok", Operation: "op-ok", Attempt: 1, Token: tokOK, Step: "mk"}
	f.dispatch(legit)
	started := f.waitResult("op-ok", "mk", 1, false)
	res := f.waitResult("op-ok", "mk", 1, true)
	if !res.OK || !f.exists("ok") || res.Host != hostA {
		t.Fatalf("legitimate step: %+v, marker exists %t", res, f.exists("ok"))
	}
	f.record(started)
	f.record(res)
	if op := f.clusters["c-ok"].state.FindOperation("op-ok"); op.Status != domain.OperationStatusSucceeded {
		t.Fatalf("operation %s after its only step succeeded", op.Status)
	}
	if err := os.Remove(filepath.Join(f.dir, "ok")); err != nil {
		t.Fatal(err)
	}

	// A cluster with an operation that runs: step "run" is ready, "later"
	// needs it.
	tokRun := f.newCluster("c-run", "op-run", true, f.makeDirs("run", "run"), f.makeDirs("later", "later", "run"))
	refusals := 0
	// refuse publishes data and waits for its refusal.
	refuse := func(data []byte, fields map[string]string, reason string) {
		t.Helper()
		f.publishRaw(data)
		refusals++
		f.waitRefused(fields, reason)
	}
	msg := func(d workqueue.Dispatch) []byte {
		b, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	{ // replayed: a step of an operation that succeeded
		refuse(msg(legit), map[string]string{"cluster": "c-ok", "operation": "op-ok", "step": "mk"},
			"operation op-ok is succeeded: its steps run no more")
	}
	{ // forged: an operation no commit has
		refuse(msg(workqueue.Dispatch{Cluster: "c-run", Operation: "op-forged", Attempt: 1, Token: tokRun, Step: "run"}),
			map[string]string{"cluster": "c-run", "operation": "op-forged"}, "operation op-forged is not in the events of cluster c-run")
	}
	{ // forged: a step not in the plan
		refuse(msg(workqueue.Dispatch{Cluster: "c-run", Operation: "op-run", Attempt: 1, Token: tokRun, Step: "rm-rf"}),
			map[string]string{"cluster": "c-run", "operation": "op-run", "step": "rm-rf"}, `op-run has no step "rm-rf" in its plan`)
	}
	{ // forged: a real step with a wrong token
		for _, tok := range []int64{tokRun + 1, tokRun - 1} {
			refuse(msg(workqueue.Dispatch{Cluster: "c-run", Operation: "op-run", Attempt: 1, Token: tok, Step: "run"}),
				map[string]string{"cluster": "c-run", "operation": "op-run", "step": "run"},
				fmt.Sprintf("token %d is not the leader token of cluster c-run in etcd (%d)", tok, tokRun))
		}
	}
	{ // forged: a step that is not ready
		refuse(msg(workqueue.Dispatch{Cluster: "c-run", Operation: "op-run", Attempt: 1, Token: tokRun, Step: "later"}),
			map[string]string{"cluster": "c-run", "step": "later"}, "needs run, which the events do not show succeeded")
	}
	{ // forged: a cluster without a leader
		tok := f.newCluster("c-noleader", "op-noleader", false, f.makeDirs("nl", "noleader"))
		refuse(msg(workqueue.Dispatch{Cluster: "c-noleader", Operation: "op-noleader", Attempt: 1, Token: tok, Step: "nl"}),
			map[string]string{"cluster": "c-noleader", "step": "nl"}, "cluster c-noleader has no leader in etcd")
		if f.exists("noleader") {
			t.Fatal("the step of a cluster without a leader ran")
		}
	}

	// Re-targeted steps: the old message format, whose target an agent
	// used to trust, pointed at a listener of the test's own with the real
	// credential id of the sshd's machine.
	ln := listen(t, "127.0.0.1:0")
	oldTarget := map[string]any{"host": "127.0.0.1", "port": ln.port(), "user": "root",
		"credential": map[string]string{"id": f.credA, "kind": domain.CredentialPrivateKey}, "host_key": f.sshd.HostKey}
	{ // re-targeted: the old format
		old, _ := json.Marshal(map[string]any{"cluster": "c-run", "operation": "op-run", "attempt": 1, "token": tokRun,
			"step": f.makeDirs("run", "run"), "target": oldTarget})
		refuse(old, map[string]string{"cluster": "c-run", "operation": "op-run", "step": "run"},
			"step message is not {cluster, operation, attempt, token, step}")
	}
	{ // re-targeted: a real step with extra fields
		extra, _ := json.Marshal(map[string]any{"cluster": "c-run", "operation": "op-run", "attempt": 1, "token": tokRun,
			"step": "run", "target": oldTarget})
		refuse(extra, map[string]string{"cluster": "c-run", "step": "run"}, `unknown object member name "target"`)
		host, _ := json.Marshal(map[string]any{"cluster": "c-run", "operation": "op-run", "attempt": 1, "token": tokRun,
			"step": "run", "host": "127.0.0.1", "port": ln.port()})
		refuse(host, map[string]string{"cluster": "c-run", "step": "run"}, `unknown object member name "host"`)
	}
	{ // replayed: a step of an earlier attempt
		tok := f.newCluster("c-retry", "op-retry", true, f.makeDirs("re", "retry"))
		f.commit("c-retry", domain.StepStarted{Operation: "op-retry", Step: "re", Attempt: 1, Host: hostA, Agent: "x"},
			domain.StepFailed{Operation: "op-retry", Step: "re", Attempt: 1, Host: hostA, Agent: "x", Error: "boom"},
			domain.OperationFailed{ID: "op-retry", Attempt: 1, FailedSteps: []string{"re"}, Error: "boom"},
			domain.OperationRetried{ID: "op-retry", Attempt: 2, Steps: []string{"re"}})
		refuse(msg(workqueue.Dispatch{Cluster: "c-retry", Operation: "op-retry", Attempt: 1, Token: tok, Step: "re"}),
			map[string]string{"cluster": "c-retry", "step": "re"}, "attempt 1 of operation op-retry is over: the operation is at attempt 2")
		if f.exists("retry") {
			t.Fatal("the step of an earlier attempt ran")
		}
		// The same step in the operation's current attempt runs.
		f.dispatch(workqueue.Dispatch{Cluster: "c-retry", Operation: "op-retry", Attempt: 2, Token: tok, Step: "re"})
		if r := f.waitResult("op-retry", "re", 2, true); !r.OK || !f.exists("retry") {
			t.Fatalf("the retried step: %+v, marker exists %t", r, f.exists("retry"))
		}
	}

	{ // a read that lags the dispatcher's commit: the step runs once the commit shows
		// The message is on the queue before the operation is committed,
		// as when a replica answers the agent's read a moment behind the
		// one the coordinator appended to.
		tok := f.takeLead("c-lag")
		f.dispatch(workqueue.Dispatch{Cluster: "c-lag", Operation: "op-lag", Attempt: 1, Token: tok, Step: "lag"})
		f.startOperation("c-lag", "op-lag", f.makeDirs("lag", "lag"))
		if r := f.waitResult("op-lag", "lag", 1, true); !r.OK || !f.exists("lag") {
			t.Fatalf("the step committed after its dispatch: %+v, marker exists %t", r, f.exists("lag"))
		}
	}

	// Every refusal is logged once, and nothing reached the host, the
	// listener or the results. Stopping the agent first leaves it no
	// moment to act after the checks.
	f.stop()
	if n := strings.Count(f.logs.String(), refusedMsg); n != refusals {
		t.Errorf("%d refusals logged, want %d", n, refusals)
	}
	for _, marker := range []string{"ok", "run", "later", "noleader"} {
		if f.exists(marker) {
			t.Errorf("marker %s exists: a refused step ran", marker)
		}
	}
	ln.close()
	if c, b := ln.conns.Load(), ln.bytes.Load(); c != 0 || b != 0 {
		t.Errorf("the test's listener got %d connections and %d bytes, want none", c, b)
	}
	for _, op := range []string{"op-run", "op-forged", "op-noleader"} {
		if rs := f.resultsOf(op); len(rs) != 0 {
			t.Errorf("results published for refused steps of %s: %+v", op, rs)
		}
	}
	if rs := f.resultsOf("op-ok"); len(rs) != 2 {
		t.Errorf("op-ok: %d results, want the legitimate run's 2 only: %+v", len(rs), rs)
	}
	if rs := f.resultsOf("op-retry"); len(rs) != 2 || rs[0].Attempt != 2 || rs[1].Attempt != 2 {
		t.Errorf("op-retry: results %+v, want attempt 2's start and end only", rs)
	}
}

// A machine whose committed registration names another machine's
// credential (events forged with a server's rights) gets nothing: the
// credential opens for its own machine only. The step fails with the
// reason, so that its operation ends, and the machine's address — a
// listener of the test's own — never receives a byte.
func TestAgentSendsACredentialToItsOwnMachineOnly(t *testing.T) {
	f := newFixture(t)
	const hostB = "127.0.0.2" // loopback too: the test's listener
	ln := listen(t, net.JoinHostPort(hostB, "0"))
	f.registerMachine(hostB, ln.port(), f.credA, f.sshd.HostKey)

	tok := f.newCluster("c-cred", "op-cred", true,
		domain.Step{ID: "mkB", Kind: domain.StepMakeDirs, Host: hostB, User: "root", Dirs: []string{filepath.Join(f.dir, "b")}})
	f.dispatch(workqueue.Dispatch{Cluster: "c-cred", Operation: "op-cred", Attempt: 1, Token: tok, Step: "mkB"})
	res := f.waitResult("op-cred", "mkB", 1, true)
	want := fmt.Sprintf("credential %s belongs to machine %s, not %s", f.credA, hostA, hostB)
	if res.OK || !strings.Contains(res.Error, want) {
		t.Fatalf("result %+v, want a failure saying %q", res, want)
	}
	f.waitLog("step failed before it ran: its machine or credential cannot be used",
		map[string]string{"cluster": "c-cred", "operation": "op-cred", "step": "mkB"}, want)
	// The failure is a result the coordinator records: the operation ends.
	f.record(res)
	if op := f.clusters["c-cred"].state.FindOperation("op-cred"); op.Status != domain.OperationStatusFailed {
		t.Fatalf("operation %s after its only step failed", op.Status)
	}
	f.stop()
	if rs := f.resultsOf("op-cred"); len(rs) != 1 {
		t.Errorf("results %+v, want the failure only (no start)", rs)
	}
	ln.close()
	if c, b := ln.conns.Load(), ln.bytes.Load(); c != 0 || b != 0 {
		t.Errorf("machine %s's address got %d connections and %d bytes, want none", hostB, c, b)
	}
	if f.exists("b") {
		t.Error("the step ran")
	}
}

// agentStores are the stores as dmgr agent opens them: connected as an
// agent of pool default (NATS), read-only.
type agentStores struct {
	js     jetstream.JetStream
	vault  *secrets.Vault
	pkgs   *pkgstore.Store
	events *eventstore.Store
}

func openAgentStores(t *testing.T, ctx context.Context, ns *embedded.NATS, key []byte) agentStores {
	t.Helper()
	var as agentStores
	var err error
	_, as.js = testenv.JetStreamAs(t, ns, busauth.Agent, busauth.DefaultPool)
	if as.vault, err = secrets.OpenExisting(ctx, as.js, key); err != nil {
		t.Fatal(err)
	}
	if as.pkgs, err = pkgstore.OpenExisting(ctx, as.js); err != nil {
		t.Fatal(err)
	}
	if as.events, err = eventstore.OpenExisting(ctx, as.js); err != nil {
		t.Fatal(err)
	}
	return as
}
