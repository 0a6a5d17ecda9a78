package domain

import (
	"cmp"
)

// PatchCluster replaces the binary of some instances by the one of an
// uploaded package, as `tiup dm patch`. A patch is uploaded as any package
// (POST /api/v1/packages with the usual layout), under a version of its
// own such as v8.1.0-hotfix.1; only the component's binary (bin/dm-master,
// bin/dm-worker, bin/prometheus, bin/alertmanager, grafana.tar.gz) is
// taken from it.
type PatchCluster struct {
	Name    string
	Package string // id of an uploaded package, e.g. dm-v8.1.0-hotfix.1-linux-amd64
	Roles   []string
	Nodes   []string
	// Parallel restarts up to this many instances at a time (default 1);
	// masters at most a minority of them at a time, so a quorum stays up.
	Parallel       int
	Leader         string // the dm-master leader's instance id, as in UpgradeCluster
	WaitTimeoutSec int
	OperationID    string
}

// maxParallel bounds a patch's parallelism.
const maxParallel = 64

// DecidePatchCluster plans a patch: the package's binary uploaded next to
// the one in use (`bin/dm-worker.v8.1.0-hotfix.1`) and the one in use
// backed up (`bin/dm-worker.before-<operation>`) on every selected
// instance, then a rolling restart in batches of up to Parallel instances
// in the upgrade's order (masters, leader last, workers, monitoring), each
// batch stopped, switched, started and healthy before the next. The
// cluster's version does not change.
func DecidePatchCluster(c *Cluster, packages map[string]*Package, cmd PatchCluster) ([]Event, error) {
	if !c.Exists() {
		return nil, Errorf(NotFound, "cluster %s does not exist", cmd.Name)
	}
	if cmd.OperationID == "" {
		return nil, Errorf(Invalid, "operation id is required")
	}
	if cmd.Package == "" {
		return nil, Errorf(Invalid, "package is required: the id of an uploaded package (GET /api/v1/packages lists them)")
	}
	p := packages[cmd.Package]
	if p == nil {
		return nil, Errorf(Invalid, "package %s is not uploaded: upload the patch with POST /api/v1/packages first (GET /api/v1/packages lists the uploaded ones)", cmd.Package)
	}
	if len(cmd.Roles) == 0 && len(cmd.Nodes) == 0 {
		return nil, Errorf(Invalid, "name the instances to patch with roles or nodes (or both)")
	}
	if cmd.Parallel < 0 || cmd.Parallel > maxParallel {
		return nil, Errorf(Invalid, "parallel %d: use 1 to %d, or leave it out for one instance at a time", cmd.Parallel, maxParallel)
	}
	if err := checkWaitTimeout(cmd.WaitTimeoutSec); err != nil {
		return nil, err
	}
	insts, err := selectInstances(c, cmd.Roles, cmd.Nodes)
	if err != nil {
		return nil, err
	}
	g := c.Global
	for _, in := range insts {
		if os, arch := cmp.Or(in.OS, g.OS), cmp.Or(in.Arch, g.Arch); os != p.OS || arch != p.Arch {
			return nil, Errorf(Invalid, "package %s is for %s/%s but %s runs on %s/%s: upload the patch for that platform", p.ID, p.OS, p.Arch, in.label(), os, arch)
		}
	}
	if err := CheckIdle(c); err != nil {
		return nil, err
	}
	order := rollOrder(insts, cmd.Leader)
	files := map[string]rollFiles{}
	for _, in := range order {
		if err := refuseImportedGrafana(in, "patch"); err != nil {
			return nil, err
		}
		cf := componentFiles[in.Role][0] // the component's binary comes first
		dst := in.componentPath(cf.dst)
		cs, err := packageCopy(p, cf.src, dst+"."+p.Version, g.User, in)
		if err != nil {
			return nil, err
		}
		files[in.ID] = rollFiles{
			stage:  []CopySpec{cs},
			backup: []SwitchSpec{{From: dst, To: dst + ".before-" + cmd.OperationID, Owner: g.User}},
			swap:   []SwitchSpec{{From: dst + "." + p.Version, To: dst, Owner: g.User, UnpackInto: unpackInto(in)}},
		}
	}
	masters := 0
	for _, in := range c.Instances {
		if in.Role == RoleMaster {
			masters++
		}
	}
	pl := clusterPlanner(c)
	pl.rolling(order, batchesOf(order, max(cmd.Parallel, 1), max((masters-1)/2, 1)), files, cmd.WaitTimeoutSec)
	if err := CheckPlan(pl.steps); err != nil {
		return nil, err
	}
	return []Event{OperationRequested{ID: cmd.OperationID, Kind: OperationPatch, Cluster: c.Name, Plan: pl.steps, PackageID: p.ID}}, nil
}
