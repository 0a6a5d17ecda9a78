package httpapi_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/dmgr/dmgr/agents/remote"
	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/httpapi"
	"github.com/dmgr/dmgr/internal/pkgstore"
	"github.com/dmgr/dmgr/internal/secrets"
	"github.com/dmgr/dmgr/internal/service"
	"github.com/dmgr/dmgr/internal/testenv"
)

// scanningStack is a stack whose service reads host keys over SSH
// (remote.ScanHostKey, as dmgr server does).
func scanningStack(t *testing.T) *stack {
	return newStackWith(t, pkgstore.DefaultLimits(), func(sc *service.Config, _ *httpapi.Config) {
		sc.ScanHostKey = remote.ScanHostKey
	})
}

// listener is a TCP listener of the test's own that records every byte it
// receives and answers each connection with reply.
type listener struct {
	net.Listener
	mu    sync.Mutex
	conns int
	got   []byte
}

func listen(t *testing.T, addr string, reply func(net.Conn)) *listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	l := &listener{Listener: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			l.mu.Lock()
			l.conns++
			l.mu.Unlock()
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				if reply != nil {
					reply(c)
				}
				b, _ := io.ReadAll(io.LimitReader(c, 1<<20))
				l.mu.Lock()
				l.got = append(l.got, b...)
				l.mu.Unlock()
			}()
		}
	}()
	return l
}

func (l *listener) port() int { return l.Addr().(*net.TCPAddr).Port }

func (l *listener) received() (int, []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conns, slices.Clone(l.got)
}

// Machines are canonical: the host key is read over SSH from the machine's
// SSH port only, the host is resolved once, and one machine (address and
// SSH port) is registered under one identity only.
func TestMachinesAreCanonical(t *testing.T) {
	sshd := testenv.SSHD(t, testenv.SSHDOptions{})
	s := scanningStack(t)
	body := func(host string, port int) map[string]any {
		return map[string]any{"host": host, "ssh_port": port, "user": "root", "private_key": string(sshd.ClientKey)}
	}
	// Registered by address, without host_key: the key is read from sshd.
	s.mustAccept("POST", "/api/v1/machines", body("127.0.0.1", sshd.Port))
	var m domain.Machine
	s.do("GET", "/api/v1/machines/127.0.0.1", nil).json(t, &m)
	if m.Address != "127.0.0.1" || m.SSHPort != sshd.Port || m.HostKey.Key != sshd.HostKey {
		t.Fatalf("machine %+v; want address 127.0.0.1, port %d, host key %s", m, sshd.Port, sshd.HostKey)
	}
	port := strconv.Itoa(sshd.Port)
	runInputCases(t, s, []inputCase{
		{"the same machine by name", "POST", "/api/v1/machines", body("localhost", sshd.Port), nil, 409,
			"machine localhost is already registered as 127.0.0.1 (address 127.0.0.1, SSH port " + port + ")"},
		{"the same machine by name, host key given", "POST", "/api/v1/machines", withHostKey(body("localhost", sshd.Port), sshd.HostKey), nil, 409,
			"already registered as 127.0.0.1"},
		{"the same machine as an IPv4-mapped IPv6 address", "POST", "/api/v1/machines", body("::ffff:127.0.0.1", sshd.Port), nil, 400,
			`host "::ffff:127.0.0.1" is not an address in canonical form: write it as 127.0.0.1`},
		{"the same machine again", "POST", "/api/v1/machines", body("127.0.0.1", sshd.Port), nil, 409, "machine 127.0.0.1 is already registered"},
		{"a name that does not resolve", "POST", "/api/v1/machines", body("no-such-host.invalid", 22), nil, 400,
			"host no-such-host.invalid does not resolve"},
		{"a port where nothing listens", "POST", "/api/v1/machines", body("127.0.0.2", sshd.Port), nil, 400,
			"no SSH host key could be read from 127.0.0.2:" + port + " (connection refused)"},
		{"the unspecified address", "POST", "/api/v1/machines", body("0.0.0.0", sshd.Port), nil, 400, "unspecified address"},
	})
	// A name is resolved once and recorded with its address; the same
	// address on another SSH port is another machine.
	other := testenv.SSHD(t, testenv.SSHDOptions{})
	s.mustAccept("POST", "/api/v1/machines", body("localhost", other.Port))
	s.do("GET", "/api/v1/machines/localhost", nil).json(t, &m)
	if m.Host != "localhost" || m.Address != "127.0.0.1" || m.SSHPort != other.Port || m.HostKey.Key != other.HostKey {
		t.Fatalf("machine by name: %+v", m)
	}
}

