package dmsim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dmgr/dmgr/internal/testenv"
)

func waitHTTP(t *testing.T, url string) {
	t.Helper()
	waitFor(t, 10*time.Second, "GET "+url, func() error {
		_, _, err := httpDo("GET", url)
		return err
	})
}

func wantGET(t *testing.T, url string, wantCode int, wantBody string) []byte {
	t.Helper()
	code, body, err := httpDo("GET", url)
	if err != nil || code != wantCode || !strings.Contains(string(body), wantBody) {
		t.Fatalf("GET %s: %d %q %v; want %d and %q", url, code, body, err, wantCode, wantBody)
	}
	return body
}

func wantMarkers(t *testing.T, dir string, n int) {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "started-*"))
	if len(m) != n {
		t.Fatalf("start markers in %s: %v, want %d", dir, m, n)
	}
}

// busy holds a port for the length of the test.
func busy(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

func wantBusyPortError(t *testing.T, err error, addr string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), "address already in use") || !strings.Contains(err.Error(), addr) {
		t.Fatalf("start on busy port %s: %v", addr, err)
	}
}

const promRules = `groups:
  - name: alert.rules
    rules:
      - alert: DM_worker_down
        expr: up{job="dm_worker"} == 0
        labels: {level: critical}
`

func promConfig(targets ...string) string {
	return `global:
  scrape_interval: 15s
  external_labels: {cluster: test}
rule_files:
  - '*.rules.yml'
alerting:
  alertmanagers:
  - static_configs:
    - targets: ['127.0.0.1:9093']
scrape_configs:
  - job_name: dm_master
    honor_labels: true
    static_configs:
    - targets: ['` + strings.Join(targets, "', '") + `']
      labels: {group: masters}
  - job_name: prometheus
    static_configs:
    - targets: []
`
}

func TestPrometheus(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "conf", "prometheus.yml")
	writeFile(t, conf, promConfig("10.0.0.1:8261", "10.0.0.2:8261"))
	writeFile(t, filepath.Join(dir, "conf", "dm_worker.rules.yml"), promRules)
	addr := freeAddr(t)
	out := &testenv.Buffer{}
	cfg, err := ParsePrometheusFlags([]string{"--config.file=" + conf, "--web.listen-address=" + addr,
		"--storage.tsdb.path=" + filepath.Join(dir, "data"), "--storage.tsdb.retention=30d", "--web.enable-lifecycle",
		"--web.external-url=http://" + addr + "/"})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Version = "v8.1.0"
	stop := startProc(t, func(ctx context.Context) error { return RunPrometheus(ctx, cfg, out) })
	base := "http://" + addr
	waitHTTP(t, base+"/-/healthy")
	wantGET(t, base+"/-/healthy", 200, "Healthy")
	wantGET(t, base+"/-/ready", 200, "Ready")
	wantGET(t, base+"/api/v1/status/buildinfo", 200, `"version":"v8.1.0"`)
	wantGET(t, base+"/api/v1/status/config", 200, "dm_master")
	wantGET(t, base+"/api/v1/alertmanagers", 200, `"url":"http://127.0.0.1:9093/api/v2/alerts"`)
	wantMarkers(t, filepath.Join(dir, "data"), 1)

	instances := func() []string {
		var r struct {
			Status string
			Data   struct{ ActiveTargets []PromTarget }
		}
		if err := getJSON(addr, "/api/v1/targets", &r); err != nil || r.Status != "success" {
			t.Fatalf("targets: %+v %v", r, err)
		}
		var got []string
		for _, tg := range r.Data.ActiveTargets {
			got = append(got, tg.Labels["job"]+"/"+tg.Labels["instance"]+"/"+tg.Labels["group"]+" "+tg.ScrapeURL)
		}
		return got
	}
	want := []string{"dm_master/10.0.0.1:8261/masters http://10.0.0.1:8261/metrics", "dm_master/10.0.0.2:8261/masters http://10.0.0.2:8261/metrics"}
	if got := instances(); !slices.Equal(got, want) {
		t.Fatalf("targets %q, want %q", got, want)
	}

	t.Run("reload", func(t *testing.T) {
		writeFile(t, conf, promConfig("10.0.0.3:8261"))
		if code, body, err := httpDo("POST", base+"/-/reload"); err != nil || code != 200 {
			t.Fatalf("reload: %d %s %v", code, body, err)
		}
		if got := instances(); len(got) != 1 || !strings.HasPrefix(got[0], "dm_master/10.0.0.3:8261/") {
			t.Fatalf("targets after reload %q", got)
		}
		writeFile(t, conf, "scrape_configs: [{job_name: a}, {job_name: a}]\n")
		if code, body, _ := httpDo("POST", base+"/-/reload"); code != 500 || !strings.Contains(string(body), "multiple scrape configs") {
			t.Fatalf("bad reload: %d %s", code, body)
		}
		if got := instances(); len(got) != 1 {
			t.Fatalf("a failed reload changed the targets: %q", got)
		}
	})

	t.Run("busy port", func(t *testing.T) {
		writeFile(t, conf, promConfig("10.0.0.1:8261"))
		c := cfg
		c.ListenAddr = busy(t)
		wantBusyPortError(t, RunPrometheus(context.Background(), c, io.Discard), c.ListenAddr)
		c.ListenAddr = addr
		wantBusyPortError(t, RunPrometheus(context.Background(), c, io.Discard), addr)
	})

	stop()
	for _, w := range []string{`"config_bytes":`, `"targets":2`, `"rules":1`, `"message":"prometheus stopped"`} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("log lacks %s:\n%s", w, out)
		}
	}
}

