package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/internal/busauth"
	"github.com/dmgr/dmgr/internal/chserver"
	"github.com/dmgr/dmgr/internal/service"
	"github.com/dmgr/dmgr/internal/testbed/dmpkg"
	"github.com/dmgr/dmgr/internal/testbed/hosts"
	"github.com/dmgr/dmgr/internal/testenv"
	"github.com/dmgr/dmgr/internal/workqueue"
)

// controlPlane is `dmgr server` running in-process against a NATS
// JetStream and an etcd of the test, with agents as child processes.
type controlPlane struct {
	main *Main // nil when the servers are child processes
	// baseURL picks the server a request goes to (any server takes any
	// command).
	baseURL   func() string
	token     string
	natsURL   string
	natsSeeds map[busauth.Role]string // the seed file of each role (agents: pool default)
	etcdURL   string
	etcdAgent []string // the agents' etcd login flags (--etcd-user, --etcd-password-file)
	masterKey string
	js        jetstream.JetStream
	store     *eventstore.Store
	logs      *testenv.Buffer // the server's log

	mu     sync.Mutex
	agents map[string]*agentProcess
}

type agentProcess struct {
	id     string
	cmd    *exec.Cmd
	stderr *testenv.Buffer
	done   chan struct{}
}

func startControlPlane(t testing.TB) *controlPlane {
	t.Helper()
	testenv.RequireClickHouse(t)
	ctx := testenv.Context(t, 5*time.Minute)
	ns := testenv.NATS(t)
	etcd, _ := testenv.Etcd(t)
	ch, err := chserver.Start(ctx, chserver.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("start clickhouse: %v", err)
	}
	t.Cleanup(func() { _ = ch.Stop() })
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i*7 + 3)
	}
	cp := &controlPlane{natsURL: ns.URL(), natsSeeds: testSeeds(t, ns), etcdURL: etcd.Endpoint(), etcdAgent: etcdLogin(etcd, "dmgr-agent"), masterKey: base64.StdEncoding.EncodeToString(key),
		logs: &testenv.Buffer{}, agents: map[string]*agentProcess{}}
	t.Setenv("DMGR_MASTER_KEY", cp.masterKey)
	t.Setenv("DMGR_ADMIN_TOKEN", "test-admin-token-0123456789")
	cfg, err := parseConfig("server", append([]string{"--http-addr", "127.0.0.1:0", "--nats-url", cp.natsURL,
		"--nats-nkey-file", cp.natsSeeds[busauth.Server],
		"--etcd-endpoints", cp.etcdURL, "--ack-wait", "3s"}, append(etcdLogin(etcd, "dmgr-server"), testenv.ClickHouseFlags(t, ch)...)...), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	log := zerolog.New(cp.logs).With().Timestamp().Logger().Level(zerolog.DebugLevel)
	cp.main = NewMain(cfg, log, io.Discard)
	if err := cp.main.Run(ctx); err != nil {
		t.Fatalf("dmgr server: %v\n%s", err, cp.logs.String())
	}
	t.Cleanup(func() { _ = cp.main.Close() })
	cp.baseURL = func() string { return cp.main.URL }
	cp.token = cp.main.AdminToken
	_, cp.js = testenv.JetStream(t, ns)
	if cp.store, err = eventstore.Open(ctx, cp.js, eventstore.Config{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if dir := os.Getenv("DMGR_TEST_LOG_DIR"); dir != "" {
			// Whole logs for debugging: DMGR_TEST_LOG_DIR=/tmp/logs go test …
			_ = os.WriteFile(filepath.Join(dir, "server.log"), []byte(cp.logs.String()), 0o644)
			cp.mu.Lock()
			for id, a := range cp.agents {
				_ = os.WriteFile(filepath.Join(dir, id+".log"), []byte(a.stderr.String()), 0o644)
			}
			cp.mu.Unlock()
		}
		if t.Failed() {
			t.Logf("server log (tail):\n%s", tailOf(cp.logs.String(), 8000))
			cp.mu.Lock()
			for id, a := range cp.agents {
				t.Logf("agent %s log (tail):\n%s", id, tailOf(a.stderr.String(), 4000))
			}
			cp.mu.Unlock()
		}
	})
	return cp
}