func withHostKey(b map[string]any, key string) map[string]any {
	b["host_key"] = key
	return b
}

// Registration speaks only SSH, to the SSH port only, and its error says
// no more than the class of the failure: what a non-SSH service answers is
// never shown.
func TestRegistrationSpeaksOnlySSH(t *testing.T) {
	s := scanningStack(t)
	// A service that talks first, with a line longer than an SSH version
	// line may be (an SSH client gives up reading it).
	banner := "HTTP/1.1 200 OK\r\nServer: secret-service-banner-42\r\nX-Padding: " + strings.Repeat("p", 300) + "\r\nContent-Length: 5\r\n\r\nhello"
	web := listen(t, "127.0.0.4:0", func(c net.Conn) { _, _ = io.WriteString(c, banner) })
	closing := listen(t, "127.0.0.6:0", func(c net.Conn) { c.Close() })
	pw := func(host string, port int) map[string]any {
		return map[string]any{"host": host, "ssh_port": port, "user": "tidb", "password": "pw"}
	}
	runInputCases(t, s, []inputCase{
		{"an HTTP server", "POST", "/api/v1/machines", pw("127.0.0.4", web.port()), nil, 400,
			fmt.Sprintf("no SSH host key could be read from 127.0.0.4:%d (not an SSH server)", web.port())},
		{"a server that hangs up", "POST", "/api/v1/machines", pw("127.0.0.6", closing.port()), nil, 400,
			fmt.Sprintf("no SSH host key could be read from 127.0.0.6:%d (the connection closed before an SSH host key was offered)", closing.port())},
	})
	r := s.do("POST", "/api/v1/machines", pw("127.0.0.4", web.port()))
	if strings.Contains(string(r.body), "secret-service-banner") || strings.Contains(string(r.body), "hello") {
		t.Fatalf("the answer shows what the service said: %s", r.body)
	}
	waitFor(t, func() bool { n, _ := web.received(); return n == 2 })
	n, got := web.received()
	// Each connection got the SSH client's version line and nothing else
	// readable: no credential, no HTTP.
	if n != 2 || !strings.HasPrefix(string(got), "SSH-2.0-") || strings.Contains(string(got), "pw") || strings.Contains(string(got), "GET ") {
		t.Fatalf("the listener got %d connections and %q", n, got)
	}
}

