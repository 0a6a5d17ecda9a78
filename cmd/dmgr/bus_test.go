package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/internal/busauth"
	"github.com/dmgr/dmgr/internal/embedded"
	"github.com/dmgr/dmgr/internal/testenv"
	"github.com/dmgr/dmgr/internal/workqueue"
)

// testSeeds is the seed file of each role on the test's NATS server (the
// agent's: pool default).
func testSeeds(t testing.TB, n *embedded.NATS) map[busauth.Role]string {
	t.Helper()
	return map[busauth.Role]string{
		busauth.Server:    testenv.SeedFile(t, n, busauth.Server, ""),
		busauth.Agent:     testenv.SeedFile(t, n, busauth.Agent, busauth.DefaultPool),
		busauth.Projector: testenv.SeedFile(t, n, busauth.Projector, ""),
		busauth.Admin:     testenv.SeedFile(t, n, busauth.Admin, ""),
	}
}

const testMasterKey = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

// streamNames lists the streams on the bus at url, as seen by an
// anonymous client (the bus takes them).
func streamNames(t *testing.T, n *embedded.NATS) []string {
	t.Helper()
	nc, err := nats.Connect(n.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	l := js.StreamNames(testenv.Context(t, 10*time.Second))
	for s := range l.Name() {
		names = append(names, s)
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}

// dmgr server and dmgr agent refuse to start on a bus that takes
// anonymous connections, and leave nothing on it; with
// --insecure-dev-bus the server starts.
func TestServerAndAgentRefuseABusThatTakesAnonymousConnections(t *testing.T) {
	n := testenv.AnonymousNATS(t)
	e, _ := testenv.Etcd(t)
	t.Setenv("DMGR_ADMIN_TOKEN", "bus-test-token-0123456789")
	t.Setenv("DMGR_MASTER_KEY", testMasterKey)
	t.Setenv("DMGR_NATS_NKEY_FILE", "")
	seed, err := busauth.EnsureSeeds(t.TempDir(), busauth.Identity{Role: busauth.Server}, busauth.Identity{Role: busauth.Agent, Pool: "default"})
	if err != nil {
		t.Fatal(err)
	}
	common := []string{"--nats-url", n.URL(), "--etcd-endpoints", e.Endpoint()}
	server := slices.Concat([]string{"--http-addr", "127.0.0.1:0", "--clickhouse-addr", "127.0.0.1:1",
		"--clickhouse-password-file", testenv.PasswordFile(t, "unused")}, common, etcdLogin(e, "dmgr-server"))
	agent := slices.Concat(common, etcdLogin(e, "dmgr-agent"))

	// Without credentials, and without saying the bus is insecure: a
	// usage error that names both ways out.
	for _, mode := range []string{"server", "agent"} {
		args := agent
		if mode == "server" {
			args = server
		}
		_, err := parseConfig(mode, args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "--nats-nkey-file") || !strings.Contains(err.Error(), "--insecure-dev-bus") {
			t.Fatalf("dmgr %s without --nats-nkey-file: %v", mode, err)
		}
	}
	// With credentials, on a bus that would also take anyone.
	for i, mode := range []string{"server", "agent"} {
		args := slices.Concat(agent, []string{"--nats-nkey-file", seed[i].SeedFile})
		if mode == "server" {
			args = slices.Concat(server, []string{"--nats-nkey-file", seed[i].SeedFile})
		}
		cfg, err := parseConfig(mode, args, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		var logs bytes.Buffer
		m := NewMain(cfg, zerolog.New(&logs), io.Discard)
		err = m.Run(testenv.Context(t, time.Minute))
		_ = m.Close()
		if err == nil || !strings.Contains(err.Error(), "takes connections without credentials") || !strings.Contains(err.Error(), "--insecure-dev-bus") {
			t.Fatalf("dmgr %s on an open bus: %v", mode, err)
		}
		body, _ := os.ReadFile(seed[i].SeedFile)
		for _, line := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(line, "SU") && strings.Contains(logs.String()+err.Error(), line) {
				t.Fatalf("the seed is in the log or the error:\n%s", logs.String())
			}
		}
	}
	if names := streamNames(t, n); len(names) != 0 {
		t.Fatalf("streams %v were created on the refused bus", names)
	}

	// --insecure-dev-bus: the server runs, and says what it runs on.
	cfg, err := parseConfig("server", slices.Concat(server, []string{"--insecure-dev-bus"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	m := NewMain(cfg, zerolog.New(&logs), io.Discard)
	if err := m.Run(testenv.Context(t, time.Minute)); err != nil {
		_ = m.Close()
		t.Fatalf("dmgr server --insecure-dev-bus: %v", err)
	}
	t.Cleanup(func() { _ = m.Close() })
	if !strings.Contains(logs.String(), "takes connections without credentials") {
		t.Fatalf("no warning about the open bus in the log:\n%s", logs.String())
	}
}

// dev makes one seed per role in <data-dir>/creds (0600, the directory
// 0700) at its first start and keeps them; its NATS takes no anonymous
// connection, and its in-process agent works with an agent's
// permissions on a connection of its own.
func TestDevMakesBusCredentialsItsAgentUses(t *testing.T) {
	dir := t.TempDir()
	start := func() *Main {
		cfg, err := parseConfig("dev", []string{"--data-dir", dir, "--http-addr", "127.0.0.1:0", "--nats-addr", "127.0.0.1:0",
			"--etcd-client-addr", "127.0.0.1:0", "--etcd-peer-addr", "127.0.0.1:0", "--clickhouse-addr", "127.0.0.1:1",
			"--clickhouse-password-file", testenv.PasswordFile(t, "unused")}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		m := NewMain(cfg, zerolog.Nop(), io.Discard)
		if err := m.Run(testenv.Context(t, time.Minute)); err != nil {
			_ = m.Close()
			t.Fatalf("dmgr dev: %v", err)
		}
		return m
	}
	m := start()
	creds := filepath.Join(dir, "creds")
	fi, err := os.Stat(creds)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("creds dir: %v %v; want mode 0700", fi, err)
	}
	keys := map[string]string{}
	for _, name := range []string{"nats-server.nk", "nats-agent.nk", "nats-projector.nk", "nats-admin.nk"} {
		fi, err := os.Stat(filepath.Join(creds, name))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v; want mode 0600", name, err)
		}
		b, _ := os.ReadFile(filepath.Join(creds, name))
		keys[name] = string(b)
	}
	url := m.natsSrv.URL()
	if open, err := busauth.ProbeAnonymous(testenv.Context(t, 10*time.Second), url); err != nil || open != "" {
		t.Fatalf("dev's NATS: probe %q %v; want anonymous connections refused", open, err)
	}
	if m.agentNC == nil || m.agentNC == m.nc {
		t.Fatal("dev's agent shares the server's connection")
	}
	// The agent has made its pool's consumer with its own credentials.
	admin := m.devSeed(busauth.Identity{Role: busauth.Admin})
	opts, err := busauth.ClientOptions(busauth.Identity{Role: busauth.Admin}, admin)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := testenv.Context(t, 30*time.Second)
	for {
		if _, err := js.Consumer(ctx, workqueue.StepsStream, workqueue.AgentConsumer("default")); err == nil {
			break
		} else if ctx.Err() != nil {
			t.Fatalf("the dev agent's consumer: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Its connection is the agent's: its replies come below the agent's
	// inbox prefix.
	if inbox := m.agentNC.NewInbox(); !strings.HasPrefix(inbox, "_INBOX_agent.default.") {
		t.Fatalf("dev agent inbox %s", inbox)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	// A second start keeps the seeds.
	m = start()
	defer m.Close()
	for name, before := range keys {
		b, _ := os.ReadFile(filepath.Join(creds, name))
		if string(b) != before {
			t.Fatalf("%s changed at the second start", name)
		}
	}
}

// `dmgr bus init` writes seeds and an authorization block that
// nats-server runs with; a dmgr process with a seed connects, a client
// without one does not, and running it again keeps the seeds.
func TestBusInitWritesWhatNATSServerRunsWith(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "bus")
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"bus", "init", "--dir", dir, "--pool", "default", "--pool", "z1"}, &out, &errOut); err != nil {
		t.Fatalf("bus init: %v\n%s", err, errOut.String())
	}
	for _, name := range []string{"nats-server.nk", "nats-projector.nk", "nats-admin.nk", "nats-agent.nk", "nats-agent-z1.nk"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v", name, err)
		}
		if !strings.Contains(out.String(), filepath.Join(dir, name)) {
			t.Fatalf("output does not list %s:\n%s", name, out.String())
		}
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %04o", fi.Mode().Perm())
	}
	conf := filepath.Join(dir, "nats-server.conf")
	if err := os.WriteFile(conf, []byte("host: 127.0.0.1\nport: -1\njetstream { store_dir: \""+t.TempDir()+"\" }\ninclude ./"+
		busauth.ConfigFileName+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("nats-server rejects the configuration: %v", err)
	}
	opts.NoSigs, opts.NoLog = true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	if nc, err := nats.Connect(srv.ClientURL()); !errors.Is(err, nats.ErrAuthorization) {
		if nc != nil {
			nc.Close()
		}
		t.Fatalf("anonymous connection: %v; want refused", err)
	}
	b := busConfig{nkeyFile: filepath.Join(dir, "nats-agent-z1.nk")}
	nc, err := dialBus(testenv.Context(t, 30*time.Second), srv.ClientURL(), busauth.Identity{Role: busauth.Agent, Pool: "z1"},
		b.nkeyFile, b, true, zerolog.Nop())
	if err != nil {
		t.Fatalf("agent z1 with its seed: %v", err)
	}
	nc.Close()

	// The same users with a no_auth_user: anonymous connections become
	// that user, and dmgr refuses the bus.
	u, err := busauth.LoadSeed(b.nkeyFile, busauth.Identity{Role: busauth.Agent, Pool: "z1"})
	if err != nil {
		t.Fatal(err)
	}
	withDefault := filepath.Join(dir, "nats-server-open.conf")
	if err := os.WriteFile(withDefault, []byte("host: 127.0.0.1\nport: -1\njetstream { store_dir: \""+t.TempDir()+"\" }\ninclude ./"+
		busauth.ConfigFileName+"\nno_auth_user: \""+u.PublicKey+"\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	opts, err = server.ProcessConfigFile(withDefault)
	if err != nil {
		t.Fatal(err)
	}
	opts.NoSigs, opts.NoLog = true, true
	open, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	open.Start()
	t.Cleanup(open.Shutdown)
	if !open.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server with no_auth_user did not start")
	}
	_, err = dialBus(testenv.Context(t, 30*time.Second), open.ClientURL(), busauth.Identity{Role: busauth.Agent, Pool: "z1"},
		b.nkeyFile, b, true, zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), "takes connections without credentials") {
		t.Fatalf("agent on a bus with no_auth_user: %v; want refused", err)
	}

	before, _ := os.ReadFile(filepath.Join(dir, "nats-agent-z1.nk"))
	out.Reset()
	if err := run(context.Background(), []string{"bus", "init", "--dir", dir, "--pool", "z1", "--pool", "z2"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "nats-agent-z1.nk"))
	if !bytes.Equal(before, after) || !strings.Contains(out.String(), "kept") || !strings.Contains(out.String(), "nats-agent-z2.nk") {
		t.Fatalf("second bus init changed a seed or made no z2:\n%s", out.String())
	}
	for _, bad := range [][]string{{"bus", "init"}, {"bus", "init", "--dir", dir, "--pool", "a.b"}, {"bus", "frob"}} {
		if err := run(context.Background(), bad, io.Discard, io.Discard); err == nil {
			t.Fatalf("%v: accepted", bad)
		}
	}
}
