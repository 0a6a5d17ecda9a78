package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/service"
	"github.com/dmgr/dmgr/internal/testbed/hosts"
)

// live answers the probed display of a cluster, by role and status.
func (cp *controlPlane) live(t testing.TB, cluster string) service.LiveCluster {
	t.Helper()
	var lc service.LiveCluster
	if st := cp.api(t, "GET", "/api/v1/clusters/"+cluster+"?status=live", nil, &lc); st != 200 {
		t.Fatalf("live display: %d", st)
	}
	return lc
}

func liveSummary(lc service.LiveCluster) map[string]int {
	out := map[string]int{}
	for _, in := range lc.Instances {
		out[string(in.Role)+" "+in.Status]++
	}
	return out
}

// starts counts the simulator's start markers of every master and worker
// of threeHostTopology.
func starts(t testing.TB, bed *hosts.Bed) (masters, workers int) {
	t.Helper()
	for i := 1; i <= 3; i++ {
		out, err := bed.Exec(t, i, `ls /srv/dm/data/dm-master-8261 | grep -c '^started-'; ls /srv/dm/deploy/dm-worker-8262/log | grep -c '^started-'`)
		if err != nil {
			t.Fatalf("host %d: %v %s", i, err, out)
		}
		var m, w int
		fmt.Sscan(out, &m, &w)
		masters += m
		workers += w
	}
	return masters, workers
}

func (cp *controlPlane) runOperation(t testing.TB, method, path string, body any) domain.OperationView {
	t.Helper()
	acc := cp.mustAccept(t, method, path, body)
	op := cp.waitOperation(t, acc.OperationID, 3*time.Minute)
	if op.Status != domain.OperationStatusSucceeded {
		t.Fatalf("%s %s: %s %s%s", method, path, op.Status, op.Error, describeSteps(op))
	}
	return op
}

