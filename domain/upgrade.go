package domain

import (
	"cmp"
	"slices"
)

// Operation kinds of upgrades, their rollback and patches.
const (
	OperationUpgrade  = "upgrade"
	OperationRollback = "rollback"
	OperationPatch    = "patch"
)

// OperationStatusRolledBack is an upgrade whose rollback was requested: it
// cannot be retried any more (its binaries were switched back).
const OperationStatusRolledBack = "rolled_back"

// StepSwitchFiles replaces files on a host by copies of other files on
// the same host, each atomically (copy next to the target, then rename):
// backups before an upgrade, the switch to the new binary, the switch back
// on a rollback.
const StepSwitchFiles = "switch_files"

// SwitchSpec replaces To by a copy of From (mode kept, owned by Owner);
// with UnpackInto, To is then unpacked into that directory (grafana).
type SwitchSpec struct {
	From       string `json:"from"`
	To         string `json:"to"`
	Owner      string `json:"owner"`
	UnpackInto string `json:"unpack_into,omitempty"`
}

// maxWaitTimeoutSec bounds the per-instance health wait of a roll.
const maxWaitTimeoutSec = 3600

// UpgradeCluster rolls a cluster to another DM version, as
// `tiup dm upgrade`.
type UpgradeCluster struct {
	Name    string
	Version string
	// Leader is the instance id of the dm-master leader as probed when the
	// command was given ("" when unknown). See rollOrder.
	Leader string
	// WaitTimeoutSec bounds each instance's health wait after its start
	// (tiup's --wait-timeout); 0 keeps the default of 120 s.
	WaitTimeoutSec int
	OperationID    string
}

// DecideUpgradeCluster plans an upgrade. First, on every instance, the new
// version's files are uploaded next to the old ones (`bin/dm-master.v8.5.0`)
// and the files in use are copied to backups named by the old version
// (`bin/dm-master.v8.1.0`); only when every instance is prepared does the
// roll begin: one instance at a time — dm-master followers, the dm-master
// leader, dm-workers, prometheus, grafana, alertmanager — each stopped,
// switched to the new files (atomic rename) and started, and waited for
// until healthy before the next one is stopped. A failure blocks every
// later instance, so the operation fails there and a retry resumes at the
// failed step. The target version travels in the OperationRequested, and
// the cluster takes it when the operation succeeds.
func DecideUpgradeCluster(c *Cluster, packages map[string]*Package, cmd UpgradeCluster) ([]Event, error) {
	if !c.Exists() {
		return nil, Errorf(NotFound, "cluster %s does not exist", cmd.Name)
	}
	if cmd.OperationID == "" {
		return nil, Errorf(Invalid, "operation id is required")
	}
	if err := ValidatePackageVersion(cmd.Version); err != nil {
		return nil, err
	}
	if cmd.Version == c.Version {
		return nil, Errorf(Invalid, "cluster %s already runs version %s: name another version to upgrade to", c.Name, c.Version)
	}
	if err := checkWaitTimeout(cmd.WaitTimeoutSec); err != nil {
		return nil, err
	}
	g := c.Global
	for _, in := range c.Instances {
		id := PackageID(DMPackageName, cmd.Version, cmp.Or(in.OS, g.OS), cmp.Or(in.Arch, g.Arch))
		if packages[id] == nil {
			return nil, Errorf(Invalid, "version %s has no uploaded package %s, which %s needs: upload %s-%s.tar.gz (for that platform) with POST /api/v1/packages first",
				cmd.Version, id, in.label(), DMPackageName, cmd.Version)
		}
	}
	if err := CheckIdle(c); err != nil {
		return nil, err
	}
	pl := clusterPlanner(c)
	pl.version, pl.packages = cmd.Version, packages
	order := rollOrder(c.Instances, cmd.Leader)
	files := map[string]rollFiles{}
	for _, in := range order {
		p, err := pl.packageFor(in)
		if err != nil {
			return nil, err
		}
		if err := refuseImportedGrafana(in, "upgrade"); err != nil {
			return nil, err
		}
		var f rollFiles
		for _, cf := range componentFiles[in.Role] {
			dst := in.componentPath(cf.dst)
			cs, err := packageCopy(p, cf.src, dst+"."+cmd.Version, g.User, in)
			if err != nil {
				return nil, err
			}
			f.stage = append(f.stage, cs)
			f.backup = append(f.backup, SwitchSpec{From: dst, To: dst + "." + c.Version, Owner: g.User})
			f.swap = append(f.swap, SwitchSpec{From: dst + "." + cmd.Version, To: dst, Owner: g.User, UnpackInto: unpackInto(in)})
		}
		files[in.ID] = f
	}
	pl.rolling(order, batchesOf(order, 1, 1), files, cmd.WaitTimeoutSec)
	if err := CheckPlan(pl.steps); err != nil {
		return nil, err
	}
	return []Event{OperationRequested{ID: cmd.OperationID, Kind: OperationUpgrade, Cluster: c.Name, Plan: pl.steps,
		Version: cmd.Version, PackageID: PackageID(DMPackageName, cmd.Version, g.OS, g.Arch),
		FromVersion: c.Version, FromPackageID: c.PackageID}}, nil
}