// waitFor polls cond until it holds (a listener records bytes after the
// registration has answered).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	ctx := testenv.Context(t, 30*time.Second)
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatal("condition never held")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Credentials are parsed at registration: a bad one is 400 with the reason
// and nothing reaches the vault (its KV keys are listed before and after).
func TestCredentialsAreParsedAtRegistration(t *testing.T) {
	s := newStack(t, pkgstore.DefaultLimits())
	key := privateKeyPEM(t, "")
	encrypted := privateKeyPEM(t, "open sesame")
	reg := func(fields map[string]any) map[string]any {
		b := map[string]any{"host": "198.18.0.30", "user": "tidb", "host_key": testenv.HostKey}
		for k, v := range fields {
			b[k] = v
		}
		return b
	}
	runInputCases(t, s, []inputCase{
		{"a key that is not PEM", "POST", "/api/v1/machines", reg(map[string]any{"private_key": "ssh-ed25519 AAAA not a private key"}), nil, 400,
			"private_key does not parse: no PEM block found"},
		{"a truncated key", "POST", "/api/v1/machines", reg(map[string]any{"private_key": key[:len(key)/2] + "\n-----END OPENSSH PRIVATE KEY-----\n"}), nil, 400,
			"private_key does not parse"},
		{"a corrupt key", "POST", "/api/v1/machines", reg(map[string]any{"private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"}), nil, 400,
			"private_key does not parse: the OPENSSH PRIVATE KEY block is malformed"},
		{"a certificate instead of a key", "POST", "/api/v1/machines", reg(map[string]any{"private_key": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}), nil, 400,
			"the PEM block is not a private key"},
		{"two keys", "POST", "/api/v1/machines", reg(map[string]any{"private_key": key + key}), nil, 400, "data after the key's END line"},
		{"an encrypted key without passphrase", "POST", "/api/v1/machines", reg(map[string]any{"private_key": encrypted}), nil, 400,
			"private_key is encrypted with a passphrase: give private_key_passphrase"},
		{"an encrypted key with a wrong passphrase", "POST", "/api/v1/machines", reg(map[string]any{"private_key": encrypted, "private_key_passphrase": "wrong"}), nil, 400,
			"private_key_passphrase does not decrypt private_key"},
		{"a passphrase for a key that is not encrypted", "POST", "/api/v1/machines", reg(map[string]any{"private_key": key, "private_key_passphrase": "x"}), nil, 400,
			"private_key is not encrypted: omit private_key_passphrase"},
		{"a passphrase without a key", "POST", "/api/v1/machines", reg(map[string]any{"password": "pw", "private_key_passphrase": "x"}), nil, 400,
			"private_key_passphrase is given without private_key"},
		{"a password that is a number", "POST", "/api/v1/machines", reg(map[string]any{"password": 12345}), nil, 400,
			`field "password": want a string, got JSON number`},
		{"a password that is true", "POST", "/api/v1/machines", reg(map[string]any{"password": true}), nil, 400, `field "password": want a string, got JSON boolean`},
		{"a password with a NUL", "POST", "/api/v1/machines", reg(map[string]any{"password": "a\x00b"}), nil, 400, "password contains a NUL character"},
		{"a password and a key", "POST", "/api/v1/machines", reg(map[string]any{"password": "pw", "private_key": key}), nil, 400, "give either password or private_key, not both"},
		{"no credential", "POST", "/api/v1/machines", reg(nil), nil, 400, "a credential is required"},
		{"an empty password", "POST", "/api/v1/machines", reg(map[string]any{"password": ""}), nil, 400, "a credential is required"},
		{"a good key on a bad host", "POST", "/api/v1/machines", map[string]any{"host": "198.18.0.30;id", "user": "tidb", "host_key": testenv.HostKey, "private_key": key}, nil, 400,
			`host "198.18.0.30;id" is invalid`},
	})
	if keys := s.vaultKeys(); len(keys) != 0 {
		t.Fatalf("refused registrations left vault keys %v", keys)
	}
	// A good key, and an encrypted one with its passphrase, are stored;
	// the encrypted one decrypted (agents get a key they can use).
	s.mustAccept("POST", "/api/v1/machines", reg(map[string]any{"private_key": key}))
	s.mustAccept("POST", "/api/v1/machines", map[string]any{"host": "198.18.0.31", "user": "tidb", "host_key": testenv.HostKey,
		"private_key": encrypted, "private_key_passphrase": "open sesame"})
	var m domain.Machine
	s.do("GET", "/api/v1/machines/198.18.0.31", nil).json(t, &m)
	kind, stored, err := s.vault.Get(t.Context(), m.Credential.ID, m.Host)
	if err != nil || kind != secrets.KindPrivateKey {
		t.Fatalf("vault: %v %v", kind, err)
	}
	if _, err := ssh.ParsePrivateKey(stored); err != nil {
		t.Fatalf("the stored key does not parse without a passphrase: %v", err)
	}
	if keys := s.vaultKeys(); len(keys) != 2 || !slices.Contains(keys, m.Credential.ID) {
		t.Fatalf("vault keys %v", keys)
	}
	if strings.Contains(s.logs.String(), "open sesame") || strings.Contains(strings.Join(s.rawStream(), ""), "open sesame") {
		t.Fatal("the passphrase reached the logs or the events")
	}
}

// A machine's credential leaves the vault with the machine; a refused
// removal keeps it.
func TestRemovingAMachineDeletesItsCredential(t *testing.T) {
	s := newStack(t, pkgstore.DefaultLimits())
	s.fixtures()
	s.mustAccept("POST", "/api/v1/clusters", map[string]string{"name": "prod-a", "version": "v8.1.0", "topology": topology})
	s.mustAccept("POST", "/api/v1/machines", map[string]any{"host": "198.18.0.40", "user": "tidb", "host_key": testenv.HostKey, "private_key": privateKeyPEM(t, "")})
	var used, unused domain.Machine
	s.do("GET", "/api/v1/machines/198.18.0.11", nil).json(t, &used)
	s.do("GET", "/api/v1/machines/198.18.0.40", nil).json(t, &unused)
	keys := s.vaultKeys()
	if len(keys) != 4 || !slices.Contains(keys, used.Credential.ID) || !slices.Contains(keys, unused.Credential.ID) {
		t.Fatalf("vault keys %v", keys)
	}
	if r := s.do("DELETE", "/api/v1/machines/198.18.0.11", nil); r.status != http.StatusConflict {
		t.Fatalf("remove a machine in use: %d %s", r.status, r.body)
	}
	if got := s.vaultKeys(); !slices.Equal(got, keys) {
		t.Fatalf("a refused removal changed the vault: %v → %v", keys, got)
	}
	s.mustAccept("DELETE", "/api/v1/machines/198.18.0.40", nil)
	got := s.vaultKeys()
	if len(got) != 3 || slices.Contains(got, unused.Credential.ID) {
		t.Fatalf("after removal the vault holds %v; %s must be gone", got, unused.Credential.ID)
	}
	if _, _, err := s.vault.Get(t.Context(), unused.Credential.ID, unused.Host); domain.ErrorCode(err) != domain.NotFound {
		t.Fatalf("the removed machine's credential: %v", err)
	}
	// Registered again, it gets a new credential.
	s.mustAccept("POST", "/api/v1/machines", map[string]any{"host": "198.18.0.40", "user": "tidb", "host_key": testenv.HostKey, "password": "pw"})
	if got := s.vaultKeys(); len(got) != 4 {
		t.Fatalf("vault keys after registering again: %v", got)
	}
}

