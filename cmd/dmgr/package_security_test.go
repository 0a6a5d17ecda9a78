package main

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/agents/remote"
	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/pkgstore"
	"github.com/dmgr/dmgr/internal/testbed/dmpkg"
	"github.com/dmgr/dmgr/internal/testbed/hosts"
	"github.com/dmgr/dmgr/internal/testenv"
)

// TestPackageSecurityOnTestHosts (issue [6], done-when 3): the real
// package with a set-uid file or a device in its grafana.tar.gz is refused
// by `dmgr server` with 400 and leaves nothing in the package store; the
// good package deploys on the test hosts (grafana on the host whose login
// is a password user with sudo), grafana.tar.gz is unpacked as the deploy
// user, and afterwards no file under the deploy and data directories is
// set-uid or set-gid, or a device or FIFO, as `find` over SSH shows.
func TestPackageSecurityOnTestHosts(t *testing.T) {
	bed := hosts.Start(t, 3)
	cp := startControlPlane(t)
	cp.startAgent(t, "agent-1")
	cp.registerBed(t, bed)

	for _, tc := range []struct {
		name   string
		opts   dmpkg.Options
		detail string
	}{
		{"set-uid grafana-server", dmpkg.Options{GrafanaExtra: []dmpkg.Extra{{Header: tar.Header{Name: "bin/grafana-suid", Mode: 0o4755}, Body: []byte("x")}}},
			`package dm-v8.1.0-linux-amd64: grafana.tar.gz: entry "bin/grafana-suid": has the set-uid bit (mode 4755)`},
		{"device in grafana", dmpkg.Options{GrafanaExtra: []dmpkg.Extra{{Header: tar.Header{Name: "dev/mem", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 1}}}},
			`package dm-v8.1.0-linux-amd64: grafana.tar.gz: entry "dev/mem": is a character device`},
		{"path out of grafana", dmpkg.Options{GrafanaExtra: []dmpkg.Extra{{Header: tar.Header{Name: "../../etc/cron.d/x", Mode: 0o644}, Body: []byte("x")}}},
			`package dm-v8.1.0-linux-amd64: grafana.tar.gz: entry "../../etc/cron.d/x": path climbs out of the archive`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := packageStoreMessages(t, cp)
			var problem struct{ Detail string }
			st := cp.apiProblem(t, "/api/v1/packages?filename=dm-v8.1.0.tar.gz", dmpkg.PackageWith(t, "v8.1.0", tc.opts), &problem)
			if st != http.StatusBadRequest || !strings.Contains(problem.Detail, tc.detail) {
				t.Fatalf("status %d %q, want 400 saying %q", st, problem.Detail, tc.detail)
			}
			if after := packageStoreMessages(t, cp); after != before {
				t.Fatalf("the refused package left %d messages in the package store, had %d", after, before)
			}
		})
	}

	cp.mustAccept(t, "POST", "/api/v1/packages?filename=dm-v8.1.0.tar.gz", dmpkg.Package(t, "v8.1.0"))
	h := func(i int) string { return bed.Hosts[i-1].Addr }
	topo := fmt.Sprintf(`global:
  user: tidb
  deploy_dir: /srv/dm/deploy
  data_dir: /srv/dm/data
  service_manager: none
master_servers:
  - host: %[1]s
worker_servers:
  - host: %[2]s
monitoring_servers:
  - host: %[2]s
grafana_servers:
  - host: %[3]s
alertmanager_servers:
  - host: %[3]s
`, h(1), h(2), h(3))
	acc := cp.mustAccept(t, "POST", "/api/v1/clusters", map[string]any{"name": "sec", "version": "v8.1.0", "topology": topo})
	if op := cp.waitOperation(t, acc.OperationID, 4*time.Minute); op.Status != domain.OperationStatusSucceeded {
		t.Fatalf("deploy %s: %s%s", op.Status, op.Error, describeSteps(op))
	}

	pool := remote.NewPool(remote.Options{Log: zerolog.Nop()})
	t.Cleanup(func() { pool.Close() })
	ssh := func(i int, script string) string {
		t.Helper()
		host := bed.Hosts[i-1]
		target := remote.Target{Host: host.Addr, Port: host.SSHPort, User: "root", PrivateKey: host.RootKey, HostKey: host.HostKey}
		cmd, err := domain.ShellCommand("sh", "-c", script)
		if err != nil {
			t.Fatal(err)
		}
		res, err := pool.Run(testenv.Context(t, time.Minute), target, cmd, remote.RunOptions{})
		if err != nil || res.ExitCode != 0 {
			t.Fatalf("host %d: %s: %v exit %d\n%s", i, script, err, res.ExitCode, res.Stderr)
		}
		return res.Stdout
	}
	for i := 1; i <= 3; i++ {
		if out := ssh(i, "find /srv/dm/deploy /srv/dm/data -perm /6000"); out != "" {
			t.Errorf("host %d: set-uid or set-gid files after the deploy:\n%s", i, out)
		}
		if out := ssh(i, `find /srv/dm/deploy /srv/dm/data \( -type b -o -type c -o -type p \)`); out != "" {
			t.Errorf("host %d: devices or FIFOs after the deploy:\n%s", i, out)
		}
	}
	// grafana.tar.gz was unpacked, as the deploy user: what it holds is
	// tidb's, none of it root's (the archive says root/root).
	const g = "/srv/dm/deploy/grafana-3000"
	if out := ssh(3, "cd "+g+" && ls bin/grafana-server bin/grafana-cli conf/defaults.ini dashboards/dm.json"); strings.Count(out, "\n") != 4 {
		t.Fatalf("grafana.tar.gz not unpacked on host 3:\n%s", out)
	}
	if out := ssh(3, "cd "+g+" && find bin conf/defaults.ini dashboards plugins provisioning/dashboards provisioning/datasources ! -user tidb"); out != "" {
		t.Errorf("files of grafana.tar.gz not owned by the deploy user tidb:\n%s", out)
	}
}

// packageStoreMessages counts the messages of the package store's stream:
// objects, their chunks and any left behind by a failed upload.
func packageStoreMessages(t *testing.T, cp *controlPlane) uint64 {
	t.Helper()
	ctx := testenv.Context(t, 10*time.Second)
	st, err := cp.js.Stream(ctx, "OBJ_"+pkgstore.Bucket)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// apiProblem posts a package and decodes the problem answer.
func (cp *controlPlane) apiProblem(t *testing.T, path string, body []byte, problem any) int {
	t.Helper()
	req, err := http.NewRequest("POST", cp.baseURL()+path, strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+cp.token)
	req.Header.Set("Content-Type", "application/gzip")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(problem); err != nil {
		t.Fatalf("POST %s: %d: %v", path, resp.StatusCode, err)
	}
	return resp.StatusCode
}
