package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dmgr/dmgr/agents"
	"github.com/dmgr/dmgr/internal/embedded"
	"github.com/dmgr/dmgr/internal/leadership"
	"github.com/dmgr/dmgr/internal/testenv"
)

// unreachableClickHouse are the flags of a ClickHouse that does not
// answer (a loopback port nothing listens on), so that a dev runs as it
// does while its ClickHouse is down or still starting, and the test needs
// no ClickHouse installed.
func unreachableClickHouse(tb testing.TB) []string {
	tb.Helper()
	return []string{"--clickhouse-addr", freePort(tb), "--clickhouse-password-file", testenv.PasswordFile(tb, "no-clickhouse-answers")}
}

// waitFailed waits until the process fails and returns why.
func waitFailed(tb testing.TB, m *Main, what string) error {
	tb.Helper()
	select {
	case <-m.Failed():
		return m.Failure()
	case <-time.After(2 * time.Minute):
		tb.Fatalf("dev keeps running after %s", what)
		return nil
	}
}

// Issue [7], done when 5: with ClickHouse down (here: never up), /readyz
// says commands are accepted, a command is accepted, and the queries that
// ClickHouse serves answer 503 with Retry-After, not the whole server.
// (TestServerModeUsesExternalServices stops a running ClickHouse under a
// server and checks the same; BenchmarkRestartReady measures how soon
// /readyz answers after a restart.)
func TestCommandsAreAcceptedWhileClickHouseIsDown(t *testing.T) {
	d := startInProcessDev(t, append(unreachableClickHouse(t), "--agent=false")...)
	if a, err := d.do("GET", "/readyz", nil, nil, 30*time.Second); err != nil || a.status != http.StatusOK {
		t.Fatalf("/readyz with ClickHouse down: %+v %v; want 200 (commands are accepted)", a, err)
	}
	d.mustDo(t, "POST", "/api/v1/machines", map[string]any{"host": "198.18.0.11", "user": "tidb", "password": "pw", "host_key": testenv.HostKey},
		http.StatusAccepted)
	for _, q := range []string{"/api/v1/machines", "/api/v1/clusters", "/api/v1/audit"} {
		a, err := d.do("GET", q, nil, nil, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if a.status != http.StatusServiceUnavailable || a.retryAfter == "" {
			t.Errorf("GET %s with ClickHouse down: %d, Retry-After %q: %s; want 503 with Retry-After", q, a.status, a.retryAfter, a.body)
		}
	}
	select {
	case <-d.main.Failed():
		t.Fatalf("dev failed without ClickHouse: %v", d.main.Failure())
	default:
	}
}

// Issue [7], done when 5: dev's own ClickHouse killed (SIGKILL, as a
// crash) under a running dev: /readyz stays 200, commands are accepted,
// queries answer 503 with Retry-After, nothing fails; once ClickHouse is
// back the queries answer again, with what was accepted meanwhile.
func TestDevKeepsAcceptingCommandsWhenClickHouseIsKilled(t *testing.T) {
	d := startInProcessDev(t, "--agent=false")
	d.mustDo(t, "GET", "/api/v1/machines", nil, http.StatusOK)
	if err := d.main.chSrv.Kill(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 { // past /readyz's one-second cache
		if a, err := d.do("GET", "/readyz", nil, nil, 30*time.Second); err != nil || a.status != http.StatusOK {
			t.Fatalf("/readyz %d with ClickHouse killed: %+v %v; want 200 (commands are accepted)", i, a, err)
		}
		time.Sleep(600 * time.Millisecond)
	}
	d.mustDo(t, "POST", "/api/v1/machines", map[string]any{"host": "198.18.0.12", "user": "tidb", "password": "pw", "host_key": testenv.HostKey},
		http.StatusAccepted)
	a, err := d.do("GET", "/api/v1/machines", nil, nil, 30*time.Second)
	if err != nil || a.status != http.StatusServiceUnavailable || a.retryAfter == "" {
		t.Fatalf("a query with ClickHouse killed: %+v %v; want 503 with Retry-After", a, err)
	}
	select {
	case <-d.main.Failed():
		t.Fatalf("dev failed when ClickHouse was killed: %v", d.main.Failure())
	default:
	}
	ctx := testenv.Context(t, 2*time.Minute)
	if err := d.main.chSrv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	for {
		a, err := d.do("GET", "/api/v1/machines/198.18.0.12", nil, nil, 30*time.Second)
		if err == nil && a.status == http.StatusOK {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the machine accepted while ClickHouse was down never shows: %+v %v", a, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Issue [7], done when 6: every long-running part of a running dev is
// under supervision, and killing any one of them fails the process with
// the part named and the reason logged. The list of parts is checked
// too, so that a part started outside the group fails this test.
func TestKillingAnyPartFailsTheProcess(t *testing.T) {
	probe := startInProcessDev(t, unreachableClickHouse(t)...)
	id := probe.main.agent.ID()
	want := []string{"HTTP server", "agent " + id, "agent " + id + " registration", "coordinator", "projector"}
	got := probe.main.partNames()
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("parts under supervision: %q, want %q", got, want)
	}
	probe.close(t)
	for _, name := range want {
		t.Run(name, func(t *testing.T) {
			d := startInProcessDev(t, append(unreachableClickHouse(t), "--agent-id", id)...)
			select {
			case <-d.main.Failed():
				t.Fatalf("dev failed at start: %v", d.main.Failure())
			default:
			}
			if !d.main.killPart(name) {
				t.Fatalf("no part %q runs", name)
			}
			err := waitFailed(t, d.main, "killing its "+name)
			if err == nil || err.Error() != name+" stopped: killed" {
				t.Fatalf("failure %v, want %q", err, name+" stopped: killed")
			}
			if !strings.Contains(d.logs.String(), `"part":"`+name+`"`) || !strings.Contains(d.logs.String(), "a part of the process stopped") {
				t.Fatalf("the failure is not logged with its part:\n%s", tailOf(d.logs.String(), 4000))
			}
		})
	}
}

// The coordinator fails for real, not only when killed: its etcd client
// closed under it, it stops, and the process fails naming it and why.
func TestDevFailsWhenItsCoordinatorLosesEtcd(t *testing.T) {
	d := startInProcessDev(t, append(unreachableClickHouse(t), "--agent=false")...)
	if err := d.main.coordEtcd.Close(); err != nil {
		t.Fatal(err)
	}
	err := waitFailed(t, d.main, "its coordinator lost etcd")
	if err == nil || !strings.HasPrefix(err.Error(), "coordinator stopped: ") || !strings.Contains(err.Error(), "etcd client closed") {
		t.Fatalf("failure %v, want the coordinator named with the reason", err)
	}
}

// Issue [7]: dev's agent whose lease is revoked registers again; the API
// lists it online under its new lease.
func TestDevAgentRegistersAgainWhenItsLeaseIsRevoked(t *testing.T) {
	d := startInProcessDev(t, unreachableClickHouse(t)...)
	ctx := testenv.Context(t, 2*time.Minute)
	key := leadership.AgentOnlineKey(d.main.agent.ID())
	lease := func() clientv3.LeaseID {
		resp, err := d.main.etcd.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 0 {
			return 0
		}
		return clientv3.LeaseID(resp.Kvs[0].Lease)
	}
	for lease() == 0 {
		time.Sleep(20 * time.Millisecond)
	}
	first := lease()
	if _, err := d.main.etcd.Revoke(ctx, first); err != nil {
		t.Fatal(err)
	}
	for l := lease(); l == 0 || l == first; l = lease() {
		if ctx.Err() != nil {
			t.Fatal("the agent did not register again")
		}
		time.Sleep(20 * time.Millisecond)
	}
	var body struct {
		Items []agents.Info `json:"items"`
	}
	if err := json.Unmarshal(d.mustDo(t, "GET", "/api/v1/agents", nil, http.StatusOK), &body); err != nil {
		t.Fatal(err)
	}
	if list := body.Items; len(list) != 1 || list[0].ID != d.main.agent.ID() || !list[0].Online {
		t.Fatalf("GET /api/v1/agents: %+v; want the agent online", body.Items)
	}
	select {
	case <-d.main.Failed():
		t.Fatalf("dev failed: %v", d.main.Failure())
	default:
	}
}

// Issue [7], done when 6, on the real binary: dev's agent cannot register
// again (its lease revoked, and etcd refusing its keys), so after
// --etcd-give-up-after the process exits non-zero with the part and the
// reason in its log.
func TestDevExitsNonZeroWhenItsAgentCannotRegister(t *testing.T) {
	dir := t.TempDir()
	etcdAddr := freePort(t)
	cmd := exec.Command(os.Args[0], append([]string{"dev", "--data-dir", dir, "--http-addr", "127.0.0.1:0",
		"--nats-addr", "127.0.0.1:0", "--etcd-client-addr", etcdAddr, "--etcd-peer-addr", "127.0.0.1:0",
		"--etcd-give-up-after", "2s"}, unreachableClickHouse(t)...)...)
	cmd.Env = childEnv(os.Environ(), "DMGR_TEST_RUN_MAIN=1")
	stderr := &testenv.Buffer{}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	serving := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "dmgr dev is serving ") {
				close(serving)
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			t.Logf("dev stderr (tail):\n%s", tailOf(stderr.String(), 6000))
		}
	})
	select {
	case <-serving:
	case err := <-exited:
		t.Fatalf("dev exited at start: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("dev did not start")
	}

	ctx := testenv.Context(t, 2*time.Minute)
	rootPW, err := readPasswordFile(filepath.Join(dir, credsDirName, etcdRootPasswordFile))
	if err != nil {
		t.Fatal(err)
	}
	root, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + etcdAddr}, DialTimeout: 5 * time.Second,
		Username: embedded.EtcdRootUser, Password: rootPW, Logger: embedded.EtcdClientLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	var online *clientv3.GetResponse
	for online == nil || len(online.Kvs) == 0 {
		if online, err = root.Get(ctx, leadership.AgentsOnlinePrefix, clientv3.WithPrefix()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := root.RoleRevokePermission(ctx, embedded.EtcdAgentUser, leadership.AgentsPrefix, clientv3.GetPrefixRangeEnd(leadership.AgentsPrefix)); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Revoke(ctx, clientv3.LeaseID(online.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Fatalf("dev exited with %v; want a non-zero exit", err)
		}
	case <-ctx.Done():
		t.Fatal("dev runs on with an agent that cannot register")
	}
	log := stderr.String()
	for _, want := range []string{`"part":"agent `, `registration"`, "a part of the process stopped", "not registered in etcd for", "permission denied"} {
		if !strings.Contains(log, want) {
			t.Errorf("dev's log lacks %q", want)
		}
	}
}