func TestPrometheusRefusesBadConfig(t *testing.T) {
	dir := t.TempDir()
	tests := []struct{ name, text, rules, wantErr string }{
		{"missing", "", "", "no such file"},
		{"not yaml", "scrape_configs: [", "", "parsing YAML"},
		{"no job name", "scrape_configs: [{static_configs: [{targets: ['a:1']}]}]", "", "job_name is empty"},
		{"url as target", "scrape_configs: [{job_name: a, static_configs: [{targets: ['http://a:1/metrics']}]}]", "", "not a host:port"},
		{"bad interval", "global: {scrape_interval: 15}", "", "global"},
		{"bad rule file", "rule_files: ['r.yml']", "groups: [{name: g, rules: [{alert: A}]}]", "needs expr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_"))
			conf := filepath.Join(d, "prometheus.yml")
			if tt.text != "" {
				writeFile(t, conf, tt.text)
			}
			if tt.rules != "" {
				writeFile(t, filepath.Join(d, "r.yml"), tt.rules)
			}
			cfg := PrometheusConfig{ConfigFile: conf, ListenAddr: "127.0.0.1:0", StoragePath: filepath.Join(d, "data"), Retention: "1d", LogLevel: "info"}
			err := RunPrometheus(context.Background(), cfg, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err %v, want %q", err, tt.wantErr)
			}
			if _, err := os.Stat(filepath.Join(d, "data")); err == nil {
				t.Errorf("a refused start wrote its data dir")
			}
		})
	}
}

const amConfig = `global:
  resolve_timeout: 5m
route:
  receiver: blackhole
  group_by: [alertname]
  routes:
    - receiver: blackhole
receivers:
  - name: blackhole
`