// RollbackOperation returns the instances that an upgrade changed to the
// files they ran before it.
type RollbackOperation struct {
	ID          string // the upgrade
	OperationID string // the rollback
}

// DecideRollbackOperation plans the rollback of an upgrade that failed or
// was cancelled (or of the cluster's last upgrade, succeeded): every
// instance whose roll had begun (its stop ran) is stopped, switched back to
// the backup of its old files and started, one at a time, in the reverse
// order of the upgrade. The upgrade is marked rolled back and can no
// longer be retried; the rollback itself is an operation that can be.
func DecideRollbackOperation(c *Cluster, cmd RollbackOperation) ([]Event, error) {
	op := c.FindOperation(cmd.ID)
	if op == nil {
		return nil, Errorf(NotFound, "operation %s does not exist", cmd.ID)
	}
	if cmd.OperationID == "" {
		return nil, Errorf(Invalid, "operation id is required")
	}
	if op.Kind != OperationUpgrade {
		return nil, Errorf(Invalid, "operation %s is a %s: only an upgrade can be rolled back", op.ID, op.Kind)
	}
	switch {
	case op.Status == OperationStatusFailed || op.Status == OperationStatusCancelled:
	case op.Status == OperationStatusSucceeded && c.Version == op.Version:
	default:
		return nil, Errorf(Conflict, "upgrade %s is %s: only a failed or cancelled upgrade, or the cluster's last upgrade, can be rolled back", op.ID, op.Status)
	}
	if err := CheckIdle(c); err != nil {
		return nil, err
	}
	var touched []Instance
	for i := len(op.Plan) - 1; i >= 0; i-- {
		s := op.Plan[i]
		if s.Kind != StepStop || op.Steps[s.ID].Status == StepStatusPending {
			continue
		}
		if j := slices.IndexFunc(c.Instances, func(in Instance) bool { return in.ID == s.Instance }); j >= 0 {
			touched = append(touched, c.Instances[j])
		}
	}
	if len(touched) == 0 {
		return nil, Errorf(Conflict, "upgrade %s changed no instance: there is nothing to roll back", op.ID)
	}
	pl := clusterPlanner(c)
	files := map[string]rollFiles{}
	for _, in := range touched {
		var f rollFiles
		for _, cf := range componentFiles[in.Role] {
			dst := in.componentPath(cf.dst)
			f.swap = append(f.swap, SwitchSpec{From: dst + "." + op.FromVersion, To: dst, Owner: c.Global.User, UnpackInto: unpackInto(in)})
		}
		files[in.ID] = f
	}
	pl.rolling(touched, batchesOf(touched, 1, 1), files, 0)
	if err := CheckPlan(pl.steps); err != nil {
		return nil, err
	}
	return []Event{OperationRequested{ID: cmd.OperationID, Kind: OperationRollback, Cluster: c.Name, Plan: pl.steps,
		Version: op.FromVersion, PackageID: op.FromPackageID, FromVersion: op.Version, FromPackageID: op.PackageID,
		RollbackOf: op.ID}}, nil
}

// rollFiles are the file moves of one instance's roll: uploads and
// backups before the roll begins, the switch while it is stopped.
type rollFiles struct {
	stage  []CopySpec
	backup []SwitchSpec
	swap   []SwitchSpec
}

