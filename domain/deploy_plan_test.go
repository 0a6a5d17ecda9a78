package domain

import (
	"slices"
	"strings"
	"testing"
)

func prodAPlan(t *testing.T, topology string) []Step {
	t.Helper()
	evs := deployedCluster(t, "prod-a", topology)
	return evs[1].event.(OperationRequested).Plan
}

func stepByID(t *testing.T, plan []Step, id string) Step {
	t.Helper()
	for _, s := range plan {
		if s.ID == id {
			return s
		}
	}
	t.Fatalf("plan has no step %s; it has %v", id, stepIDs(plan))
	return Step{}
}

func fileOf(t *testing.T, s Step, path string) FileSpec {
	t.Helper()
	for _, f := range s.Files {
		if f.Path == path {
			return f
		}
	}
	t.Fatalf("step %s writes no %s", s.ID, path)
	return FileSpec{}
}

// needsTransitively reports whether step a depends on b.
func needsTransitively(plan []Step, a, b string) bool {
	byID := map[string]Step{}
	for _, s := range plan {
		byID[s.ID] = s
	}
	seen := map[string]bool{}
	var walk func(id string) bool
	walk = func(id string) bool {
		for _, n := range byID[id].Needs {
			if n == b || (!seen[n] && walk(n)) {
				return true
			}
			seen[n] = true
		}
		return false
	}
	return walk(a)
}

func TestDeployPlanIsADAGInDependencyOrder(t *testing.T) {
	plan := prodAPlan(t, prodATopology)
	if err := CheckPlan(plan); err != nil {
		t.Fatal(err)
	}
	// 3 hosts (check, user) and 9 instances (dirs, copy, config, start) and
	// one members check.
	if got, want := len(plan), 3*2+9*4+1; got != want {
		t.Errorf("%d steps, want %d: %v", got, want, stepIDs(plan))
	}
	again := prodAPlan(t, prodATopology)
	if !slices.EqualFunc(plan, again, func(a, b Step) bool { return a.ID == b.ID && slices.Equal(a.Needs, b.Needs) }) {
		t.Error("the same deploy planned twice gives different plans")
	}
	order := []struct{ later, earlier string }{
		{"user/198.18.0.11", "check/198.18.0.11"},
		{"dirs/198.18.0.11:8261", "user/198.18.0.11"},
		{"start/198.18.0.11:8261", "copy/198.18.0.11:8261"},
		{"start/198.18.0.11:8261", "config/198.18.0.11:8261"},
		// workers start after every master, monitoring after the members check
		{"start/198.18.0.11:8262", "start/198.18.0.13:8261"},
		{"check-cluster", "start/198.18.0.13:8262"},
		{"start/198.18.0.13:9090", "check-cluster"},
		{"start/198.18.0.13:3000", "check-cluster"},
		{"start/198.18.0.13:9093", "check-cluster"},
	}
	for _, o := range order {
		if !needsTransitively(plan, o.later, o.earlier) {
			t.Errorf("%s does not wait for %s", o.later, o.earlier)
		}
	}
	// Nothing is written on any host before every host's check passed:
	// each deploy user (the first step that writes) waits for every check.
	for _, s := range plan {
		if s.Kind != StepEnsureUser {
			continue
		}
		for _, h := range []string{"198.18.0.11", "198.18.0.12", "198.18.0.13"} {
			if !slices.Contains(s.Needs, "check/"+h) {
				t.Errorf("%s does not wait for check/%s", s.ID, h)
			}
		}
	}
	// Independent hosts run in parallel after the checks: nothing on host 1
	// waits for host 2 before the starts.
	for _, s := range plan {
		if s.Kind == StepStart || s.Kind == StepCheckCluster || s.Kind == StepEnsureUser {
			continue
		}
		for _, n := range s.Needs {
			if ns := stepByID(t, plan, n); ns.Host != s.Host {
				t.Errorf("%s on %s waits for %s on %s", s.ID, s.Host, n, ns.Host)
			}
		}
	}
	// The masters start in parallel: none waits for another.
	if needsTransitively(plan, "start/198.18.0.12:8261", "start/198.18.0.11:8261") {
		t.Error("masters start one after another; they must start together to elect a leader")
	}
}

