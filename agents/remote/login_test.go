package remote_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/dmgr/dmgr/agents/remote"
	"github.com/dmgr/dmgr/internal/testenv"
)

// TestLogin: one command over a connection of its own; a refused key and
// a host that does not answer are told apart from each other and from a
// changed host key.
func TestLogin(t *testing.T) {
	s, tg := server(t)
	res, err := remote.Login(testenv.Context(t, 30*time.Second), tg, "echo hello; exit 3", remote.RunOptions{}, 5*time.Second)
	if err != nil || res.ExitCode != 3 || strings.TrimSpace(res.Stdout) != "hello" {
		t.Fatalf("login: %+v %v", res, err)
	}

	_, other, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(other, "")
	if err != nil {
		t.Fatal(err)
	}
	wrong := tg
	wrong.PrivateKey = pem.EncodeToMemory(block)
	_, err = remote.Login(testenv.Context(t, 30*time.Second), wrong, "true", remote.RunOptions{}, 5*time.Second)
	if !errors.Is(err, remote.ErrLoginRefused) || remote.Unreachable(err) || !strings.Contains(err.Error(), "authentication failed") {
		t.Errorf("a key the host does not take: %v (refused %v, unreachable %v)", err, errors.Is(err, remote.ErrLoginRefused), remote.Unreachable(err))
	}

	// A port nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := tg
	closed.Port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	_, err = remote.Login(testenv.Context(t, 30*time.Second), closed, "true", remote.RunOptions{}, 2*time.Second)
	if !remote.Unreachable(err) || errors.Is(err, remote.ErrLoginRefused) {
		t.Errorf("a closed port: %v (unreachable %v)", err, remote.Unreachable(err))
	}

	// A host key other than the pinned one is neither.
	rekeyed := tg
	rekeyed.HostKey = s.ECDSAHostKey
	pinned := tg
	pinned.HostKey = strings.Replace(s.HostKey, s.HostKey[len(s.HostKey)-8:], "AAAAAAAA", 1)
	_, err = remote.Login(testenv.Context(t, 30*time.Second), rekeyed, "true", remote.RunOptions{}, 5*time.Second)
	if err != nil {
		t.Errorf("pinned to the host's other key: %v", err)
	}
	_, err = remote.Login(testenv.Context(t, 30*time.Second), pinned, "true", remote.RunOptions{}, 5*time.Second)
	var mismatch *remote.HostKeyMismatchError
	if err == nil || remote.Unreachable(err) || errors.Is(err, remote.ErrLoginRefused) {
		t.Errorf("a wrong pinned key: %v (mismatch %v)", err, errors.As(err, &mismatch))
	}
}
