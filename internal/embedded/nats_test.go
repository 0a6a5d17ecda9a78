package embedded_test

import (
	"strings"
	"testing"

	"github.com/dmgr/dmgr/internal/busauth"
	"github.com/dmgr/dmgr/internal/embedded"
)

// The embedded NATS server listens on loopback only and never without
// users unless a test asks for an open bus.
func TestEmbeddedNATSListensOnLoopbackWithUsersOnly(t *testing.T) {
	users, err := busauth.EnsureSeeds(t.TempDir(), busauth.Identity{Role: busauth.Admin})
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "10.1.2.3:0", "example.com:0"} {
		if n, err := embedded.StartNATS(addr, t.TempDir(), embedded.NATSUsers(users)); err == nil {
			n.Shutdown()
			t.Fatalf("listening on %s was accepted", addr)
		} else if !strings.Contains(err.Error(), "loopback") {
			t.Fatalf("%s: %v", addr, err)
		}
	}
	if n, err := embedded.StartNATS("127.0.0.1:0", t.TempDir()); err == nil {
		n.Shutdown()
		t.Fatal("a server without users was started")
	}
	if n, err := embedded.StartNATS("127.0.0.1:0", t.TempDir(), embedded.NATSUsers(users), embedded.AnonymousNATS()); err == nil {
		n.Shutdown()
		t.Fatal("users and an open bus at once were accepted")
	}
	n, err := embedded.StartNATS("127.0.0.1:0", t.TempDir(), embedded.NATSUsers(users))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown()
	if u, ok := n.User(busauth.Identity{Role: busauth.Admin}); !ok || u.PublicKey != users[0].PublicKey {
		t.Fatalf("User(admin): %+v %v", u, ok)
	}
}