func TestDeployPlanRendersConfigs(t *testing.T) {
	plan := prodAPlan(t, prodATopology)
	master := fileOf(t, stepByID(t, plan, "config/198.18.0.11:8261"), "/dm/deploy/dm-master-8261/conf/dm-master.toml")
	for _, want := range []string{
		`name = "master1"`,
		`advertise-addr = "198.18.0.11:8261"`,
		`initial-cluster = "master1=http://198.18.0.11:8291,master2=http://198.18.0.12:8291,master3=http://198.18.0.13:8291"`,
		`log-level = "debug"`, // the instance's config wins over server_configs
		`data-dir = "/dm/data/dm-master-8261"`,
	} {
		if !strings.Contains(master.Content, want) {
			t.Errorf("dm-master.toml lacks %s:\n%s", want, master.Content)
		}
	}
	if master.Owner != "tidb" {
		t.Errorf("dm-master.toml owner %q, want the deploy user", master.Owner)
	}
	worker := fileOf(t, stepByID(t, plan, "config/198.18.0.13:8262"), "/dm/deploy/dm-worker-8262/conf/dm-worker.toml")
	for _, want := range []string{`join = "198.18.0.11:8261,198.18.0.12:8261,198.18.0.13:8261"`, `name = "worker3"`,
		`log-file = "/dm/log/worker3/dm-worker.log"`, `log-level = "info"`} {
		if !strings.Contains(worker.Content, want) {
			t.Errorf("dm-worker.toml lacks %s:\n%s", want, worker.Content)
		}
	}
	prom := fileOf(t, stepByID(t, plan, "config/198.18.0.13:9090"), "/dm/deploy/prometheus-9090/conf/prometheus.yml")
	for _, target := range []string{"198.18.0.11:8261", "198.18.0.12:8261", "198.18.0.13:8261", "198.18.0.11:8262",
		"198.18.0.12:8262", "198.18.0.13:8262", "198.18.0.13:9093", "198.18.0.13:3000"} {
		if !strings.Contains(prom.Content, "'"+target+"'") {
			t.Errorf("prometheus.yml does not scrape %s:\n%s", target, prom.Content)
		}
	}
	run := fileOf(t, stepByID(t, plan, "config/198.18.0.11:8261"), "/dm/deploy/dm-master-8261/scripts/run_dm-master.sh")
	if run.Mode != 0o755 || !strings.Contains(run.Content, "exec bin/dm-master --config=/dm/deploy/dm-master-8261/conf/dm-master.toml") {
		t.Errorf("run script (mode %o):\n%s", run.Mode, run.Content)
	}
	// Under systemd each instance gets a unit that runs its script as the
	// deploy user.
	unit := fileOf(t, stepByID(t, plan, "config/198.18.0.11:8261"), "/etc/systemd/system/dm-master-8261.service")
	if unit.Owner != "root" || !strings.Contains(unit.Content, "User=tidb") ||
		!strings.Contains(unit.Content, "ExecStart=/bin/bash /dm/deploy/dm-master-8261/scripts/run_dm-master.sh") {
		t.Errorf("unit (owner %s):\n%s", unit.Owner, unit.Content)
	}
	start := stepByID(t, plan, "start/198.18.0.11:8261")
	if start.Service.Manager != ServiceManagerSystemd || start.Service.HealthPath != "/status" ||
		start.Service.HealthAddr != "198.18.0.11:8261" {
		t.Errorf("start service %+v", start.Service)
	}
	check := stepByID(t, plan, "check-cluster")
	if !slices.Equal(check.Check.Masters, []string{"master1", "master2", "master3"}) ||
		!slices.Equal(check.Check.Workers, []string{"worker1", "worker2", "worker3"}) {
		t.Errorf("members check %+v", check.Check)
	}
	copies := stepByID(t, plan, "copy/198.18.0.13:3000").Copies
	if len(copies) != 1 || copies[0].Src != "grafana.tar.gz" || copies[0].UnpackInto != "/dm/deploy/grafana-3000" {
		t.Errorf("grafana copies %+v", copies)
	}
	hostCheck := stepByID(t, plan, "check/198.18.0.13")
	var ports []int
	for _, p := range hostCheck.Ports {
		ports = append(ports, p.Port)
	}
	if want := []int{8261, 8291, 8262, 9090, 3000, 9093, 9094}; !slices.Equal(ports, want) {
		t.Errorf("host check ports %v, want %v", ports, want)
	}
}

func TestDeployPlanWithoutSystemdUsesPidFiles(t *testing.T) {
	topo := strings.Replace(prodATopology, `  data_dir: "/dm/data"`, "  data_dir: \"/dm/data\"\n  service_manager: none", 1)
	plan := prodAPlan(t, topo)
	start := stepByID(t, plan, "start/198.18.0.12:8261")
	if start.Service.Manager != ServiceManagerNone || start.Service.PIDFile != "/dm/deploy/dm-master-8261/scripts/dm-master-8261.pid" {
		t.Errorf("start service %+v", start.Service)
	}
	for _, f := range stepByID(t, plan, "config/198.18.0.12:8261").Files {
		if strings.HasPrefix(f.Path, "/etc/systemd") {
			t.Errorf("service_manager none writes a unit %s", f.Path)
		}
	}
	if p := stepByID(t, plan, "check/198.18.0.12").Ports[0]; p.PIDFile != start.Service.PIDFile {
		t.Errorf("port check %+v does not know the instance's pid file", p)
	}
}

func TestDeployPlanRefusesAnIncompletePackage(t *testing.T) {
	w := given(inventory()...)
	p := *w.Packages["dm-v8.1.0-linux-amd64"]
	p.Files = slices.DeleteFunc(slices.Clone(p.Files), func(f PackageFile) bool { return f.Path == "grafana.tar.gz" })
	w.Packages[p.ID] = &p
	_, err := DecideDeployCluster(w, deployProdA())
	if ErrorCode(err) != Invalid || !strings.Contains(ErrorMessage(err), "package dm-v8.1.0-linux-amd64 has no grafana.tar.gz, which grafana 198.18.0.13:3000 needs") {
		t.Errorf("deploy with a package without grafana: %v", err)
	}
}

func TestEncodeTOML(t *testing.T) {
	got, err := EncodeTOML(mergeConfig(nil, map[string]any{
		"name": `a "quoted" \ name`, "port": float64(8261), "ratio": 0.5, "on": true,
		"log.level": "info", "log": map[string]any{"file": map[string]any{"max-days": float64(7)}},
		"list": []any{"a", float64(2)}, "odd key": "x\ny",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := `list = ["a", 2]
name = "a \"quoted\" \\ name"
"odd key" = "x\ny"
on = true
port = 8261
ratio = 0.5

[log]
level = "info"

[log.file]
max-days = 7
`
	if got != want {
		t.Errorf("EncodeTOML =\n%s\nwant\n%s", got, want)
	}
	if _, err := EncodeTOML(map[string]any{"x": nil}); err == nil || !strings.Contains(err.Error(), "config key x") {
		t.Errorf("null value: %v", err)
	}
}
