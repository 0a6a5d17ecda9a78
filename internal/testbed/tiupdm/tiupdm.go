// Package tiupdm lays out a DM cluster on test hosts (testbed/hosts)
// exactly as `tiup dm deploy` and `tiup dm start` leave one, without dmgr:
// a cluster that dmgr can then take over (`dmgr cluster import`).
//
// On the control machine (a test directory standing in for ~/.tiup) it
// writes tiup-dm's storage directory of the cluster:
//
//	storage/dm/clusters/<name>/meta.yaml       DMMeta, as tiup marshals it (yaml.v3)
//	storage/dm/clusters/<name>/ssh/id_rsa      the cluster's RSA key (PKCS#1 PEM)
//	storage/dm/clusters/<name>/ssh/id_rsa.pub
//
// On each host: the deploy user (tidb) with the cluster's public key in
// its authorized_keys and password-less sudo, as tiup's environment setup
// makes it; per instance the deploy directory with bin/<component>/<component>
// (the DM simulator of the test package, testbed/dmpkg), conf/<component>.toml
// (server_configs merged with the instance's config, under tiup's
// header), scripts/run_<component>.sh rendered from tiup's templates
// (embed/templates/scripts), the log directory and the data directory.
//
// The test hosts have no systemd, so where tiup would enable and start the
// unit dm-master-8261.service, the helper starts the run script the way
// dmgr's `service_manager: none` does and with the same pid file
// ({deploy_dir}/scripts/<component>-<port>.pid): as the deploy user, in a
// session of its own, the run script exec'ing the component. dmgr can then
// stop and start the processes afterwards.
package tiupdm

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"gopkg.in/yaml.v3"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/testbed/dmpkg"
	"github.com/dmgr/dmgr/internal/testbed/hosts"
)

// Spec is the cluster to lay out. Hosts are the bed's host indexes (1-based).
type Spec struct {
	Name    string // tiup-dm's cluster name: the storage directory's name
	Version string // dm_version; the simulator of the test package of that version runs
	User    string // deploy user (default tidb)
	Masters []int
	Workers []int
	// Ports (defaults 8261, 8291, 8262), the same on every host.
	MasterPort, PeerPort, WorkerPort int
	// DeployDir and DataDir are global.deploy_dir and global.data_dir
	// (defaults /home/<user>/dm/deploy and /home/<user>/dm/data).
	DeployDir, DataDir string
	// MasterConfig is server_configs.master (default log-level: info).
	MasterConfig map[string]any
}

// Cluster is a cluster laid out by Deploy.
type Cluster struct {
	Spec
	// Dir is tiup-dm's storage directory of the cluster
	// (<home>/.tiup/storage/dm/clusters/<name>).
	Dir string
	// Meta is the text of Dir/meta.yaml; Key and PublicKey those of
	// Dir/ssh/id_rsa and id_rsa.pub.
	Meta      string
	Key       []byte
	PublicKey string
	Instances []Instance

	bed *hosts.Bed
}

// Instance is one instance of a laid-out cluster.
type Instance struct {
	Host      int    // bed host index
	Addr      string // the host's address
	Role      string // dm-master or dm-worker
	Name      string
	Port      int
	PeerPort  int
	DeployDir string
	DataDir   string
	LogDir    string
}

// ID is "host:port", as dmgr and tiup name instances.
func (in Instance) ID() string { return net.JoinHostPort(in.Addr, strconv.Itoa(in.Port)) }

// Service is tiup's unit name without ".service": "dm-master-8261".
func (in Instance) Service() string { return in.Role + "-" + strconv.Itoa(in.Port) }

// PIDFile is where the run script's process id is kept.
func (in Instance) PIDFile() string {
	return path.Join(in.DeployDir, "scripts", in.Service()+".pid")
}

// MarkerDir is where the simulator writes its started-<nanos> marker on
// each start: a master's data directory; a worker's log directory (tiup
// gives dm-worker no --data-dir, and the simulator then uses its log
// file's directory).
func (in Instance) MarkerDir() string {
	if in.Role == "dm-master" {
		return in.DataDir
	}
	return in.LogDir
}

const (
	deployTimeout = 2 * time.Minute
	// stage is where the simulator binary is put for the host to copy,
	// under the host's private /tmp.
	stage = "/tmp/tiupdm-stage"
)

