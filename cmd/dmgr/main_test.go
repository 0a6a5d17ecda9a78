package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/internal/busauth"
	"github.com/dmgr/dmgr/internal/chserver"
	"github.com/dmgr/dmgr/internal/embedded"
	"github.com/dmgr/dmgr/internal/testenv"
)

// TestMain lets the test binary act as dmgr itself, so that the tests can
// run the real program as a child process and send it real signals.
func TestMain(m *testing.M) {
	if os.Getenv("DMGR_TEST_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	if os.Getenv("DMGR_TEST_RUN_ETCD") == "1" {
		os.Exit(runEtcdMember())
	}
	// The tests configure dmgr by flags and t.Setenv only: a DMGR_*
	// variable of the shell that runs them (DMGR_CLICKHOUSE_ADDR of a dev
	// instance, say) must never point a test at a running installation.
	for _, name := range inheritedDMGREnv(os.Environ()) {
		_ = os.Unsetenv(name)
	}
	os.Exit(m.Run())
}

// inheritedDMGREnv names the DMGR_* variables of env that configure dmgr;
// DMGR_TEST_* are the tests' own knobs and stay.
func inheritedDMGREnv(env []string) []string {
	var names []string
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "DMGR_") && !strings.HasPrefix(name, "DMGR_TEST_") {
			names = append(names, name)
		}
	}
	return names
}

// childEnv is env without any variable that configures dmgr, plus extra:
// a child started with it reads its configuration from its flags and
// extra alone.
func childEnv(env []string, extra ...string) []string {
	drop := map[string]bool{}
	for _, name := range inheritedDMGREnv(env) {
		drop[name] = true
	}
	var out []string
	for _, kv := range env {
		if name, _, _ := strings.Cut(kv, "="); !drop[name] {
			out = append(out, kv)
		}
	}
	return append(out, extra...)
}

// devProcess is `dmgr dev` running as a child process.
type devProcess struct {
	cmd    *exec.Cmd
	url    string
	token  string
	stderr *bytes.Buffer
}