func TestAlertmanager(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "alertmanager.yml")
	writeFile(t, conf, amConfig)
	web1, web2, c1, c2 := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	run := func(web, cluster, peer, data string) AlertmanagerConfig {
		cfg, err := ParseAlertmanagerFlags([]string{"--config.file=" + conf, "--storage.path=" + filepath.Join(dir, data),
			"--web.listen-address=" + web, "--cluster.listen-address=" + cluster, "--cluster.peer=" + peer, "--cluster.peer=" + cluster})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Version = "v8.1.0"
		startProc(t, func(ctx context.Context) error { return RunAlertmanager(ctx, cfg, io.Discard) })
		return cfg
	}
	cfg := run(web1, c1, c2, "am1")
	run(web2, c2, c1, "am2")
	for _, w := range []string{web1, web2} {
		waitHTTP(t, "http://"+w+"/-/ready")
		wantGET(t, "http://"+w+"/-/ready", 200, "OK")
		wantGET(t, "http://"+w+"/-/healthy", 200, "OK")
	}
	wantMarkers(t, filepath.Join(dir, "am1"), 1)
	if c, err := net.DialTimeout("tcp", c1, time.Second); err != nil {
		t.Fatalf("cluster port: %v", err)
	} else {
		c.Close()
	}
	waitFor(t, 10*time.Second, "alertmanager peers", func() error {
		var st amStatus
		if err := getJSON(web1, "/api/v2/status", &st); err != nil {
			return err
		}
		if st.VersionInfo.Version != "v8.1.0" || st.Cluster.Status != "ready" || !strings.Contains(st.Config["original"], "blackhole") {
			t.Fatalf("status %+v", st)
		}
		var peers []string
		for _, p := range st.Cluster.Peers {
			peers = append(peers, p.Address)
		}
		if want := []string{c1, c2}; !slices.Equal(peers, sortStrings(want)) {
			return fmt.Errorf("peers %v, want %v", peers, want)
		}
		return nil
	})

	t.Run("busy ports", func(t *testing.T) {
		c := cfg
		c.StoragePath = filepath.Join(dir, "busy")
		c.ListenAddr = busy(t)
		wantBusyPortError(t, RunAlertmanager(context.Background(), c, io.Discard), c.ListenAddr)
		c.ListenAddr, c.ClusterListenAddr = freeAddr(t), c1
		wantBusyPortError(t, RunAlertmanager(context.Background(), c, io.Discard), c1)
	})

	t.Run("refuses bad config", func(t *testing.T) {
		for text, want := range map[string]string{
			"receivers: [{name: a}]":                                  "no route provided",
			"route: {group_by: [a]}":                                  "must specify a default receiver",
			"route: {receiver: b}\nreceivers: [{name: a}]":            `undefined receiver "b"`,
			"route: {receiver: a}\nreceivers: [{name: a}, {name: a}]": "not unique",
		} {
			bad := filepath.Join(t.TempDir(), "am.yml")
			writeFile(t, bad, text)
			c := cfg
			c.ConfigFile = bad
			if err := RunAlertmanager(context.Background(), c, io.Discard); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%q: %v, want %q", text, err, want)
			}
		}
	})
}

