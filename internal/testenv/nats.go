package testenv

import (
	"path/filepath"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dmgr/dmgr/internal/busauth"
	"github.com/dmgr/dmgr/internal/embedded"
)

// NATS starts a JetStream-enabled NATS server on a free loopback port that
// takes dmgr's users only, as `dmgr dev` runs it: one nkey user per role
// (server, projector, admin, and an agent of pool "default" and of each of
// pools), with their seeds in the test's temporary directory. Connect with
// JetStream (as admin) or JetStreamAs.
func NATS(t testing.TB, pools ...string) *embedded.NATS {
	t.Helper()
	ids := []busauth.Identity{{Role: busauth.Server}, {Role: busauth.Projector}, {Role: busauth.Admin},
		{Role: busauth.Agent, Pool: busauth.DefaultPool}}
	for _, p := range pools {
		ids = append(ids, busauth.Identity{Role: busauth.Agent, Pool: p})
	}
	users, err := busauth.EnsureSeeds(filepath.Join(t.TempDir(), "creds"), ids...)
	if err != nil {
		t.Fatalf("nats seeds: %v", err)
	}
	n, err := embedded.StartNATS("127.0.0.1:0", t.TempDir(), embedded.NATSUsers(users))
	if err != nil {
		t.Fatalf("start nats: %v", err)
	}
	t.Cleanup(n.Shutdown)
	return n
}

// AnonymousNATS starts a NATS server that takes connections without
// credentials, for the tests of dmgr's refusal to run on such a bus.
func AnonymousNATS(t testing.TB) *embedded.NATS {
	t.Helper()
	n, err := embedded.StartNATS("127.0.0.1:0", t.TempDir(), embedded.AnonymousNATS())
	if err != nil {
		t.Fatalf("start nats: %v", err)
	}
	t.Cleanup(n.Shutdown)
	return n
}

// SeedFile is the seed file of role (and pool, for an agent) on n, as
// --nats-nkey-file takes it.
func SeedFile(t testing.TB, n *embedded.NATS, role busauth.Role, pool string) string {
	t.Helper()
	u, ok := n.User(busauth.Identity{Role: role, Pool: pool})
	if !ok {
		t.Fatalf("the test NATS server has no user %s (pool %q); give the pool to testenv.NATS", role, pool)
	}
	return u.SeedFile
}

// JetStream connects to n as admin (every permission) and returns a
// JetStream context.
func JetStream(t testing.TB, n *embedded.NATS) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return JetStreamAs(t, n, busauth.Admin, "")
}

// JetStreamAs connects to n as role (pool: the agent's pool, "" for the
// other roles), with its seed and inbox prefix, and returns a JetStream
// context. opts are added (e.g. nats.ErrorHandler to see permission
// violations).
func JetStreamAs(t testing.TB, n *embedded.NATS, role busauth.Role, pool string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	id := busauth.Identity{Role: role, Pool: pool}
	auth, err := busauth.ClientOptions(id, SeedFile(t, n, role, pool))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(n.URL(), append(append(auth, nats.Name("test "+id.String())), opts...)...)
	if err != nil {
		t.Fatalf("connect nats %s as %s: %v", n.URL(), id, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}
