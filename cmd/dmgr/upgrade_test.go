package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/service"
	"github.com/dmgr/dmgr/internal/testbed/dmpkg"
	"github.com/dmgr/dmgr/internal/testbed/hosts"
)

// dryRunPlan answers the plan of a command's dry run.
func (cp *controlPlane) dryRunPlan(t testing.TB, path string, body any) []domain.Step {
	t.Helper()
	var out struct {
		DryRun bool `json:"dry_run"`
		Plan   struct {
			Steps []domain.Step `json:"steps"`
		} `json:"plan"`
	}
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	if st := cp.api(t, "POST", path+sep+"dry_run=true", body, &out); st != 200 || !out.DryRun {
		t.Fatalf("dry run of %s: %d", path, st)
	}
	return out.Plan.Steps
}

// rollOrder is the instances of a plan in the order of their stops.
func rollOrder(plan []domain.Step) []string {
	var out []string
	for _, s := range plan {
		if s.Kind == domain.StepStop {
			out = append(out, s.Instance)
		}
	}
	return out
}

// hostIndex is the bed's 1-based index of an instance id's host.
func hostIndex(t testing.TB, bed *hosts.Bed, id string) int {
	t.Helper()
	for i, h := range bed.Hosts {
		if strings.HasPrefix(id, h.Addr+":") {
			return i + 1
		}
	}
	t.Fatalf("no test host for %s", id)
	return 0
}

// leaderOf is the dm-master leader as the live display shows it.
func leaderOf(t testing.TB, lc service.LiveCluster) string {
	t.Helper()
	for _, in := range lc.Instances {
		if in.Role == domain.RoleMaster && in.Status == service.LiveUpLeader {
			return in.ID
		}
	}
	t.Fatalf("no dm-master leader in the live display: %+v", lc.Instances)
	return ""
}

// versions maps each master and worker to the version it reports.
func versions(lc service.LiveCluster) map[string]string {
	out := map[string]string{}
	for _, in := range lc.Instances {
		if in.Role == domain.RoleMaster || in.Role == domain.RoleWorker {
			out[in.ID] = in.Version
		}
	}
	return out
}

const masterConf = "/srv/dm/deploy/dm-master-8261/conf/dm-master.toml"

// breakMaster makes the dm-master of host i wait an hour before it listens
// (the simulator's start delay): its next start does not come up.
func breakMaster(t testing.TB, bed *hosts.Bed, i int) {
	t.Helper()
	if out, err := bed.Exec(t, i, `sed -i '1i sim-start-delay = "1h"' `+masterConf); err != nil {
		t.Fatal(out, err)
	}
}

// fixMaster undoes breakMaster and stops the process stuck in its delay,
// as an operator would before a retry.
func fixMaster(t testing.TB, bed *hosts.Bed, i int) {
	t.Helper()
	script := `sed -i '/^sim-start-delay/d' ` + masterConf + `
p=/srv/dm/deploy/dm-master-8261/scripts/dm-master-8261.pid
if [ -f $p ]; then kill $(cat $p) 2>/dev/null; for n in $(seq 50); do kill -0 $(cat $p) 2>/dev/null || break; sleep 0.1; done; rm -f $p; fi`
	if out, err := bed.Exec(t, i, script); err != nil {
		t.Fatal(out, err)
	}
}