// rollOrder orders instances for a roll: dm-masters (followers in
// topology order, then the leader), dm-workers, prometheus, grafana,
// alertmanager.
//
// The leader is not in the cluster's state: the command carries the one
// the service probed (members API) when the command was given, and the
// plan records the order, so the plan stays a deterministic function of
// the events. Rolling a follower does not move the leadership, so the
// probed leader is still the leader when its turn comes; should it have
// moved anyway (an election during the roll), the roll is still one
// master at a time, with the cost of one extra election. When the leader
// is unknown (probe failed), masters roll in topology order.
func rollOrder(insts []Instance, leader string) []Instance {
	var out []Instance
	for _, role := range []Role{RoleMaster, RoleWorker, RolePrometheus, RoleGrafana, RoleAlertmanager} {
		var last []Instance
		for _, in := range insts {
			switch {
			case in.Role != role:
			case role == RoleMaster && in.ID == leader:
				last = append(last, in)
			default:
				out = append(out, in)
			}
		}
		out = append(out, last...)
	}
	return out
}

// batchesOf cuts ordered instances into the batches that restart
// together: up to parallel instances of one role group (masters, workers,
// monitoring), and at most masterMax masters.
func batchesOf(order []Instance, parallel, masterMax int) [][]Instance {
	group := func(r Role) int {
		switch r {
		case RoleMaster:
			return 0
		case RoleWorker:
			return 1
		}
		return 2
	}
	var out [][]Instance
	for _, in := range order {
		limit := parallel
		if in.Role == RoleMaster {
			limit = min(parallel, masterMax)
		}
		if n := len(out); n > 0 && len(out[n-1]) < limit && group(out[n-1][0].Role) == group(in.Role) {
			out[n-1] = append(out[n-1], in)
			continue
		}
		out = append(out, []Instance{in})
	}
	return out
}

// rolling adds a roll: per instance its uploads and backups (no order
// among them, so they run in parallel across hosts), then batch after
// batch — the first after every upload and backup — each instance
// stopped, switched and started; a batch begins once every start of the
// one before succeeded (started and healthy). A members check ends it.
func (pl *planner) rolling(order []Instance, batches [][]Instance, files map[string]rollFiles, waitSec int) {
	user := pl.topo.Global.User
	var prep []string
	for _, in := range order {
		f := files[in.ID]
		if len(f.stage) > 0 {
			prep = append(prep, pl.add(Step{ID: "stage/" + in.ID, Kind: StepCopyFiles, Host: in.Host, Instance: in.ID,
				Role: in.Role, User: user, Copies: f.stage}))
		}
		if len(f.backup) > 0 {
			prep = append(prep, pl.add(Step{ID: "backup/" + in.ID, Kind: StepSwitchFiles, Host: in.Host, Instance: in.ID,
				Role: in.Role, User: user, Switches: f.backup}))
		}
	}
	before := prep
	for _, b := range batches {
		var starts []string
		for _, in := range b {
			stop := pl.addStop(in, before)
			sw := pl.add(Step{ID: "switch/" + in.ID, Kind: StepSwitchFiles, Host: in.Host, Instance: in.ID, Role: in.Role,
				User: user, Needs: []string{stop}, Switches: files[in.ID].swap})
			svc := pl.service(in)
			if waitSec > 0 {
				svc.HealthTimeoutSec = waitSec
			}
			starts = append(starts, pl.add(Step{ID: "start/" + in.ID, Kind: StepStart, Host: in.Host, Instance: in.ID,
				Role: in.Role, User: user, Needs: []string{sw}, Service: svc}))
		}
		before = starts
	}
	if check, ok := pl.clusterCheck(before); ok {
		pl.add(check)
	}
}

// packageCopy is the upload of one file of a package to dst.
func packageCopy(p *Package, src, dst, owner string, in Instance) (CopySpec, error) {
	i := slices.IndexFunc(p.Files, func(pf PackageFile) bool { return pf.Path == src })
	if i < 0 {
		return CopySpec{}, Errorf(Invalid, "package %s has no %s, which %s needs: upload a complete package", p.ID, src, in.label())
	}
	pf := p.Files[i]
	return CopySpec{Package: p.ID, Object: p.Object, Src: pf.Path, Dst: dst, Mode: pf.Mode, SHA256: pf.SHA256,
		Size: pf.Size, Owner: owner}, nil
}

// unpackInto is where a switched file is unpacked: grafana.tar.gz into
// grafana's deploy directory, nothing else.
func unpackInto(in Instance) string {
	if in.Role == RoleGrafana {
		return in.DeployDir
	}
	return ""
}

func checkWaitTimeout(sec int) error {
	if sec < 0 || sec > maxWaitTimeoutSec {
		return Errorf(Invalid, "wait_timeout_sec %d: use 1 to %d seconds, or leave it out for the default of %d", sec, maxWaitTimeoutSec, startTimeoutSec)
	}
	return nil
}