func tailOf(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// startAgent runs `dmgr agent` as a child process (the test binary acting
// as dmgr), so that a test can kill it with SIGKILL.
func (cp *controlPlane) startAgent(t testing.TB, id string, extra ...string) *agentProcess {
	t.Helper()
	args := append([]string{"agent", "--nats-url", cp.natsURL, "--nats-nkey-file", cp.natsSeeds[busauth.Agent], "--etcd-endpoints", cp.etcdURL, "--agent-id", id,
		"--ack-wait", "3s", "--retries", "2", "--retry-backoff", "200ms", "--ssh-dial-timeout", "2s",
		"--cache-dir", t.TempDir(), "--log-level", "debug"}, append(cp.etcdAgent, extra...)...)
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "DMGR_TEST_RUN_MAIN=1", "DMGR_MASTER_KEY="+cp.masterKey)
	a := &agentProcess{id: id, cmd: cmd, stderr: &testenv.Buffer{}, done: make(chan struct{})}
	cmd.Stderr = a.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(a.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-a.done
	})
	cp.mu.Lock()
	cp.agents[id] = a
	cp.mu.Unlock()
	return a
}

func (a *agentProcess) kill(t testing.TB) {
	t.Helper()
	if err := a.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-a.done
}

// do calls the control plane's HTTP API: a []byte body goes as a
// package (application/gzip), any other as JSON. It answers the status and
// the body.
func (cp *controlPlane) do(t testing.TB, method, path string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	ct := "application/json"
	switch b := body.(type) {
	case nil:
	case []byte:
		rd, ct = bytes.NewReader(b), "application/gzip"
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	var payload []byte
	if rd != nil {
		payload, _ = io.ReadAll(rd)
	}
	var resp *http.Response
	for attempt := 1; ; attempt++ {
		// baseURL is read again on each attempt: in the HA tests a server
		// may exit (by design, cut off from etcd) between the choice of a
		// live server and the request, and another one answers.
		req, err := http.NewRequest(method, cp.baseURL()+path, bytes.NewReader(payload))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+cp.token)
		if rd != nil {
			req.Header.Set("Content-Type", ct)
		}
		resp, err = http.DefaultClient.Do(req)
		if err == nil {
			break
		}
		if attempt == 5 || !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

// api calls the control plane's HTTP API and decodes a 2xx answer into
// out; other answers are logged.
func (cp *controlPlane) api(t testing.TB, method, path string, body any, out any) int {
	t.Helper()
	status, data := cp.do(t, method, path, body)
	if out != nil && status < 300 {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, path, data, err)
		}
	}
	if status >= 300 {
		t.Logf("%s %s: %d %s", method, path, status, data)
	}
	return status
}

func (cp *controlPlane) mustAccept(t testing.TB, method, path string, body any) service.Accepted {
	t.Helper()
	var acc service.Accepted
	if st := cp.api(t, method, path, body, &acc); st != http.StatusAccepted {
		t.Fatalf("%s %s: status %d, want 202", method, path, st)
	}
	return acc
}

// registerBed registers the bed's hosts with the three kinds of login the
// test hosts offer: root by key, a sudo user by key, a password user. The
// host keys are not given: dmgr reads and pins them.
// prepareBed is where the tests on three test hosts begin: two agents
// (agent-1, agent-2), the bed's hosts registered and dm v8.1.0 uploaded.
func (cp *controlPlane) prepareBed(t testing.TB, bed *hosts.Bed) {
	t.Helper()
	cp.startAgent(t, "agent-1")
	cp.startAgent(t, "agent-2")
	cp.registerBed(t, bed)
	cp.mustAccept(t, "POST", "/api/v1/packages?filename=dm-v8.1.0.tar.gz", dmpkg.Package(t, "v8.1.0"))
}

