package dmsim

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParsePrometheusFlags(t *testing.T) {
	defaults := PrometheusConfig{ConfigFile: "prometheus.yml", ListenAddr: "0.0.0.0:9090", StoragePath: "data/", Retention: "15d", LogLevel: "info"}
	with := func(f func(*PrometheusConfig)) PrometheusConfig { c := defaults; f(&c); return c }
	tests := []struct {
		name    string
		args    []string
		want    PrometheusConfig
		wantErr string
	}{
		{name: "defaults", want: defaults},
		{name: "tiup run script",
			args: []string{`--config.file=/d/conf/prometheus.yml`, `--web.listen-address=:9090`, `--web.external-url=http://10.0.0.1:9090/`,
				`--web.enable-admin-api`, `--log.level=info`, `--storage.tsdb.path=/d/data`, `--storage.tsdb.retention=30d`},
			want: with(func(c *PrometheusConfig) {
				c.ConfigFile, c.ListenAddr, c.ExternalURL, c.StoragePath, c.Retention = "/d/conf/prometheus.yml", ":9090", "http://10.0.0.1:9090/", "/d/data", "30d"
			})},
		{name: "values after a space, retention.time wins, lifecycle",
			args: []string{"--config.file", "p.yml", "--storage.tsdb.retention.time", "1y2w", "--storage.tsdb.retention=3d", "--web.enable-lifecycle", "--enable-feature=a", "--enable-feature=b"},
			want: with(func(c *PrometheusConfig) { c.ConfigFile, c.Retention, c.EnableLifecycle = "p.yml", "1y2w", true })},
		{name: "no- turns a boolean off", args: []string{"--web.enable-lifecycle", "--no-web.enable-lifecycle"}, want: defaults},
		{name: "boolean with a value", args: []string{"--web.enable-lifecycle=true"}, want: with(func(c *PrometheusConfig) { c.EnableLifecycle = true })},
		{name: "route prefix from external url", args: []string{"--web.external-url=http://h:9090/prom/", "--log.level=debug"},
			want: with(func(c *PrometheusConfig) { c.ExternalURL, c.LogLevel = "http://h:9090/prom/", "debug" })},
		{name: "version", args: []string{"--version"}, want: with(func(c *PrometheusConfig) { c.PrintVersion = true })},
		{name: "unknown flag", args: []string{"--config=p.yml"}, wantErr: "unknown long flag '--config'"},
		{name: "single dash", args: []string{"-config.file=p.yml"}, wantErr: "unknown short flag '-c'"},
		{name: "missing value", args: []string{"--config.file"}, wantErr: "expected argument for flag '--config.file'"},
		{name: "repeated", args: []string{"--log.level=info", "--log.level=warn"}, wantErr: "cannot be repeated"},
		{name: "positional", args: []string{"serve"}, wantErr: "unexpected serve"},
		{name: "bad retention", args: []string{"--storage.tsdb.retention=30days"}, wantErr: "--storage.tsdb.retention"},
		{name: "bad log level", args: []string{"--log.level=verbose"}, wantErr: "--log.level"},
		{name: "bad listen address", args: []string{"--web.listen-address=9090"}, wantErr: "--web.listen-address"},
		{name: "bad external url", args: []string{"--web.external-url=10.0.0.1:9090"}, wantErr: "--web.external-url"},
		{name: "bad boolean", args: []string{"--web.enable-lifecycle=yes"}, wantErr: "want true or false"},
		{name: "help", args: []string{"-h"}, wantErr: "help requested"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePrometheusFlags(tt.args)
			checkParse(t, got, err, tt.want, tt.wantErr)
		})
	}
}

