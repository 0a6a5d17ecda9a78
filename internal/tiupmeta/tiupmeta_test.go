package tiupmeta

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/dmgr/dmgr/domain"
)

// metaV3 is a meta.yaml as tiup-dm writes it today (yaml.v3: four spaces,
// lists indented under their key), for three masters, two workers and the
// monitoring, with the node_exporter settings of `monitored`.
const metaV3 = `user: tidb
dm_version: v8.1.0
topology:
    global:
        user: tidb
        ssh_port: 22
        ssh_type: builtin
        deploy_dir: /home/tidb/dm/deploy
        data_dir: /home/tidb/dm/data
        os: linux
        arch: amd64
        systemd_mode: system
    monitored:
        node_exporter_port: 9100
        blackbox_exporter_port: 9115
        deploy_dir: /home/tidb/dm/deploy/monitor-9100
        data_dir: /home/tidb/dm/data/monitor-9100
        log_dir: /home/tidb/dm/deploy/monitor-9100/log
    server_configs:
        master:
            log-level: info
        worker: {}
        grafana: {}
    master_servers:
        - host: 10.0.1.11
          ssh_port: 22
          name: dm-10.0.1.11-8261
          port: 8261
          peer_port: 8291
          deploy_dir: /home/tidb/dm/deploy/dm-master-8261
          data_dir: /home/tidb/dm/data/dm-master-8261
          log_dir: /home/tidb/dm/deploy/dm-master-8261/log
          arch: amd64
          os: linux
        - host: 10.0.1.12
          ssh_port: 22
          name: dm-10.0.1.12-8261
          port: 8261
          peer_port: 8291
          deploy_dir: /home/tidb/dm/deploy/dm-master-8261
          data_dir: /home/tidb/dm/data/dm-master-8261
          log_dir: /home/tidb/dm/deploy/dm-master-8261/log
          arch: amd64
          os: linux
        - host: 10.0.1.13
          ssh_port: 22
          name: dm-10.0.1.13-8261
          port: 8261
          peer_port: 8291
          deploy_dir: /home/tidb/dm/deploy/dm-master-8261
          data_dir: /home/tidb/dm/data/dm-master-8261
          log_dir: /home/tidb/dm/deploy/dm-master-8261/log
          arch: amd64
          os: linux
    worker_servers:
        - host: 10.0.1.11
          ssh_port: 22
          name: dm-10.0.1.11-8262
          port: 8262
          deploy_dir: /home/tidb/dm/deploy/dm-worker-8262
          data_dir: /home/tidb/dm/data/dm-worker-8262
          log_dir: /home/tidb/dm/deploy/dm-worker-8262/log
          arch: amd64
          os: linux
        - host: 10.0.1.12
          ssh_port: 22
          name: dm-10.0.1.12-8262
          port: 8262
          deploy_dir: /home/tidb/dm/deploy/dm-worker-8262
          data_dir: /home/tidb/dm/data/dm-worker-8262
          log_dir: /home/tidb/dm/deploy/dm-worker-8262/log
          arch: amd64
          os: linux
    monitoring_servers:
        - host: 10.0.1.13
          ssh_port: 22
          port: 9090
          ng_port: 12020
          deploy_dir: /home/tidb/dm/deploy/prometheus-9090
          data_dir: /home/tidb/dm/data/prometheus-9090
          log_dir: /home/tidb/dm/deploy/prometheus-9090/log
          external_alertmanagers: []
          arch: amd64
          os: linux
    grafana_servers:
        - host: 10.0.1.13
          ssh_port: 22
          port: 3000
          deploy_dir: /home/tidb/dm/deploy/grafana-3000
          arch: amd64
          os: linux
          username: admin
          password: admin
          anonymous_enable: false
          root_url: ""
          domain: ""
    alertmanager_servers:
        - host: 10.0.1.13
          ssh_port: 22
          web_port: 9093
          cluster_port: 9094
          deploy_dir: /home/tidb/dm/deploy/alertmanager-9093
          data_dir: /home/tidb/dm/data/alertmanager-9093
          log_dir: /home/tidb/dm/deploy/alertmanager-9093/log
          arch: amd64
          os: linux
`

// metaV2 is a meta.yaml of an older tiup (yaml.v2: two spaces, lists at
// the key's indentation), with the topology before the user, relative
// directories and a tidb user's home, as `tiup dm deploy` fills them in
// without a global deploy_dir.
const metaV2 = `topology:
  global:
    user: dm
    ssh_port: 2222
    deploy_dir: deploy
    data_dir: data
    os: linux
  server_configs:
    master: {}
    worker: {}
  master_servers:
  - host: 10.0.2.11
    name: master1
    port: 8261
    peer_port: 8291
    deploy_dir: deploy/dm-master-8261
    data_dir: data
  worker_servers:
  - host: 10.0.2.11
    name: worker1
    port: 8262
    deploy_dir: deploy/dm-worker-8262
    data_dir: data
dm_version: v7.5.1
user: dm
`

