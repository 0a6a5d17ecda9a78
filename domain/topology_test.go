package domain

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// mustParseTopology parses a topology that the test expects to be valid.
func mustParseTopology(t *testing.T, text string) *Topology {
	t.Helper()
	topo, err := ParseTopology(text)
	if err != nil {
		t.Fatalf("ParseTopology: %v\n%s", err, text)
	}
	return topo
}

// topoText joins lines into a topology text, so that tests can count lines.
func topoText(ls ...string) string { return strings.Join(ls, "\n") + "\n" }

func TestParseTopologyFullExample(t *testing.T) {
	text, err := os.ReadFile("testdata/topology/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	topo := mustParseTopology(t, string(text))

	wantGlobal := GlobalOptions{
		User: "tidb", SSHPort: 22, DeployDir: "/dm/deploy", DataDir: "/dm/data", LogDir: "log",
		Arch: "amd64", OS: "linux", ServiceManager: "systemd",
	}
	if topo.Global != wantGlobal {
		t.Errorf("Global =\n %+v, want\n %+v", topo.Global, wantGlobal)
	}
	wantConfigs := map[string]map[string]any{
		"master": {"log-level": "info", "rpc-timeout": "30s", "rpc-rate-limit": 10.0, "rpc-rate-burst": 40},
		"worker": {"log-level": "info", "keepalive-ttl": 60},
	}
	if !reflect.DeepEqual(topo.ServerConfigs, wantConfigs) {
		t.Errorf("ServerConfigs = %#v, want %#v", topo.ServerConfigs, wantConfigs)
	}

	m := func(host, name string, port, peer, line int, deploy, data, log string, config map[string]any) Instance {
		return Instance{ID: host + ":" + itoa(port), Name: name, Role: RoleMaster, Host: host, SSHPort: 22, Port: port, PeerPort: peer,
			DeployDir: deploy, DataDir: data, LogDir: log, Config: config, Arch: "amd64", OS: "linux", Line: line}
	}
	want := []Instance{
		m("198.18.0.11", "master1", 8261, 8291, 22, "/dm/deploy/dm-master-8261", "/dm/data/dm-master-8261", "/dm/deploy/dm-master-8261/log",
			map[string]any{"log-level": "info", "rpc-timeout": "30s"}),
		m("198.18.0.12", "master2", 8261, 8291, 35, "/dm/deploy/dm-master-8261", "/dm/data/dm-master-8261", "/dm/deploy/dm-master-8261/log", nil),
		m("198.18.0.13", "master3", 18261, 18291, 37, "/dm/deploy/dm-master-18261", "/dm/data/dm-master-18261", "/dm/deploy/dm-master-18261/log", nil),
		{ID: "198.18.0.11:8262", Name: "dm-198.18.0.11-8262", Role: RoleWorker, Host: "198.18.0.11", SSHPort: 22, Port: 8262,
			DeployDir: "/dm/deploy/dm-worker-8262", DataDir: "/dm/data/dm-worker-8262", LogDir: "/dm/deploy/dm-worker-8262/log",
			Config: map[string]any{"log-level": "info"}, Arch: "amd64", OS: "linux", Line: 43},
		{ID: "198.18.0.12:8262", Name: "worker2", Role: RoleWorker, Host: "198.18.0.12", SSHPort: 22, Port: 8262,
			DeployDir: "/dm/deploy/dm-worker-8262", DataDir: "/dm/data/dm-worker-8262", LogDir: "/dm/deploy/dm-worker-8262/log",
			Arch: "amd64", OS: "linux", Line: 51},
		{ID: "198.18.0.13:8262", Name: "worker3", Role: RoleWorker, Host: "198.18.0.13", SSHPort: 22, Port: 8262,
			DeployDir: "/dm/deploy/dm-worker-8262", DataDir: "/dm/data/dm-worker-8262", LogDir: "/dm/deploy/dm-worker-8262/log",
			Arch: "amd64", OS: "linux", Line: 53},
		{ID: "198.18.0.14:9090", Name: "prometheus-198.18.0.14-9090", Role: RolePrometheus, Host: "198.18.0.14", SSHPort: 22, Port: 9090,
			DeployDir: "/dm/deploy/prometheus-9090", DataDir: "/dm/data/prometheus-9090", LogDir: "/dm/deploy/prometheus-9090/log",
			Arch: "amd64", OS: "linux", Line: 59},
		{ID: "198.18.0.14:3000", Name: "grafana-198.18.0.14-3000", Role: RoleGrafana, Host: "198.18.0.14", SSHPort: 22, Port: 3000,
			DeployDir: "/dm/deploy/grafana-3000", DataDir: "/dm/data/grafana-3000", LogDir: "/dm/deploy/grafana-3000/log",
			Arch: "amd64", OS: "linux", Line: 68},
		{ID: "198.18.0.14:9093", Name: "alertmanager-198.18.0.14-9093", Role: RoleAlertmanager, Host: "198.18.0.14", SSHPort: 22, Port: 9093, PeerPort: 9094,
			DeployDir: "/dm/deploy/alertmanager-9093", DataDir: "/dm/data/alertmanager-9093", LogDir: "/dm/deploy/alertmanager-9093/log",
			Arch: "amd64", OS: "linux", Line: 73},
	}
	if len(topo.Instances) != len(want) {
		t.Fatalf("got %d instances, want %d: %+v", len(topo.Instances), len(want), topo.Instances)
	}
	for i := range want {
		if !reflect.DeepEqual(topo.Instances[i], want[i]) {
			t.Errorf("instance %d =\n %+v, want\n %+v", i, topo.Instances[i], want[i])
		}
	}

	// The topology is stored in events as JSON: it must encode, in
	// snake_case.
	b, err := json.Marshal(topo)
	if err != nil {
		t.Fatalf("json.Marshal: %v", err)
	}
	for _, key := range []string{`"global":`, `"service_manager":"systemd"`, `"ssh_port":22`, `"deploy_dir":"/dm/deploy"`,
		`"server_configs":`, `"instances":`, `"id":"198.18.0.11:8261"`, `"peer_port":8291`, `"line":22`, `"role":"dm-master"`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("JSON lacks %s: %s", key, b)
		}
	}
	var back Topology
	if err := json.Unmarshal(b, &back); err != nil || len(back.Instances) != len(want) || back.Instances[0].DeployDir != want[0].DeployDir {
		t.Errorf("JSON round trip: %v, %+v", err, back)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestParseTopologyDefaults is the specification of defaults and of the
// directory rules, which follow tiup's: the user's home is /home/<user>; a
// relative global deploy_dir is inside it; an instance without deploy_dir
// gets <global deploy_dir>/<component>-<port>; an instance without
// data_dir/log_dir gets <global dir>/<component>-<port> when the global one
// is absolute, else <deploy_dir>/<global dir>; relative instance dirs are
// inside the user's home (deploy_dir) or the deploy_dir (data_dir, log_dir).
func TestParseTopologyDefaults(t *testing.T) {
	type want struct {
		ID, Name                   string
		SSHPort, Port, PeerPort    int
		DeployDir, DataDir, LogDir string
	}
	tests := []struct {
		name  string
		text  string
		index int // which instance to look at
		want  want
	}{
		{
			name: "all defaults",
			text: topoText("master_servers:", "  - host: 10.0.0.1"),
			want: want{"10.0.0.1:8261", "dm-10.0.0.1-8261", 22, 8261, 8291,
				"/home/tidb/deploy/dm-master-8261", "/home/tidb/deploy/dm-master-8261/data", "/home/tidb/deploy/dm-master-8261/log"},
		},
		{
			name: "relative global deploy_dir is in the user's home",
			text: topoText("global:", "  user: dm", "  deploy_dir: dm-deploy", "master_servers:", "  - host: 10.0.0.1"),
			want: want{"10.0.0.1:8261", "dm-10.0.0.1-8261", 22, 8261, 8291,
				"/home/dm/dm-deploy/dm-master-8261", "/home/dm/dm-deploy/dm-master-8261/data", "/home/dm/dm-deploy/dm-master-8261/log"},
		},
		{
			name: "absolute global dirs get a component-port directory",
			text: topoText("global:", "  deploy_dir: /dm/deploy", "  data_dir: /dm/data", "  log_dir: /dm/log", "master_servers:", "  - host: 10.0.0.1"),
			want: want{"10.0.0.1:8261", "dm-10.0.0.1-8261", 22, 8261, 8291,
				"/dm/deploy/dm-master-8261", "/dm/data/dm-master-8261", "/dm/log/dm-master-8261"},
		},
		{
			name: "relative global data_dir and log_dir are inside each deploy_dir",
			text: topoText("global:", "  deploy_dir: /dm", "  data_dir: store/d", "  log_dir: logs", "master_servers:", "  - host: 10.0.0.1"),
			want: want{"10.0.0.1:8261", "dm-10.0.0.1-8261", 22, 8261, 8291,
				"/dm/dm-master-8261", "/dm/dm-master-8261/store/d", "/dm/dm-master-8261/logs"},
		},
		{
			name: "absolute instance deploy_dir",
			text: topoText("master_servers:", "  - host: 10.0.0.1", "    deploy_dir: /opt/dm/m1"),
			want: want{"10.0.0.1:8261", "dm-10.0.0.1-8261", 22, 8261, 8291,
				"/opt/dm/m1", "/opt/dm/m1/data", "/opt/dm/m1/log"},
		},
		{
			name: "relative instance deploy_dir is in the user's home",
			text: topoText("global:", "  deploy_dir: /ignored", "master_servers:", "  - host: 10.0.0.1", "    deploy_dir: dm/m1"),
			want: want{"10.0.0.1:8261", "dm-10.0.0.1-8261", 22, 8261, 8291,
				"/home/tidb/dm/m1", "/home/tidb/dm/m1/data", "/home/tidb/dm/m1/log"},
		},
		{
			name: "relative instance data_dir and log_dir are inside its deploy_dir",
			text: topoText("global:", "  data_dir: /ignored", "master_servers:", "  - host: 10.0.0.1", "    deploy_dir: /dm/m1", "    data_dir: d1", "    log_dir: l1"),
			want: want{"10.0.0.1:8261", "dm-10.0.0.1-8261", 22, 8261, 8291,
				"/dm/m1", "/dm/m1/d1", "/dm/m1/l1"},
		},
		{
			name: "absolute instance data_dir and log_dir",
			text: topoText("master_servers:", "  - host: 10.0.0.1", "    data_dir: /ssd/m1", "    log_dir: /var/log/dm/m1"),
			want: want{"10.0.0.1:8261", "dm-10.0.0.1-8261", 22, 8261, 8291,
				"/home/tidb/deploy/dm-master-8261", "/ssd/m1", "/var/log/dm/m1"},
		},
		{
			name: "ports and ssh_port, global and per instance",
			text: topoText("global:", "  ssh_port: 2222", "master_servers:", "  - host: 10.0.0.1", "    name: m1", "    port: 9261", "    peer_port: 9291", "    ssh_port: 22022"),
			want: want{"10.0.0.1:9261", "m1", 22022, 9261, 9291,
				"/home/tidb/deploy/dm-master-9261", "/home/tidb/deploy/dm-master-9261/data", "/home/tidb/deploy/dm-master-9261/log"},
		},
		{
			name: "global ssh_port",
			text: topoText("global:", "  ssh_port: 2222", "master_servers:", "  - host: 10.0.0.1"),
			want: want{"10.0.0.1:8261", "dm-10.0.0.1-8261", 2222, 8261, 8291,
				"/home/tidb/deploy/dm-master-8261", "/home/tidb/deploy/dm-master-8261/data", "/home/tidb/deploy/dm-master-8261/log"},
		},
		{
			name:  "dm-worker",
			text:  topoText("master_servers:", "  - host: 10.0.0.1", "worker_servers:", "  - host: 10.0.0.2"),
			index: 1,
			want: want{"10.0.0.2:8262", "dm-10.0.0.2-8262", 22, 8262, 0,
				"/home/tidb/deploy/dm-worker-8262", "/home/tidb/deploy/dm-worker-8262/data", "/home/tidb/deploy/dm-worker-8262/log"},
		},
		{
			name:  "prometheus",
			text:  topoText("master_servers:", "  - host: 10.0.0.1", "monitoring_servers:", "  - host: 10.0.0.2"),
			index: 1,
			want: want{"10.0.0.2:9090", "prometheus-10.0.0.2-9090", 22, 9090, 0,
				"/home/tidb/deploy/prometheus-9090", "/home/tidb/deploy/prometheus-9090/data", "/home/tidb/deploy/prometheus-9090/log"},
		},
		{
			name:  "grafana",
			text:  topoText("master_servers:", "  - host: 10.0.0.1", "grafana_servers:", "  - host: 10.0.0.2"),
			index: 1,
			want: want{"10.0.0.2:3000", "grafana-10.0.0.2-3000", 22, 3000, 0,
				"/home/tidb/deploy/grafana-3000", "/home/tidb/deploy/grafana-3000/data", "/home/tidb/deploy/grafana-3000/log"},
		},
		{
			name:  "alertmanager: web_port and cluster_port",
			text:  topoText("master_servers:", "  - host: 10.0.0.1", "alertmanager_servers:", "  - host: 10.0.0.2"),
			index: 1,
			want: want{"10.0.0.2:9093", "alertmanager-10.0.0.2-9093", 22, 9093, 9094,
				"/home/tidb/deploy/alertmanager-9093", "/home/tidb/deploy/alertmanager-9093/data", "/home/tidb/deploy/alertmanager-9093/log"},
		},
		{
			name:  "alertmanager with its own ports",
			text:  topoText("master_servers:", "  - host: 10.0.0.1", "alertmanager_servers:", "  - host: 10.0.0.2", "    web_port: 19093", "    cluster_port: 19094"),
			index: 1,
			want: want{"10.0.0.2:19093", "alertmanager-10.0.0.2-19093", 22, 19093, 19094,
				"/home/tidb/deploy/alertmanager-19093", "/home/tidb/deploy/alertmanager-19093/data", "/home/tidb/deploy/alertmanager-19093/log"},
		},
		{
			name: "IPv6 host",
			text: topoText("master_servers:", "  - host: fd00::11"),
			want: want{"[fd00::11]:8261", "dm-fd00::11-8261", 22, 8261, 8291,
				"/home/tidb/deploy/dm-master-8261", "/home/tidb/deploy/dm-master-8261/data", "/home/tidb/deploy/dm-master-8261/log"},
		},
		{
			name: "host name",
			text: topoText("master_servers:", "  - host: dm-1.example.com"),
			want: want{"dm-1.example.com:8261", "dm-dm-1.example.com-8261", 22, 8261, 8291,
				"/home/tidb/deploy/dm-master-8261", "/home/tidb/deploy/dm-master-8261/data", "/home/tidb/deploy/dm-master-8261/log"},
		},
		{
			name: "other tiup keys are ignored",
			text: topoText("global:", "  group: tidb", "  systemd_mode: system", "  resource_control:", "    memory_limit: 4G",
				"master_servers:", "  - host: 10.0.0.1", "    numa_node: \"0\"", "    imported: true", "    resource_control: {cpu_quota: 200%}", "    v1_source_path: /x"),
			want: want{"10.0.0.1:8261", "dm-10.0.0.1-8261", 22, 8261, 8291,
				"/home/tidb/deploy/dm-master-8261", "/home/tidb/deploy/dm-master-8261/data", "/home/tidb/deploy/dm-master-8261/log"},
		},
		{
			name:  "anchors and merge keys",
			text:  topoText("master_servers:", "  - &m", "    host: 10.0.0.1", "    deploy_dir: /dm/m", "worker_servers:", "  - <<: *m", "    deploy_dir: /dm/w"),
			index: 1,
			want:  want{"10.0.0.1:8262", "dm-10.0.0.1-8262", 22, 8262, 0, "/dm/w", "/dm/w/data", "/dm/w/log"},
		},
		{
			name: "null values take the defaults",
			text: topoText("global:", "  user:", "  deploy_dir: ~", "server_configs:", "master_servers:", "  - host: 10.0.0.1", "    port:", "worker_servers:"),
			want: want{"10.0.0.1:8261", "dm-10.0.0.1-8261", 22, 8261, 8291,
				"/home/tidb/deploy/dm-master-8261", "/home/tidb/deploy/dm-master-8261/data", "/home/tidb/deploy/dm-master-8261/log"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			topo := mustParseTopology(t, tt.text)
			in := topo.Instances[tt.index]
			got := want{in.ID, in.Name, in.SSHPort, in.Port, in.PeerPort, in.DeployDir, in.DataDir, in.LogDir}
			if got != tt.want {
				t.Errorf("got\n %+v, want\n %+v", got, tt.want)
			}
			for _, d := range in.Dirs() {
				if err := ValidateRemotePath(d); err != nil {
					t.Errorf("resolved dir: %v", err)
				}
			}
		})
	}
}

func TestParseTopologyGlobal(t *testing.T) {
	topo := mustParseTopology(t, topoText("global:", "  user: dm_admin", "  arch: aarch64", "  os: Linux", "  service_manager: none",
		"master_servers:", "  - host: 10.0.0.1", "  - host: 10.0.0.2", "    arch: x86_64"))
	want := GlobalOptions{User: "dm_admin", SSHPort: 22, DeployDir: "/home/dm_admin/deploy", DataDir: "data", LogDir: "log",
		Arch: "arm64", OS: "linux", ServiceManager: ServiceManagerNone}
	if topo.Global != want {
		t.Errorf("Global = %+v, want %+v", topo.Global, want)
	}
	if a, b := topo.Instances[0].Arch, topo.Instances[1].Arch; a != "arm64" || b != "amd64" {
		t.Errorf("arch = %s, %s; want arm64 (global), amd64 (own)", a, b)
	}
	if topo.ServerConfigs != nil {
		t.Errorf("ServerConfigs = %v, want nil", topo.ServerConfigs)
	}
}

func TestParseTopologyOrderAndSharing(t *testing.T) {
	// Sections may come in any order; instances are listed masters first,
	// then workers, prometheus, grafana, alertmanager. Instances on
	// different hosts may share ports and directories; instances on one host
	// may use different ports and separate directories.
	topo := mustParseTopology(t, topoText(
		"alertmanager_servers:",
		"  - host: 10.0.0.3",
		"worker_servers:",
		"  - host: 10.0.0.1",
		"  - host: 10.0.0.2",
		"  - host: 10.0.0.1",
		"    port: 8263",
		"master_servers:",
		"  - host: 10.0.0.2",
		"  - host: 10.0.0.1",
		"grafana_servers:",
		"  - host: 10.0.0.1",
		"monitoring_servers:",
		"  - host: 10.0.0.1",
	))
	var got []string
	for _, in := range topo.Instances {
		got = append(got, string(in.Role)+" "+in.ID+" line "+itoa(in.Line))
	}
	want := []string{
		"dm-master 10.0.0.2:8261 line 9",
		"dm-master 10.0.0.1:8261 line 10",
		"dm-worker 10.0.0.1:8262 line 4",
		"dm-worker 10.0.0.2:8262 line 5",
		"dm-worker 10.0.0.1:8263 line 6",
		"prometheus 10.0.0.1:9090 line 14",
		"grafana 10.0.0.1:3000 line 12",
		"alertmanager 10.0.0.3:9093 line 2",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("instances =\n %s\nwant\n %s", strings.Join(got, "\n "), strings.Join(want, "\n "))
	}
}

func TestParseTopologyConfig(t *testing.T) {
	topo := mustParseTopology(t, topoText(
		"server_configs:",
		"  master:",
		"    log-level: debug",
		"    security:",
		"      ssl-ca: /dm/tls/ca.pem",
		"  worker: {relay-keepalive-ttl: 1800}",
		"master_servers:",
		"  - host: 10.0.0.1",
		"    config:",
		"      experimental: {openapi: true}",
		"      ports: [1, 2]",
		"      ratio: 0.5",
		"      nothing: null",
	))
	wantMaster := map[string]any{"log-level": "debug", "security": map[string]any{"ssl-ca": "/dm/tls/ca.pem"}}
	if !reflect.DeepEqual(topo.ServerConfigs["master"], wantMaster) {
		t.Errorf("server_configs.master = %#v", topo.ServerConfigs["master"])
	}
	if !reflect.DeepEqual(topo.ServerConfigs["worker"], map[string]any{"relay-keepalive-ttl": 1800}) {
		t.Errorf("server_configs.worker = %#v", topo.ServerConfigs["worker"])
	}
	wantConfig := map[string]any{"experimental": map[string]any{"openapi": true}, "ports": []any{1, 2}, "ratio": 0.5, "nothing": nil}
	if !reflect.DeepEqual(topo.Instances[0].Config, wantConfig) {
		t.Errorf("config = %#v", topo.Instances[0].Config)
	}
}

// TestParseTopologyErrors is the specification of what a topology may not
// be, with the message each mistake gets.
func TestParseTopologyErrors(t *testing.T) {
	master := topoText("master_servers:", "  - host: 10.0.0.1") // lines 1-2
	tests := []struct {
		name string
		text string
		want string
	}{
		// Structure.
		{"empty", "", "topology needs at least one dm-master in master_servers"},
		{"only a comment", "# nothing\n", "topology needs at least one dm-master in master_servers"},
		{"no master", topoText("global:", "  user: tidb", "worker_servers:", "  - host: 10.0.0.1"),
			"topology needs at least one dm-master in master_servers"},
		{"empty master list", topoText("master_servers: []"), "topology needs at least one dm-master in master_servers"},
		{"not a mapping", topoText("- host: 10.0.0.1"),
			"topology line 1: want a mapping with keys such as global and master_servers, got a list"},
		{"YAML syntax error", topoText("master_servers:", "  - host: 10.0.0.1", "    port: [8261", "worker_servers:"),
			"topology line 3: did not find expected ',' or ']'"},
		{"YAML syntax error on line 1", "master_servers: : x\n",
			"topology line 1: mapping values are not allowed in this context"},
		{"tab indentation", topoText("master_servers:", "\t- host: 10.0.0.1"),
			"topology line 2: found character that cannot start any token"},
		{"undefined alias", topoText("master_servers:", "  - host: 10.0.0.1", "    port: *p"),
			"topology line 3: alias *p refers to an anchor &p that is not defined before it"},
		{"two documents", topoText("master_servers:", "  - host: 10.0.0.1", "---", "worker_servers: []"),
			"topology line 3: only one YAML document is allowed"},
		{"control character", "master_servers:\n  - host: 10.0.0.1\x07\n", "topology line 2: control character U+0007 is not allowed"},
		{"invalid UTF-8", "master_servers:\n  - host: \xff\n", "topology line 2: the text is not valid UTF-8"},
		{"unknown top-level key", topoText("global:", "  user: tidb", "maser_servers:", "  - host: 10.0.0.1"),
			`topology line 3: unknown key "maser_servers"; did you mean "master_servers"?`},
		{"unknown top-level key far from any", master + "pd_servers: []\n", `topology line 3: unknown key "pd_servers"`},
		{"monitored is not supported", master + "monitored:\n  node_exporter_port: 9100\n",
			`topology line 3: key "monitored" is not supported: dmgr does not deploy node_exporter or blackbox_exporter; remove the section`},
		{"repeated top-level key", master + "master_servers: []\n", `topology line 3: key "master_servers" is repeated (first at line 1)`},
		{"repeated instance key", topoText("master_servers:", "  - host: 10.0.0.1", "    port: 1", "    port: 2"),
			`topology line 4: master_servers[0]: key "port" is repeated (first at line 3)`},
		{"section not a list", topoText("master_servers:", "  host: 10.0.0.1"),
			"topology line 2: master_servers: want a list of instances, got a mapping"},
		{"instance not a mapping", topoText("master_servers:", "  - 10.0.0.1"),
			`topology line 2: master_servers[0]: want a mapping with at least a host, got "10.0.0.1"`},
		{"global not a mapping", topoText("global: tidb") + master, `topology line 1: global: want a mapping, got "tidb"`},

		// Types.
		{"port is not a number", topoText("master_servers:", "  - host: 10.0.0.1", "", "    port: abc"),
			`topology line 4: master_servers[0].port: want a number, got "abc"`},
		{"quoted port", topoText("master_servers:", "  - host: 10.0.0.1", "    port: \"8261\""),
			`topology line 3: master_servers[0].port: want a number, got "8261"`},
		{"fractional port", topoText("master_servers:", "  - host: 10.0.0.1", "    peer_port: 8291.5"),
			`topology line 3: master_servers[0].peer_port: want a number, got "8291.5"`},
		{"ssh_port a list", topoText("global:", "  ssh_port: [22]") + master, "topology line 2: global.ssh_port: want a number, got a list"},
		{"host a mapping", topoText("master_servers:", "  - host: {ip: 10.0.0.1}"),
			"topology line 2: master_servers[0].host: want a string, got a mapping"},
		{"config not a mapping", topoText("master_servers:", "  - host: 10.0.0.1", "    config: log-level=info"),
			`topology line 3: master_servers[0].config: want a mapping, got "log-level=info"`},
		{"config with NaN", topoText("master_servers:", "  - host: 10.0.0.1", "    config:", "      ratio: .nan"),
			"topology line 4: master_servers[0].config.ratio: .nan is not a finite number"},
		{"server_configs unknown key", topoText("server_configs:", "  tidb: {}") + master,
			`topology line 2: server_configs: unknown key "tidb": use master or worker`},
		{"server_configs.worker not a mapping", topoText("server_configs:", "  worker: [a]") + master,
			"topology line 2: server_configs.worker: want a mapping, got a list"},

		// Values.
		{"missing host", topoText("master_servers:", "  - host: 10.0.0.1", "  - name: m2", "    port: 8261"),
			"topology line 3: master_servers[1]: host is required"},
		{"missing worker host", master + topoText("worker_servers:", "  - port: 8262"),
			"topology line 4: worker_servers[0]: host is required"},
		{"host with a space", topoText("master_servers:", "  - host: 10.0.0.1 x"),
			`topology line 2: master_servers[0].host: host "10.0.0.1 x" is invalid: use an IPv4 or IPv6 address or a host name of letters, digits, '-' and '.'`},
		{"host with a shell command", topoText("master_servers:", "  - host: \"h;reboot\""),
			`topology line 2: master_servers[0].host: host "h;reboot" is invalid: use an IPv4 or IPv6 address or a host name of letters, digits, '-' and '.'`},
		{"IPv6 zone", topoText("master_servers:", "  - host: fe80::1%eth0"),
			`topology line 2: master_servers[0].host: host "fe80::1%eth0" is invalid: IPv6 zones are not supported; use an IPv4 or IPv6 address or a host name of letters, digits, '-' and '.'`},
		{"port out of range", topoText("master_servers:", "  - host: 10.0.0.1", "    port: 70000"),
			"topology line 3: master_servers[0].port: port 70000 is out of range: use 1-65535"},
		{"port zero", topoText("master_servers:", "  - host: 10.0.0.1", "alertmanager_servers:", "  - host: 10.0.0.1", "    cluster_port: 0"),
			"topology line 5: alertmanager_servers[0].cluster_port: port 0 is out of range: use 1-65535"},
		{"ssh_port out of range", topoText("master_servers:", "  - host: 10.0.0.1", "    ssh_port: -22"),
			"topology line 3: master_servers[0].ssh_port: port -22 is out of range: use 1-65535"},
		{"invalid user", topoText("global:", "  user: Root") + master,
			`topology line 2: global.user: user "Root" is invalid: use a login name of up to 32 lower-case letters, digits, '_' or '-', starting with a letter or '_'`},
		{"user with a shell command", topoText("global:", "  user: \"tidb;id\"") + master,
			`topology line 2: global.user: user "tidb;id" is invalid: use a login name of up to 32 lower-case letters, digits, '_' or '-', starting with a letter or '_'`},
		{"invalid name", topoText("master_servers:", "  - host: 10.0.0.1", "    name: master 1"),
			`topology line 3: master_servers[0].name: name "master 1" is invalid: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit`},
		{"unsupported arch", topoText("global:", "  arch: mips") + master, `topology line 2: global.arch: arch "mips" is not supported: use amd64 or arm64`},
		{"unsupported os", topoText("master_servers:", "  - host: 10.0.0.1", "    os: windows"),
			`topology line 3: master_servers[0].os: os "windows" is not supported: use linux`},
		{"unknown service manager", topoText("global:", "  service_manager: upstart") + master,
			`topology line 2: global.service_manager: "upstart" is not supported: use systemd or none`},

		// Directories: shell metacharacters and escapes are refused.
		{"deploy_dir with ; rm -rf", topoText("master_servers:", "  - host: 10.0.0.1", `    deploy_dir: "/x; rm -rf /"`),
			`topology line 3: master_servers[0].deploy_dir: path "/x; rm -rf /" is invalid: it contains ';'; use only letters, digits and . _ / + @ -`},
		{"deploy_dir with $(reboot)", topoText("master_servers:", "  - host: 10.0.0.1", `    deploy_dir: "/dm/$(reboot)"`),
			`topology line 3: master_servers[0].deploy_dir: path "/dm/$(reboot)" is invalid: it contains '$'; use only letters, digits and . _ / + @ -`},
		{"deploy_dir with a quote", topoText("master_servers:", "  - host: 10.0.0.1", `    deploy_dir: "/dm/it's"`),
			`topology line 3: master_servers[0].deploy_dir: path "/dm/it's" is invalid: it contains '\''; use only letters, digits and . _ / + @ -`},
		{"deploy_dir with a newline", topoText("master_servers:", "  - host: 10.0.0.1", `    deploy_dir: "/dm/a\nreboot"`),
			`topology line 3: master_servers[0].deploy_dir: path "/dm/a\nreboot" is invalid: it contains a newline; use only letters, digits and . _ / + @ -`},
		{"deploy_dir with a backtick", topoText("master_servers:", "  - host: 10.0.0.1", "    deploy_dir: \"/dm/`id`\""),
			"topology line 3: master_servers[0].deploy_dir: path \"/dm/`id`\" is invalid: it contains '`'; use only letters, digits and . _ / + @ -"},
		{"deploy_dir with a space", topoText("master_servers:", "  - host: 10.0.0.1", `    deploy_dir: "/dm/a b"`),
			`topology line 3: master_servers[0].deploy_dir: path "/dm/a b" is invalid: it contains a space; use only letters, digits and . _ / + @ -`},
		{"deploy_dir with ~", topoText("master_servers:", "  - host: 10.0.0.1", `    deploy_dir: "~/dm"`),
			`topology line 3: master_servers[0].deploy_dir: path "~/dm" is invalid: it contains '~'; use only letters, digits and . _ / + @ -`},
		{"relative deploy_dir with ..", topoText("master_servers:", "  - host: 10.0.0.1", "    deploy_dir: ../../etc"),
			`topology line 3: master_servers[0].deploy_dir: path "../../etc" is invalid: it contains a ".." segment`},
		{"absolute data_dir with ..", topoText("master_servers:", "  - host: 10.0.0.1", "    data_dir: /dm/../etc"),
			`topology line 3: master_servers[0].data_dir: path "/dm/../etc" is invalid: it contains a ".." segment`},
		{"log_dir not clean", topoText("master_servers:", "  - host: 10.0.0.1", "    log_dir: /dm//log/"),
			`topology line 3: master_servers[0].log_dir: path "/dm//log/" is invalid: it is not clean; write it as /dm/log`},
		{"relative data_dir not clean", topoText("master_servers:", "  - host: 10.0.0.1", "    data_dir: ./data"),
			`topology line 3: master_servers[0].data_dir: path "./data" is invalid: it is not clean; write it as data`},
		{"global deploy_dir with a shell command", topoText("global:", `  deploy_dir: "/dm;reboot"`) + master,
			`topology line 2: global.deploy_dir: path "/dm;reboot" is invalid: it contains ';'; use only letters, digits and . _ / + @ -`},
		{"global data_dir with ..", topoText("global:", "  data_dir: ../data") + master,
			`topology line 2: global.data_dir: path "../data" is invalid: it contains a ".." segment`},
		{"global log_dir with $", topoText("global:", "  log_dir: $HOME/log") + master,
			`topology line 2: global.log_dir: path "$HOME/log" is invalid: it contains '$'; use only letters, digits and . _ / + @ -`},
		{"system directory", topoText("master_servers:", "  - host: 10.0.0.1", "    deploy_dir: /usr"),
			"topology line 3: master_servers[0].deploy_dir: /usr is a system directory; " + ownedDirAdvice},
		{"the user's home", topoText("master_servers:", "  - host: 10.0.0.1", "    data_dir: /home/tidb"),
			"topology line 3: master_servers[0].data_dir: /home/tidb is the home directory of the deploy user tidb; " + ownedDirAdvice},

		// Clashes inside the topology.
		{"duplicate name", topoText("master_servers:", "  - host: 10.0.0.1", "    name: dm1", "worker_servers:", "  - host: 10.0.0.2", "    name: dm1"),
			`topology line 5: name "dm1" is already used by dm-master 10.0.0.1:8261 (line 2)`},
		{"duplicate default name", topoText("master_servers:", "  - host: 10.0.0.1", "  - host: 10.0.0.2", "    name: dm-10.0.0.1-8261"),
			`topology line 3: name "dm-10.0.0.1-8261" is already used by dm-master 10.0.0.1:8261 (line 2)`},
		{"port clash", topoText("master_servers:", "  - host: 10.0.0.1", "  - host: 10.0.0.1", "    name: m2", "    deploy_dir: /dm/m2"),
			"topology line 3: port 8261 on 10.0.0.1 is already used by dm-master 10.0.0.1:8261 (line 2)"},
		{"port clash with a peer port", topoText("master_servers:", "  - host: 10.0.0.1", "worker_servers:", "  - host: 10.0.0.1", "    port: 8291"),
			"topology line 4: port 8291 on 10.0.0.1 is already used by dm-master 10.0.0.1:8261 (line 2)"},
		{"port clash across roles", topoText("master_servers:", "  - host: 10.0.0.1", "monitoring_servers:", "  - host: 10.0.0.9", "grafana_servers:", "  - host: 10.0.0.9", "    port: 9090"),
			"topology line 6: port 9090 on 10.0.0.9 is already used by prometheus 10.0.0.9:9090 (line 4)"},
		{"port clash on one IPv6 host written two ways", topoText("master_servers:", "  - host: fd00::1", "  - host: fd00:0::1", "    name: m2"),
			"topology line 3: port 8261 on fd00:0::1 is already used by dm-master [fd00::1]:8261 (line 2)"},
		{"port and peer_port equal", topoText("master_servers:", "  - host: 10.0.0.1", "    peer_port: 8261"),
			"topology line 2: dm-master 10.0.0.1:8261 uses port 8261 twice"},
		{"same deploy_dir", topoText("master_servers:", "  - host: 10.0.0.1", "    deploy_dir: /dm/a", "worker_servers:", "  - host: 10.0.0.1", "    deploy_dir: /dm/a"),
			"topology line 5: directory /dm/a on 10.0.0.1 is also used by dm-master 10.0.0.1:8261 (line 2)"},
		{"data_dir equal to another's log_dir", topoText("master_servers:", "  - host: 10.0.0.1", "    log_dir: /dm/shared", "worker_servers:", "  - host: 10.0.0.1", "    data_dir: /dm/shared"),
			"topology line 5: directory /dm/shared on 10.0.0.1 is also used by dm-master 10.0.0.1:8261 (line 2)"},
		{"deploy_dir inside another's", topoText("master_servers:", "  - host: 10.0.0.1", "    deploy_dir: /dm", "worker_servers:", "  - host: 10.0.0.1", "    deploy_dir: /dm/worker"),
			"topology line 5: directory /dm/worker on 10.0.0.1 is inside directory /dm of dm-master 10.0.0.1:8261 (line 2)"},
		{"deploy_dir containing another's", topoText("master_servers:", "  - host: 10.0.0.1", "    deploy_dir: /dm/master", "worker_servers:", "  - host: 10.0.0.1", "    deploy_dir: /dm"),
			"topology line 5: directory /dm on 10.0.0.1 contains directory /dm/master of dm-master 10.0.0.1:8261 (line 2)"},
		{"default dirs of a second master on one host", topoText("master_servers:", "  - host: 10.0.0.1", "  - host: 10.0.0.1", "    port: 9261", "    peer_port: 9291", "    data_dir: /home/tidb/deploy/dm-master-8261/data2"),
			"topology line 3: directory /home/tidb/deploy/dm-master-8261/data2 on 10.0.0.1 is inside directory /home/tidb/deploy/dm-master-8261 of dm-master 10.0.0.1:8261 (line 2)"},
		{"platforms disagree on one host", topoText("master_servers:", "  - host: 10.0.0.1", "worker_servers:", "  - host: 10.0.0.1", "    arch: arm64"),
			"topology line 4: dm-worker 10.0.0.1:8262 is linux/arm64 but dm-master 10.0.0.1:8261 (line 2) on the same host is linux/amd64"},

		// Aliases cannot make the parser explode.
		{"alias bomb", aliasBomb(), "topology line 4: the topology is too large, or its aliases expand too far"},
		{"self-referencing merge", topoText("master_servers:", "  - &m", "    host: 10.0.0.1", "    <<: *m"),
			"topology line 2: master_servers[0]: nested too deeply"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			topo, err := ParseTopology(tt.text)
			if err == nil {
				t.Fatalf("got %+v, want error %q", topo, tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("error\n %s\nwant\n %s", err, tt.want)
			}
			if code := ErrorCode(err); code != Invalid {
				t.Errorf("code = %q, want %q", code, Invalid)
			}
			if topo != nil {
				t.Errorf("topology = %+v, want nil with an error", topo)
			}
		})
	}
}

// aliasBomb is the "billion laughs" in YAML: each level doubles ten times.
func aliasBomb() string {
	var b strings.Builder
	b.WriteString("master_servers:\n  - host: 10.0.0.1\n    config:\n      a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i < 8; i++ {
		b.WriteString("      a" + itoa(i) + ": &a" + itoa(i) + " [")
		for j := 0; j < 10; j++ {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString("*a" + itoa(i-1))
		}
		b.WriteString("]\n")
	}
	return b.String()
}

func TestInstancePortsAndDirs(t *testing.T) {
	m := Instance{Port: 8261, PeerPort: 8291, DeployDir: "/dm/m", DataDir: "/dm/m", LogDir: "/dm/m/log"}
	if got := m.Ports(); !reflect.DeepEqual(got, []int{8261, 8291}) {
		t.Errorf("Ports() = %v", got)
	}
	if got := m.Dirs(); !reflect.DeepEqual(got, []string{"/dm/m", "/dm/m/log"}) {
		t.Errorf("Dirs() = %v", got)
	}
	w := Instance{Port: 8262, DeployDir: "/dm/w"}
	if got := w.Ports(); !reflect.DeepEqual(got, []int{8262}) {
		t.Errorf("Ports() = %v", got)
	}
	if got := w.Dirs(); !reflect.DeepEqual(got, []string{"/dm/w"}) {
		t.Errorf("Dirs() = %v", got)
	}
}

// FuzzParseTopology: ParseTopology never panics; what it refuses it refuses
// with an Invalid *Error; what it accepts has a master, valid hosts and
// ports, only paths that pass ValidateRemotePath, no clash, and encodes as
// JSON.
func FuzzParseTopology(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/topology/*.yaml")
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b))
	}
	f.Add(topoText("master_servers:", "  - host: 10.0.0.1", "    deploy_dir: \"/x; rm -rf /\""))
	f.Add(topoText("global:", "  deploy_dir: a/b", "  data_dir: /d", "master_servers:", "  - host: fd00::1", "    data_dir: ../x"))
	f.Fuzz(func(t *testing.T, text string) {
		topo, err := ParseTopology(text)
		if err != nil {
			var e *Error
			if ErrorCode(err) != Invalid || !strings.HasPrefix(ErrorMessage(err), "topology") || !errors.As(err, &e) {
				t.Fatalf("error %q (code %s): want an Invalid *Error starting with \"topology\"", err, ErrorCode(err))
			}
			return
		}
		if len(topo.Instances) == 0 || topo.Instances[0].Role != RoleMaster {
			t.Fatalf("accepted a topology without a master: %+v", topo)
		}
		if err := ValidateRemotePath(topo.Global.DeployDir); err != nil {
			t.Fatalf("global deploy_dir: %v", err)
		}
		if err := ValidateUser(topo.Global.User); err != nil {
			t.Fatalf("global user: %v", err)
		}
		for _, in := range topo.Instances {
			if len(in.Dirs()) == 0 {
				t.Fatalf("instance %s has no directories", in.ID)
			}
			for _, d := range []string{in.DeployDir, in.DataDir, in.LogDir} {
				if err := ValidateRemotePath(d); err != nil {
					t.Fatalf("instance %s: %v", in.ID, err)
				}
			}
			if err := ValidateHost(in.Host); err != nil {
				t.Fatalf("instance %s: %v", in.ID, err)
			}
			for _, p := range append(in.Ports(), in.SSHPort) {
				if err := ValidatePort(p); err != nil {
					t.Fatalf("instance %s: %v", in.ID, err)
				}
			}
			if in.Line < 1 {
				t.Fatalf("instance %s has line %d", in.ID, in.Line)
			}
		}
		if _, err := json.Marshal(topo); err != nil {
			t.Fatalf("json.Marshal: %v", err)
		}
		// Accepted instances do not clash with one another: placing them
		// on machines that hold them again under another name clashes, and
		// each one placed alone next to the others does not.
		for i, in := range topo.Instances {
			var others []Allocation
			for j, o := range topo.Instances {
				if j != i {
					others = append(others, Allocation{Cluster: "c", Instance: o})
				}
			}
			if err := CheckPlacement([]Instance{in}, others); err != nil {
				t.Fatalf("accepted topology clashes with itself: %v", err)
			}
		}
	})
}