func TestParseAlertmanagerFlags(t *testing.T) {
	defaults := AlertmanagerConfig{ConfigFile: "alertmanager.yml", StoragePath: "data/", Retention: "120h", ListenAddr: ":9093",
		ClusterListenAddr: "0.0.0.0:9094", LogLevel: "info"}
	with := func(f func(*AlertmanagerConfig)) AlertmanagerConfig { c := defaults; f(&c); return c }
	tests := []struct {
		name    string
		args    []string
		want    AlertmanagerConfig
		wantErr string
	}{
		{name: "defaults", want: defaults},
		{name: "tiup run script",
			args: []string{`--config.file=conf/alertmanager.yml`, `--storage.path=/d/data`, `--data.retention=120h`, `--log.level=info`,
				`--web.listen-address=10.0.0.1:9093`, `--web.external-url=http://10.0.0.1:9093`, `--cluster.peer=10.0.0.2:9094`,
				`--cluster.peer`, `10.0.0.3:9094`, `--cluster.listen-address=10.0.0.1:9094`},
			want: with(func(c *AlertmanagerConfig) {
				c.ConfigFile, c.StoragePath, c.ListenAddr, c.ExternalURL = "conf/alertmanager.yml", "/d/data", "10.0.0.1:9093", "http://10.0.0.1:9093"
				c.ClusterPeers, c.ClusterListenAddr = []string{"10.0.0.2:9094", "10.0.0.3:9094"}, "10.0.0.1:9094"
			})},
		{name: "empty cluster address turns clustering off", args: []string{"--cluster.listen-address="},
			want: with(func(c *AlertmanagerConfig) { c.ClusterListenAddr = "" })},
		{name: "accepted flags", args: []string{"--cluster.advertise-address=10.0.0.1:9094", "--alerts.gc-interval=30m", "--cluster.allow-insecure-public-advertise-address-discovery"},
			want: with(func(c *AlertmanagerConfig) { c.ClusterAdvertiseAddr = "10.0.0.1:9094" })},
		{name: "version", args: []string{"--version"}, want: with(func(c *AlertmanagerConfig) { c.PrintVersion = true })},
		{name: "bad peer", args: []string{"--cluster.peer=10.0.0.2"}, wantErr: "--cluster.peer"},
		{name: "bad retention", args: []string{"--data.retention=5d"}, wantErr: "--data.retention"},
		{name: "unknown flag", args: []string{"--storage.tsdb.path=/d"}, wantErr: "unknown long flag '--storage.tsdb.path'"},
		{name: "repeated non-list", args: []string{"--config.file=a", "--config.file=b"}, wantErr: "cannot be repeated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAlertmanagerFlags(tt.args)
			checkParse(t, got, err, tt.want, tt.wantErr)
		})
	}
}

func TestParseGrafanaFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    GrafanaConfig
		wantErr string
	}{
		{name: "none"},
		{name: "tiup run script", args: []string{`--homepath=/d/bin`, `--config=/d/conf/grafana.ini`},
			want: GrafanaConfig{HomePath: "/d/bin", ConfigFile: "/d/conf/grafana.ini"}},
		{name: "cfg arguments", args: []string{"-homepath", "/h", "--pidfile=/p/g.pid", "-packaging=deb", "cfg:default.paths.logs=/l",
			"cfg:server.http_port=3001", "cfg:default.log.file.level=debug", "web", "cfg:noequals"},
			want: GrafanaConfig{HomePath: "/h", PidFile: "/p/g.pid", Defaults: map[string]string{"paths.logs": "/l", "log.file.level": "debug"},
				Overrides: map[string]string{"server.http_port": "3001"}}},
		{name: "flags after an argument are arguments", args: []string{"cfg:paths.data=/x", "--config=/c.ini"},
			want: GrafanaConfig{Overrides: map[string]string{"paths.data": "/x"}}},
		{name: "version", args: []string{"-v"}, want: GrafanaConfig{PrintVersion: true}},
		{name: "unknown flag", args: []string{"--config.file=/c.ini"}, wantErr: "flag provided but not defined: -config.file"},
		{name: "cfg without section", args: []string{"cfg:http_port=1"}, wantErr: "want cfg:[default.]<section>.<key>=<value>"},
		{name: "help", args: []string{"--help"}, wantErr: "help requested"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseGrafanaFlags(tt.args)
			checkParse(t, got, err, tt.want, tt.wantErr)
		})
	}
}

func checkParse[T any](t *testing.T, got T, err error, want T, wantErr string) {
	t.Helper()
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("err %v, want %q", err, wantErr)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
}