// A cluster's life on the test hosts: deploy, display, stop, start,
// restart of the workers only, refusals, destroy; after each step the live
// display and the processes on the hosts agree with the cluster view.
func TestClusterLifecycleStartStopRestartDestroy(t *testing.T) {
	bed := hosts.Start(t, 3)
	cp := startControlPlane(t)
	cp.prepareBed(t, bed)
	cp.runOperation(t, "POST", "/api/v1/clusters", map[string]any{"name": "life", "version": "v8.1.0", "topology": threeHostTopology(bed, "")})

	lc := cp.live(t, "life")
	want := map[string]int{"dm-master Up|Leader": 1, "dm-master Up": 2, "dm-worker Up": 3, "prometheus Up": 1, "grafana Up": 1, "alertmanager Up": 1}
	if got := liveSummary(lc); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("live display after deploy: %v, want %v", got, want)
	}
	for _, in := range lc.Instances {
		if (in.Role == domain.RoleMaster || in.Role == domain.RoleWorker) && in.Version != "v8.1.0" {
			t.Errorf("%s %s reports version %q", in.Role, in.ID, in.Version)
		}
		if in.Role == domain.RoleWorker && in.Stage == "" {
			t.Errorf("worker %s has no stage in the display", in.ID)
		}
	}

	// Stop: the plan stops monitoring, then workers, then masters.
	var plan struct {
		Plan struct{ Steps []domain.Step } `json:"plan"`
	}
	if st := cp.api(t, "POST", "/api/v1/clusters/life/stop?dry_run=true", nil, &plan); st != 200 || len(plan.Plan.Steps) != 9 {
		t.Fatalf("stop dry run: %d, %d steps", st, len(plan.Plan.Steps))
	}
	for _, s := range plan.Plan.Steps {
		if s.Role == domain.RoleMaster && len(s.Needs) != 3 {
			t.Errorf("master stop %s needs %v, want the three worker stops", s.ID, s.Needs)
		}
	}
	cp.runOperation(t, "POST", "/api/v1/clusters/life/stop", nil)
	if got := liveSummary(cp.live(t, "life")); got["dm-master Down"] != 3 || got["dm-worker Down"] != 3 || got["grafana Down"] != 1 {
		t.Errorf("live display after stop: %v, want every instance Down", got)
	}
	var c domain.Cluster
	cp.api(t, "GET", "/api/v1/clusters/life", nil, &c)
	if c.Status != domain.ClusterStatusStopped {
		t.Errorf("cluster status after stop: %q", c.Status)
	}
	for i := 1; i <= 3; i++ {
		if out, _ := bed.Exec(t, i, "ps -o args= -u tidb | grep -c bin/ || true"); strings.TrimSpace(out) != "0" {
			t.Errorf("host %d still runs %s processes of tidb after stop", i, strings.TrimSpace(out))
		}
	}

	cp.runOperation(t, "POST", "/api/v1/clusters/life/start", nil)
	if got := liveSummary(cp.live(t, "life")); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("live display after start: %v, want %v", got, want)
	}
	if m, w := starts(t, bed); m != 6 || w != 6 {
		t.Errorf("after deploy and start: masters started %d times, workers %d; want 6 and 6", m, w)
	}

	// Restart the workers only.
	cp.runOperation(t, "POST", "/api/v1/clusters/life/restart", map[string]any{"roles": []string{"dm-worker"}})
	if m, w := starts(t, bed); m != 6 || w != 9 {
		t.Errorf("after restarting the workers: masters started %d times, workers %d; want 6 and 9", m, w)
	}
	if got := liveSummary(cp.live(t, "life")); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("live display after restart: %v, want %v", got, want)
	}

	// Reload after a change of the workers' config: only the workers
	// restart, and their config file on the hosts has the new value.
	cp.runOperation(t, "POST", "/api/v1/clusters/life/reload", map[string]any{"server_configs": map[string]any{
		"master": map[string]any{"log-level": "info"}, "worker": map[string]any{"log-level": "debug"}}})
	if m, w := starts(t, bed); m != 6 || w != 12 {
		t.Errorf("after the reload: masters started %d times, workers %d; want 6 and 12", m, w)
	}
	if out, _ := bed.Exec(t, 2, "cat /srv/dm/deploy/dm-worker-8262/conf/dm-worker.toml"); !strings.Contains(out, `log-level = "debug"`) {
		t.Errorf("dm-worker.toml after the reload:\n%s", out)
	}
	if got := liveSummary(cp.live(t, "life")); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("live display after the reload: %v, want %v", got, want)
	}

	// Refusals change nothing.
	for _, r := range []struct {
		method, path string
		body         any
		status       int
	}{
		{"POST", "/api/v1/clusters/life/start", map[string]any{"nodes": []string{"10.9.9.9:8261"}}, 400},
		{"POST", "/api/v1/clusters/life/stop", map[string]any{"roles": []string{"tikv"}}, 400},
		{"POST", "/api/v1/clusters/nope/stop", nil, 404},
		{"DELETE", "/api/v1/clusters/nope", nil, 404},
		{"DELETE", "/api/v1/clusters/life?retain_data=maybe", nil, 400},
	} {
		if st := cp.api(t, r.method, r.path, r.body, nil); st != r.status {
			t.Errorf("%s %s: %d, want %d", r.method, r.path, st, r.status)
		}
	}

	// Destroy: nothing of the cluster is left on the hosts, and the
	// machines can be removed.
	cp.runOperation(t, "DELETE", "/api/v1/clusters/life", nil)
	if st := cp.api(t, "GET", "/api/v1/clusters/life", nil, nil); st != 404 {
		t.Errorf("GET of a destroyed cluster: %d, want 404", st)
	}
	for i := 1; i <= 3; i++ {
		out, err := bed.Exec(t, i, "find /srv/dm/deploy /srv/dm/data -mindepth 1 | wc -l; ps -o args= -u tidb | grep -c bin/ || true")
		if err != nil || strings.Join(strings.Fields(out), " ") != "0 0" {
			t.Errorf("host %d after destroy: %q %v; want empty directories and no process", i, out, err)
		}
	}
	for _, h := range bed.Hosts {
		cp.mustAccept(t, "DELETE", "/api/v1/machines/"+h.Addr, nil)
	}
}
