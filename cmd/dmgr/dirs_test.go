package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/testbed/hosts"
)

// The directories dmgr owns, on real test hosts: what a topology may
// name, what a deploy finds on the host, what destroy and scale-in
// remove, and the forced destroy of a cluster whose hosts are gone.

// problemOf calls the API and answers the status and, for an error, the
// problem's detail (the whole body otherwise).
func (cp *controlPlane) problemOf(t testing.TB, method, path string, body any) (int, string) {
	t.Helper()
	status, data := cp.do(t, method, path, body)
	var p struct {
		Detail string `json:"detail"`
	}
	if status >= 300 && json.Unmarshal(data, &p) == nil && p.Detail != "" {
		return status, p.Detail
	}
	return status, string(data)
}

// onHost runs a script on test host i, failing the test when it fails.
func onHost(t testing.TB, bed *hosts.Bed, i int, script string) string {
	t.Helper()
	out, err := bed.Exec(t, i, script)
	if err != nil {
		t.Fatalf("host %d: %v\n%s", i, err, out)
	}
	return strings.TrimSpace(out)
}

// snapshot lists a directory tree on a host, pid files (which a stop
// removes) left out, and shows its marker.
func snapshot(dir string) string {
	return "cd " + dir + " && find . ! -name '*.pid' | sort && cat ./.dmgr-owned 2>/dev/null || true"
}

// stepOutput is the stdout a step's result recorded in the events.
func stepOutput(t testing.TB, evs []domain.Event, operation, step string) string {
	t.Helper()
	for _, e := range evs {
		if s, ok := e.(domain.StepSucceeded); ok && s.Operation == operation && s.Step == step {
			return s.Stdout
		}
	}
	t.Fatalf("no StepSucceeded of %s in operation %s", step, operation)
	return ""
}

