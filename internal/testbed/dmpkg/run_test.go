package dmpkg

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"
)

// TestPackageRuns deploys one instance of every role from an extracted
// package the way a deploy would: the role's binary into <deploy>/bin, its
// configs and a run script rendered from the package's templates, grafana
// unpacked into its deploy directory; then starts each run script with bash
// and checks what the instance answers, and that SIGTERM stops it cleanly.
func TestPackageRuns(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("needs bash for the run scripts")
	}
	const version = "v8.1.0"
	b := Package(t, version)
	root := t.TempDir()
	pkg := filepath.Join(root, "pkg")
	extract(t, b, pkg)
	tmpl := func(name string) *template.Template {
		body, err := os.ReadFile(filepath.Join(pkg, "template", name))
		if err != nil {
			t.Fatal(err)
		}
		return template.Must(template.New(name).Option("missingkey=error").Parse(string(body)))
	}
	render := func(name string, data map[string]any, dst string, mode os.FileMode) {
		var out bytes.Buffer
		if err := tmpl(name).Execute(&out, data); err != nil {
			t.Fatal(err)
		}
		mustWrite(t, dst, out.Bytes(), mode)
	}

	port := map[string]int{}
	taken := map[int]bool{}
	for _, p := range []string{"master", "peer", "worker", "prometheus", "alertmanager", "cluster", "grafana"} {
		port[p] = freePort(t, taken)
	}
	addr := func(p string) string { return "127.0.0.1:" + strconv.Itoa(port[p]) }

	type instance struct {
		role, bin string
		port      int
		health    string
		deploy    string
		data      map[string]any
	}
	insts := []*instance{
		{role: "dm-master", bin: "bin/dm-master", port: port["master"], health: "/status"},
		{role: "dm-worker", bin: "bin/dm-worker", port: port["worker"], health: "/status"},
		{role: "prometheus", bin: "bin/prometheus", port: port["prometheus"], health: "/-/ready"},
		{role: "alertmanager", bin: "bin/alertmanager", port: port["alertmanager"], health: "/-/ready"},
		{role: "grafana", port: port["grafana"], health: "/api/health"},
	}
	for _, in := range insts {
		in.deploy = filepath.Join(root, in.role)
		in.data = templateData(in.deploy, "127.0.0.1", in.port)
		for _, d := range []string{"bin", "conf", "scripts", "log"} {
			mustMkdir(t, filepath.Join(in.deploy, d))
		}
		if in.bin != "" {
			if err := os.Link(filepath.Join(pkg, in.bin), filepath.Join(in.deploy, in.bin)); err != nil {
				t.Fatal(err)
			}
		}
	}
	master, worker, prom, am, grafana := insts[0], insts[1], insts[2], insts[3], insts[4]
	copyConf := func(in *instance, name string) {
		body, err := os.ReadFile(filepath.Join(pkg, "conf", name))
		if err != nil {
			t.Fatal(err)
		}
		mustWrite(t, filepath.Join(in.deploy, "conf", name), body, 0o644)
	}

	master.data["Name"], master.data["PeerPort"] = "dm-master-1", port["peer"]
	master.data["InitialCluster"] = "dm-master-1=http://" + addr("peer")
	copyConf(master, "dm-master.toml")
	worker.data["Name"], worker.data["Join"] = "dm-worker-1", addr("master")
	copyConf(worker, "dm-worker.toml")

	monitoring := map[string]any{"ClusterName": "test-cluster", "PrometheusAddr": addr("prometheus"),
		"MasterAddrs": []string{addr("master")}, "WorkerAddrs": []string{addr("worker")},
		"AlertmanagerAddrs": []string{addr("alertmanager")}, "GrafanaAddrs": []string{addr("grafana")}}
	for k, v := range monitoring {
		prom.data[k], grafana.data[k] = v, v
	}
	render("prometheus.yml.tmpl", prom.data, filepath.Join(prom.deploy, "conf", "prometheus.yml"), 0o644)
	copyConf(prom, "dm_worker.rules.yml")
	am.data["ClusterPort"] = port["cluster"]
	copyConf(am, "alertmanager.yml")

	gtar, err := os.ReadFile(filepath.Join(pkg, "grafana.tar.gz"))
	if err != nil {
		t.Fatal(err)
	}
	extract(t, gtar, grafana.deploy)
	render("grafana.ini.tmpl", grafana.data, filepath.Join(grafana.deploy, "conf", "grafana.ini"), 0o644)
	render("datasource.yml.tmpl", grafana.data, filepath.Join(grafana.deploy, "provisioning", "datasources", "datasource.yml"), 0o644)
	render("dashboard.yml.tmpl", grafana.data, filepath.Join(grafana.deploy, "provisioning", "dashboards", "dashboard.yml"), 0o644)

	procs := map[string]*exec.Cmd{}
	for _, in := range insts {
		script := filepath.Join(in.deploy, "scripts", "run_"+in.role+".sh")
		render("run_"+in.role+".sh.tmpl", in.data, script, 0o755)
		cmd := exec.Command("bash", script)
		cmd.Env = cleanEnv()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs[in.role] = cmd
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	}
	for _, in := range insts {
		waitFor(t, 20*time.Second, in.role+" "+in.health, func() error {
			code, _, err := get("http://127.0.0.1:" + strconv.Itoa(in.port) + in.health)
			if err == nil && code != 200 {
				err = fmt.Errorf("status %d", code)
			}
			return err
		})
	}

	if _, body, _ := get("http://" + addr("master") + "/status"); !strings.HasPrefix(string(body), "Release Version: "+version+"\n") {
		t.Errorf("dm-master /status: %q", body)
	}
	waitFor(t, 20*time.Second, "dm-worker registered", func() error {
		_, body, err := get("http://" + addr("master") + "/apis/v1alpha1/members?worker=true")
		if err == nil && !strings.Contains(string(body), `"name":"dm-worker-1"`) {
			err = fmt.Errorf("members: %s", body)
		}
		return err
	})

	var targets struct {
		Data struct {
			ActiveTargets []struct{ Labels map[string]string }
		}
	}
	getJSON(t, "http://"+addr("prometheus")+"/api/v1/targets", &targets)
	var scraped []string
	for _, tg := range targets.Data.ActiveTargets {
		scraped = append(scraped, tg.Labels["job"]+"="+tg.Labels["instance"])
	}
	slices.Sort(scraped)
	want := []string{"alertmanager=" + addr("alertmanager"), "dm_master=" + addr("master"), "dm_worker=" + addr("worker"),
		"grafana=" + addr("grafana"), "prometheus=" + addr("prometheus")}
	if !slices.Equal(scraped, want) {
		t.Errorf("prometheus scrapes %q, want every instance %q", scraped, want)
	}
	var build struct{ Data struct{ Version string } }
	if getJSON(t, "http://"+addr("prometheus")+"/api/v1/status/buildinfo", &build); build.Data.Version != version {
		t.Errorf("prometheus version %q", build.Data.Version)
	}

	var health map[string]string
	if getJSON(t, "http://"+addr("grafana")+"/api/health", &health); health["version"] != version || health["database"] != "ok" {
		t.Errorf("grafana health %v", health)
	}
	var dss []struct{ Name, URL string }
	getJSON(t, "http://admin:admin@"+addr("grafana")+"/api/datasources", &dss)
	if len(dss) != 1 || dss[0].URL != "http://"+addr("prometheus") {
		t.Errorf("grafana data sources %+v", dss)
	}
	var dashes []struct{ Title string }
	if getJSON(t, "http://admin:admin@"+addr("grafana")+"/api/search", &dashes); len(dashes) != 2 {
		t.Errorf("grafana dashboards %+v", dashes)
	}

	for _, in := range insts {
		cmd := procs[in.role]
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Errorf("%s after SIGTERM: %v; stderr:\n%s", in.role, err, readFile(filepath.Join(in.deploy, "log", in.role+"_stderr.log")))
		}
		if m, _ := filepath.Glob(filepath.Join(in.deploy, "data", "started-*")); len(m) != 1 && in.role != "dm-worker" {
			t.Errorf("%s start markers %v", in.role, m)
		}
	}
	for _, f := range []string{"dm-master/log/dm-master.log", "dm-worker/log/dm-worker.log", "prometheus/log/prometheus_stdout.log",
		"alertmanager/log/alertmanager_stdout.log", "grafana/log/grafana.log"} {
		if !strings.Contains(readFile(filepath.Join(root, f)), "stopped") {
			t.Errorf("%s does not log the stop:\n%s", f, readFile(filepath.Join(root, f)))
		}
	}
}

// freePort is a port free now, below the kernel's ephemeral range
// (32768 and up on Linux) and not in taken (to which it is added): the
// instances bind it later from their rendered configs, and a port from the
// ephemeral range could meanwhile go to any test's port-0 listener (seen
// in CI: another server answered alertmanager's /-/ready with 404).
func freePort(t *testing.T, taken map[int]bool) int {
	t.Helper()
	for range 1000 {
		p := 20000 + rand.IntN(12000)
		if taken[p] {
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue // in use
		}
		ln.Close()
		taken[p] = true
		return p
	}
	t.Fatal("no free port in 20000-31999")
	return 0
}

func get(url string) (int, []byte, error) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func getJSON(t *testing.T, url string, out any) {
	t.Helper()
	code, b, err := get(url)
	if err != nil || code != 200 {
		t.Fatalf("GET %s: %d %s %v", url, code, b, err)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("GET %s: %v: %s", url, err, b)
	}
}

func waitFor(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, d, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func mustMkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func mustWrite(t *testing.T, path string, body []byte, mode os.FileMode) {
	t.Helper()
	mustMkdir(t, filepath.Dir(path))
	if err := os.WriteFile(path, body, mode); err != nil {
		t.Fatal(err)
	}
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}
