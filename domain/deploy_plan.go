package domain

import (
	"cmp"
	"net"
	"path"
	"slices"
	"strconv"
)

// Health-check timeouts of the deploy plan, in seconds.
const (
	startTimeoutSec        = 120
	clusterCheckTimeoutSec = 120
)

// DeployPlan computes the steps that deploy a cluster: per host, a check
// and the deploy user; per instance, its directories, the component's
// files from the package and the rendered configs and scripts; then the
// starts — masters, workers (after every master), a members check, then
// monitoring — each waiting until the instance is healthy. Steps of
// different hosts do not depend on each other, so they run in parallel.
//
// packages maps package ids to the uploaded packages (their manifests
// name the files to copy). The plan is deterministic: the same input
// gives the same steps in the same order.
func DeployPlan(cluster, version string, topo *Topology, packages map[string]*Package) ([]Step, error) {
	pl := planner{cluster: cluster, version: version, topo: topo, packages: packages}
	return pl.deploy()
}

type planner struct {
	cluster  string
	version  string
	topo     *Topology
	packages map[string]*Package
	steps    []Step
	// join, when set, is the client addresses of running masters: new
	// masters join them (scale-out) instead of forming an initial cluster.
	join []string
}

func (pl *planner) add(s Step) string {
	pl.steps = append(pl.steps, s)
	return s.ID
}

// hosts returns the topology's hosts in first-seen order.
func (pl *planner) hosts() []string {
	var out []string
	for _, in := range pl.topo.Instances {
		if !slices.Contains(out, in.Host) {
			out = append(out, in.Host)
		}
	}
	return out
}

func (pl *planner) deploy() ([]Step, error) {
	pl.hostChecks(pl.hosts(), pl.topo.Instances)
	for _, in := range pl.topo.Instances {
		if err := pl.prepareInstance(in); err != nil {
			return nil, err
		}
	}
	var masterStarts, workerStarts []string
	for _, in := range pl.topo.Instances {
		if in.Role == RoleMaster {
			masterStarts = append(masterStarts, pl.addStart(in, nil))
		}
	}
	for _, in := range pl.topo.Instances {
		if in.Role == RoleWorker {
			workerStarts = append(workerStarts, pl.addStart(in, masterStarts))
		}
	}
	before := slices.Concat(masterStarts, workerStarts)
	if check, ok := pl.clusterCheck(before); ok {
		before = []string{pl.add(check)}
	}
	for _, in := range pl.topo.Instances {
		switch in.Role {
		case RolePrometheus, RoleGrafana, RoleAlertmanager:
			pl.addStart(in, before)
		}
	}
	if err := CheckPlan(pl.steps); err != nil {
		return nil, err
	}
	return pl.steps, nil
}

// hostChecks adds, per host, a check (reachable, sudo, tools, ports free,
// every directory the instances of insts on it will have absent or empty)
// and the deploy user. Every host's deploy user waits for every host's
// check: nothing is written anywhere before every check passed.
func (pl *planner) hostChecks(hosts []string, insts []Instance) {
	g := pl.topo.Global
	var checks []string
	for _, h := range hosts {
		var ports []PortCheck
		var dirs []string
		for _, in := range insts {
			if in.Host != h {
				continue
			}
			svc := serviceName(in)
			for _, p := range in.Ports() {
				ports = append(ports, PortCheck{Port: p, PIDFile: pidFile(in, svc)})
			}
			dirs = append(dirs, in.Dirs()...)
		}
		checks = append(checks, pl.add(Step{ID: "check/" + h, Kind: StepCheckHost, Host: h, User: g.User, Ports: ports, Dirs: dirs,
			Mark: &DirMark{Cluster: pl.cluster, Dirs: topDirs(dirs)}}))
	}
	for _, h := range hosts {
		pl.add(Step{ID: "user/" + h, Kind: StepEnsureUser, Host: h, User: g.User, Needs: slices.Clone(checks)})
	}
}

// prepareInstance adds an instance's directories, files and configs.
func (pl *planner) prepareInstance(in Instance) error {
	g := pl.topo.Global
	dirs := pl.add(Step{ID: "dirs/" + in.ID, Kind: StepMakeDirs, Host: in.Host, Instance: in.ID, Role: in.Role,
		User: g.User, Needs: []string{"user/" + in.Host}, Dirs: instanceDirs(in),
		Mark: &DirMark{Cluster: pl.cluster, Dirs: topDirs(in.Dirs())}})
	copies, err := pl.copies(in)
	if err != nil {
		return err
	}
	pl.add(Step{ID: "copy/" + in.ID, Kind: StepCopyFiles, Host: in.Host, Instance: in.ID, Role: in.Role,
		User: g.User, Needs: []string{dirs}, Copies: copies})
	files, err := pl.renderFiles(in)
	if err != nil {
		return err
	}
	pl.add(Step{ID: "config/" + in.ID, Kind: StepWriteFiles, Host: in.Host, Instance: in.ID, Role: in.Role,
		User: g.User, Needs: []string{dirs}, Files: files})
	return nil
}

// addStart adds the start of an instance after its files and after.
func (pl *planner) addStart(in Instance, after []string) string {
	needs := slices.Concat([]string{"copy/" + in.ID, "config/" + in.ID}, after)
	return pl.add(Step{ID: "start/" + in.ID, Kind: StepStart, Host: in.Host, Instance: in.ID, Role: in.Role,
		User: pl.topo.Global.User, Needs: needs, Service: pl.service(in)})
}