func TestDeployDirectoriesOnTestHosts(t *testing.T) {
	bed := hosts.Start(t, 2)
	cp := startControlPlane(t)
	cp.prepareBed(t, bed)
	h1, h2 := bed.Hosts[0].Addr, bed.Hosts[1].Addr
	// What a refused deploy must not have touched.
	homeBefore := onHost(t, bed, 1, "ls -la --time-style=+ /home/dmgr | sort")

	t.Run("refused in the topology", func(t *testing.T) {
		topo := func(dir string) string {
			return fmt.Sprintf("global:\n  user: tidb\n  service_manager: none\nmaster_servers:\n  - host: %s\n    deploy_dir: %s\n", h1, dir)
		}
		for i, tt := range []struct{ dir, reason string }{
			{"/etc/x", "/etc/x is inside the system directory /etc"},
			{"/usr/local", "/usr/local is inside the system directory /usr"},
			{"/var", "/var is a system directory"},
			{"/home/dmgr", "/home/dmgr is a user's home directory"},
			{"/home/tidb", "/home/tidb is the home directory of the deploy user tidb"},
			{"/srv/dm/../../etc/x", `path "/srv/dm/../../etc/x" is invalid: it contains a ".." segment`},
			{"../dmgr", `path "../dmgr" is invalid: it contains a ".." segment`},
			{"/srv//dm", `path "/srv//dm" is invalid: it is not clean; write it as /srv/dm`},
		} {
			name := fmt.Sprintf("refused-%d", i)
			for _, dryRun := range []string{"?dry_run=true", ""} {
				st, detail := cp.problemOf(t, "POST", "/api/v1/clusters"+dryRun, map[string]any{"name": name, "version": "v8.1.0", "topology": topo(tt.dir)})
				want := "topology line 6: master_servers[0].deploy_dir: " + tt.reason
				if st != http.StatusBadRequest || !strings.HasPrefix(detail, want) {
					t.Errorf("deploy_dir %s%s: %d %q; want 400 %q", tt.dir, dryRun, st, detail, want)
				}
			}
			if evs := cp.clusterEvents(t, name); len(evs) != 0 {
				t.Errorf("deploy_dir %s: the refused deploy recorded %v", tt.dir, evs)
			}
		}
		if out := onHost(t, bed, 1, "ls -d /etc/x /usr/local/dm-master-8261 /var/dm-master-8261 2>&1 || true; id tidb 2>&1 || true"); strings.Contains(out, "uid=") ||
			!strings.Contains(out, "No such file") {
			t.Errorf("host 1 after the refusals: %s", out)
		}
		if after := onHost(t, bed, 1, "ls -la --time-style=+ /home/dmgr | sort"); after != homeBefore {
			t.Errorf("/home/dmgr changed:\n%s\nwas\n%s", after, homeBefore)
		}
	})

	t.Run("a directory that is not empty on the host", func(t *testing.T) {
		onHost(t, bed, 1, "mkdir -p /srv/full && echo precious > /srv/full/data.db")
		before := onHost(t, bed, 1, "ls -la --time-style=+ /srv/full | sort; cat /srv/full/data.db")
		topo := fmt.Sprintf(`global:
  user: tidb
  deploy_dir: /srv/nf
  service_manager: none
master_servers:
  - host: %s
    deploy_dir: /srv/full
worker_servers:
  - host: %s
`, h1, h2)
		acc := cp.mustAccept(t, "POST", "/api/v1/clusters", map[string]any{"name": "full", "version": "v8.1.0", "topology": topo})
		op := cp.waitOperation(t, acc.OperationID, 3*time.Minute)
		if op.Status != domain.OperationStatusFailed {
			t.Fatalf("deploy into a non-empty directory: %s%s", op.Status, describeSteps(op))
		}
		for _, want := range []string{"check/" + h1, "on " + h1, "directory /srv/full is not empty"} {
			if !strings.Contains(op.Error, want) {
				t.Errorf("operation error %q does not say %q", op.Error, want)
			}
		}
		// Nothing but the checks ran: nothing written on any host.
		for _, s := range op.Steps {
			switch {
			case s.ID == "check/"+h1 && s.Status == domain.StepStatusFailed:
			case s.ID == "check/"+h2 && s.Status == domain.StepStatusSucceeded:
			case s.Status == "" || s.Status == "pending":
			default:
				t.Errorf("step %s is %s", s.ID, s.Status)
			}
		}
		if after := onHost(t, bed, 1, "ls -la --time-style=+ /srv/full | sort; cat /srv/full/data.db"); after != before {
			t.Errorf("/srv/full changed:\n%s\nwas\n%s", after, before)
		}
		for i := 1; i <= 2; i++ {
			if out := onHost(t, bed, i, "id tidb 2>&1 || true; ls -d /srv/nf 2>&1 || true"); strings.Contains(out, "uid=") || !strings.Contains(out, "No such file") {
				t.Errorf("host %d after the refused deploy: %s", i, out)
			}
		}

		// Destroying the failed cluster leaves the directory it did not
		// create, and says so.
		dop := cp.runOperation(t, "DELETE", "/api/v1/clusters/full", nil)
		out := stepOutput(t, cp.clusterEvents(t, "full"), dop.ID, "remove/"+h1+":8261")
		if !strings.Contains(out, "left /srv/full: it carries no marker of dmgr's") {
			t.Errorf("destroy's output for /srv/full: %q", out)
		}
		if after := onHost(t, bed, 1, "ls -la --time-style=+ /srv/full | sort; cat /srv/full/data.db"); after != before {
			t.Errorf("/srv/full after the destroy:\n%s\nwas\n%s", after, before)
		}
	})

	t.Run("relative directories, and what destroy and scale-in leave", func(t *testing.T) {
		// A pre-existing sibling of the master's data directory.
		onHost(t, bed, 1, "mkdir -p /srv/rel-data/keep && echo mine > /srv/rel-data/keep/file")
		topo := fmt.Sprintf(`global:
  user: tidb
  deploy_dir: dm-rel
  service_manager: none
master_servers:
  - host: %[1]s
    data_dir: /srv/rel-data/m1
worker_servers:
  - host: %[1]s
  - host: %[2]s
`, h1, h2)
		dep := cp.runOperation(t, "POST", "/api/v1/clusters", map[string]any{"name": "rel", "version": "v8.1.0", "topology": topo})
		var c domain.Cluster
		cp.api(t, "GET", "/api/v1/clusters/rel", nil, &c)
		dirs := map[string]string{}
		for _, in := range c.Instances {
			dirs[in.ID] = in.DeployDir
		}
		if got := dirs[h1+":8261"]; got != "/home/tidb/dm-rel/dm-master-8261" {
			t.Errorf("the master's deploy_dir is %s, want it under the deploy user's home", got)
		}
		// On the host: the files under /home/tidb, and the markers root's,
		// naming the cluster, the instance and the deploy.
		out := onHost(t, bed, 1, `set -e
ls /home/tidb/dm-rel/dm-master-8261/bin/dm-master
for d in /home/tidb/dm-rel/dm-master-8261 /srv/rel-data/m1 /home/tidb/dm-rel/dm-worker-8262; do
  stat -c '%U %a' $d/.dmgr-owned; grep -x 'cluster=rel' $d/.dmgr-owned; grep '^instance=' $d/.dmgr-owned; grep '^operation=' $d/.dmgr-owned
done
test ! -e /home/tidb/dm-rel/dm-master-8261/data/.dmgr-owned`)
		for _, want := range []string{"root 644\ncluster=rel\ninstance=" + h1 + ":8261\noperation=" + dep.ID, "instance=" + h1 + ":8262"} {
			if !strings.Contains(out, want) {
				t.Errorf("host 1 markers:\n%s\nlack %q", out, want)
			}
		}

		// The master's data directory now carries another cluster's marker;
		// host 2's worker lost its marker.
		onHost(t, bed, 1, "printf 'cluster=other\\ninstance=x\\n' > /srv/rel-data/m1/.dmgr-owned")
		onHost(t, bed, 2, "rm /home/tidb/dm-rel/dm-worker-8262/.dmgr-owned")
		dataBefore := onHost(t, bed, 1, snapshot("/srv/rel-data/m1"))
		w2Before := onHost(t, bed, 2, snapshot("/home/tidb/dm-rel/dm-worker-8262"))

		// Scale-in of host 2's worker: stopped and gone from the cluster, its
		// unmarked directory left and reported.
		si := cp.runOperation(t, "POST", "/api/v1/clusters/rel/scale-in", map[string]any{"nodes": []string{h2 + ":8262"}})
		out = stepOutput(t, cp.clusterEvents(t, "rel"), si.ID, "remove/"+h2+":8262")
		if !strings.Contains(out, "left /home/tidb/dm-rel/dm-worker-8262: it carries no marker of dmgr's") {
			t.Errorf("scale-in's output: %q", out)
		}
		if after := onHost(t, bed, 2, snapshot("/home/tidb/dm-rel/dm-worker-8262")); after != w2Before {
			t.Errorf("host 2's worker directory after scale-in:\n%s\nwas\n%s", after, w2Before)
		}

		// Destroy: the marked directories are gone; the data directory with
		// another cluster's marker and the sibling are left as they were.
		dop := cp.runOperation(t, "DELETE", "/api/v1/clusters/rel", nil)
		out = stepOutput(t, cp.clusterEvents(t, "rel"), dop.ID, "remove/"+h1+":8261")
		if !strings.Contains(out, "left /srv/rel-data/m1: it carries the marker of cluster other") ||
			!strings.Contains(out, "removed /home/tidb/dm-rel/dm-master-8261") {
			t.Errorf("destroy's output for the master: %q", out)
		}
		if got := onHost(t, bed, 1, "ls -d /home/tidb/dm-rel/dm-master-8261 /home/tidb/dm-rel/dm-worker-8262 2>&1 | grep -c 'No such file'; cat /srv/rel-data/keep/file"); got != "2\nmine" {
			t.Errorf("host 1 after destroy: %q; want the cluster's deploy directories gone and the sibling kept", got)
		}
		if after := onHost(t, bed, 1, snapshot("/srv/rel-data/m1")); after != dataBefore {
			t.Errorf("the data directory with another cluster's marker after destroy:\n%s\nwas\n%s", after, dataBefore)
		}
		if after := onHost(t, bed, 2, snapshot("/home/tidb/dm-rel/dm-worker-8262")); after != w2Before {
			t.Errorf("host 2's worker directory after destroy:\n%s\nwas\n%s", after, w2Before)
		}
	})
}

