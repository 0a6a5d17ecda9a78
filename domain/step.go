package domain

import (
	"slices"
)

// Step kinds: what an agent does on a host. Every kind is idempotent, so a
// step delivered twice does no harm.
const (
	StepCheckHost    = "check_host"    // reachable, sudo works, directories writable, ports free
	StepEnsureUser   = "ensure_user"   // create the deploy user where missing
	StepMakeDirs     = "make_dirs"     // mkdir -p and chown the instance's directories
	StepCopyFiles    = "copy_files"    // upload the component's files from the package (skipped when the checksum matches)
	StepWriteFiles   = "write_files"   // rendered configs, run scripts and units, replaced atomically
	StepStart        = "start"         // start the instance unless it runs, then wait until it is healthy
	StepCheckCluster = "check_cluster" // the dm-master members API lists every master and worker
	// StepNoop runs `true` on Host (nothing at all without a Host): it
	// measures the work queue, the agents and SSH, and smoke-tests a pool.
	StepNoop = "noop"
)

// Step is one node of an operation's plan. It carries everything an agent
// needs except the machine's credentials, which the agent reads from the
// vault by reference when it runs the step.
type Step struct {
	ID       string          `json:"id"`   // unique within the operation, e.g. "start/10.0.0.1:8261"
	Kind     string          `json:"kind"` // Step* constant
	Host     string          `json:"host"` // machine the step runs on
	Instance string          `json:"instance,omitempty"`
	Role     Role            `json:"role,omitempty"`
	Needs    []string        `json:"needs,omitempty"` // ids of steps that must succeed first
	User     string          `json:"user,omitempty"`  // the deploy user
	Dirs     []string        `json:"dirs,omitempty"`
	Ports    []PortCheck     `json:"ports,omitempty"`
	Files    []FileSpec      `json:"files,omitempty"`  // rendered files
	Copies   []CopySpec      `json:"copies,omitempty"` // files from the package
	Service  *ServiceSpec    `json:"service,omitempty"`
	Check    *ClusterCheck   `json:"check,omitempty"`
	Switches []SwitchSpec    `json:"switches,omitempty"` // StepSwitchFiles
	Verify   *InstanceVerify `json:"verify,omitempty"`   // StepVerifyInstance
	// Mark: the ownership markers of the instance directories that the
	// step checks (check_host), creates (make_dirs) or removes
	// (remove_dirs, force_remove).
	Mark *DirMark `json:"mark,omitempty"`
	// BestEffort: the step may fail without failing the operation (a
	// forced destroy tries each host once).
	BestEffort bool `json:"best_effort,omitempty"`
	// TimeoutSec, when set, is how long the agent works on the step before
	// it gives up.
	TimeoutSec int `json:"timeout_sec,omitempty"`
}

// PortCheck is a port that must be free on a host, unless the instance's
// own process (named by its pid file) already holds it — so that a retried
// check after a partial deploy passes.
type PortCheck struct {
	Port    int    `json:"port"`
	PIDFile string `json:"pid_file,omitempty"`
}

// FileSpec is a rendered file written atomically (temp file, rename).
type FileSpec struct {
	Path    string `json:"path"`
	Content string `json:"content"`
	Mode    uint32 `json:"mode"`
	Owner   string `json:"owner"` // user that owns the file
}

// CopySpec is a file taken from a package and uploaded to a host; the
// upload is skipped when the remote file already has the checksum.
type CopySpec struct {
	Package string `json:"package"` // package id
	Object  string `json:"object"`  // the package's object in the package store
	Src     string `json:"src"`     // path inside the package
	Dst     string `json:"dst"`
	Mode    uint32 `json:"mode"`
	SHA256  string `json:"sha256"`
	Size    int64  `json:"size"`
	Owner   string `json:"owner"`
	// UnpackInto, when set, unpacks the uploaded tar.gz into this directory
	// (grafana.tar.gz into grafana's deploy directory).
	UnpackInto string `json:"unpack_into,omitempty"`
}