func TestCheckPromDuration(t *testing.T) {
	for _, ok := range []string{"15d", "30d", "1h30m", "1y2w3d4h5m6s7ms", "90s", "500ms", "0"} {
		if err := checkPromDuration(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"d", "15", "1m1h", "1d1d", "15 d", "-1d", "1.5h"} {
		if err := checkPromDuration(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestGrafanaSettings: defaults.ini < cfg:default.* < --config < cfg:*,
// paths relative to the home path.
func TestGrafanaSettings(t *testing.T) {
	home := t.TempDir()
	writeFile(t, filepath.Join(home, "conf", "defaults.ini"), `
app_mode = production
[paths]
data = data
logs = data/log
provisioning = conf/provisioning
[server]
http_addr =
http_port = 3000
[security]
admin_user = admin
admin_password = admin ; inline comment
`)
	custom := filepath.Join(t.TempDir(), "grafana.ini")
	writeFile(t, custom, "[server]\nhttp_port = 3001\nhttp_addr = \"127.0.0.1\"\n[paths]\nlogs = /var/log/g\n[log]\nmode = file\n")

	cfg := GrafanaConfig{HomePath: home, ConfigFile: custom,
		Defaults:  map[string]string{"paths.logs": "/ignored", "paths.data": "/d/data"},
		Overrides: map[string]string{"security.admin_password": "s3cret"}}
	got, err := cfg.Settings()
	if err != nil {
		t.Fatal(err)
	}
	want := GrafanaSettings{HomePath: home, ConfigFiles: []string{filepath.Join(home, "conf", "defaults.ini"), custom},
		HTTPAddr: "127.0.0.1", HTTPPort: 3001, DataPath: "/d/data", LogsPath: "/var/log/g",
		ProvisioningPath: filepath.Join(home, "conf", "provisioning"), LogMode: "file", LogLevel: "info",
		AdminUser: "admin", AdminPassword: "s3cret"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	if a := got.ListenAddr(); a != "127.0.0.1:3001" {
		t.Errorf("listen addr %q", a)
	}

	if _, err := (GrafanaConfig{HomePath: t.TempDir()}).Settings(); err == nil || !strings.Contains(err.Error(), "could not find config defaults") {
		t.Errorf("no defaults.ini: %v", err)
	}
	if _, err := (GrafanaConfig{HomePath: home, ConfigFile: "/nope.ini"}).Settings(); err == nil || !strings.Contains(err.Error(), "/nope.ini") {
		t.Errorf("missing --config: %v", err)
	}
	if _, err := (GrafanaConfig{HomePath: home, Overrides: map[string]string{"server.http_port": "http"}}).Settings(); err == nil {
		t.Errorf("bad port accepted")
	}
}

// TestStartDelayConfig: the config key wins over the environment; bad
// values are refused.
func TestStartDelayConfig(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "dm-master.toml")
	writeFile(t, conf, `sim-start-delay = "3s"`+"\n")
	t.Setenv(StartDelayEnv, "")
	if c, err := ParseMasterFlags([]string{"--config", conf}); err != nil || c.StartDelay != 3*time.Second {
		t.Fatalf("config key: %v %v", c.StartDelay, err)
	}
	t.Setenv(StartDelayEnv, "250ms")
	if c, err := ParseMasterFlags([]string{"--config", conf}); err != nil || c.StartDelay != 3*time.Second {
		t.Fatalf("config key over env: %v %v", c.StartDelay, err)
	}
	if c, err := ParseWorkerFlags([]string{"--join=127.0.0.1:1"}); err != nil || c.StartDelay != 250*time.Millisecond {
		t.Fatalf("env: %v %v", c.StartDelay, err)
	}
	t.Setenv(StartDelayEnv, "soon")
	if _, err := ParseWorkerFlags([]string{"--join=127.0.0.1:1"}); err == nil || !strings.Contains(err.Error(), StartDelayEnv) {
		t.Fatalf("bad env accepted: %v", err)
	}
	t.Setenv(StartDelayEnv, "")
	writeFile(t, conf, `sim-start-delay = "-1s"`+"\n")
	if _, err := ParseMasterFlags([]string{"--config", conf}); err == nil || !strings.Contains(err.Error(), "sim-start-delay") {
		t.Fatalf("negative delay accepted: %v", err)
	}
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}