func TestForceDestroyOfAClusterWhoseHostsAreGone(t *testing.T) {
	bed := hosts.Start(t, 2)
	cp := startControlPlane(t)
	cp.prepareBed(t, bed)
	h1, h2 := bed.Hosts[0].Addr, bed.Hosts[1].Addr
	topo := fmt.Sprintf("global:\n  user: tidb\n  deploy_dir: /srv/gone\n  service_manager: none\nmaster_servers:\n  - host: %s\nworker_servers:\n  - host: %s\n", h1, h2)
	cp.runOperation(t, "POST", "/api/v1/clusters", map[string]any{"name": "gone", "version": "v8.1.0", "topology": topo})
	bed.Stop(t, 1)
	bed.Stop(t, 2)

	// Refused without the name repeated, or with another: 400, nothing
	// recorded.
	before := len(cp.clusterEvents(t, "gone"))
	for _, r := range []struct {
		query string
		body  any
		want  string
	}{
		{"?force=true", nil, `confirm it by repeating the cluster's name in the body, {"name": "gone"}`},
		{"?force=true", map[string]any{}, "body: name is empty"},
		{"?force=true", map[string]any{"name": "other"}, `the name "other" in the body is not the cluster's name gone`},
		{"?force=true", map[string]any{"name": "GONE"}, `the name "GONE" in the body is not the cluster's name gone`},
		{"?force=true", map[string]any{"name": "gone", "force": true}, "unknown field"},
		{"?force=yes-please", map[string]any{"name": "gone"}, `query parameter force="yes-please": want true or false`},
		{"?force=true&dry_run=true", nil, "confirm it by repeating"},
	} {
		st, detail := cp.problemOf(t, "DELETE", "/api/v1/clusters/gone"+r.query, r.body)
		if st != http.StatusBadRequest || !strings.Contains(detail, r.want) {
			t.Errorf("DELETE %s %v: %d %q; want 400 %q", r.query, r.body, st, detail, r.want)
		}
	}
	if after := len(cp.clusterEvents(t, "gone")); after != before {
		t.Errorf("refused forced destroys recorded %d events", after-before)
	}

	// The plan: one best-effort try per instance, with a deadline.
	var dry struct {
		Plan struct {
			Steps []domain.Step `json:"steps"`
		} `json:"plan"`
	}
	if st := cp.api(t, "DELETE", "/api/v1/clusters/gone?force=true&dry_run=true", map[string]any{"name": "gone"}, &dry); st != 200 || len(dry.Plan.Steps) != 2 {
		t.Fatalf("forced destroy dry run: %d %+v", st, dry.Plan.Steps)
	}
	for _, s := range dry.Plan.Steps {
		if s.Kind != domain.StepForceRemove || !s.BestEffort || s.TimeoutSec == 0 {
			t.Errorf("step %+v", s)
		}
	}

	acc := cp.mustAccept(t, "DELETE", "/api/v1/clusters/gone?force=true", map[string]any{"name": "gone"})
	op := cp.waitOperation(t, acc.OperationID, 2*time.Minute)
	if op.Status != domain.OperationStatusSucceeded {
		t.Fatalf("forced destroy: %s %s%s", op.Status, op.Error, describeSteps(op))
	}
	for _, s := range op.Steps {
		if s.Status != domain.StepStatusFailed || !strings.Contains(s.Error, s.Host) {
			t.Errorf("step %s on a stopped host: %s %q; want failed, naming the host", s.ID, s.Status, s.Error)
		}
	}
	tries := map[string]int{}
	var destroyed []domain.ClusterDestroyRequested
	for _, e := range cp.clusterEvents(t, "gone") {
		switch e := e.(type) {
		case domain.StepStarted:
			tries[e.Step]++
		case domain.ClusterDestroyRequested:
			destroyed = append(destroyed, e)
		}
	}
	if tries["force/"+h1+":8261"] != 1 || tries["force/"+h2+":8262"] != 1 {
		t.Errorf("tries per instance: %v, want one each", tries)
	}
	if len(destroyed) != 1 || !destroyed[0].Force {
		t.Errorf("ClusterDestroyRequested events: %+v", destroyed)
	}
	if st := cp.api(t, "GET", "/api/v1/clusters/gone", nil, nil); st != http.StatusNotFound {
		t.Errorf("GET of the forgotten cluster: %d, want 404", st)
	}
	// Audited: the event carries force and the actor.
	var page struct {
		Events []struct {
			Type    string          `json:"type"`
			Actor   string          `json:"actor"`
			Payload json.RawMessage `json:"payload"`
		} `json:"events"`
	}
	if st := cp.api(t, "GET", "/api/v1/audit?cluster=gone&type=ClusterDestroyRequested", nil, &page); st != 200 || len(page.Events) != 1 {
		t.Fatalf("audit: %d %+v", st, page)
	}
	if e := page.Events[0]; e.Actor == "" || !strings.Contains(string(e.Payload), `"force":true`) {
		t.Errorf("audit event %s by %q: %s", e.Type, e.Actor, e.Payload)
	}
	// The machines are free.
	for _, h := range bed.Hosts {
		cp.mustAccept(t, "DELETE", "/api/v1/machines/"+h.Addr, nil)
	}
}