// Deploy lays the cluster out on bed and starts it, and waits until every
// master and worker is a member and a leader is elected. home stands in
// for the control machine's home directory (~): the storage directory is
// written under home/.tiup.
func Deploy(t testing.TB, bed *hosts.Bed, home string, spec Spec) *Cluster {
	t.Helper()
	c := &Cluster{Spec: spec, bed: bed}
	c.defaults()
	c.layout()
	c.writeStorage(t, home)
	sim := simulator(t, c.Version)
	for _, h := range c.hosts() {
		if err := os.MkdirAll(filepath.Join(bed.Dir, "hosts", strconv.Itoa(h), "tmp", path.Base(stage)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(bed.Dir, "hosts", strconv.Itoa(h), "tmp", path.Base(stage), "dmsim"), sim, 0o755); err != nil {
			t.Fatalf("tiupdm: stage the simulator on host %d: %v", h, err)
		}
		c.exec(t, h, c.envScript())
	}
	for _, in := range c.Instances {
		c.exec(t, in.Host, c.instanceScript(in))
	}
	for _, h := range c.hosts() {
		c.exec(t, h, "rm -rf "+domain.ShellQuote(stage))
	}
	// Start as tiup does: every master, then every worker.
	for _, role := range []string{"dm-master", "dm-worker"} {
		for _, in := range c.Instances {
			if in.Role == role {
				c.Start(t, in)
			}
		}
		for _, in := range c.Instances {
			if in.Role == role {
				c.waitStatus(t, in)
			}
		}
	}
	c.WaitMembers(t)
	return c
}

func (c *Cluster) defaults() {
	if c.User == "" {
		c.User = "tidb"
	}
	if c.MasterPort == 0 {
		c.MasterPort = 8261
	}
	if c.PeerPort == 0 {
		c.PeerPort = 8291
	}
	if c.WorkerPort == 0 {
		c.WorkerPort = 8262
	}
	if c.DeployDir == "" {
		c.DeployDir = "/home/" + c.User + "/dm/deploy"
	}
	if c.DataDir == "" {
		c.DataDir = "/home/" + c.User + "/dm/data"
	}
	if c.MasterConfig == nil {
		c.MasterConfig = map[string]any{"log-level": "info"}
	}
}

// layout fills the instances in as tiup's fillDMCustomDefaults does with an
// absolute global deploy_dir and data_dir: <dir>/<component>-<port>, the
// log directory inside the deploy directory, names dm-<host>-<port>.
func (c *Cluster) layout() {
	add := func(role string, h, port, peer int) {
		addr := c.bed.Hosts[h-1].Addr
		sub := role + "-" + strconv.Itoa(port)
		deploy := path.Join(c.DeployDir, sub)
		c.Instances = append(c.Instances, Instance{Host: h, Addr: addr, Role: role, Name: "dm-" + addr + "-" + strconv.Itoa(port),
			Port: port, PeerPort: peer, DeployDir: deploy, DataDir: path.Join(c.DataDir, sub), LogDir: path.Join(deploy, "log")})
	}
	for _, h := range c.Masters {
		add("dm-master", h, c.MasterPort, c.PeerPort)
	}
	for _, h := range c.Workers {
		add("dm-worker", h, c.WorkerPort, 0)
	}
}

func (c *Cluster) hosts() []int {
	var out []int
	for _, in := range c.Instances {
		if !slices.Contains(out, in.Host) {
			out = append(out, in.Host)
		}
	}
	return out
}

// The part of tiup's DMMeta (components/dm/spec) that a cluster of
// masters and workers has, with tiup's yaml tags and field order.
type (
	dmMeta struct {
		User     string        `yaml:"user"`
		Version  string        `yaml:"dm_version"`
		Topology specification `yaml:"topology"`
	}
	specification struct {
		Global        globalOptions    `yaml:"global,omitempty"`
		ServerConfigs serverConfigs    `yaml:"server_configs,omitempty"`
		Masters       []masterSpec     `yaml:"master_servers"`
		Workers       []workerSpec     `yaml:"worker_servers"`
		Monitors      []map[string]any `yaml:"monitoring_servers"`
	}
	globalOptions struct {
		User        string `yaml:"user,omitempty"`
		SSHPort     int    `yaml:"ssh_port,omitempty"`
		SSHType     string `yaml:"ssh_type,omitempty"`
		DeployDir   string `yaml:"deploy_dir,omitempty"`
		DataDir     string `yaml:"data_dir,omitempty"`
		OS          string `yaml:"os,omitempty"`
		Arch        string `yaml:"arch,omitempty"`
		SystemdMode string `yaml:"systemd_mode,omitempty"`
	}
	serverConfigs struct {
		Master  map[string]any    `yaml:"master"`
		Worker  map[string]any    `yaml:"worker"`
		Grafana map[string]string `yaml:"grafana"`
	}
	masterSpec struct {
		Host      string `yaml:"host"`
		SSHPort   int    `yaml:"ssh_port,omitempty"`
		Name      string `yaml:"name,omitempty"`
		Port      int    `yaml:"port,omitempty"`
		PeerPort  int    `yaml:"peer_port,omitempty"`
		DeployDir string `yaml:"deploy_dir,omitempty"`
		DataDir   string `yaml:"data_dir,omitempty"`
		LogDir    string `yaml:"log_dir,omitempty"`
		Arch      string `yaml:"arch,omitempty"`
		OS        string `yaml:"os,omitempty"`
	}
	workerSpec struct {
		Host      string `yaml:"host"`
		SSHPort   int    `yaml:"ssh_port,omitempty"`
		Name      string `yaml:"name,omitempty"`
		Port      int    `yaml:"port,omitempty"`
		DeployDir string `yaml:"deploy_dir,omitempty"`
		DataDir   string `yaml:"data_dir,omitempty"`
		LogDir    string `yaml:"log_dir,omitempty"`
		Arch      string `yaml:"arch,omitempty"`
		OS        string `yaml:"os,omitempty"`
	}
)

// metaYAML is meta.yaml as tiup-dm writes it: yaml.v3's Marshal of DMMeta.
func (c *Cluster) metaYAML(t testing.TB) string {
	t.Helper()
	arch := archOf()
	m := dmMeta{User: c.User, Version: c.Version, Topology: specification{
		Global: globalOptions{User: c.User, SSHPort: 22, SSHType: "builtin", DeployDir: c.DeployDir, DataDir: c.DataDir,
			OS: "linux", Arch: arch, SystemdMode: "system"},
		ServerConfigs: serverConfigs{Master: c.MasterConfig},
	}}
	for _, in := range c.Instances {
		if in.Role == "dm-master" {
			m.Topology.Masters = append(m.Topology.Masters, masterSpec{Host: in.Addr, SSHPort: 22, Name: in.Name, Port: in.Port, PeerPort: in.PeerPort,
				DeployDir: in.DeployDir, DataDir: in.DataDir, LogDir: in.LogDir, Arch: arch, OS: "linux"})
		} else {
			m.Topology.Workers = append(m.Topology.Workers, workerSpec{Host: in.Addr, SSHPort: 22, Name: in.Name, Port: in.Port,
				DeployDir: in.DeployDir, DataDir: in.DataDir, LogDir: in.LogDir, Arch: arch, OS: "linux"})
		}
	}
	b, err := yaml.Marshal(m)
	if err != nil {
		t.Fatalf("tiupdm: meta.yaml: %v", err)
	}
	return string(b)
}

// archOf is the arch of the test package's simulator (dmpkg builds it
// for the arch the test runs on).
func archOf() string { return runtime.GOARCH }

// writeStorage writes tiup-dm's storage directory of the cluster: a new
// RSA key (tiup makes one per cluster) and meta.yaml.
func (c *Cluster) writeStorage(t testing.TB, home string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	c.Key = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	pub, err := ssh.NewPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	c.PublicKey = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
	c.Meta = c.metaYAML(t)
	c.Dir = filepath.Join(home, ".tiup", "storage", "dm", "clusters", c.Name)
	for _, f := range []struct {
		name string
		body []byte
		mode os.FileMode
	}{{"meta.yaml", []byte(c.Meta), 0o644}, {"ssh/id_rsa", c.Key, 0o600}, {"ssh/id_rsa.pub", []byte(c.PublicKey + "\n"), 0o644}} {
		p := filepath.Join(c.Dir, f.name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f.body, f.mode); err != nil {
			t.Fatal(err)
		}
	}
}

// envScript prepares a host as tiup's environment setup does: the deploy
// user, its authorized key (added to any other cluster's), password-less
// sudo.
func (c *Cluster) envScript() string {
	u, k := domain.ShellQuote(c.User), domain.ShellQuote(c.PublicKey)
	return fmt.Sprintf(`set -e
id -u %[1]s >/dev/null 2>&1 || useradd -m -s /bin/bash %[1]s
usermod -p '*' %[1]s
home=$(getent passwd %[1]s | cut -d: -f6)
install -d -m 0700 -o %[1]s -g %[1]s "$home/.ssh"
touch "$home/.ssh/authorized_keys"
grep -qxF %[2]s "$home/.ssh/authorized_keys" || echo %[2]s >>"$home/.ssh/authorized_keys"
chown %[1]s: "$home/.ssh/authorized_keys"; chmod 0600 "$home/.ssh/authorized_keys"
echo %[3]s >/etc/sudoers.d/tiup-%[4]s
chmod 0440 /etc/sudoers.d/tiup-%[4]s
`, u, k, domain.ShellQuote(c.User+" ALL=(ALL) NOPASSWD: ALL"), c.User)
}

// instanceScript lays out one instance: directories, binary, config and
// run script, every file the deploy user's.
func (c *Cluster) instanceScript(in Instance) string {
	q := domain.ShellQuote
	bin := path.Join(in.DeployDir, "bin", in.Role, in.Role)
	conf := path.Join(in.DeployDir, "conf", in.Role+".toml")
	run := path.Join(in.DeployDir, "scripts", "run_"+in.Role+".sh")
	var b strings.Builder
	fmt.Fprintf(&b, "set -e\numask 022\n")
	for _, d := range []string{path.Join(in.DeployDir, "bin", in.Role), path.Join(in.DeployDir, "conf"), path.Join(in.DeployDir, "scripts"), in.LogDir, in.DataDir} {
		fmt.Fprintf(&b, "mkdir -p %s\n", q(d))
	}
	fmt.Fprintf(&b, "cp %s %s\nchmod 0755 %s\n", q(stage+"/dmsim"), q(bin), q(bin))
	fmt.Fprintf(&b, "printf '%%s' %s >%s\n", q(c.configFile(in)), q(conf))
	fmt.Fprintf(&b, "printf '%%s' %s >%s\nchmod 0755 %s\n", q(c.runScript(in)), q(run), q(run))
	for _, d := range []string{in.DeployDir, in.DataDir} {
		fmt.Fprintf(&b, "chown -R %s: %s\n", q(c.User), q(d))
	}
	// Parents tiup makes, owned by the deploy user too.
	fmt.Fprintf(&b, "chown %s: %s %s\n", q(c.User), q(path.Dir(in.DeployDir)), q(path.Dir(in.DataDir)))
	return b.String()
}

// configFile is conf/<component>.toml as tiup's MergeServerConfig writes
// it: its header, then server_configs of the role (the cluster's only
// config here) in TOML.
func (c *Cluster) configFile(in Instance) string {
	header := `# WARNING: This file is auto-generated. Do not edit! All your modification will be overwritten!
# You can use 'tiup cluster edit-config' and 'tiup cluster reload' to update the configuration
# All configuration items you want to change can be added to:
# server_configs:
#   ` + strings.TrimPrefix(in.Role, "dm-") + `:
#     aa.b1.c3: value
#     aa.b2.c4: value
`
	if in.Role != "dm-master" || len(c.MasterConfig) == 0 {
		return header
	}
	body, err := domain.EncodeTOML(c.MasterConfig)
	if err != nil {
		panic(err) // the spec's own config: a test's mistake
	}
	return header + body
}

// runScript renders tiup's embed/templates/scripts/run_dm-master.sh.tpl
// (masters deployed with the cluster: --initial-cluster) and
// run_dm-worker.sh.tpl.
func (c *Cluster) runScript(in Instance) string {
	var masters, initial []string
	for _, m := range c.Instances {
		if m.Role == "dm-master" {
			masters = append(masters, net.JoinHostPort(m.Addr, strconv.Itoa(m.Port)))
			initial = append(initial, m.Name+"=http://"+net.JoinHostPort(m.Addr, strconv.Itoa(m.PeerPort)))
		}
	}
	head := fmt.Sprintf(`#!/bin/bash
set -e

# WARNING: This file was auto-generated. Do not edit!
#          All your edit might be overwritten!
DEPLOY_DIR=%s
`, in.DeployDir)
	if in.Role == "dm-master" {
		return head + fmt.Sprintf(`cd "${DEPLOY_DIR}" || exit 1
exec bin/dm-master/dm-master \
    --name="%s" \
    --master-addr="%s" \
    --advertise-addr="%s" \
    --peer-urls="%s" \
    --advertise-peer-urls="%s" \
    --log-file="%s/dm-master.log" \
    --data-dir="%s" \
    --initial-cluster="%s" \
    --config=conf/dm-master.toml >> "%s/dm-master_stdout.log" 2>> "%s/dm-master_stderr.log"
`, in.Name, net.JoinHostPort("0.0.0.0", strconv.Itoa(in.Port)), net.JoinHostPort(in.Addr, strconv.Itoa(in.Port)),
			"http://"+net.JoinHostPort("0.0.0.0", strconv.Itoa(in.PeerPort)), "http://"+net.JoinHostPort(in.Addr, strconv.Itoa(in.PeerPort)),
			in.LogDir, in.DataDir, strings.Join(initial, ","), in.LogDir, in.LogDir)
	}
	return head + fmt.Sprintf(`
cd "${DEPLOY_DIR}" || exit 1
exec bin/dm-worker/dm-worker \
    --name="%s" \
    --worker-addr="%s" \
    --advertise-addr="%s" \
    --log-file="%s/dm-worker.log" \
    --join="%s" \
    --config=conf/dm-worker.toml >> "%s/dm-worker_stdout.log" 2>> "%s/dm-worker_stderr.log"
`, in.Name, net.JoinHostPort("0.0.0.0", strconv.Itoa(in.Port)), net.JoinHostPort(in.Addr, strconv.Itoa(in.Port)),
		in.LogDir, strings.Join(masters, ","), in.LogDir, in.LogDir)
}

// Start starts an instance by its run script as the deploy user, in a
// session of its own, with its pid file — what dmgr's start step does for
// `service_manager: none` — unless its pid file names a live process.
func (c *Cluster) Start(t testing.TB, in Instance) {
	t.Helper()
	inner := fmt.Sprintf(`pidfile=%s
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then exit 0; fi
cd %s || exit 1
setsid nohup /bin/bash %s </dev/null >/dev/null 2>&1 &
echo $! >"$pidfile"
`, domain.ShellQuote(in.PIDFile()), domain.ShellQuote(in.DeployDir), domain.ShellQuote(path.Join(in.DeployDir, "scripts", "run_"+in.Role+".sh")))
	c.exec(t, in.Host, fmt.Sprintf("setpriv --reuid=%[1]s --regid=%[1]s --init-groups --reset-env /bin/sh -c %[2]s </dev/null >/dev/null 2>&1",
		domain.ShellQuote(c.User), domain.ShellQuote(inner)))
}

// Stop stops an instance as dmgr's stop step would (TERM, its pid file
// removed), as a test's way to break the cluster behind dmgr's back.
func (c *Cluster) Stop(t testing.TB, in Instance) {
	t.Helper()
	c.exec(t, in.Host, fmt.Sprintf(`pidfile=%s
pid=$(cat "$pidfile")
kill -TERM "$pid"
for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
rm -f "$pidfile"`, domain.ShellQuote(in.PIDFile())))
}

func (c *Cluster) exec(t testing.TB, host int, script string) string {
	t.Helper()
	out, err := c.bed.Exec(t, host, script)
	if err != nil {
		t.Fatalf("tiupdm: cluster %s on host %d: %v\n%s", c.Name, host, err, out)
	}
	return out
}

// waitStatus waits until the instance answers GET /status.
func (c *Cluster) waitStatus(t testing.TB, in Instance) {
	t.Helper()
	deadline := time.Now().Add(deployTimeout)
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		resp, err := client.Get("http://" + in.ID() + "/status")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("tiupdm: %s %s does not answer /status after %s: %v", in.Role, in.ID(), deployTimeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// WaitMembers waits until a master lists every master and worker of the
// cluster and a leader, and returns the leader's name.
func (c *Cluster) WaitMembers(t testing.TB) string {
	t.Helper()
	deadline := time.Now().Add(deployTimeout)
	for {
		leader, masters, workers, err := c.Members()
		if err == nil && leader != "" && len(masters) == len(c.Masters) && len(workers) == len(c.Workers) {
			return leader
		}
		if time.Now().After(deadline) {
			t.Fatalf("tiupdm: cluster %s: members after %s: leader %q masters %v workers %v (%v)", c.Name, deployTimeout, leader, masters, workers, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// Members asks the masters, one after another, for the members.
func (c *Cluster) Members() (leader string, masters, workers []string, err error) {
	client := &http.Client{Timeout: 2 * time.Second}
	for _, in := range c.Instances {
		if in.Role != "dm-master" {
			continue
		}
		var resp *http.Response
		resp, err = client.Get("http://" + in.ID() + "/apis/v1alpha1/members?leader=true&master=true&worker=true")
		if err != nil {
			continue
		}
		var m struct {
			Members []struct {
				Leader *struct{ Name string } `json:"leader"`
				Master *struct {
					Masters []struct{ Name string } `json:"masters"`
				} `json:"master"`
				Worker *struct {
					Workers []struct{ Name string } `json:"workers"`
				} `json:"worker"`
			} `json:"members"`
		}
		err = json.NewDecoder(resp.Body).Decode(&m)
		resp.Body.Close()
		if err != nil {
			continue
		}
		for _, mem := range m.Members {
			if mem.Leader != nil {
				leader = mem.Leader.Name
			}
			if mem.Master != nil {
				for _, x := range mem.Master.Masters {
					masters = append(masters, x.Name)
				}
			}
			if mem.Worker != nil {
				for _, x := range mem.Worker.Workers {
					workers = append(workers, x.Name)
				}
			}
		}
		return leader, masters, workers, nil
	}
	return "", nil, nil, fmt.Errorf("no master of cluster %s answered the members API: %w", c.Name, err)
}

// StartMarkers counts each instance's started-<nanos> markers (keyed by
// instance id): one more for every start of its process.
func (c *Cluster) StartMarkers(t testing.TB) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, in := range c.Instances {
		n := c.exec(t, in.Host, fmt.Sprintf("ls -1 %s | grep -c '^started-' || true", domain.ShellQuote(in.MarkerDir())))
		v, err := strconv.Atoi(strings.TrimSpace(n))
		if err != nil {
			t.Fatalf("tiupdm: count the start markers of %s: %q", in.ID(), n)
		}
		out[in.ID()] = v
	}
	return out
}

// Files lists every file and directory of the instances' deploy and data
// directories, keyed by "host:path", with its type, mode, owner, size,
// modification time and (files) SHA-256 — except the contents of the logs
// (*.log), which the running processes append to, of which only the name
// is listed. Two listings are equal when nothing was written there.
func (c *Cluster) Files(t testing.TB) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, h := range c.hosts() {
		var dirs []string
		for _, in := range c.Instances {
			if in.Host == h {
				dirs = append(dirs, domain.ShellQuote(in.DeployDir), domain.ShellQuote(in.DataDir))
			}
		}
		script := fmt.Sprintf(`find %s -printf '%%y %%m %%u %%s %%T@ %%p\n' | while read -r y m u s tm p; do
  case "$p" in
  *.log) echo "log - - - - $p";;
  *) if [ "$y" = f ]; then sum=$(sha256sum "$p" | cut -c1-64); else sum=-; fi; echo "$y $m $u $s $tm $sum $p";;
  esac
done`, strings.Join(dirs, " "))
		for _, line := range strings.Split(strings.TrimSpace(c.exec(t, h, script)), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			p := f[len(f)-1]
			out[strconv.Itoa(h)+":"+p] = strings.Join(f[:len(f)-1], " ")
		}
	}
	return out
}

// DiffFiles describes what differs between two listings of Files, sorted.
func DiffFiles(before, after map[string]string) []string {
	var out []string
	for p, v := range before {
		switch w, ok := after[p]; {
		case !ok:
			out = append(out, "removed "+p)
		case w != v:
			out = append(out, fmt.Sprintf("changed %s: %s → %s", p, v, w))
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			out = append(out, "added "+p)
		}
	}
	sort.Strings(out)
	return out
}

// simulator returns the DM simulator binary of the test package of
// version (bin/dm-master; the simulator runs the program it is installed
// as, so it is also dm-worker).
func simulator(t testing.TB, version string) []byte {
	t.Helper()
	pkg := dmpkg.Package(t, version)
	gz, err := gzip.NewReader(bytes.NewReader(pkg))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			t.Fatalf("tiupdm: the test package %s has no bin/dm-master", version)
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimPrefix(h.Name, "./") == "bin/dm-master" && h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}