func sortStrings(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// grafanaHome lays out a grafana home path like the package's grafana.tar.gz.
func grafanaHome(t *testing.T) string {
	home := t.TempDir()
	writeFile(t, filepath.Join(home, "conf", "defaults.ini"), "[paths]\ndata = data\nlogs = data/log\nprovisioning = conf/provisioning\n[server]\nhttp_port = 3000\n[log]\nmode = console file\n")
	writeFile(t, filepath.Join(home, "dashboards", "dm.json"), `{"uid":"dm","title":"Test-Cluster-DM","tags":["dm"],"panels":[]}`)
	writeFile(t, filepath.Join(home, "dashboards", "broken.json"), `{`)
	return home
}

func TestGrafana(t *testing.T) {
	home := grafanaHome(t)
	deploy := t.TempDir()
	addr := freeAddr(t)
	host, port, _ := net.SplitHostPort(addr)
	ini := filepath.Join(deploy, "conf", "grafana.ini")
	writeFile(t, ini, "[paths]\ndata = "+deploy+"/data\nlogs = "+deploy+"/log\nprovisioning = "+deploy+"/provisioning\n"+
		"[server]\nhttp_addr = "+host+"\nhttp_port = "+port+"\n[security]\nadmin_user = admin\nadmin_password = pw\n[log]\nmode = file\n")
	writeFile(t, filepath.Join(deploy, "provisioning", "datasources", "datasource.yml"),
		"apiVersion: 1\ndatasources:\n  - name: test-cluster\n    type: prometheus\n    access: proxy\n    url: http://10.0.0.1:9090\n    isDefault: true\n")
	writeFile(t, filepath.Join(deploy, "provisioning", "dashboards", "dashboard.yml"),
		"apiVersion: 1\nproviders:\n  - name: test-cluster\n    folder: test-cluster\n    type: file\n    options:\n      path: dashboards\n")
	cfg, err := ParseGrafanaFlags([]string{"--homepath=" + home, "--config=" + ini, "--pidfile=" + filepath.Join(deploy, "grafana.pid")})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Version = "v8.1.0"
	out := &testenv.Buffer{}
	stop := startProc(t, func(ctx context.Context) error { return RunGrafana(ctx, cfg, out) })
	base := "http://" + addr
	waitHTTP(t, base+"/api/health")
	var health map[string]string
	if err := json.Unmarshal(wantGET(t, base+"/api/health", 200, ""), &health); err != nil || health["database"] != "ok" || health["version"] != "v8.1.0" {
		t.Fatalf("health %v %v", health, err)
	}
	wantGET(t, base+"/api/datasources", 401, "Unauthorized")
	wantGET(t, "http://admin:pw@"+addr+"/api/datasources", 200, `"url":"http://10.0.0.1:9090"`)
	body := wantGET(t, "http://admin:pw@"+addr+"/api/search", 200, `"title":"Test-Cluster-DM"`)
	if strings.Count(string(body), `"uid"`) != 1 || !strings.Contains(string(body), `"url":"/d/dm/test-cluster-dm"`) {
		t.Errorf("search %s", body)
	}
	wantMarkers(t, filepath.Join(deploy, "data"), 1)
	if b, err := os.ReadFile(filepath.Join(deploy, "grafana.pid")); err != nil || string(b) != strconv.Itoa(os.Getpid()) {
		t.Errorf("pid file %q %v", b, err)
	}

	t.Run("busy port", func(t *testing.T) {
		c := cfg
		c.PidFile = ""
		c.Overrides = map[string]string{"server.http_port": port, "paths.data": filepath.Join(t.TempDir(), "data")}
		wantBusyPortError(t, RunGrafana(context.Background(), c, io.Discard), addr)
	})

	t.Run("refuses bad provisioning", func(t *testing.T) {
		prov := t.TempDir()
		writeFile(t, filepath.Join(prov, "datasources", "ds.yaml"), "datasources: [")
		c := cfg
		c.Overrides = map[string]string{"paths.provisioning": prov}
		if err := RunGrafana(context.Background(), c, io.Discard); err == nil || !strings.Contains(err.Error(), "datasource provisioning error") {
			t.Fatalf("err %v", err)
		}
	})

	stop()
	logText, _ := os.ReadFile(filepath.Join(deploy, "log", "grafana.log"))
	for _, w := range []string{`"message":"HTTP Server Listen"`, `"datasources":1`, `"dashboards":1`, `failed to load dashboard`, `"message":"grafana-server stopped"`} {
		if !strings.Contains(string(logText), w) {
			t.Errorf("grafana.log lacks %s:\n%s", w, logText)
		}
	}
	if out.String() != "" {
		t.Errorf("[log] mode = file, yet grafana wrote to stdout: %s", out)
	}
	if _, err := os.Stat(filepath.Join(deploy, "grafana.pid")); err == nil {
		t.Errorf("pid file left after stop")
	}
}

// TestStartDelay: the marker is written at once, the port opens only after
// the delay, and a stop during the delay is clean.
func TestStartDelay(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	const delay = 1500 * time.Millisecond
	start := time.Now()
	startProc(t, func(ctx context.Context) error {
		return RunMaster(ctx, MasterConfig{Name: "m1", MasterAddr: addr, PeerURLs: "http://" + freeAddr(t),
			DataDir: filepath.Join(dir, "m1"), StartDelay: delay})
	})
	waitFor(t, 5*time.Second, "start marker", func() error {
		if m, _ := filepath.Glob(filepath.Join(dir, "m1", "started-*")); len(m) != 1 {
			return fmt.Errorf("markers %v", m)
		}
		return nil
	})
	if _, _, err := httpDo("GET", "http://"+addr+"/status"); err == nil && time.Since(start) < delay {
		t.Fatalf("dm-master answered %v after start, before its delay of %v", time.Since(start), delay)
	}
	waitHTTP(t, "http://"+addr+"/status")
	if d := time.Since(start); d < delay {
		t.Fatalf("answered after %v, want at least %v", d, delay)
	}

	t.Run("stop during the delay", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		w := freeAddr(t)
		go func() {
			done <- RunWorker(ctx, WorkerConfig{Name: "w1", WorkerAddr: w, Join: addr, DataDir: filepath.Join(dir, "w1"), StartDelay: time.Hour})
		}()
		waitFor(t, 5*time.Second, "worker start marker", func() error {
			if m, _ := filepath.Glob(filepath.Join(dir, "w1", "started-*")); len(m) != 1 {
				return fmt.Errorf("markers %v", m)
			}
			return nil
		})
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("stop during delay: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("worker did not stop during its start delay")
		}
	})
}