// clusterCheck asks the members API, on the first master's host, for every
// master and worker; there is nothing to check without a master.
func (pl *planner) clusterCheck(needs []string) (Step, bool) {
	var masters, workers, addrs []string
	host := ""
	for _, in := range pl.topo.Instances {
		switch in.Role {
		case RoleMaster:
			if host == "" {
				host = in.Host
			}
			masters = append(masters, in.Name)
			addrs = append(addrs, hostPort(in.Host, in.Port))
		case RoleWorker:
			workers = append(workers, in.Name)
		}
	}
	if host == "" {
		return Step{}, false
	}
	return Step{ID: "check-cluster", Kind: StepCheckCluster, Host: host, Needs: needs,
		Check: &ClusterCheck{MasterAddrs: addrs, Masters: masters, Workers: workers, TimeoutSec: clusterCheckTimeoutSec}}, true
}

// instanceDirs lists the directories of the seed-000 layout for an
// instance: {deploy_dir}/bin, scripts, conf, the data and log directories.
func instanceDirs(in Instance) []string {
	dirs := []string{in.DeployDir, path.Join(in.DeployDir, "bin"), path.Join(in.DeployDir, "scripts"),
		path.Join(in.DeployDir, "conf")}
	if in.Role == RoleGrafana {
		dirs = append(dirs, path.Join(in.DeployDir, "provisioning", "dashboards"),
			path.Join(in.DeployDir, "provisioning", "datasources"))
	}
	for _, d := range []string{in.DataDir, in.LogDir} {
		if d != "" && !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// packageFor returns the package an instance's files come from.
func (pl *planner) packageFor(in Instance) (*Package, error) {
	g := pl.topo.Global
	id := PackageID(DMPackageName, pl.version, cmp.Or(in.OS, g.OS), cmp.Or(in.Arch, g.Arch))
	p := pl.packages[id]
	if p == nil {
		return nil, Errorf(Invalid, "topology line %d: %s needs package %s, which is not uploaded", in.Line, in.label(), id)
	}
	return p, nil
}

// componentFiles are the package files each role needs, and where they go
// under the deploy directory.
var componentFiles = map[Role][]struct{ src, dst string }{
	RoleMaster:       {{"bin/dm-master", "bin/dm-master"}},
	RoleWorker:       {{"bin/dm-worker", "bin/dm-worker"}},
	RolePrometheus:   {{"bin/prometheus", "bin/prometheus"}, {"conf/dm_worker.rules.yml", "conf/dm_worker.rules.yml"}},
	RoleAlertmanager: {{"bin/alertmanager", "bin/alertmanager"}, {"conf/alertmanager.yml", "conf/alertmanager.yml"}},
	RoleGrafana:      {{"grafana.tar.gz", "grafana.tar.gz"}},
}

func (pl *planner) copies(in Instance) ([]CopySpec, error) {
	p, err := pl.packageFor(in)
	if err != nil {
		return nil, err
	}
	var out []CopySpec
	for _, f := range componentFiles[in.Role] {
		i := slices.IndexFunc(p.Files, func(pf PackageFile) bool { return pf.Path == f.src })
		if i < 0 {
			return nil, Errorf(Invalid, "package %s has no %s, which %s needs: upload a complete package", p.ID, f.src, in.label())
		}
		pf := p.Files[i]
		c := CopySpec{Package: p.ID, Object: p.Object, Src: pf.Path, Dst: path.Join(in.DeployDir, f.dst), Mode: pf.Mode,
			SHA256: pf.SHA256, Size: pf.Size, Owner: pl.topo.Global.User}
		if in.Role == RoleGrafana {
			c.UnpackInto = in.DeployDir
		}
		out = append(out, c)
	}
	return out, nil
}

// serviceName is the instance's systemd unit (and pid file) name, as tiup
// names it: "dm-master-8261".
func serviceName(in Instance) string { return string(in.Role) + "-" + strconv.Itoa(in.Port) }

func pidFile(in Instance, svc string) string {
	return path.Join(in.DeployDir, "scripts", svc+".pid")
}

func runScript(in Instance) string {
	return path.Join(in.DeployDir, "scripts", "run_"+string(in.Role)+".sh")
}

// healthPaths are the HTTP routes that answer 200 once an instance is up.
var healthPaths = map[Role]string{
	RoleMaster:       "/status",
	RoleWorker:       "/status",
	RolePrometheus:   "/-/ready",
	RoleAlertmanager: "/-/ready",
	RoleGrafana:      "/api/health",
}

func (pl *planner) service(in Instance) *ServiceSpec {
	g := pl.topo.Global
	svc := serviceName(in)
	s := &ServiceSpec{Name: svc, Manager: g.ServiceManager, DeployDir: in.DeployDir, RunScript: runScript(in),
		User: g.User, HealthAddr: hostPort(in.Host, in.Port), HealthPath: healthPaths[in.Role],
		HealthTimeoutSec: startTimeoutSec}
	if g.ServiceManager == ServiceManagerNone {
		s.PIDFile = pidFile(in, svc)
	} else {
		s.UnitFile = "/etc/systemd/system/" + svc + ".service"
	}
	return s
}

// hostPort joins a host and a port ("[::1]:8261" for IPv6).
func hostPort(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }

// instancesOf returns the topology's instances of role.
func (pl *planner) instancesOf(role Role) []Instance {
	var out []Instance
	for _, in := range pl.topo.Instances {
		if in.Role == role {
			out = append(out, in)
		}
	}
	return out
}

func (pl *planner) masterAddrs() []string {
	var out []string
	for _, m := range pl.instancesOf(RoleMaster) {
		out = append(out, hostPort(m.Host, m.Port))
	}
	return out
}

func errRender(in Instance, what string, err error) error {
	return Errorf(Invalid, "topology line %d: %s: %s: %s", in.Line, in.label(), what, err.Error())
}
