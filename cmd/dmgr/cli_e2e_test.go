package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/cli"
	"github.com/dmgr/dmgr/internal/service"
	"github.com/dmgr/dmgr/internal/testbed/hosts"
)

// cliTopology is a small cluster on the first two test hosts: two
// dm-masters, a dm-worker, prometheus and grafana, in directories under
// root and on the default ports plus off (clusters share the hosts).
func cliTopology(bed *hosts.Bed, root string, off int) string {
	return fmt.Sprintf(`global:
  user: tidb
  deploy_dir: %[3]s/deploy
  data_dir: %[3]s/data
  service_manager: none
server_configs:
  master:
    log-level: info
master_servers:
  - host: %[1]s
    port: %[4]d
    peer_port: %[5]d
  - host: %[2]s
    port: %[4]d
    peer_port: %[5]d
worker_servers:
  - host: %[1]s
    port: %[6]d
monitoring_servers:
  - host: %[2]s
    port: %[7]d
grafana_servers:
  - host: %[2]s
    port: %[8]d
`, bed.Hosts[0].Addr, bed.Hosts[1].Addr, root, 8261+off, 8291+off, 8262+off, 9090+off, 3000+off)
}

var operationIDRe = regexp.MustCompile(`operation ([0-9a-f-]{36})`)

