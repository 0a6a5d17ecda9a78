// Package testenv starts the real servers that dmgr's tests run against:
// an embedded NATS JetStream server and an embedded etcd member (which
// requires a login, as dmgr's users), each in a test's temporary directory
// and stopped when the test ends, and a real
// OpenSSH sshd on loopback (SSHD) for tests of the SSH side. It also builds
// the small packages the tests upload.
package testenv

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dmgr/dmgr/internal/embedded"
)

// Etcd starts a single-member etcd on free loopback ports with
// authentication enabled (EtcdServer) and returns a client logged in as
// dmgr-server.
func Etcd(t testing.TB) (*EtcdServer, *clientv3.Client) {
	t.Helper()
	e := startEtcd(t)
	return e, e.Client(t, embedded.EtcdServerUser)
}

// Context is a context cancelled when the test ends or after d.
func Context(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// HostKey is an SSH host public key (authorized_keys form) for tests that
// register machines no test connects to; registering a machine pins its host
// key, and a given key spares the server from reading it over the network.
const HostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILylCOmcGnt3gEblAC9tqK5F8JRWg8LkragXPoBHFolK"
