package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/internal/secrets"
	"github.com/dmgr/dmgr/internal/service"
	"github.com/dmgr/dmgr/internal/testbed/dmpkg"
	"github.com/dmgr/dmgr/internal/testbed/hosts"
	"github.com/dmgr/dmgr/internal/testbed/tiupdm"
	"github.com/dmgr/dmgr/internal/testenv"
)

// importBody is the body of POST /api/v1/clusters/import for a tiup-dm
// cluster, as `dmgr cluster import DIR` sends it.
func importBody(name string, c *tiupdm.Cluster) map[string]any {
	return map[string]any{"name": name, "meta": c.Meta, "ssh_key": string(c.Key)}
}

// vaultKeys counts the credentials in the vault.
func (cp *controlPlane) vaultKeys(t testing.TB) int {
	t.Helper()
	ctx := testenv.Context(t, 10*time.Second)
	kv, err := cp.js.KeyValue(ctx, secrets.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range lister.Keys() {
		n++
	}
	return n
}

// nothingRecorded checks that a refused import left nothing: no event of
// the cluster, no machine of the hosts it would register, no credential.
func (cp *controlPlane) nothingRecorded(t testing.TB, name string, hosts []string, vaultBefore int) {
	t.Helper()
	st, err := cp.store.Load(testenv.Context(t, 10*time.Second), domain.AggregateCluster, name)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Events) != 0 {
		t.Errorf("the refused import recorded %d events of cluster %s", len(st.Events), name)
	}
	if code, _ := cp.do(t, "GET", "/api/v1/clusters/"+name, nil); code != http.StatusNotFound {
		t.Errorf("GET cluster %s after a refused import: %d, want 404", name, code)
	}
	for _, h := range hosts {
		if code, _ := cp.do(t, "GET", "/api/v1/machines/"+h, nil); code != http.StatusNotFound {
			t.Errorf("machine %s after a refused import: %d, want 404 (not registered)", h, code)
		}
	}
	if n := cp.vaultKeys(t); n != vaultBefore {
		t.Errorf("the vault holds %d credentials after a refused import, %d before", n, vaultBefore)
	}
}

// existing reports which of paths exist on test host i.
func existing(t testing.TB, bed *hosts.Bed, i int, paths ...string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, p := range paths {
		out[p] = onHost(t, bed, i, "if [ -e "+domain.ShellQuote(p)+" ]; then echo yes; else echo no; fi") == "yes"
	}
	return out
}

// assertKeyNowhere: no line of the tiup key's PEM body is in any event,
// step result or log.
func (cp *controlPlane) assertKeyNowhere(t *testing.T, key []byte) {
	t.Helper()
	all, err := cp.store.LoadFilter(testenv.Context(t, 30*time.Second), eventstore.AllSubjects)
	if err != nil {
		t.Fatal(err)
	}
	haystacks := []string{cp.logs.String()}
	for _, e := range all.Events {
		haystacks = append(haystacks, string(e.Payload))
	}
	cp.mu.Lock()
	for _, a := range cp.agents {
		haystacks = append(haystacks, a.stderr.String())
	}
	cp.mu.Unlock()
	checked := 0
	for _, line := range strings.Split(string(key), "\n") {
		if len(line) < 40 || strings.HasPrefix(line, "-----") {
			continue
		}
		checked++
		for _, h := range haystacks {
			if strings.Contains(h, line) {
				t.Fatalf("a line of the imported cluster's ssh key is in events or logs")
			}
		}
	}
	if checked == 0 || len(haystacks) < 10 {
		t.Fatalf("checked %d key lines in %d places", checked, len(haystacks))
	}
}