// assertRolled checks, from the cluster's events, that operation id rolled
// the instances in order, one at a time: each instance's start (which
// waits until it is healthy) succeeded before the next instance's stop
// began.
func assertRolled(t *testing.T, evs []domain.Event, id string, order []string) {
	t.Helper()
	firstStopStarted := map[string]int{}
	startSucceeded := map[string]int{}
	for i, e := range evs {
		switch e := e.(type) {
		case domain.StepStarted:
			if e.Operation == id && strings.HasPrefix(e.Step, "stop/") {
				if _, ok := firstStopStarted[e.Step]; !ok {
					firstStopStarted[e.Step] = i
				}
			}
		case domain.StepSucceeded:
			if e.Operation == id && strings.HasPrefix(e.Step, "start/") {
				startSucceeded[e.Step] = i
			}
		}
	}
	for k := range order {
		stop, ok1 := firstStopStarted["stop/"+order[k]]
		start, ok2 := startSucceeded["start/"+order[k]]
		if !ok1 || !ok2 || start < stop {
			t.Errorf("instance %s: stop started at event %d (%v), start succeeded at %d (%v)", order[k], stop, ok1, start, ok2)
			continue
		}
		if k+1 < len(order) {
			if next := firstStopStarted["stop/"+order[k+1]]; next < start {
				t.Errorf("%s was stopped (event %d) before %s was healthy (event %d)", order[k+1], next, order[k], start)
			}
		}
	}
}

// sameFile reports whether two files on host i have the same bytes.
func sameFile(t testing.TB, bed *hosts.Bed, i int, a, b string) bool {
	t.Helper()
	_, err := bed.Exec(t, i, "cmp -s "+a+" "+b)
	return err == nil
}

