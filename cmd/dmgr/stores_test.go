package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/rs/zerolog"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dmgr/dmgr/agents"
	"github.com/dmgr/dmgr/internal/busauth"
	"github.com/dmgr/dmgr/internal/chserver"
	"github.com/dmgr/dmgr/internal/embedded"
	"github.com/dmgr/dmgr/internal/leadership"
	"github.com/dmgr/dmgr/internal/testenv"
)

// etcdLogin is the --etcd-user and --etcd-password-file flags of user
// (dmgr-server or dmgr-agent) on a test etcd.
func etcdLogin(e *testenv.EtcdServer, user string) []string {
	return []string{"--etcd-user", user, "--etcd-password-file", e.PasswordFile(user)}
}

// devConfig is `dmgr dev` on dir with everything on free loopback ports.
func devConfig(t *testing.T, dir string) config {
	t.Helper()
	cfg, err := parseConfig("dev", []string{"--data-dir", dir, "--http-addr", "127.0.0.1:0", "--nats-addr", "127.0.0.1:0",
		"--etcd-client-addr", "127.0.0.1:0", "--etcd-peer-addr", "127.0.0.1:0"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Dev mode generates its etcd and ClickHouse passwords at first start into
// <data-dir>/creds (0700, files 0600), shows none of them in its log or on
// stdout, makes both stores refuse anonymous logins, runs its agent with
// an etcd login of its own (dmgr-agent, enough to register), and reuses
// the same files on the next start (narrowing a file's mode found wider).
func TestDevGeneratesPrivateCredentialsAndReusesThem(t *testing.T) {
	testenv.RequireClickHouse(t)
	dir := t.TempDir()
	ctx := testenv.Context(t, 3*time.Minute)
	var logs, stdout bytes.Buffer
	m := NewMain(devConfig(t, dir), zerolog.New(&logs), &stdout)
	if err := m.Run(ctx); err != nil {
		m.Close()
		t.Fatalf("dmgr dev: %v\n%s", err, logs.String())
	}
	closed := false
	defer func() {
		if !closed {
			m.Close()
		}
	}()

	credsDir := filepath.Join(dir, "creds")
	names := []string{"etcd-root.password", "etcd-server.password", "etcd-agent.password", "clickhouse.password"}
	files := map[string]string{}
	fi, err := os.Stat(credsDir)
	if err != nil || fi.Mode().Perm() != 0o700 || !fi.IsDir() {
		t.Fatalf("creds dir: %v %v, want a directory with mode 0700", fi, err)
	}
	for _, n := range names {
		p := filepath.Join(credsDir, n)
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v, want mode 0600", n, fi, err)
		}
		b, _ := os.ReadFile(p)
		pw := strings.TrimSpace(string(b))
		if len(pw) != 64 {
			t.Fatalf("%s holds %d characters, want a 64-character password", n, len(pw))
		}
		files[n] = pw
	}
	if len(map[string]bool{files[names[0]]: true, files[names[1]]: true, files[names[2]]: true, files[names[3]]: true}) != 4 {
		t.Fatal("two credentials files hold the same password")
	}

	// etcd: anonymous refused, nothing written.
	anon, err := clientv3.New(clientv3.Config{Endpoints: []string{m.etcdSrv.Endpoint()}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	if _, err := anon.Put(ctx, leadership.ClusterLeaderKeys("forged")+"1", "x"); !errors.Is(err, rpctypes.ErrUserEmpty) {
		t.Fatalf("anonymous put to dev's etcd: %v, want refused", err)
	}
	if _, err := anon.Get(ctx, "/dmgr/", clientv3.WithPrefix()); !errors.Is(err, rpctypes.ErrUserEmpty) {
		t.Fatalf("anonymous get from dev's etcd: %v, want refused", err)
	}
	if resp, err := m.etcd.Get(ctx, leadership.ClusterLeaderKeys("forged"), clientv3.WithPrefix()); err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("after a refused put: %v %v", resp, err)
	}
	// ClickHouse: anonymous and default refused, dmgr with the file's
	// password accepted.
	for _, auth := range []clickhouse.Auth{{}, {Username: "default"}, {Username: "dmgr", Password: files["etcd-server.password"]}} {
		conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{m.chSrv.Addr()}, Auth: auth, DialTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if err := conn.Ping(ctx); !chserver.IsAuthError(err) {
			t.Fatalf("ClickHouse login %q: %v, want refused", auth.Username, err)
		}
		conn.Close()
	}
	conn, err := chserver.Connect(ctx, m.chSrv.Addr(), chserver.Credentials{User: "dmgr", Password: files["clickhouse.password"]})
	if err != nil {
		t.Fatalf("ClickHouse as dmgr with the password of clickhouse.password: %v", err)
	}
	conn.Close()

	// The in-process agent has a client of its own, as dmgr-agent, and
	// registers with it.
	if m.stores.agentCli == nil || m.stores.agentCli == m.etcd || m.stores.agentCli.Username != embedded.EtcdAgentUser ||
		m.etcd.Username != embedded.EtcdServerUser {
		t.Fatalf("etcd logins: server %q, agent %v", m.etcd.Username, m.stores.agentCli)
	}
	for {
		list, _, err := agents.List(ctx, m.etcd, "", 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) == 1 && list[0].Online {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("dev's agent never showed online: %v", list)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := m.stores.agentCli.Put(ctx, leadership.ClusterLeaderKeys("x")+"1", "agent"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Fatalf("dev's agent writes a leader key: %v, want permission denied", err)
	}
	resp, err := http.Get(m.URL + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("readyz: %v %v", resp, err)
	}
	resp.Body.Close()

	if err := m.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	closed = true
	for n, pw := range files {
		for what, out := range map[string]string{"log": logs.String(), "stdout": stdout.String()} {
			if strings.Contains(out, pw) {
				t.Fatalf("the %s shows the password of %s", what, n)
			}
		}
	}

	// Second start: same files, same passwords; a mode widened by hand is
	// narrowed again.
	if err := os.Chmod(filepath.Join(credsDir, "etcd-agent.password"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(credsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	logs.Reset()
	m2 := NewMain(devConfig(t, dir), zerolog.New(&logs), io.Discard)
	if err := m2.Run(ctx); err != nil {
		m2.Close()
		t.Fatalf("dmgr dev, second start: %v\n%s", err, logs.String())
	}
	defer m2.Close()
	if fi, err := os.Stat(credsDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("creds dir after the second start: %v %v", fi, err)
	}
	for n, pw := range files {
		p := filepath.Join(credsDir, n)
		b, _ := os.ReadFile(p)
		if strings.TrimSpace(string(b)) != pw {
			t.Fatalf("%s changed on the second start", n)
		}
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s after the second start: %v %v", n, fi, err)
		}
	}
	if _, err := m2.etcd.Put(ctx, leadership.Root+"test/second-start", "1"); err != nil {
		t.Fatalf("server login after the second start: %v", err)
	}
	resp, err = http.Get(m2.URL + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("readyz after the second start: %v %v", resp, err)
	}
	resp.Body.Close()
	// The stores' four files and the bus's four seeds (bus_test.go), no more.
	if ents, _ := os.ReadDir(credsDir); len(ents) != len(names)+4 {
		t.Fatalf("creds dir holds %d files after the second start, want %d", len(ents), len(names)+4)
	}
}

// Server and agent need an etcd password file, and the server a ClickHouse
// one; a wrong password stops the start with what to check.
func TestServerAndAgentNeedStoreLogins(t *testing.T) {
	t.Setenv("DMGR_ETCD_PASSWORD_FILE", "")
	t.Setenv("DMGR_CLICKHOUSE_PASSWORD_FILE", "")
	for _, tc := range []struct {
		mode string
		args []string
		want string
	}{
		{"server", []string{"--clickhouse-addr", "127.0.0.1:9000", "--clickhouse-password-file", "/x"}, "--etcd-password-file (or DMGR_ETCD_PASSWORD_FILE) is required"},
		{"agent", nil, "--etcd-password-file (or DMGR_ETCD_PASSWORD_FILE) is required"},
		{"server", []string{"--clickhouse-addr", "127.0.0.1:9000", "--etcd-password-file", "/x"}, "--clickhouse-password-file (or DMGR_CLICKHOUSE_PASSWORD_FILE) is required"},
		{"dev", []string{"--clickhouse-addr", "127.0.0.1:9000"}, "--clickhouse-password-file (or DMGR_CLICKHOUSE_PASSWORD_FILE) is required"},
		{"server", []string{"--clickhouse-addr", "127.0.0.1:9000", "--etcd-password-file", "/x", "--clickhouse-password-file", "/x", "--etcd-user", ""}, "--etcd-user"},
		{"agent", []string{"--etcd-password-file", "/x", "--etcd-ca-file", "/ca.pem", "--etcd-endpoints", "http://10.0.0.1:2379"}, "endpoint http://10.0.0.1:2379 is http://"},
	} {
		if _, err := parseConfig(tc.mode, tc.args, io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("dmgr %s %v: got %v, want %q", tc.mode, tc.args, err, tc.want)
		}
	}
	cfg, err := parseConfig("agent", []string{"--etcd-password-file", "/x", "--nats-nkey-file", "/x"}, io.Discard)
	if err != nil || cfg.stores.etcdUser != "dmgr-agent" {
		t.Fatalf("agent's default etcd user: %q %v", cfg.stores.etcdUser, err)
	}
	t.Setenv("DMGR_ETCD_USER", "ops-server")
	t.Setenv("DMGR_ETCD_PASSWORD_FILE", "/run/secrets/etcd")
	t.Setenv("DMGR_CLICKHOUSE_PASSWORD_FILE", "/run/secrets/ch")
	cfg, err = parseConfig("server", []string{"--clickhouse-addr", "127.0.0.1:9000", "--nats-nkey-file", "/x"}, io.Discard)
	if err != nil || cfg.stores.etcdUser != "ops-server" || cfg.stores.etcdPasswordFile != "/run/secrets/etcd" ||
		cfg.stores.chUser != "dmgr" || cfg.stores.chPasswordFile != "/run/secrets/ch" {
		t.Fatalf("server logins from env: %+v %v", cfg.stores, err)
	}

	// Password files: empty or several lines refused; a line ending kept out.
	dir := t.TempDir()
	for name, body := range map[string]string{"empty": "", "newline": "\n", "two-lines": "a\nb\n"} {
		p := filepath.Join(dir, name)
		_ = os.WriteFile(p, []byte(body), 0o600)
		if _, err := readPasswordFile(p); err == nil {
			t.Errorf("password file %q accepted", body)
		}
	}
	p := filepath.Join(dir, "crlf")
	_ = os.WriteFile(p, []byte("pass word\r\n"), 0o600)
	if pw, err := readPasswordFile(p); err != nil || pw != "pass word" {
		t.Errorf("password file with CRLF: %q %v", pw, err)
	}
}

// A server with a wrong etcd or ClickHouse password does not start, and
// says which login was refused.
func TestServerWithAWrongPasswordDoesNotStart(t *testing.T) {
	testenv.RequireClickHouse(t)
	n := testenv.NATS(t)
	e, _ := testenv.Etcd(t)
	ctx := testenv.Context(t, 2*time.Minute)
	ch, err := chserver.Start(ctx, chserver.Options{Dir: t.TempDir(), Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ch.Stop() })
	t.Setenv("DMGR_ADMIN_TOKEN", "wrong-password-token-123456")
	t.Setenv("DMGR_MASTER_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
	base := []string{"--http-addr", "127.0.0.1:0", "--nats-url", n.URL(), "--nats-nkey-file", testenv.SeedFile(t, n, busauth.Server, ""),
		"--etcd-endpoints", e.Endpoint(), "--etcd-user", "dmgr-server"}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"etcd", append([]string{"--etcd-password-file", testenv.PasswordFile(t, "wrong")}, testenv.ClickHouseFlags(t, ch)...),
			"etcd at " + e.Endpoint() + " refused the login of user dmgr-server"},
		{"clickhouse", []string{"--etcd-password-file", e.PasswordFile("dmgr-server"), "--clickhouse-addr", ch.Addr(),
			"--clickhouse-password-file", testenv.PasswordFile(t, "wrong")}, "refused the login of user dmgr"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseConfig("server", append(append([]string{}, base...), tc.args...), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			m := NewMain(cfg, zerolog.Nop(), io.Discard)
			err = m.Run(ctx)
			m.Close()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			if m.URL != "" {
				t.Fatalf("the server serves %s", m.URL)
			}
		})
	}
}

// --etcd-ca-file takes a PEM certificate and refuses anything else.
func TestEtcdCAFile(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "etcd test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "ca.pem")
	_ = os.WriteFile(good, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	cfg, err := caTLS(good)
	if err != nil || cfg.RootCAs == nil || cfg.MinVersion != tls.VersionTLS12 {
		t.Fatalf("good CA file: %+v %v", cfg, err)
	}
	bad := filepath.Join(dir, "bad.pem")
	_ = os.WriteFile(bad, []byte("not a certificate"), 0o644)
	if _, err := caTLS(bad); err == nil || !strings.Contains(err.Error(), "holds no PEM certificate") {
		t.Fatalf("bad CA file: %v", err)
	}
	if _, err := caTLS(filepath.Join(dir, "missing.pem")); err == nil {
		t.Fatal("missing CA file accepted")
	}
}