func TestMainDispatch(t *testing.T) {
	t.Setenv("DMSIM_VERSION", "v7.5.0")
	tests := []struct {
		program string
		args    []string
		code    int
		stdout  string
		stderr  string
	}{
		{program: "dmsim", args: []string{"dmctl", "-V"}, stdout: "Release Version: v7.5.0\n"},
		{program: "dmctl", stdout: "Release Version: v7.5.0\n"},
		{program: "dmctl", args: []string{"--master-addr=a:1", "query-status"}, code: 2, stderr: "only prints its version"},
		{program: "dm-master", args: []string{"-V"}, stdout: "Release Version: v7.5.0\n"},
		{program: "prometheus", args: []string{"--version"}, stdout: "prometheus, version v7.5.0 "},
		{program: "alertmanager", args: []string{"--version"}, stdout: "alertmanager, version v7.5.0 "},
		{program: "grafana-server", args: []string{"-v"}, stdout: "Version v7.5.0 "},
		{program: "grafana-cli", args: []string{"-v"}, stdout: "Grafana CLI version v7.5.0 "},
		{program: "prometheus", args: []string{"-h"}, stdout: "--storage.tsdb.path=VALUE"},
		{program: "grafana-server", args: []string{"-h"}, stdout: "-homepath"},
		{program: "prometheus", args: []string{"--bogus"}, code: 2, stderr: "prometheus: unknown long flag '--bogus'"},
		{program: "alertmanager", args: []string{"--config.file=" + filepath.Join(t.TempDir(), "nope.yml"), "--web.listen-address=127.0.0.1:0",
			"--cluster.listen-address=", "--storage.path=" + t.TempDir()}, code: 1, stderr: "nope.yml: no such file"},
		{program: "tidb-server", code: 2, stderr: `unknown program "tidb-server"`},
		{program: "dmsim", code: 2, stderr: "usage: dmsim <program>"},
	}
	for _, tt := range tests {
		t.Run(tt.program+" "+strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := Main(tt.program, tt.args, &out, &errOut)
			if code != tt.code || !strings.Contains(out.String(), tt.stdout) || !strings.Contains(errOut.String(), tt.stderr) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want %d, %q, %q", code, out.String(), errOut.String(), tt.code, tt.stdout, tt.stderr)
			}
		})
	}
}