// Live status connects only to instances dmgr started, at their machine's
// registered address and their own port: never to an instance it did not
// start, never where a redirect points.
func TestLiveStatusProbesOnlyPlacedInstances(t *testing.T) {
	s := newStack(t, pkgstore.DefaultLimits())
	const host = "127.0.0.5"
	elsewhere := listen(t, host+":0", nil) // a redirect's target
	master := listen(t, host+":0", func(c net.Conn) {
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		if strings.HasPrefix(req.URL.Path, "/apis/") {
			fmt.Fprintf(c, "HTTP/1.1 302 Found\r\nLocation: http://%s/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", elsewhere.Addr())
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 24\r\nConnection: close\r\n\r\nRelease Version: v8.1.0\n")
	})
	worker := listen(t, host+":0", nil) // an instance dmgr never started
	peer := listen(t, host+":0", nil)   // the master's peer port: never probed
	s.mustAccept("POST", "/api/v1/machines", map[string]any{"host": host, "user": "tidb", "host_key": testenv.HostKey, "password": "pw"})
	s.mustAccept("POST", "/api/v1/packages?filename=dm-v8.1.0.tar.gz", testenv.DMPackage(t, "v8.1.0"))
	topo := fmt.Sprintf("global:\n  user: tidb\n  deploy_dir: /dm/deploy\n  data_dir: /dm/data\nmaster_servers:\n  - host: %s\n    port: %d\n    peer_port: %d\nworker_servers:\n  - host: %s\n    port: %d\n",
		host, master.port(), peer.port(), host, worker.port())
	acc := s.mustAccept("POST", "/api/v1/clusters", map[string]string{"name": "live", "version": "v8.1.0", "topology": topo})

	live := func() service.LiveCluster {
		var lc service.LiveCluster
		r := s.do("GET", "/api/v1/clusters/live?status=live", nil)
		if r.status != 200 {
			t.Fatalf("live: %d %s", r.status, r.body)
		}
		r.json(t, &lc)
		return lc
	}
	// Nothing started yet: nothing probed.
	for _, in := range live().Instances {
		if in.Status != service.LiveNotStarted {
			t.Fatalf("instance %s before any start: %q", in.ID, in.Status)
		}
	}
	for name, l := range map[string]*listener{"master": master, "worker": worker, "peer": peer, "redirect target": elsewhere} {
		if n, _ := l.received(); n != 0 {
			t.Fatalf("the %s's port got %d connections before dmgr started anything", name, n)
		}
	}
	// The master's start step succeeds (as the coordinator records it).
	ctx := context.Background()
	if _, err := s.svc.TakeLeadership(ctx, "live", acc.OperationID, 1, "test"); err != nil {
		t.Fatal(err)
	}
	masterID := net.JoinHostPort(host, strconv.Itoa(master.port()))
	if _, ok, err := s.svc.ReportStep(ctx, "live", domain.StepReport{Operation: acc.OperationID, Step: "start/" + masterID, Attempt: 1, Token: 1,
		Agent: "test", Finished: true, OK: true}, 1); err != nil || !ok {
		t.Fatalf("report the master's start: %v %v", ok, err)
	}
	lc := live()
	status := map[string]service.LiveInstance{}
	for _, in := range lc.Instances {
		status[in.ID] = in
	}
	if in := status[masterID]; in.Status != service.LiveUp || in.Version != "v8.1.0" {
		t.Fatalf("the started master: %+v", in)
	}
	if in := status[net.JoinHostPort(host, strconv.Itoa(worker.port()))]; in.Status != service.LiveNotStarted {
		t.Fatalf("the worker dmgr did not start: %+v", in)
	}
	if n, _ := master.received(); n != 2 { // /status and the members API
		t.Fatalf("the master got %d connections, want 2", n)
	}
	for name, l := range map[string]*listener{"worker": worker, "peer": peer, "redirect target": elsewhere} {
		if n, _ := l.received(); n != 0 {
			t.Fatalf("the %s's port got %d connections", name, n)
		}
	}
}