// The command line as a user drives it, against a real dmgr on the test
// hosts: login, machines, packages, deploy, display, scale-out, an
// upgrade that fails and its retry, destroy, logout; and the refusals.
func TestCLIEndToEnd(t *testing.T) {
	bed := hosts.Start(t, 3)
	cp := startControlPlane(t)
	cp.startAgent(t, "agent-1")
	cp.startAgent(t, "agent-2")
	bin := buildCLI(t)
	cp.cliOperator(t, "alice", "alice-password-1")
	server := cp.baseURL()
	u := newCLIUser(t, bin, server)
	h1, h2, h3 := bed.Hosts[0], bed.Hosts[1], bed.Hosts[2]

	// Not logged in: exit 2 and how to log in; nothing reaches a cluster.
	u.fails(t, 2, "", []string{"cluster", "list"}, "no server: run dmgr login --server URL --user NAME")
	u.fails(t, 2, "", []string{"cluster", "list", "--server", server}, "not logged in to "+server, "dmgr login --server "+server)
	// A wrong password: the server's detail, exit 1, nothing stored.
	u.fails(t, 1, "not-her-password\n", []string{"login", "--server", server, "--user", "alice"}, "wrong user name or password")
	config := filepath.Join(u.home, ".config", "dmgr", "config.json")
	if _, err := os.Stat(config); !os.IsNotExist(err) {
		t.Fatalf("a failed login left %s (%v)", config, err)
	}
	// Usage mistakes are exit 2 and say what is wrong.
	u.fails(t, 2, "", []string{"cluster", "deploy", "x"}, "usage: dmgr cluster deploy NAME VERSION TOPOLOGY.yaml")
	u.fails(t, 2, "", []string{"cluster", "list", "--output", "xml"}, `--output "xml": use table, json or yaml`)

	// Log in with the password on stdin: an API token is kept 0600, never
	// the password.
	r := u.ok(t, "alice-password-1\n", "login", "--server", server, "--user", "alice")
	if !strings.Contains(r.stdout, "Logged in to "+server+" as alice") {
		t.Errorf("login said: %s", r)
	}
	st, err := os.Stat(config)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("config %s: %v %v, want mode 0600", config, st, err)
	}
	stored, _ := os.ReadFile(config)
	var cfg cli.Config
	if err := json.Unmarshal(stored, &cfg); err != nil || !strings.HasPrefix(cfg.Token, "dmgr_") || !strings.HasPrefix(cfg.TokenID, "t-") || cfg.Server != server {
		t.Fatalf("stored login %s: %v", stored, err)
	}
	if strings.Contains(string(stored), "alice-password-1") {
		t.Fatal("the stored login holds the password")
	}
	r = u.ok(t, "", "whoami")
	if !strings.Contains(r.stdout, "alice") || !strings.Contains(r.stdout, "default (operator)") || !strings.Contains(r.stdout, cfg.TokenID) {
		t.Errorf("whoami: %s", r)
	}
	// The login's session was ended: only the API token is live.
	var tokens struct {
		Items []struct{ ID, Kind string } `json:"items"`
	}
	st2, body := cp.doAs(t, cfg.Token, "GET", "/api/v1/tokens", nil)
	if err := json.Unmarshal(body, &tokens); st2 != 200 || err != nil || len(tokens.Items) != 1 || tokens.Items[0].ID != cfg.TokenID {
		t.Errorf("alice's live credentials after login: %d %s; want only the API token", st2, body)
	}
	// Logging in again replaces the token and revokes the one replaced.
	u.ok(t, "alice-password-1\n", "login", "--server", server, "--user", "alice")
	if st, _ := cp.doAs(t, cfg.Token, "GET", "/api/v1/me", nil); st != 401 {
		t.Errorf("the replaced token after a new login: %d, want 401", st)
	}
	stored, _ = os.ReadFile(config)
	if err := json.Unmarshal(stored, &cfg); err != nil {
		t.Fatal(err)
	}

	// Machines: by key (root, a sudo user) and by password on stdin. Each
	// prints the fingerprint of the host key it pinned, the host's own.
	u.fails(t, 2, "", []string{"machine", "add", h1.Addr, "--user", "root"}, "give exactly one of -i KEYFILE and --password-stdin")
	u.fails(t, 2, "", []string{"machine", "add", h1.Addr, "--user", "root", "-i", config}, "private key "+config)
	for i, args := range [][]string{
		{"machine", "add", h1.Addr, "--user", "root", "-i", h1.RootKeyFile, "--port", fmt.Sprint(h1.SSHPort), "--label", "zone=z1"},
		{"machine", "add", h2.Addr, "--user", h2.SudoUser, "-i", h2.SudoKeyFile, "--port", fmt.Sprint(h2.SSHPort)},
		{"machine", "add", h3.Addr, "--user", h3.PasswordUser, "--password-stdin", "--port", fmt.Sprint(h3.SSHPort)},
	} {
		h := bed.Hosts[i]
		r := u.ok(t, h.Password+"\n", args...)
		pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(h.HostKey))
		if err != nil {
			t.Fatal(err)
		}
		if fp := ssh.FingerprintSHA256(pk); !strings.Contains(r.stdout, fp) {
			t.Errorf("machine add %s does not show the host key %s: %s", h.Addr, fp, r)
		}
	}
	r = u.ok(t, "", "machine", "show", h3.Addr)
	if !strings.Contains(r.stdout, "password") || strings.Contains(r.stdout, h3.Password) {
		t.Errorf("machine show: %s", r)
	}
	if rows := tableRows(u.ok(t, "", "machine", "list").stdout, "Host "); len(rows) != 3 {
		t.Errorf("machine list: %d rows, want 3", len(rows))
	}

	// Packages: name and version from the file name.
	for _, v := range []string{"v8.1.0", "v8.1.1"} {
		if r := u.uploadTestPackage(t, v); !strings.Contains(r.stdout, "as package dm-"+v+"-linux-amd64") {
			t.Errorf("upload %s: %s", v, r)
		}
	}
	// A list prints one page and the command of the next one; --all every page.
	r = u.ok(t, "", "package", "list", "--limit", "1")
	next := regexp.MustCompile(`(?m)^More: dmgr package list --limit 1 --cursor (\S+) \(or --all for every page\)$`).FindStringSubmatch(r.stdout)
	if rows := tableRows(r.stdout, "ID "); len(rows) != 1 || rows[0][0] != "dm-v8.1.0-linux-amd64" || next == nil {
		t.Fatalf("package list --limit 1: %s", r)
	}
	r = u.ok(t, "", "package", "list", "--limit", "1", "--cursor", next[1])
	if rows := tableRows(r.stdout, "ID "); len(rows) != 1 || rows[0][0] != "dm-v8.1.1-linux-amd64" || strings.Contains(r.stdout, "More:") {
		t.Errorf("package list --cursor %s: %s", next[1], r)
	}
	if rows := tableRows(u.ok(t, "", "package", "list", "--limit", "1", "--all").stdout, "ID "); len(rows) != 2 {
		t.Errorf("package list --limit 1 --all: %d rows, want 2", len(rows))
	}
	u.fails(t, 2, "", []string{"package", "upload", u.writeFile(t, "dm-latest.tar.gz", "x")}, "has no version")

	// A bad topology: the error names the file and the line; nothing runs.
	bad := u.writeFile(t, "bad.yaml", "master_servers:\n  - host: "+h1.Addr+"\n    port: notaport\n")
	u.fails(t, 1, "", []string{"cluster", "deploy", "bad", "v8.1.0", bad, "--yes"}, bad+": topology line 3: master_servers[0].port")
	u.fails(t, 2, "", []string{"cluster", "deploy", "bad", "v8.1.0", filepath.Join(u.home, "none.yaml"), "--yes"}, "none.yaml: no such file")
	// Without --yes and without a terminal to ask on, nothing is deployed.
	topo := u.writeFile(t, "topology.yaml", cliTopology(bed, "/srv/cli", 0))
	u.fails(t, 2, "", []string{"cluster", "deploy", "cli", "v8.1.0", topo}, "pass --yes")
	// The dry run only shows the plan.
	r = u.ok(t, "", "cluster", "deploy", "cli", "v8.1.0", topo, "--dry-run")
	if !strings.Contains(r.stdout, "Cluster name:     cli") || len(tableRows(r.stdout, "Role ")) != 5 || strings.Contains(r.stdout, "Started") {
		t.Errorf("deploy --dry-run: %s", r)
	}

	// Deploy.
	r = u.ok(t, "", "cluster", "deploy", "cli", "v8.1.0", topo, "--yes")
	for _, want := range []string{"Cluster type:     dm", "Started deploy of cli: operation ", "deploy of cli succeeded"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("deploy output lacks %q: %s", want, r)
		}
	}
	if plan := tableRows(r.stdout, "Role "); len(plan) != 5 || !hasRow(plan, "dm-master", h1.Addr, "8261/8291", "linux/x86_64") ||
		!hasRow(plan, "grafana", h2.Addr, "3000") {
		t.Errorf("deploy plan %v", plan)
	}
	checkDisplay(t, u, cp, "cli", 5)

	// Scale out a worker on the third host.
	frag := u.writeFile(t, "scale-out.yaml", "worker_servers:\n  - host: "+h3.Addr+"\n")
	r = u.ok(t, "", "cluster", "scale-out", "cli", frag, "--yes")
	if !strings.Contains(r.stdout, "scale-out of cli succeeded") {
		t.Errorf("scale-out: %s", r)
	}
	rows := checkDisplay(t, u, cp, "cli", 6)
	if !hasRow(rows, h3.Addr+":8262", "dm-worker") {
		t.Errorf("the new worker is not displayed: %v", rows)
	}

	// An upgrade whose new worker does not come up fails: exit 1, with the
	// failed step's error; fixed, the retry finishes it.
	workerConf := "/srv/cli/deploy/dm-worker-8262/conf/dm-worker.toml"
	if out, err := bed.Exec(t, 3, `sed -i '1i sim-start-delay = "1h"' `+workerConf); err != nil {
		t.Fatal(out, err)
	}
	r = u.fails(t, 1, "", []string{"cluster", "upgrade", "cli", "v8.1.1", "--yes", "--wait-timeout", "2s"},
		"upgrade of cli to v8.1.1 failed", "start/"+h3.Addr+":8262", "Error: step start/"+h3.Addr+":8262 on "+h3.Addr+" failed")
	m := operationIDRe.FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("no operation id in %s", r)
	}
	if out, err := bed.Exec(t, 3, `sed -i '/^sim-start-delay/d' `+workerConf+`
p=/srv/cli/deploy/dm-worker-8262/scripts/dm-worker-8262.pid
if [ -f $p ]; then kill $(cat $p) 2>/dev/null; for n in $(seq 50); do kill -0 $(cat $p) 2>/dev/null || break; sleep 0.1; done; rm -f $p; fi`); err != nil {
		t.Fatal(out, err)
	}
	r = u.ok(t, "", "operation", "retry", m[1], "--yes")
	if !strings.Contains(r.stdout, "start/"+h3.Addr+":8262") || !strings.Contains(r.stdout, "retry of upgrade of cli succeeded") {
		t.Errorf("retry: %s", r)
	}
	if r := u.ok(t, "", "operation", "show", m[1]); !strings.Contains(r.stdout, "succeeded") || !strings.Contains(r.stdout, "Attempt:    2") {
		t.Errorf("operation show: %s", r)
	}
	if !strings.Contains(u.ok(t, "", "cluster", "display", "cli").stdout, "Cluster version:  v8.1.1") {
		t.Error("the display does not show v8.1.1 after the upgrade")
	}
	checkDisplay(t, u, cp, "cli", 6)

	// JSON for scripts: the API's own field names.
	var list struct {
		Items []struct{ Name, Version, Status string } `json:"items"`
	}
	if err := json.Unmarshal([]byte(u.ok(t, "", "cluster", "list", "-o", "json").stdout), &list); err != nil || len(list.Items) != 1 || list.Items[0].Version != "v8.1.1" {
		t.Errorf("cluster list -o json: %+v %v", list, err)
	}

	// Destroy, of a cluster now labelled env=prod: the group's policy holds
	// it for approval, which the command says (exit 0); approved by the
	// admin, it runs, and dmgr operation watch follows it to its end.
	if st := cp.api(t, "PUT", "/api/v1/clusters/cli/labels", map[string]any{"labels": map[string]string{"env": "prod"}}, nil); st != 200 {
		t.Fatalf("label the cluster: %d", st)
	}
	r = u.ok(t, "", "cluster", "destroy", "cli", "--yes")
	held := regexp.MustCompile(`destroy of cli waits for approval ([0-9a-f-]{36}): dmgr approval show ([0-9a-f-]{36})`).FindStringSubmatch(r.stdout)
	if held == nil || held[1] != held[2] {
		t.Fatalf("destroy of an env=prod cluster: %s", r)
	}
	var approved domain.Approval
	if st := cp.api(t, "POST", "/api/v1/approvals/"+held[1]+"/approve", map[string]any{"comment": "ok"}, &approved); st != 200 || approved.OperationID == "" {
		t.Fatalf("approve: %d %+v", st, approved)
	}
	r = u.ok(t, "", "operation", "watch", approved.OperationID)
	if !strings.Contains(r.stdout, "destroy of cli succeeded") || !plainStepLine.MatchString(strings.Split(r.stdout, "\n")[0]) {
		t.Errorf("watch of the approved destroy: %s", r)
	}
	if out, err := bed.Exec(t, 1, "ls /srv/cli/deploy /srv/cli/data 2>/dev/null | grep -c dm- || true"); err != nil || strings.TrimSpace(out) != "0" {
		t.Errorf("host 1 still holds instances after destroy: %q %v", out, err)
	}
	u.fails(t, 1, "", []string{"cluster", "display", "cli"}, "cli")

	// Logout revokes the token: it no longer works, and is forgotten.
	u.ok(t, "", "logout")
	if st, _ := cp.doAs(t, cfg.Token, "GET", "/api/v1/me", nil); st != 401 {
		t.Errorf("the token after logout: %d, want 401", st)
	}
	u.fails(t, 2, "", []string{"whoami"}, "no server")
}