// Upgrade on the test hosts: refusals, a failing upgrade rolled back, a
// failing upgrade fixed and retried, then a patch of the workers.
func TestUpgradeRollbackRetryAndPatch(t *testing.T) {
	bed := hosts.Start(t, 3)
	cp := startControlPlane(t)
	cp.prepareBed(t, bed)
	deploy := cp.runOperation(t, "POST", "/api/v1/clusters", map[string]any{"name": "up", "version": "v8.1.0", "topology": threeHostTopology(bed, "")})
	cp.mustAccept(t, "POST", "/api/v1/packages?filename=dm-v8.5.0.tar.gz", dmpkg.Package(t, "v8.5.0"))

	// Refusals change nothing.
	for _, r := range []struct {
		path   string
		body   any
		status int
	}{
		{"/api/v1/clusters/up/upgrade", map[string]any{"version": "v8.1.0"}, 400},
		{"/api/v1/clusters/up/upgrade", map[string]any{"version": "v9.9.9"}, 400},
		{"/api/v1/clusters/up/upgrade", map[string]any{"version": "latest"}, 400},
		{"/api/v1/clusters/up/upgrade", map[string]any{"version": "v8.5.0", "wait_timeout_sec": -1}, 400},
		{"/api/v1/clusters/nope/upgrade", map[string]any{"version": "v8.5.0"}, 404},
		{"/api/v1/operations/" + deploy.ID + "/rollback", nil, 400},
		{"/api/v1/operations/0190b2a4-7c1e-7d2f-9a3b-4c5d6e7f8091/rollback", nil, 404},
		{"/api/v1/operations/nope/rollback", nil, 400}, // not an operation id
		{"/api/v1/clusters/up/patch", map[string]any{"package": "dm-v7.0.0-linux-amd64", "roles": []string{"dm-worker"}}, 400},
		{"/api/v1/clusters/up/patch", map[string]any{"package": "dm-v8.5.0-linux-amd64"}, 400},
	} {
		if st := cp.api(t, "POST", r.path, r.body, nil); st != r.status {
			t.Errorf("POST %s %v: %d, want %d", r.path, r.body, st, r.status)
		}
	}

	// The plan: masters (the leader last), workers, monitoring.
	leader := leaderOf(t, cp.live(t, "up"))
	order := rollOrder(cp.dryRunPlan(t, "/api/v1/clusters/up/upgrade", map[string]any{"version": "v8.5.0"}))
	if len(order) != 9 || order[2] != leader || !strings.HasSuffix(order[3], ":8262") || !strings.HasSuffix(order[6], ":9090") {
		t.Fatalf("roll order %v (leader %s)", order, leader)
	}

	// An upgrade whose third instance (the leader) does not come up stops
	// there; the rollback returns the touched instances to v8.1.0.
	third := hostIndex(t, bed, order[2])
	breakMaster(t, bed, third)
	acc := cp.mustAccept(t, "POST", "/api/v1/clusters/up/upgrade", map[string]any{"version": "v8.5.0", "wait_timeout_sec": 5})
	op := cp.waitOperation(t, acc.OperationID, 3*time.Minute)
	if op.Status != domain.OperationStatusFailed || !strings.Contains(op.Error, "start/"+order[2]) {
		t.Fatalf("upgrade with a broken third instance: %s %s", op.Status, op.Error)
	}
	for _, s := range op.Steps {
		if s.ID == "stop/"+order[3] && s.Status != "pending" {
			t.Errorf("the roll went on after the failure: %s is %s", s.ID, s.Status)
		}
	}
	v := versions(cp.live(t, "up"))
	if v[order[0]] != "v8.5.0" || v[order[1]] != "v8.5.0" || v[order[3]] != "v8.1.0" {
		t.Errorf("versions after the failed upgrade: %v", v)
	}
	fixMaster(t, bed, third)
	rb := cp.runOperation(t, "POST", "/api/v1/operations/"+acc.OperationID+"/rollback", nil)
	if got := rollOrder(planOf(rb)); !slices.Equal(got, []string{order[2], order[1], order[0]}) {
		t.Errorf("rollback rolled %v", got)
	}
	lc := cp.live(t, "up")
	for id, ver := range versions(lc) {
		if ver != "v8.1.0" {
			t.Errorf("after the rollback %s reports %q", id, ver)
		}
	}
	if lc.Version != "v8.1.0" {
		t.Errorf("cluster version after the rollback: %s", lc.Version)
	}
	if st := cp.api(t, "POST", "/api/v1/operations/"+acc.OperationID+"/retry", nil, nil); st != 409 {
		t.Errorf("retry of a rolled-back upgrade: %d, want 409", st)
	}

	// Again, fixed and retried: the roll resumes at the third instance.
	leader = leaderOf(t, cp.live(t, "up"))
	order = rollOrder(cp.dryRunPlan(t, "/api/v1/clusters/up/upgrade", map[string]any{"version": "v8.5.0"}))
	if order[2] != leader {
		t.Fatalf("roll order %v, leader %s", order, leader)
	}
	third = hostIndex(t, bed, order[2])
	breakMaster(t, bed, third)
	acc = cp.mustAccept(t, "POST", "/api/v1/clusters/up/upgrade", map[string]any{"version": "v8.5.0", "wait_timeout_sec": 5})
	for _, path := range []string{"/api/v1/clusters/up/upgrade", "/api/v1/clusters/up/patch"} {
		body := map[string]any{"package": "dm-v8.5.0-linux-amd64", "roles": []string{"dm-worker"}}
		if path == "/api/v1/clusters/up/upgrade" {
			body = map[string]any{"version": "v8.5.0"}
		}
		if st := cp.api(t, "POST", path, body, nil); st != 409 {
			t.Errorf("POST %s while an upgrade runs: %d, want 409", path, st)
		}
	}
	if op := cp.waitOperation(t, acc.OperationID, 3*time.Minute); op.Status != domain.OperationStatusFailed {
		t.Fatalf("second upgrade: %s", op.Status)
	}
	fixMaster(t, bed, third)
	cp.mustAccept(t, "POST", "/api/v1/operations/"+acc.OperationID+"/retry", nil)
	if op := cp.waitOperation(t, acc.OperationID, 3*time.Minute); op.Status != domain.OperationStatusSucceeded {
		t.Fatalf("retried upgrade: %s %s%s", op.Status, op.Error, describeSteps(op))
	}
	evs := cp.clusterEvents(t, "up")
	assertRolled(t, evs, acc.OperationID, order)
	var retried []string
	for _, e := range evs {
		if s, ok := e.(domain.StepStarted); ok && s.Operation == acc.OperationID && s.Attempt == 2 {
			retried = append(retried, s.Step)
		}
	}
	if len(retried) == 0 || retried[0] != "start/"+order[2] || slices.ContainsFunc(retried, func(s string) bool {
		return s == "stop/"+order[0] || s == "stop/"+order[1] || strings.HasPrefix(s, "stage/")
	}) {
		t.Errorf("the retry ran %v; want it to resume at start/%s", retried, order[2])
	}
	lc = cp.live(t, "up")
	want := map[string]int{"dm-master Up|Leader": 1, "dm-master Up": 2, "dm-worker Up": 3, "prometheus Up": 1, "grafana Up": 1, "alertmanager Up": 1}
	if got := liveSummary(lc); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("live display after the upgrade: %v, want %v", got, want)
	}
	for id, ver := range versions(lc) {
		if ver != "v8.5.0" {
			t.Errorf("after the upgrade %s reports %q", id, ver)
		}
	}
	if lc.Version != "v8.5.0" {
		t.Errorf("cluster version after the upgrade: %s", lc.Version)
	}
	for _, f := range []string{"dm-master-8261/bin/dm-master", "prometheus-9090/bin/prometheus", "alertmanager-9093/bin/alertmanager"} {
		p := "/srv/dm/deploy/" + f
		if !sameFile(t, bed, 3, p, p+".v8.5.0") {
			t.Errorf("host 3: %s is not the v8.5.0 file", p)
		}
		if _, err := bed.Exec(t, 3, "test -f "+p+".v8.1.0"); err != nil {
			t.Errorf("host 3: no backup %s.v8.1.0", p)
		}
	}

	// Patch the workers, all at once, from a hotfix package.
	cp.mustAccept(t, "POST", "/api/v1/packages?filename=dm-v8.5.0-hotfix.1.tar.gz", dmpkg.Package(t, "v8.5.0-hotfix.1"))
	body := map[string]any{"package": "dm-v8.5.0-hotfix.1-linux-amd64", "roles": []string{"dm-worker", "dm-master"}, "parallel": 3}
	plan := cp.dryRunPlan(t, "/api/v1/clusters/up/patch", body)
	together := map[string]int{}
	for _, s := range plan {
		if s.Kind == domain.StepStop {
			together[string(s.Role)+" after "+strings.Join(s.Needs, ",")]++
		}
	}
	for k, n := range together {
		if strings.HasPrefix(k, "dm-master") && n > 1 || strings.HasPrefix(k, "dm-worker") && n != 3 {
			t.Errorf("patch with parallel 3: %d stops of %s", n, k)
		}
	}
	body["roles"] = []string{"dm-worker"}
	patch := cp.runOperation(t, "POST", "/api/v1/clusters/up/patch", body)
	for _, s := range planOf(patch) {
		if s.Kind == domain.StepStop && !strings.HasPrefix(strings.Join(s.Needs, ","), "stage/") {
			t.Errorf("parallel 3: %s waits for %v", s.ID, s.Needs)
		}
	}
	lc = cp.live(t, "up")
	for _, in := range lc.Instances {
		want := map[domain.Role]string{domain.RoleMaster: "v8.5.0", domain.RoleWorker: "v8.5.0-hotfix.1"}[in.Role]
		if want != "" && in.Version != want {
			t.Errorf("after the patch %s %s reports %q, want %q", in.Role, in.ID, in.Version, want)
		}
	}
	if lc.Version != "v8.5.0" {
		t.Errorf("a patch changed the cluster version to %s", lc.Version)
	}
}

// planOf is an operation's plan, from its steps.
func planOf(op domain.OperationView) []domain.Step {
	out := make([]domain.Step, len(op.Steps))
	for i, s := range op.Steps {
		out[i] = domain.Step{ID: s.ID, Kind: s.Kind, Host: s.Host, Instance: s.Instance, Needs: s.Needs}
	}
	return out
}
