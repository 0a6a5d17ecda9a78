package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dmgr/dmgr/internal/chserver"
	"github.com/dmgr/dmgr/internal/embedded"
)

// EtcdServer is an embedded etcd member whose authentication is enabled
// the way `dmgr dev` enables it (embedded.EnableEtcdAuth): users root,
// dmgr-server and dmgr-agent with random passwords, written to 0600 files
// for the command-line flags.
type EtcdServer struct {
	*embedded.Etcd
	Passwords embedded.EtcdPasswords
	files     map[string]string // user → password file
}

func startEtcd(t testing.TB) *EtcdServer {
	t.Helper()
	e, err := embedded.StartEtcd(t.TempDir(), "127.0.0.1:0", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	t.Cleanup(e.Close)
	s := &EtcdServer{Etcd: e, files: map[string]string{}}
	s.Passwords = embedded.EtcdPasswords{Root: randomHex(t), Server: randomHex(t), Agent: randomHex(t)}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.EnableAuth(ctx, s.Passwords); err != nil {
		t.Fatalf("enable etcd auth: %v", err)
	}
	for _, u := range []string{embedded.EtcdRootUser, embedded.EtcdServerUser, embedded.EtcdAgentUser} {
		s.files[u] = PasswordFile(t, s.Passwords.Password(u))
	}
	return s
}

// Client returns a client of the member logged in as user (one of
// embedded's EtcdRootUser, EtcdServerUser, EtcdAgentUser), or an anonymous
// one for "". It is closed when the test ends.
func (e *EtcdServer) Client(t testing.TB, user string) *clientv3.Client {
	t.Helper()
	cfg := clientv3.Config{Endpoints: []string{e.Endpoint()}, DialTimeout: 5 * time.Second, Logger: embedded.EtcdClientLogger()}
	if user != "" {
		cfg.Username, cfg.Password = user, e.Passwords.Password(user)
	}
	c, err := clientv3.New(cfg)
	if err != nil {
		t.Fatalf("etcd client as %q: %v", user, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// AgentClient is Client(t, "dmgr-agent").
func (e *EtcdServer) AgentClient(t testing.TB) *clientv3.Client {
	return e.Client(t, embedded.EtcdAgentUser)
}

// PasswordFile is the 0600 file holding user's password.
func (e *EtcdServer) PasswordFile(user string) string { return e.files[user] }

// Flags are the command-line flags of `dmgr server` (user dmgr-server) or
// `dmgr agent` (dmgr-agent) for this member.
func (e *EtcdServer) Flags(user string) []string {
	return []string{"--etcd-endpoints", e.Endpoint(), "--etcd-user", user, "--etcd-password-file", e.files[user]}
}

// ClickHouseFlags are the command-line flags of `dmgr server` and `dmgr
// projections rebuild` for a ClickHouse server that chserver started.
func ClickHouseFlags(t testing.TB, ch *chserver.Server) []string {
	t.Helper()
	return []string{"--clickhouse-addr", ch.Addr(), "--clickhouse-user", ch.User(),
		"--clickhouse-password-file", PasswordFile(t, ch.Password())}
}

// PasswordFile writes password to a new 0600 file in a temporary directory
// of the test and returns its path.
func PasswordFile(t testing.TB, password string) string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "password-")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Chmod(0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(password + "\n"); err != nil {
		t.Fatal(err)
	}
	return filepath.Clean(f.Name())
}

func randomHex(t testing.TB) string {
	t.Helper()
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