// ServiceSpec says how an instance runs and how to tell it is healthy.
type ServiceSpec struct {
	Name      string `json:"name"`    // "dm-master-8261": systemd unit and pid file name
	Manager   string `json:"manager"` // ServiceManagerSystemd or ServiceManagerNone
	DeployDir string `json:"deploy_dir"`
	RunScript string `json:"run_script"`
	PIDFile   string `json:"pid_file,omitempty"` // service_manager none
	UnitFile  string `json:"unit_file,omitempty"`
	User      string `json:"user"`
	// Health: an HTTP GET on HealthAddr (dialled from the host itself,
	// through the SSH connection) must answer 200 within HealthTimeoutSec.
	HealthAddr       string `json:"health_addr"`
	HealthPath       string `json:"health_path"`
	HealthTimeoutSec int    `json:"health_timeout_sec"`
}

// ClusterCheck asks the dm-master members API, from Host, whether every
// master and worker of the cluster is a member and a leader is elected.
type ClusterCheck struct {
	MasterAddrs []string `json:"master_addrs"` // client addresses, any of which may answer
	Masters     []string `json:"masters"`      // member names
	Workers     []string `json:"workers"`
	TimeoutSec  int      `json:"timeout_sec"`
}

// Step statuses within an operation attempt.
const (
	StepStatusPending   = ""
	StepStatusRunning   = "running"
	StepStatusSucceeded = "succeeded"
	StepStatusFailed    = "failed"
)

// StepState is what the events say about one step.
type StepState struct {
	Status     string `json:"status"`
	Attempt    int    `json:"attempt,omitempty"` // the operation attempt that set Status
	Agent      string `json:"agent,omitempty"`
	Error      string `json:"error,omitempty"`
	ExitCode   int    `json:"exit_code,omitempty"`
	DurationMS int64  `json:"duration_ms,omitempty"`
}

// Progress is what an operation can do next, computed from its plan and
// its steps' states.
type Progress struct {
	Ready     []Step   // pending steps whose needs all succeeded
	Running   []string // started, no result yet
	Failed    []string
	Blocked   []string // pending behind a failed step
	Succeeded int      // succeeded, or failed but best effort
	Done      bool     // nothing runs and nothing can run any more
}

// ProgressOf computes what can run next. An operation keeps running the
// steps that do not depend on a failed one (so a retry has less to do), and
// is done when nothing is running and nothing is ready.
func ProgressOf(plan []Step, states map[string]StepState) Progress {
	var p Progress
	failedOrBlocked := map[string]bool{}
	var triedBestEffort map[string]bool // failed best-effort steps
	// Plans are in dependency order (every need comes earlier), so one pass
	// settles the blocked ones.
	for _, s := range plan {
		st := states[s.ID]
		switch st.Status {
		case StepStatusSucceeded:
			p.Succeeded++
			continue
		case StepStatusFailed:
			if s.BestEffort {
				// Settled: it was tried, and may fail; what needs it runs.
				p.Succeeded++
				if triedBestEffort == nil {
					triedBestEffort = map[string]bool{}
				}
				triedBestEffort[s.ID] = true
				continue
			}
			p.Failed = append(p.Failed, s.ID)
			failedOrBlocked[s.ID] = true
			continue
		case StepStatusRunning:
			p.Running = append(p.Running, s.ID)
			continue
		}
		ready, blocked := true, false
		for _, n := range s.Needs {
			if failedOrBlocked[n] {
				blocked = true
			}
			if states[n].Status != StepStatusSucceeded && !triedBestEffort[n] {
				ready = false
			}
		}
		switch {
		case blocked:
			p.Blocked = append(p.Blocked, s.ID)
			failedOrBlocked[s.ID] = true
		case ready:
			p.Ready = append(p.Ready, s)
		}
	}
	p.Done = len(p.Ready) == 0 && len(p.Running) == 0
	return p
}

// CheckPlan verifies that a plan is a DAG in dependency order: ids unique,
// every need names an earlier step.
func CheckPlan(plan []Step) error {
	seen := map[string]bool{}
	for _, s := range plan {
		if s.ID == "" || seen[s.ID] {
			return Errorf(Internal, "plan: step id %q is empty or repeated", s.ID)
		}
		for _, n := range s.Needs {
			if !seen[n] {
				return Errorf(Internal, "plan: step %s needs %s, which does not come before it", s.ID, n)
			}
		}
		seen[s.ID] = true
	}
	return nil
}

// stepIDs returns the ids of steps.
func stepIDs(steps []Step) []string {
	out := make([]string, len(steps))
	for i, s := range steps {
		out[i] = s.ID
	}
	return out
}

// hasStep reports whether the plan has a step with id.
func hasStep(plan []Step, id string) bool {
	return slices.ContainsFunc(plan, func(s Step) bool { return s.ID == id })
}