// startDev runs `dmgr dev` without its in-process agent, so that what the
// tests record stays as they recorded it (the machines are not real).
func startDev(t *testing.T, dataDir string) *devProcess {
	t.Helper()
	cmd := exec.Command(os.Args[0], "dev", "--data-dir", dataDir, "--http-addr", "127.0.0.1:0",
		"--nats-addr", "127.0.0.1:0", "--etcd-client-addr", "127.0.0.1:0", "--etcd-peer-addr", "127.0.0.1:0",
		"--agent=false")
	// Flags alone: no DMGR_* of the test process (a test's t.Setenv) or of
	// the shell reaches it, so it can never write into a dev instance
	// that is running beside the tests.
	cmd.Env = childEnv(os.Environ(), "DMGR_TEST_RUN_MAIN=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &devProcess{cmd: cmd, stderr: &bytes.Buffer{}}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	urlCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "dmgr dev is serving "); ok {
				urlCh <- u
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case p.url = <-urlCh:
	case <-time.After(90 * time.Second):
		t.Fatalf("dmgr dev did not start; stderr:\n%s", p.stderr.String())
	}
	b, err := os.ReadFile(filepath.Join(dataDir, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	p.token = strings.TrimSpace(string(b))
	return p
}

// stop sends SIGTERM and waits for a clean exit.
func (p *devProcess) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("dmgr dev exited with %v after SIGTERM; stderr:\n%s", err, p.stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("dmgr dev did not stop within 60s of SIGTERM")
	}
	if !strings.Contains(p.stderr.String(), "dmgr stopped") {
		t.Fatalf("no clean shutdown in the log:\n%s", p.stderr.String())
	}
}

func (p *devProcess) call(t *testing.T, method, path, contentType string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, p.url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// Acceptance 5: stop dev with SIGTERM, start it again on the same data
// dir: every aggregate loads with the same version; nothing is lost.
func TestDevSurvivesSIGTERMAndRestartWithEverything(t *testing.T) {
	testenv.RequireClickHouse(t)
	dir := t.TempDir()
	dev := startDev(t, dir)
	if info, err := os.Stat(filepath.Join(dir, "admin-token")); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("admin token file: %v %v", info, err)
	}
	for _, h := range []string{"198.18.0.11", "198.18.0.12", "198.18.0.13", "198.18.0.14"} {
		if st, b := dev.call(t, "POST", "/api/v1/machines", "application/json", []byte(`{"host":"`+h+`","user":"tidb","password":"pw","host_key":"`+testenv.HostKey+`"}`)); st != 202 {
			t.Fatalf("register %s: %d %s", h, st, b)
		}
	}
	if st, b := dev.call(t, "DELETE", "/api/v1/machines/198.18.0.14", "", nil); st != 202 {
		t.Fatalf("remove: %d %s", st, b)
	}
	if st, b := dev.call(t, "POST", "/api/v1/packages?filename=dm-v8.1.0.tar.gz", "application/gzip", testenv.DMPackage(t, "v8.1.0")); st != 202 {
		t.Fatalf("upload: %d %s", st, b)
	}
	topo := "master_servers:\n  - host: 198.18.0.11\n  - host: 198.18.0.12\nworker_servers:\n  - host: 198.18.0.13\n"
	deploy, _ := json.Marshal(map[string]string{"name": "prod.a", "version": "v8.1.0", "topology": topo})
	if st, b := dev.call(t, "POST", "/api/v1/clusters", "application/json", deploy); st != 202 {
		t.Fatalf("deploy: %d %s", st, b)
	}
	views := []string{"/api/v1/machines", "/api/v1/packages", "/api/v1/clusters", "/api/v1/clusters/prod.a", "/api/v1/operations", "/api/v1/machines/198.18.0.11"}
	before := map[string]string{}
	for _, v := range views {
		st, b := dev.call(t, "GET", v, "", nil)
		if st != 200 {
			t.Fatalf("GET %s: %d %s", v, st, b)
		}
		before[v] = string(b)
	}
	if !strings.Contains(before["/api/v1/clusters/prod.a"], `"status":"deploying"`) || strings.Count(before["/api/v1/operations"], `"id"`) != 7 {
		t.Fatalf("unexpected state before restart:\n%s\n%s", before["/api/v1/clusters/prod.a"], before["/api/v1/operations"])
	}
	dev.stop(t)

	dev = startDev(t, dir)
	for _, v := range views {
		st, b := dev.call(t, "GET", v, "", nil)
		if st != 200 || withoutLeadership(t, b) != withoutLeadership(t, []byte(before[v])) {
			t.Fatalf("GET %s after restart: %d\n got %s\nwant %s", v, st, b, before[v])
		}
	}
	// The restarted process still takes commands on top of the old history.
	if st, b := dev.call(t, "POST", "/api/v1/machines", "application/json", []byte(`{"host":"198.18.0.14","user":"tidb","password":"pw","host_key":"`+testenv.HostKey+`"}`)); st != 202 {
		t.Fatalf("re-register after restart: %d %s", st, b)
	}
	dev.stop(t)
}

// withoutLeadership drops what a coordinator's taking the lead changes in
// a view (the leader token, and the revision it counts), so that views
// before and after a restart compare on what the commands recorded.
func withoutLeadership(t *testing.T, view []byte) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(view, &v); err != nil {
		t.Fatalf("%v: %s", err, view)
	}
	var strip func(any)
	strip = func(x any) {
		switch x := x.(type) {
		case map[string]any:
			if _, isCluster := x["leader_token"]; isCluster {
				delete(x, "leader_token")
				delete(x, "revision")
			}
			for _, y := range x {
				strip(y)
			}
		case []any:
			for _, y := range x {
				strip(y)
			}
		}
	}
	strip(v)
	out, _ := json.Marshal(v)
	return string(out)
}

// serverMode is `dmgr server` in-process against a NATS, an etcd and a
// ClickHouse of its own, with admin token token.
type serverMode struct {
	main *Main
	nats *embedded.NATS
	ch   *chserver.Server
	ctx  context.Context
}

