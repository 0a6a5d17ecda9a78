package service

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/dmgr/dmgr/agents/remote"
	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/tiupmeta"
)

// importMeta is a meta.yaml of two masters and a worker on two hosts.
const importMeta = `user: tidb
dm_version: v8.1.0
topology:
    global:
        user: tidb
        deploy_dir: /home/tidb/dm/deploy
        data_dir: /home/tidb/dm/data
    master_servers:
        - host: 10.0.9.1
        - host: 10.0.9.2
    worker_servers:
        - host: 10.0.9.2
`

func hostKeyLine(t *testing.T) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

// host10 answers a probe of a host: what each instance has (unit, pid
// file) and whether systemd runs, or a failure.
type host10 struct {
	instances map[string]string // "dm-master-8261" → "unit", "pid", "both", ""
	systemd   bool
	scanErr   error
	loginErr  error
	exit      int
}

// probeWith runs probeImportHosts against fake hosts (keyed by address)
// with the service manager the request names.
func probeWith(t *testing.T, hosts map[string]host10, manager string) (*importPrep, error) {
	t.Helper()
	m, err := tiupmeta.Parse(importMeta)
	if err != nil {
		t.Fatal(err)
	}
	key := hostKeyLine(t)
	var logins []remote.Target
	s := &Service{
		scanHostKey: func(_ context.Context, host string, _ int) (string, error) {
			if err := hosts[host].scanErr; err != nil {
				return "", err
			}
			return key, nil
		},
		login: func(_ context.Context, tg remote.Target, cmd string, _ remote.RunOptions, _ time.Duration) (remote.Result, error) {
			logins = append(logins, tg)
			h := hosts[tg.Host]
			if h.loginErr != nil {
				return remote.Result{}, h.loginErr
			}
			var b strings.Builder
			for svc, has := range h.instances {
				if !strings.Contains(cmd, svc) {
					return remote.Result{}, fmt.Errorf("the probe of %s does not name %s: %s", tg.Host, svc, cmd)
				}
				fmt.Fprintf(&b, "instance %s unit=%s pid=%s\n", svc, yesNo(has == "unit" || has == "both"), yesNo(has == "pid" || has == "both"))
			}
			fmt.Fprintf(&b, "systemd %s\n", yesNo(h.systemd))
			return remote.Result{Stdout: b.String(), ExitCode: h.exit, Stderr: "boom"}, nil
		},
	}
	p := &importPrep{req: ImportClusterRequest{Name: "legacy", ServiceManager: manager}, meta: m, key: []byte("KEY"),
		hosts: []importHost{{host: "10.0.9.1", address: "10.0.9.1", port: 22}, {host: "10.0.9.2", address: "10.0.9.2", port: 22}}}
	err = s.probeImportHosts(context.Background(), p)
	if err == nil {
		for _, tg := range logins {
			if tg.User != "tidb" || string(tg.PrivateKey) != "KEY" || tg.HostKey != key {
				t.Errorf("login %s as %s with host key %q", tg.Host, tg.User, tg.HostKey)
			}
		}
		if len(logins) != 2 {
			t.Errorf("%d logins, want one per host", len(logins))
		}
	}
	return p, err
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func TestProbeImportHosts(t *testing.T) {
	both := func(h1, h2 host10) map[string]host10 { return map[string]host10{"10.0.9.1": h1, "10.0.9.2": h2} }
	pid1 := host10{instances: map[string]string{"dm-master-8261": "pid"}}
	pid2 := host10{instances: map[string]string{"dm-master-8261": "pid", "dm-worker-8262": "pid"}}
	unit1 := host10{instances: map[string]string{"dm-master-8261": "unit"}, systemd: true}
	unit2 := host10{instances: map[string]string{"dm-master-8261": "unit", "dm-worker-8262": "both"}, systemd: true}
	refused := fmt.Errorf("ssh tidb@10.0.9.2:22: run: authentication failed: %w", remote.ErrLoginRefused)
	tests := []struct {
		name    string
		hosts   map[string]host10
		manager string
		want    string // the service manager found, or the error
		code    string
	}{
		{"pid files", both(pid1, pid2), "", domain.ServiceManagerNone, ""},
		{"tiup's units under systemd", both(unit1, unit2), "", domain.ServiceManagerSystemd, ""},
		{"named by the request", both(pid1, host10{instances: map[string]string{"dm-master-8261": "", "dm-worker-8262": ""}}), domain.ServiceManagerNone, domain.ServiceManagerNone, ""},
		{"units where systemd does not run", both(host10{instances: map[string]string{"dm-master-8261": "unit"}}, pid2), "",
			"cannot tell how dm-master 10.0.9.1:8261 runs: host 10.0.9.1 has no systemd unit /etc/systemd/system/dm-master-8261.service (with systemd running)", domain.Invalid},
		{"neither", both(pid1, host10{instances: map[string]string{"dm-master-8261": "pid", "dm-worker-8262": ""}}), "",
			"cannot tell how dm-worker 10.0.9.2:8262 runs", domain.Invalid},
		{"mixed", both(unit1, pid2), "", "the instances run under different service managers (systemd and none)", domain.Invalid},
		{"a host that does not answer", both(pid1, host10{scanErr: &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}}), "",
			"host 10.0.9.2 does not answer on its SSH port 10.0.9.2:22 (connection refused)", domain.Unreachable},
		{"a key the host refuses", both(pid1, host10{loginErr: refused}), "", "ssh_key does not log in to host 10.0.9.2 as user tidb", domain.Invalid},
		{"a changed host key", both(pid1, host10{loginErr: &remote.HostKeyMismatchError{Host: "10.0.9.2:22"}}), "",
			"host 10.0.9.2 does not offer the SSH host key pinned", domain.Conflict},
		{"a login that times out", both(pid1, host10{loginErr: errors.New("ssh handshake: i/o timeout")}), "",
			"host 10.0.9.2 does not answer the login as user tidb on 10.0.9.2:22", domain.Unreachable},
		{"a probe that fails", both(pid1, host10{instances: map[string]string{"dm-master-8261": "pid", "dm-worker-8262": "pid"}, exit: 1}), "",
			"host 10.0.9.2: the check as user tidb failed (exit 1): boom", domain.Unreachable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := probeWith(t, tt.hosts, tt.manager)
			if tt.code == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if p.serviceManager != tt.want {
					t.Errorf("service manager %q, want %q", p.serviceManager, tt.want)
				}
				for _, h := range p.hosts {
					if !strings.HasPrefix(h.hostKey.Fingerprint, "SHA256:") {
						t.Errorf("host %s: no host key pinned: %+v", h.host, h.hostKey)
					}
				}
				return
			}
			if err == nil || domain.ErrorCode(err) != tt.code || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v (%s), want %s %q", err, domain.ErrorCode(err), tt.code, tt.want)
			}
		})
	}
}

// TestImportKeyMessages: a bad key is refused as ssh_key, never quoted.
func TestImportKeyMessages(t *testing.T) {
	s := &Service{}
	for key, want := range map[string]string{
		"":          "ssh_key is required",
		"not a key": "ssh_key does not parse: no PEM block found",
		"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n": "ssh_key does not parse",
	} {
		_, err := s.importKey(context.Background(), ImportClusterRequest{Name: "x", SSHKey: key})
		if err == nil || domain.ErrorCode(err) != domain.Invalid || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "private_key") {
			t.Errorf("key %q: %v, want %q", key, err, want)
		}
	}
}