// Take over a cluster that tiup-dm deployed on three test hosts: every
// refusal first (each leaves nothing behind), then the import, which
// neither restarts a process nor writes a file; then dmgr scales it out
// and upgrades it. A second tiup cluster with a dead worker fails its
// import, naming the instance, and is taken over once the worker runs.
func TestImportTiupCluster(t *testing.T) {
	bed := hosts.Start(t, 3)
	cp := startControlPlane(t)
	cp.startAgent(t, "agent-1")
	cp.startAgent(t, "agent-2")
	cp.mustAccept(t, "POST", "/api/v1/packages?filename=dm-v8.1.0.tar.gz", dmpkg.Package(t, "v8.1.0"))
	h := func(i int) string { return bed.Hosts[i-1].Addr }

	home := t.TempDir()
	legacy := tiupdm.Deploy(t, bed, home, tiupdm.Spec{Name: "legacy", Version: "v8.1.0", Masters: []int{1, 2, 3}, Workers: []int{1, 2}})

	// Host 3 is a machine of dmgr already (as root), with a cluster of
	// dmgr's on other ports: the import uses the machine as it is.
	h3 := bed.Hosts[2]
	cp.mustAccept(t, "POST", "/api/v1/machines", map[string]any{"host": h3.Addr, "ssh_port": h3.SSHPort, "user": "root", "private_key": string(h3.RootKey)})
	other := fmt.Sprintf("global:\n  user: tidb\n  deploy_dir: /srv/other\n  service_manager: none\nmaster_servers:\n  - host: %s\n    port: 18261\n    peer_port: 18291\n", h3.Addr)
	cp.runOperation(t, "POST", "/api/v1/clusters", map[string]any{"name": "other", "version": "v8.1.0", "topology": other})

	markers := legacy.StartMarkers(t)
	files := legacy.Files(t)
	vault := cp.vaultKeys(t)
	newHosts := []string{h(1), h(2)}

	// Refusals: each answers its status and says what is wrong, and
	// leaves no cluster, machine, credential or reservation behind.
	wrong := tiupdm.Deploy(t, bed, t.TempDir(), tiupdm.Spec{Name: "spare", Version: "v8.1.0", Masters: []int{3}, MasterPort: 38261, PeerPort: 38291,
		DeployDir: "/home/tidb/spare/deploy", DataDir: "/home/tidb/spare/data"})
	withMeta := func(from, to string) map[string]any {
		b := importBody("legacy", legacy)
		if !strings.Contains(legacy.Meta, from) {
			t.Fatalf("meta.yaml has no %q", from)
		}
		b["meta"] = strings.Replace(legacy.Meta, from, to, 1)
		return b
	}
	clash := withMeta("name: dm-"+h(3)+"-8261\n          port: 8261\n          peer_port: 8291",
		"name: dm-"+h(3)+"-8261\n          port: 18261\n          peer_port: 18291")
	refusals := []struct {
		name   string
		body   map[string]any
		cut    int // host to cut off during the request
		status int
		want   []string
	}{
		{"bad meta", withMeta("dm_version: v8.1.0", "dm_version: nightly"), 0, http.StatusBadRequest,
			[]string{`meta.yaml line 2: dm_version: version "nightly" is invalid`}},
		{"bad meta field", withMeta("peer_port: 8291", "peer_port: eighty"), 0, http.StatusBadRequest,
			[]string{"meta.yaml line ", "master_servers[0].peer_port: want a number"}},
		{"no package", withMeta("dm_version: v8.1.0", "dm_version: v8.2.0"), 0, http.StatusConflict,
			[]string{"version v8.2.0 has no uploaded package for linux/", "upload dm-v8.2.0.tar.gz for linux/"}},
		{"port of another cluster", clash, 0, http.StatusConflict,
			[]string{"port 18261 on " + h(3) + " is already used by cluster other (dm-master " + h(3) + ":18261)"}},
		{"name of another cluster", func() map[string]any { b := importBody("other", legacy); return b }(), 0, http.StatusConflict,
			[]string{"cluster other already exists"}},
		{"wrong key", func() map[string]any { b := importBody("legacy", legacy); b["ssh_key"] = string(wrong.Key); return b }(), 0, http.StatusBadRequest,
			[]string{"ssh_key does not log in to host " + h(1) + " as user tidb"}},
		{"key that is no key", func() map[string]any { b := importBody("legacy", legacy); b["ssh_key"] = "ssh-rsa AAAA"; return b }(), 0, http.StatusBadRequest,
			[]string{"ssh_key does not parse"}},
		{"host that does not answer", importBody("legacy", legacy), 2, http.StatusBadGateway,
			[]string{"host " + h(2) + " does not answer on its SSH port " + h(2) + ":22"}},
		{"service manager", func() map[string]any { b := importBody("legacy", legacy); b["service_manager"] = "upstart"; return b }(), 0, http.StatusBadRequest,
			[]string{`service_manager "upstart" is not supported`}},
	}
	for _, r := range refusals {
		t.Run("refused/"+strings.ReplaceAll(r.name, " ", "_"), func(t *testing.T) {
			if r.cut != 0 {
				bed.Cut(t, r.cut)
				defer bed.Restore(t, r.cut)
			}
			status, body := cp.do(t, "POST", "/api/v1/clusters/import", r.body)
			var p struct {
				Detail string `json:"detail"`
				Code   string `json:"code"`
			}
			_ = json.Unmarshal(body, &p)
			if status != r.status {
				t.Errorf("status %d, want %d: %s", status, r.status, body)
			}
			for _, w := range r.want {
				if !strings.Contains(p.Detail, w) {
					t.Errorf("detail %q does not say %q", p.Detail, w)
				}
			}
			if r.status == http.StatusBadGateway && p.Code != domain.Unreachable {
				t.Errorf("code %q, want %s", p.Code, domain.Unreachable)
			}
			cp.nothingRecorded(t, "legacy", newHosts, vault)
		})
	}

	// The dry run checks the hosts and answers the plan: read-only steps,
	// hosts 1 and 2 to register, host 3 used as it is.
	var dry struct {
		DryRun bool               `json:"dry_run"`
		Plan   service.ImportPlan `json:"plan"`
	}
	if st := cp.api(t, "POST", "/api/v1/clusters/import?dry_run=true", importBody("legacy", legacy), &dry); st != http.StatusOK || !dry.DryRun {
		t.Fatalf("dry run: %d", st)
	}
	if len(dry.Plan.Steps) != 6 || len(dry.Plan.Machines) != 3 || dry.Plan.Cluster.Global.ServiceManager != domain.ServiceManagerNone {
		t.Errorf("dry run plan: %d steps, machines %+v, service manager %q", len(dry.Plan.Steps), dry.Plan.Machines, dry.Plan.Cluster.Global.ServiceManager)
	}
	for _, m := range dry.Plan.Machines {
		if m.Registered != (m.Host == h(3)) || !strings.HasPrefix(m.HostKeyFingerprint, "SHA256:") {
			t.Errorf("dry run machine %+v", m)
		}
	}
	cp.nothingRecorded(t, "legacy", newHosts, vault)

	// The import.
	acc := cp.mustAccept(t, "POST", "/api/v1/clusters/import", importBody("legacy", legacy))
	op := cp.waitOperation(t, acc.OperationID, 3*time.Minute)
	if op.Status != domain.OperationStatusSucceeded || op.Kind != domain.OperationImport {
		t.Fatalf("import: %s %s %s%s", op.Kind, op.Status, op.Error, describeSteps(op))
	}
	for _, s := range op.Steps {
		if s.Kind != domain.StepVerifyInstance && s.Kind != domain.StepCheckCluster {
			t.Errorf("the import ran a %s step (%s)", s.Kind, s.ID)
		}
	}
	for _, host := range newHosts {
		var m domain.Machine
		if st := cp.api(t, "GET", "/api/v1/machines/"+host, nil, &m); st != http.StatusOK || m.User != "tidb" || m.Credential.Kind != domain.CredentialPrivateKey {
			t.Errorf("machine %s registered by the import: %d %+v", host, st, m)
		}
	}
	lc := cp.live(t, "legacy")
	if lc.Status != domain.ClusterStatusRunning || len(lc.Instances) != 5 {
		t.Fatalf("live display: %s with %d instances", lc.Status, len(lc.Instances))
	}
	leaders := 0
	for _, in := range lc.Instances {
		switch {
		case in.Status == service.LiveUpLeader:
			leaders++
		case in.Status != service.LiveUp:
			t.Errorf("%s %s is %s (%s), want up", in.Role, in.ID, in.Status, in.Error)
		}
		if in.Version != "v8.1.0" {
			t.Errorf("%s %s reports version %q", in.Role, in.ID, in.Version)
		}
	}
	if leaders != 1 {
		t.Errorf("%d leaders in the live display", leaders)
	}
	var c domain.Cluster
	cp.api(t, "GET", "/api/v1/clusters/legacy", nil, &c)
	for _, in := range c.Instances {
		if !in.Imported || in.Status != domain.InstanceStatusUp {
			t.Errorf("cluster view: %s %s imported %v status %q", in.Role, in.ID, in.Imported, in.Status)
		}
	}

	// Nothing was restarted, nothing written.
	if now := legacy.StartMarkers(t); !maps.Equal(now, markers) {
		t.Errorf("start markers before the import %v, after %v: a process was restarted", markers, now)
	}
	if d := tiupdm.DiffFiles(files, legacy.Files(t)); len(d) != 0 {
		t.Errorf("the import wrote in the cluster's directories:\n  %s", strings.Join(d, "\n  "))
	}
	cp.assertKeyNowhere(t, legacy.Key)

	// A second import of the same cluster is refused: it is dmgr's now.
	if st, detail := cp.problemOf(t, "POST", "/api/v1/clusters/import", importBody("again", legacy)); st != http.StatusConflict ||
		!strings.Contains(detail, "already used by cluster legacy") {
		t.Errorf("importing the same cluster again under another name: %d %s", st, detail)
	}

	// dmgr scales it out with a worker of its own and upgrades it.
	cp.runOperation(t, "POST", "/api/v1/clusters/legacy/scale-out", map[string]any{"topology": "worker_servers:\n  - host: " + h(3) + "\n"})
	lc = cp.live(t, "legacy")
	if s := liveSummary(lc); s["dm-worker Up"] != 3 || s["dm-master Up"]+s["dm-master Up|Leader"] != 3 {
		t.Errorf("after the scale-out: %v", s)
	}
	cp.mustAccept(t, "POST", "/api/v1/packages?filename=dm-v8.1.1.tar.gz", dmpkg.Package(t, "v8.1.1"))
	cp.runOperation(t, "POST", "/api/v1/clusters/legacy/upgrade", map[string]any{"version": "v8.1.1"})
	lc = cp.live(t, "legacy")
	if lc.Version != "v8.1.1" {
		t.Errorf("cluster version after the upgrade: %s", lc.Version)
	}
	for id, v := range versions(lc) {
		if v != "v8.1.1" {
			t.Errorf("%s reports %q after the upgrade, want v8.1.1", id, v)
		}
	}
	for _, in := range lc.Instances {
		if in.Status != service.LiveUp && in.Status != service.LiveUpLeader {
			t.Errorf("after the upgrade %s is %s (%s)", in.ID, in.Status, in.Error)
		}
	}
	// The upgraded imported master runs tiup's binary path, switched in place.
	m1 := legacy.Instances[0]
	out, err := bed.Exec(t, 1, "readlink /proc/$(cat "+m1.PIDFile()+")/exe; ls "+m1.DeployDir+"/bin/dm-master")
	if err != nil || !strings.Contains(out, m1.DeployDir+"/bin/dm-master/dm-master\n") || !strings.Contains(out, "dm-master.v8.1.0") {
		t.Errorf("the upgraded imported master: %v\n%s", err, out)
	}

	// Scale-in of an imported worker removes its directories, which carry
	// no marker of dmgr's.
	w2 := legacy.Instances[4]
	cp.runOperation(t, "POST", "/api/v1/clusters/legacy/scale-in", map[string]any{"nodes": []string{w2.ID()}})
	if there := existing(t, bed, w2.Host, w2.DeployDir, w2.DataDir); there[w2.DeployDir] || there[w2.DataDir] {
		t.Errorf("after the scale-in of imported %s: %v", w2.ID(), there)
	}

	// A tiup cluster whose worker died: the import fails on it, naming the
	// host, the instance and why, and takes nothing over; with the worker
	// running again, the same import succeeds.
	broken := tiupdm.Deploy(t, bed, home, tiupdm.Spec{Name: "broken", Version: "v8.1.0", Masters: []int{1}, Workers: []int{2},
		MasterPort: 28261, PeerPort: 28291, WorkerPort: 28262, DeployDir: "/home/tidb/dm2/deploy", DataDir: "/home/tidb/dm2/data"})
	dead := broken.Instances[1]
	if out, err := bed.Exec(t, dead.Host, "kill -KILL $(cat "+dead.PIDFile()+")"); err != nil {
		t.Fatal(out, err)
	}
	acc = cp.mustAccept(t, "POST", "/api/v1/clusters/import", importBody("broken", broken))
	op = cp.waitOperation(t, acc.OperationID, 3*time.Minute)
	if op.Status != domain.OperationStatusFailed || !strings.Contains(op.Error, "verify/"+dead.ID()) || !strings.Contains(op.Error, dead.Addr) ||
		!strings.Contains(op.Error, "dm-worker "+dead.ID()+": it does not run") {
		t.Fatalf("import of a cluster with a dead worker: %s %q%s", op.Status, op.Error, describeSteps(op))
	}
	if st, _ := cp.do(t, "GET", "/api/v1/clusters/broken", nil); st != http.StatusNotFound {
		t.Errorf("the failed import's cluster: %d, want 404", st)
	}
	if st, detail := cp.problemOf(t, "POST", "/api/v1/operations/"+acc.OperationID+"/retry", nil); st != http.StatusConflict || !strings.Contains(detail, "import it again") {
		t.Errorf("retry of a failed import: %d %s", st, detail)
	}
	broken.Start(t, dead)
	broken.WaitMembers(t)
	acc = cp.mustAccept(t, "POST", "/api/v1/clusters/import", importBody("broken", broken))
	if op = cp.waitOperation(t, acc.OperationID, 3*time.Minute); op.Status != domain.OperationStatusSucceeded {
		t.Fatalf("import once the worker runs: %s %s%s", op.Status, op.Error, describeSteps(op))
	}

	// Destroying an imported cluster removes its directories — but not one
	// that carries another cluster's marker — and nothing of the others.
	m := broken.Instances[0]
	onHost(t, bed, m.Host, "printf 'cluster=other\\ninstance=x\\n' >"+m.DataDir+"/"+domain.MarkerFile)
	cp.runOperation(t, "DELETE", "/api/v1/clusters/broken", nil)
	there := existing(t, bed, m.Host, m.DeployDir, m.DataDir, legacy.Instances[0].DeployDir)
	if there[m.DeployDir] || !there[m.DataDir] || !there[legacy.Instances[0].DeployDir] {
		t.Errorf("after destroying the imported cluster broken, on host %d: %v; want only its deploy directory gone", m.Host, there)
	}
	if there := existing(t, bed, dead.Host, dead.DeployDir, dead.DataDir); there[dead.DeployDir] || there[dead.DataDir] {
		t.Errorf("the imported worker's directories are still there: %v", there)
	}

	// A group's policy that names import holds it; the request keeps the
	// key in the vault, never in its events; withdrawn, the key is gone.
	if st := cp.api(t, "PUT", "/api/v1/groups/default/policy", map[string]any{"commands": []string{"import"}}, nil); st != http.StatusOK {
		t.Fatalf("policy: %d", st)
	}
	vault = cp.vaultKeys(t)
	st, body := cp.do(t, "POST", "/api/v1/clusters/import", importBody("spare", wrong))
	var held service.Accepted
	if err := json.Unmarshal(body, &held); st != http.StatusAccepted || err != nil || held.ApprovalState != domain.ApprovalStatePending || held.OperationID != "" {
		t.Fatalf("an import under a policy naming it: %d %s", st, body)
	}
	if n := cp.vaultKeys(t); n != vault+1 {
		t.Errorf("the held import keeps %d credentials, want 1", n-vault)
	}
	cp.assertKeyNowhere(t, wrong.Key)
	if st := cp.api(t, "POST", "/api/v1/approvals/"+held.ApprovalID+"/withdraw", map[string]any{}, nil); st != http.StatusOK {
		t.Fatalf("withdraw: %d", st)
	}
	if n := cp.vaultKeys(t); n != vault {
		t.Errorf("after the withdrawal the vault keeps %d more credentials", n-vault)
	}
	cp.nothingRecorded(t, "spare", nil, vault)

	// Held again and approved by another operator: the import runs as its
	// requester with the key from the vault, which is then deleted (host 3
	// has its own credential as a machine already).
	tokens := map[string]string{}
	for _, u := range []string{"oper1", "oper2"} {
		if st := cp.api(t, "POST", "/api/v1/users", map[string]any{"name": u, "password": u + "-password-1"}, nil); st != http.StatusCreated {
			t.Fatalf("create %s: %d", u, st)
		}
		if st := cp.api(t, "PUT", "/api/v1/groups/default/members/"+u, map[string]any{"role": "operator"}, nil); st != http.StatusOK {
			t.Fatalf("member %s: %d", u, st)
		}
		st, body := cp.doAs(t, "", "POST", "/api/v1/login", map[string]any{"user": u, "password": u + "-password-1"})
		var login struct{ Token string }
		if err := json.Unmarshal(body, &login); st != http.StatusOK || err != nil {
			t.Fatalf("login %s: %d %s", u, st, body)
		}
		tokens[u] = login.Token
	}
	held = service.Accepted{}
	st, body = cp.doAs(t, tokens["oper1"], "POST", "/api/v1/clusters/import", importBody("spare", wrong))
	if err := json.Unmarshal(body, &held); st != http.StatusAccepted || err != nil || held.ApprovalID == "" {
		t.Fatalf("second held import: %d %s", st, body)
	}
	st, body = cp.doAs(t, tokens["oper2"], "POST", "/api/v1/approvals/"+held.ApprovalID+"/approve", map[string]any{"comment": "ok"})
	var approved domain.Approval
	if err := json.Unmarshal(body, &approved); st != http.StatusOK || err != nil || approved.OperationID == "" {
		t.Fatalf("approve: %d %s", st, body)
	}
	if op := cp.waitOperation(t, approved.OperationID, 3*time.Minute); op.Status != domain.OperationStatusSucceeded || op.Kind != domain.OperationImport {
		t.Fatalf("the approved import: %s %s %s%s", op.Kind, op.Status, op.Error, describeSteps(op))
	}
	if n := cp.vaultKeys(t); n != vault {
		t.Errorf("after the approved import the vault keeps %d more credentials", n-vault)
	}
	if s := liveSummary(cp.live(t, "spare")); s["dm-master Up|Leader"] != 1 {
		t.Errorf("the approved import's cluster: %v", s)
	}
	cp.assertKeyNowhere(t, wrong.Key)
}