func startServerMode(t *testing.T, token string) serverMode {
	t.Helper()
	testenv.RequireClickHouse(t)
	n := testenv.NATS(t)
	e, _ := testenv.Etcd(t)
	ctx := testenv.Context(t, 2*time.Minute)
	ch, err := chserver.Start(ctx, chserver.Options{Dir: t.TempDir(), Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ch.Stop() })
	t.Setenv("DMGR_ADMIN_TOKEN", token)
	t.Setenv("DMGR_MASTER_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
	cfg, err := parseConfig("server", append([]string{"--http-addr", "127.0.0.1:0", "--nats-url", n.URL(),
		"--nats-nkey-file", testenv.SeedFile(t, n, busauth.Server, ""),
		"--etcd-endpoints", e.Endpoint()}, append(etcdLogin(e, "dmgr-server"), testenv.ClickHouseFlags(t, ch)...)...), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	m := NewMain(cfg, zerolog.Nop(), io.Discard)
	if err := m.Run(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return serverMode{main: m, nats: n, ch: ch, ctx: ctx}
}

// dmgr server runs against external NATS, etcd and ClickHouse.
func TestServerModeUsesExternalServices(t *testing.T) {
	sm := startServerMode(t, "server-mode-token-123456")
	m, ch := sm.main, sm.ch
	resp, err := http.Get(m.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("readyz: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest("GET", m.URL+"/api/v1/machines", nil)
	req.Header.Set("Authorization", "Bearer server-mode-token-123456")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("machines: %d", resp.StatusCode)
	}
	// Stopping ClickHouse leaves the server ready for commands: /readyz
	// stays 200 (asked past its cache), a command is accepted, and a query
	// answers 503 with Retry-After.
	if err := ch.Stop(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		resp, err = http.Get(m.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("readyz with ClickHouse down: %d, want 200 (commands are accepted)", resp.StatusCode)
		}
		time.Sleep(600 * time.Millisecond) // past the 1 s cache by the third
	}
	do := func(method, path, body string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, m.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer server-mode-token-123456")
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if r := do("POST", "/api/v1/machines", `{"host":"198.18.0.77","user":"tidb","password":"x","host_key":"`+testenv.HostKey+`"}`); r.StatusCode != http.StatusAccepted {
		t.Fatalf("a command with ClickHouse down: %d, want 202", r.StatusCode)
	}
	if r := do("GET", "/api/v1/machines", ""); r.StatusCode != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" {
		t.Fatalf("a query with ClickHouse down: %d, Retry-After %q; want 503 with Retry-After", r.StatusCode, r.Header.Get("Retry-After"))
	}
}

func TestCommandLine(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"version"}, &out, &errOut); err != nil || !strings.HasPrefix(out.String(), "dmgr ") {
		t.Fatalf("version: %v %q", err, out.String())
	}
	if err := run(context.Background(), []string{"frobnicate"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), `unknown command "frobnicate"`) {
		t.Fatalf("unknown command: %v", err)
	}
	t.Setenv("DMGR_CLICKHOUSE_ADDR", "")
	if _, err := parseConfig("server", nil, io.Discard); err == nil || !strings.Contains(err.Error(), "--clickhouse-addr") {
		t.Fatalf("server without clickhouse: %v", err)
	}
	t.Setenv("DMGR_DATA_DIR", "/tmp/from-env")
	t.Setenv("DMGR_HTTP_ADDR", "127.0.0.1:9999")
	cfg, err := parseConfig("dev", nil, io.Discard)
	if err != nil || cfg.dataDir != "/tmp/from-env" || cfg.httpAddr != "127.0.0.1:9999" {
		t.Fatalf("env fallbacks: %+v %v", cfg, err)
	}
	cfg, err = parseConfig("dev", []string{"--data-dir", "/x"}, io.Discard)
	if err != nil || cfg.dataDir != "/x" {
		t.Fatalf("flag over env: %+v %v", cfg, err)
	}
	t.Setenv("DMGR_DATA_DIR", "")
	t.Setenv("DMGR_HTTP_ADDR", "")
	cfg, _ = parseConfig("dev", nil, io.Discard)
	if cfg.dataDir != "./.dmgr" || cfg.httpAddr != "127.0.0.1:7700" {
		t.Fatalf("defaults: %+v", cfg)
	}
}

// startDev starts dev from its flags alone: a DMGR_CLICKHOUSE_ADDR (or any
// DMGR_* variable) in the environment of the tests, pointing at a running
// dev instance, reaches neither the child nor its data. Here it points
// at a port where nothing listens; a dev that used it would not get ready.
func TestStartDevIgnoresDMGREnvironment(t *testing.T) {
	if got := childEnv([]string{"PATH=/bin", "DMGR_CLICKHOUSE_ADDR=127.0.0.1:9000", "DMGR_DATA_DIR=/var/lib/dmgr", "DMGR_TEST_LOG_DIR=/tmp/l"}, "DMGR_TEST_RUN_MAIN=1"); strings.Join(got, " ") != "PATH=/bin DMGR_TEST_LOG_DIR=/tmp/l DMGR_TEST_RUN_MAIN=1" {
		t.Fatalf("childEnv: %q", got)
	}
	testenv.RequireClickHouse(t)
	t.Setenv("DMGR_CLICKHOUSE_ADDR", "127.0.0.1:1")
	t.Setenv("DMGR_CLICKHOUSE_PASSWORD_FILE", testenv.PasswordFile(t, "not-the-dev-password"))
	dev := startDev(t, t.TempDir())
	ctx := testenv.Context(t, time.Minute)
	for {
		req, err := http.NewRequestWithContext(ctx, "GET", dev.url+"/readyz", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("dev never got ready (did it use DMGR_CLICKHOUSE_ADDR?); stderr:\n%s", dev.stderr.String())
		case <-time.After(200 * time.Millisecond):
		}
	}
	if st, b := dev.call(t, "POST", "/api/v1/machines", "application/json", []byte(`{"host":"198.18.0.11","user":"tidb","password":"pw","host_key":"`+testenv.HostKey+`"}`)); st != 202 {
		t.Fatalf("register: %d %s", st, b)
	}
	if st, b := dev.call(t, "GET", "/api/v1/machines/198.18.0.11", "", nil); st != 200 {
		t.Fatalf("query: %d %s (stderr:\n%s)", st, b, dev.stderr.String())
	}
	dev.stop(t)
}