// checkDisplay runs dmgr cluster display and checks it against the live
// API: a row per instance with its role and host, every one Up, and Up|L
// on exactly the dm-master the API names the leader.
func checkDisplay(t *testing.T, u *cliUser, cp *controlPlane, cluster string, instances int) [][]string {
	t.Helper()
	r := u.ok(t, "", "cluster", "display", cluster)
	live := cp.live(t, cluster)
	rows := tableRows(r.stdout, "ID ")
	if len(rows) != instances || len(live.Instances) != instances {
		t.Fatalf("display has %d rows, the API %d instances, want %d: %s", len(rows), len(live.Instances), instances, r)
	}
	leader := ""
	for _, in := range live.Instances {
		if in.Status == service.LiveUpLeader {
			leader = in.ID
		}
	}
	leaders := 0
	for i, in := range live.Instances {
		row := rows[i]
		if len(row) < 8 || row[0] != in.ID || row[1] != string(in.Role) || row[2] != in.Host {
			t.Errorf("display row %d %v, want %s %s %s", i, row, in.ID, in.Role, in.Host)
			continue
		}
		switch status := row[5]; {
		case status == "Up|L":
			leaders++
			if in.ID != leader || in.Role != domain.RoleMaster {
				t.Errorf("display shows %s as the leader; the API's leader is %s", in.ID, leader)
			}
		case status != "Up":
			t.Errorf("display: %s is %s, want Up", in.ID, status)
		}
		if in.Role == domain.RoleWorker && (row[8] == "-" || row[8] != in.Stage) {
			t.Errorf("display: worker %s stage %q, the API's %q", in.ID, row[8], in.Stage)
		}
	}
	if leaders != 1 || leader == "" {
		t.Errorf("display shows %d leaders (the API's is %q): %s", leaders, leader, r)
	}
	return rows
}

// hasRow reports whether a row starts with cells.
func hasRow(rows [][]string, cells ...string) bool {
	for _, r := range rows {
		if len(r) >= len(cells) && slices.Equal(r[:len(cells)], cells) {
			return true
		}
	}
	return false
}