func TestParseTiupDMv3(t *testing.T) {
	m, err := Parse(metaV3)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if m.User != "tidb" || m.Version != "v8.1.0" || m.TopologyLine != 4 {
		t.Errorf("user %q version %q topology line %d", m.User, m.Version, m.TopologyLine)
	}
	if !slices.Equal(m.Ignored, []string{"monitored"}) {
		t.Errorf("ignored %v, want [monitored]", m.Ignored)
	}
	// The topology keeps meta.yaml's lines: its line n is meta.yaml's n+3.
	metaLines, topoLines := strings.Split(metaV3, "\n"), strings.Split(m.Topology, "\n")
	for n, l := range topoLines {
		if l == "" {
			continue
		}
		if got := strings.TrimSpace(metaLines[n+m.TopologyLine-1]); got != strings.TrimSpace(l) {
			t.Errorf("topology line %d %q is meta.yaml line %d %q", n+1, l, n+m.TopologyLine, got)
		}
		if strings.Contains(l, "node_exporter") {
			t.Errorf("the monitored section is still in the topology: %q", l)
		}
	}
	if !strings.HasPrefix(m.Topology, "global:\n    user: tidb\n") {
		t.Errorf("topology not de-indented:\n%s", m.Topology)
	}
	// The instances are as deployed.
	var got []string
	for _, in := range m.Parsed.Instances {
		got = append(got, string(in.Role)+" "+in.ID+" "+in.Name+" "+in.DeployDir+" "+in.DataDir+" "+in.LogDir)
	}
	want := []string{
		"dm-master 10.0.1.11:8261 dm-10.0.1.11-8261 /home/tidb/dm/deploy/dm-master-8261 /home/tidb/dm/data/dm-master-8261 /home/tidb/dm/deploy/dm-master-8261/log",
		"dm-master 10.0.1.12:8261 dm-10.0.1.12-8261 /home/tidb/dm/deploy/dm-master-8261 /home/tidb/dm/data/dm-master-8261 /home/tidb/dm/deploy/dm-master-8261/log",
		"dm-master 10.0.1.13:8261 dm-10.0.1.13-8261 /home/tidb/dm/deploy/dm-master-8261 /home/tidb/dm/data/dm-master-8261 /home/tidb/dm/deploy/dm-master-8261/log",
		"dm-worker 10.0.1.11:8262 dm-10.0.1.11-8262 /home/tidb/dm/deploy/dm-worker-8262 /home/tidb/dm/data/dm-worker-8262 /home/tidb/dm/deploy/dm-worker-8262/log",
		"dm-worker 10.0.1.12:8262 dm-10.0.1.12-8262 /home/tidb/dm/deploy/dm-worker-8262 /home/tidb/dm/data/dm-worker-8262 /home/tidb/dm/deploy/dm-worker-8262/log",
		"prometheus 10.0.1.13:9090 prometheus-10.0.1.13-9090 /home/tidb/dm/deploy/prometheus-9090 /home/tidb/dm/data/prometheus-9090 /home/tidb/dm/deploy/prometheus-9090/log",
		"grafana 10.0.1.13:3000 grafana-10.0.1.13-3000 /home/tidb/dm/deploy/grafana-3000 /home/tidb/dm/data/grafana-3000 /home/tidb/dm/deploy/grafana-3000/log",
		"alertmanager 10.0.1.13:9093 alertmanager-10.0.1.13-9093 /home/tidb/dm/deploy/alertmanager-9093 /home/tidb/dm/data/alertmanager-9093 /home/tidb/dm/deploy/alertmanager-9093/log",
	}
	if !slices.Equal(got, want) {
		t.Errorf("instances\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	if m.Parsed.ServerConfigs["master"]["log-level"] != "info" {
		t.Errorf("server_configs %v", m.Parsed.ServerConfigs)
	}
	// The topology text parses on its own, as the cluster keeps it.
	if _, err := domain.ParseTopology(m.Topology); err != nil {
		t.Errorf("the topology text does not parse on its own: %v", err)
	}
}

func TestParseTiupDMv2(t *testing.T) {
	m, err := Parse(metaV2)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if m.User != "dm" || m.Version != "v7.5.1" || m.TopologyLine != 2 || len(m.Ignored) != 0 {
		t.Errorf("meta %+v", m)
	}
	if strings.Contains(m.Topology, "dm_version") || strings.Contains(m.Topology, "user: dm\n\n") {
		t.Errorf("the topology runs past its section:\n%s", m.Topology)
	}
	in := m.Parsed.Instances
	if len(in) != 2 || in[0].DeployDir != "/home/dm/deploy/dm-master-8261" || in[0].DataDir != "/home/dm/deploy/dm-master-8261/data" ||
		in[0].LogDir != "/home/dm/deploy/dm-master-8261/log" || in[0].SSHPort != 2222 || in[1].Name != "worker1" {
		t.Errorf("relative directories, as tiup resolves them: %+v", in)
	}
}

func TestParseRefuses(t *testing.T) {
	line := func(n int, l string) string {
		ls := strings.Split(metaV3, "\n")
		ls[n-1] = l
		return strings.Join(ls, "\n")
	}
	tests := []struct {
		name string
		text string
		want string
	}{
		{"empty", "", "meta.yaml is empty"},
		{"only a comment", "# nothing\n", "meta.yaml is empty"},
		{"not YAML", "user: tidb\ndm_version: [v8\n", "meta.yaml line 2: invalid YAML: did not find expected ',' or ']'"},
		{"a tab", "user: tidb\n\tdm_version: v8.1.0\n", "meta.yaml line 2: invalid YAML"},
		{"two documents", "user: tidb\n---\nuser: x\n", "meta.yaml line 2: only one YAML document is allowed"},
		{"a list", "- user: tidb\n", "meta.yaml line 1: want a mapping with user, dm_version and topology"},
		{"unknown version", line(2, "dm_version: nightly"), `meta.yaml line 2: dm_version: version "nightly" is invalid`},
		{"version without v", line(2, "dm_version: 8.1.0"), `meta.yaml line 2: dm_version: version "8.1.0" is invalid`},
		{"version not a string", line(2, "dm_version: [v8.1.0]"), "meta.yaml line 2: dm_version: want a string, got a list"},
		{"no dm_version", line(2, ""), "meta.yaml: dm_version is missing"},
		{"no user", line(1, ""), "meta.yaml: user is missing"},
		{"invalid user", line(1, "user: 'ti db'"), "meta.yaml line 1: user:"},
		{"no topology", "user: tidb\ndm_version: v8.1.0\n", "meta.yaml: topology is missing"},
		{"empty topology", "user: tidb\ndm_version: v8.1.0\ntopology:\n", "meta.yaml line 3: topology: want the cluster's topology"},
		{"topology not a mapping", "user: tidb\ndm_version: v8.1.0\ntopology: [1]\n", "meta.yaml line 3: topology: want the cluster's topology (a mapping with global, master_servers, ...), got a list"},
		{"flow topology", "user: tidb\ndm_version: v8.1.0\ntopology: {master_servers: [{host: 10.0.0.1}]}\n", "meta.yaml line 3: topology: write it as a block mapping"},
		{"tiup-cluster's meta.yaml", "user: tidb\ntidb_version: v8.1.0\ntopology:\n  global: {}\n", "meta.yaml line 2: tidb_version is the key of tiup-cluster's meta.yaml"},
		{"version instead of dm_version", line(2, "version: v8.1.0"), `meta.yaml line 2: unknown key "version"; tiup-dm writes the DM version as dm_version`},
		{"unknown key", "user: tidb\ndm_version: v8.1.0\nops_ver: v1\n", `meta.yaml line 3: unknown key "ops_ver"`},
		{"repeated key", "user: tidb\nuser: tidb\n", `meta.yaml line 2: key "user" is repeated (first at line 1)`},
		{"a bad port, at its line", line(28, "          port: http"), "meta.yaml line 28: topology: master_servers[0].port: want a number"},
		{"an unknown section, at its line", line(19, "    server_config:"), `meta.yaml line 19: topology: unknown key "server_config"; did you mean "server_configs"?`},
		{"no master", "user: tidb\ndm_version: v8.1.0\ntopology:\n  worker_servers:\n  - host: 10.0.0.1\n", "meta.yaml: topology needs at least one dm-master"},
		{"a system directory", line(30, "          deploy_dir: /usr/local/dm"), "meta.yaml line 30: topology: master_servers[0].deploy_dir: /usr/local/dm is inside the system directory /usr"},
		{"an underindented line", line(25, "   - host: 10.0.1.11"), "meta.yaml line 25: invalid YAML"},
		{"user differs from the topology's", line(1, "user: dm"), "meta.yaml line 1: user is dm, but the topology's global.user is tidb"},
		{"too large", "user: tidb\n" + strings.Repeat("#", MaxSize), "at most 1048576 are accepted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse(tt.text)
			if err == nil {
				t.Fatalf("accepted: %+v; want %q", m, tt.want)
			}
			if domain.ErrorCode(err) != domain.Invalid {
				t.Errorf("code %s, want invalid (%v)", domain.ErrorCode(err), err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q\nwant it to contain %q", err, tt.want)
			}
		})
	}
}

// TestParseTopologyLinesFollowMetaYAML: an error anywhere in the topology
// names its line of meta.yaml, for every indentation tiup writes.
func TestParseTopologyLinesFollowMetaYAML(t *testing.T) {
	for _, text := range []string{metaV3, metaV2} {
		ls := strings.Split(text, "\n")
		for n, l := range ls {
			if !strings.Contains(l, "port: 8262") {
				continue
			}
			bad := slices.Clone(ls)
			bad[n] = strings.Replace(l, "8262", "70000", 1)
			_, err := Parse(strings.Join(bad, "\n"))
			if want := "meta.yaml line " + strconv.Itoa(n+1) + ": topology: "; err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Errorf("port out of range at meta.yaml line %d: %v; want it to start with %q", n+1, err, want)
			}
		}
	}
}