func (cp *controlPlane) registerBed(t testing.TB, bed *hosts.Bed) {
	t.Helper()
	for i, h := range bed.Hosts {
		body := map[string]any{"host": h.Addr, "ssh_port": h.SSHPort}
		switch i % 3 {
		case 0:
			body["user"], body["private_key"] = "root", string(h.RootKey)
		case 1:
			body["user"], body["private_key"] = h.SudoUser, string(h.SudoKey)
		case 2:
			body["user"], body["password"] = h.PasswordUser, h.Password
		}
		cp.mustAccept(t, "POST", "/api/v1/machines", body)
		var m domain.Machine
		cp.api(t, "GET", "/api/v1/machines/"+h.Addr, nil, &m)
		if fields := strings.Fields(h.HostKey); len(fields) < 2 || !strings.HasPrefix(m.HostKey.Key, fields[0]+" "+fields[1]) {
			t.Fatalf("machine %s pinned host key %q, want the host's %q", h.Addr, m.HostKey.Key, h.HostKey)
		}
	}
}

// waitOperation polls the operation until it is over.
func (cp *controlPlane) waitOperation(t testing.TB, id string, timeout time.Duration) domain.OperationView {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var op domain.OperationView
		cp.api(t, "GET", "/api/v1/operations/"+id, nil, &op)
		if op.Status == domain.OperationStatusSucceeded || op.Status == domain.OperationStatusFailed {
			return op
		}
		if time.Now().After(deadline) {
			t.Fatalf("operation %s still %s after %s: %s", id, op.Status, timeout, describeSteps(op))
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func describeSteps(op domain.OperationView) string {
	var b strings.Builder
	for _, s := range op.Steps {
		fmt.Fprintf(&b, "\n  %-40s %-9s agent=%s %s", s.ID, s.Status, s.Agent, s.Error)
	}
	return b.String()
}

// clusterEvents returns the decoded events of a cluster's subject.
func (cp *controlPlane) clusterEvents(t testing.TB, cluster string) []domain.Event {
	t.Helper()
	st, err := cp.store.Load(testenv.Context(t, 10*time.Second), domain.AggregateCluster, cluster)
	if err != nil {
		t.Fatal(err)
	}
	var out []domain.Event
	for _, e := range st.Events {
		de, err := domain.DecodeEvent(e.Type, e.SchemaVersion, e.Payload)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, de)
	}
	return out
}

func threeHostTopology(bed *hosts.Bed, masterConfig string) string {
	h := func(i int) string { return bed.Hosts[i-1].Addr }
	return fmt.Sprintf(`global:
  user: tidb
  deploy_dir: /srv/dm/deploy
  data_dir: /srv/dm/data
  service_manager: none
server_configs:
  master:
    log-level: info
master_servers:
  - host: %[1]s
    name: master1
%[4]s  - host: %[2]s
    name: master2
  - host: %[3]s
    name: master3
worker_servers:
  - host: %[1]s
    name: worker1
  - host: %[2]s
    name: worker2
  - host: %[3]s
    name: worker3
monitoring_servers:
  - host: %[3]s
grafana_servers:
  - host: %[3]s
alertmanager_servers:
  - host: %[3]s
`, h(1), h(2), h(3), masterConfig)
}

// Acceptance 1, 2, 3 and 7: deploy 3 masters, 3 workers and monitoring on
// 3 test hosts with 3 agent processes, one of which is killed while it runs
// a long start step.
func TestDeployOnTestHosts(t *testing.T) {
	bed := hosts.Start(t, 3)
	cp := startControlPlane(t)
	agentIDs := []string{"agent-a", "agent-b", "agent-c"}
	for _, id := range agentIDs {
		cp.startAgent(t, id)
	}
	cp.registerBed(t, bed)
	pkg := dmpkg.Package(t, "v8.1.0")
	cp.mustAccept(t, "POST", "/api/v1/packages?filename=dm-v8.1.0.tar.gz", pkg)

	// master1 takes 8 s from start to healthy, long enough to kill the
	// agent that waits for it.
	topo := threeHostTopology(bed, "    config:\n      sim-start-delay: 8s\n")
	var plan struct {
		Plan service.DeployPlan `json:"plan"`
	}
	if st := cp.api(t, "POST", "/api/v1/clusters?dry_run=true", map[string]any{"name": "prod", "version": "v8.1.0", "topology": topo}, &plan); st != 200 {
		t.Fatalf("dry run: %d", st)
	}
	// Per host a check and the user; per instance dirs, files, configs and
	// start; one members check.
	if got, want := len(plan.Plan.Steps), 3*2+9*4+1; got != want {
		t.Fatalf("dry run plan has %d steps, want %d", got, want)
	}
	acc := cp.mustAccept(t, "POST", "/api/v1/clusters", map[string]any{"name": "prod", "version": "v8.1.0", "topology": topo})

	// Kill the agent that runs master1's start once it has started it.
	slowStep := "start/" + bed.Hosts[0].Addr + ":8261"
	killed := ""
	deadline := time.Now().Add(3 * time.Minute)
	for killed == "" {
		var op domain.OperationView
		cp.api(t, "GET", "/api/v1/operations/"+acc.OperationID, nil, &op)
		for _, s := range op.Steps {
			if s.ID == slowStep && s.Status == "running" && s.Agent != "" {
				killed = s.Agent
			}
		}
		if op.Status == domain.OperationStatusFailed || op.Status == domain.OperationStatusSucceeded {
			t.Fatalf("operation ended (%s) before %s ran: %s", op.Status, slowStep, describeSteps(op))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never started: %s", slowStep, describeSteps(op))
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second) // let it reach the health wait
	cp.agents[killed].kill(t)
	t.Logf("killed %s while it ran %s", killed, slowStep)

	op := cp.waitOperation(t, acc.OperationID, 4*time.Minute)
	if op.Status != domain.OperationStatusSucceeded {
		t.Fatalf("deploy %s: %s%s", op.Status, op.Error, describeSteps(op))
	}

	// The slow step finished on another agent.
	agentsUsed := map[string]bool{}
	for _, s := range op.Steps {
		agentsUsed[s.Agent] = true
		if s.ID == slowStep && s.Agent == killed {
			t.Errorf("%s finished on the killed agent %s", slowStep, killed)
		}
	}
	if len(agentsUsed) < 2 {
		t.Errorf("every step ran on %v; want the steps spread over more than one agent", agentsUsed)
	}
	startedBy := map[string][]string{}
	for _, e := range cp.clusterEvents(t, "prod") {
		if s, ok := e.(domain.StepStarted); ok {
			startedBy[s.Step] = append(startedBy[s.Step], s.Agent)
		}
	}
	if got := startedBy[slowStep]; len(got) < 2 || got[0] != killed {
		t.Errorf("%s was started by %v; want %s first, then another agent", slowStep, got, killed)
	}

	// On each host: processes under the deploy user, listening, the seed-000
	// layout, and every instance started exactly once.
	type inst struct {
		host    int
		port    int
		role    string
		marker  string // directory of the simulator's started-* markers
		process string
	}
	insts := []inst{}
	for i := 1; i <= 3; i++ {
		insts = append(insts,
			inst{i, 8261, "dm-master", "/srv/dm/data/dm-master-8261", "bin/dm-master"},
			inst{i, 8262, "dm-worker", "/srv/dm/deploy/dm-worker-8262/log", "bin/dm-worker"})
	}
	insts = append(insts,
		inst{3, 9090, "prometheus", "/srv/dm/data/prometheus-9090", "bin/prometheus"},
		inst{3, 3000, "grafana", "/srv/dm/data/grafana-3000", "bin/grafana-server"},
		inst{3, 9093, "alertmanager", "/srv/dm/data/alertmanager-9093", "bin/alertmanager"})
	for _, in := range insts {
		deploy := fmt.Sprintf("/srv/dm/deploy/%s-%d", in.role, in.port)
		script := fmt.Sprintf(`set -e
ps -o user= -o args= -u tidb | grep -F %[2]q | grep -v grep | awk '{print $1}' | sort -u
ls %[1]s/bin %[1]s/conf %[1]s/scripts
ls %[3]s | grep -c '^started-'
awk 'NR>1 && $4=="0A" {n=split($2,a,":"); print a[n]}' /proc/net/tcp /proc/net/tcp6 | sort -u | tr '\n' ' '
`, deploy, in.process, in.marker)
		out, err := bed.Exec(t, in.host, script)
		if err != nil {
			t.Errorf("host %d %s: %v\n%s", in.host, in.role, err, out)
			continue
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if lines[0] != "tidb" {
			t.Errorf("host %d %s: process users %q, want tidb", in.host, in.role, lines[0])
		}
		if !strings.Contains(out, "run_"+in.role+".sh") {
			t.Errorf("host %d %s: no run script in %s/scripts:\n%s", in.host, in.role, deploy, out)
		}
		if n := lines[len(lines)-2]; n != "1" {
			t.Errorf("host %d %s: started %s times, want once", in.host, in.role, n)
		}
		if hex := fmt.Sprintf("%04X", in.port); !strings.Contains(lines[len(lines)-1], hex) {
			t.Errorf("host %d %s: port %d not listening (listening: %s)", in.host, in.role, in.port, lines[len(lines)-1])
		}
	}

	// dm-master's members API lists 3 masters and 3 workers.
	masters, workers := members(t, bed.Hosts[1].Addr+":8261")
	if !slices.Equal(masters, []string{"master1", "master2", "master3"}) || !slices.Equal(workers, []string{"worker1", "worker2", "worker3"}) {
		t.Errorf("members: masters %v, workers %v", masters, workers)
	}

	// The cluster view follows the events.
	var c domain.Cluster
	cp.api(t, "GET", "/api/v1/clusters/prod", nil, &c)
	if c.Status != domain.ClusterStatusRunning {
		t.Errorf("cluster status %q, want running", c.Status)
	}
	for _, in := range c.Instances {
		if in.Status != domain.InstanceStatusUp {
			t.Errorf("instance %s %s status %q, want up", in.Role, in.ID, in.Status)
		}
	}

	// The killed agent shows offline once its lease is gone.
	deadline = time.Now().Add(30 * time.Second)
	for {
		var list struct {
			Items []struct {
				ID     string `json:"id"`
				Online bool   `json:"online"`
			} `json:"items"`
		}
		cp.api(t, "GET", "/api/v1/agents", nil, &list)
		state := map[string]bool{}
		for _, a := range list.Items {
			state[a.ID] = a.Online
		}
		online := 0
		for _, id := range agentIDs {
			if state[id] {
				online++
			}
		}
		if _, seen := state[killed]; seen && !state[killed] && online == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agents %v: want %s offline and the other two online", state, killed)
		}
		time.Sleep(500 * time.Millisecond)
	}

	cp.assertNoSecrets(t, bed)
}

// assertNoSecrets: no password or private key in events, step results or
// logs (acceptance 7).
func (cp *controlPlane) assertNoSecrets(t *testing.T, bed *hosts.Bed) {
	t.Helper()
	ctx := testenv.Context(t, 30*time.Second)
	var haystacks []string
	all, err := cp.store.LoadFilter(ctx, eventstore.AllSubjects)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range all.Events {
		haystacks = append(haystacks, string(e.Payload))
	}
	cons, err := cp.js.OrderedConsumer(ctx, workqueue.ResultsStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		batch, err := cons.FetchNoWait(500)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			haystacks = append(haystacks, string(m.Data()))
			n++
		}
		if n == 0 {
			break
		}
	}
	haystacks = append(haystacks, cp.logs.String())
	cp.mu.Lock()
	for _, a := range cp.agents {
		haystacks = append(haystacks, a.stderr.String())
	}
	cp.mu.Unlock()
	for _, h := range bed.Hosts {
		needles := map[string]string{"password": h.Password}
		for name, key := range map[string][]byte{"root key": h.RootKey, "sudo key": h.SudoKey} {
			// The base64 body of a PEM key: any line of it would betray it.
			for _, line := range strings.Split(string(key), "\n") {
				if len(line) > 40 && !strings.HasPrefix(line, "-----") {
					needles[name] = line
					break
				}
			}
		}
		for name, needle := range needles {
			if needle == "" {
				t.Fatalf("host %s: empty %s", h.Addr, name)
			}
			for _, hay := range haystacks {
				if strings.Contains(hay, needle) {
					t.Errorf("the %s of %s appears in events, results or logs", name, h.Addr)
					break
				}
			}
		}
	}
	if len(haystacks) < 10 {
		t.Fatalf("only %d places searched", len(haystacks))
	}
}

// Acceptance 4 and 5: a host cut off fails its steps with an error naming
// the host and the step; retry after restoring it finishes without redoing
// the succeeded steps. A changed host key runs nothing.
func TestDeployFailuresAndRetry(t *testing.T) {
	bed := hosts.Start(t, 3)
	cp := startControlPlane(t)
	cp.prepareBed(t, bed)

	bed.Cut(t, 3)
	topo := threeHostTopology(bed, "")
	acc := cp.mustAccept(t, "POST", "/api/v1/clusters", map[string]any{"name": "cut", "version": "v8.1.0", "topology": topo})
	op := cp.waitOperation(t, acc.OperationID, 3*time.Minute)
	if op.Status != domain.OperationStatusFailed {
		t.Fatalf("deploy with host 3 cut off: %s, want failed%s", op.Status, describeSteps(op))
	}
	h3 := bed.Hosts[2].Addr
	if !strings.Contains(op.Error, "check/"+h3) || !strings.Contains(op.Error, h3) {
		t.Errorf("operation error %q does not name host %s and its step", op.Error, h3)
	}
	succeededBefore := map[string]bool{}
	for _, s := range op.Steps {
		if s.Status == "succeeded" {
			succeededBefore[s.ID] = true
			if s.Host == h3 {
				t.Errorf("step %s on the cut-off host succeeded", s.ID)
			}
		}
		if s.Status == "failed" && s.Host != h3 {
			t.Errorf("step %s on %s failed: %s", s.ID, s.Host, s.Error)
		}
	}
	if len(succeededBefore) == 0 {
		t.Fatal("no step succeeded on the reachable hosts")
	}
	var c domain.Cluster
	cp.api(t, "GET", "/api/v1/clusters/cut", nil, &c)
	if c.Status != domain.ClusterStatusDeployFailed {
		t.Errorf("cluster status %q, want %q", c.Status, domain.ClusterStatusDeployFailed)
	}

	bed.Restore(t, 3)
	cp.mustAccept(t, "POST", "/api/v1/operations/"+acc.OperationID+"/retry", nil)
	op = cp.waitOperation(t, acc.OperationID, 4*time.Minute)
	if op.Status != domain.OperationStatusSucceeded || op.Attempt != 2 {
		t.Fatalf("retry: %s (attempt %d) %s%s", op.Status, op.Attempt, op.Error, describeSteps(op))
	}
	succeeded := map[string]int{}
	for _, e := range cp.clusterEvents(t, "cut") {
		if s, ok := e.(domain.StepSucceeded); ok {
			succeeded[s.Step]++
			if succeededBefore[s.Step] && s.Attempt != 1 {
				t.Errorf("step %s succeeded in attempt 1 and ran again in attempt %d", s.Step, s.Attempt)
			}
		}
	}
	for id, n := range succeeded {
		if n != 1 {
			t.Errorf("step %s succeeded %d times", id, n)
		}
	}
	if st := cp.api(t, "POST", "/api/v1/operations/"+acc.OperationID+"/retry", nil, nil); st != http.StatusConflict {
		t.Errorf("retry of a succeeded operation: %d, want 409", st)
	}

	// A changed host key (the machine was reinstalled: new key, rebooted, so
	// the agents' connections to it are gone): nothing runs there, and the
	// error says so.
	bed.Rekey(t, 2)
	bed.Stop(t, 2)
	bed.Start(t, 2)
	h2 := bed.Hosts[1].Addr
	small := fmt.Sprintf("global:\n  user: tidb\n  deploy_dir: /srv/rekeyed\n  service_manager: none\nmaster_servers:\n  - host: %s\n    port: 18261\n    peer_port: 18291\n", h2)
	acc = cp.mustAccept(t, "POST", "/api/v1/clusters", map[string]any{"name": "rekeyed", "version": "v8.1.0", "topology": small})
	op = cp.waitOperation(t, acc.OperationID, 2*time.Minute)
	if op.Status != domain.OperationStatusFailed || !strings.Contains(op.Error, "host key") || !strings.Contains(op.Error, h2) {
		t.Fatalf("deploy to a host with a changed key: %s %q, want failed naming the host key and %s", op.Status, op.Error, h2)
	}
	if out, err := bed.Exec(t, 2, "ls -d /srv/rekeyed 2>&1 || true"); err != nil || !strings.Contains(out, "No such file") {
		t.Errorf("something ran on the host with the changed key: %q %v", out, err)
	}
	cp.assertNoSecrets(t, bed)
}
