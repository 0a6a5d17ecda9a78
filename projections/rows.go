package projections

import (
	"encoding/json"
	"slices"
	"time"
)

// The rows the fold produces, one struct per table. They hold times as
// Unix seconds and nanoseconds so that rows (but for eventRow, whose
// payload is bytes) compare with ==.

type eventRow struct {
	Seq              uint64
	Idx              uint16
	CommitID         string
	EventID          string
	Type             string
	SchemaVersion    uint16
	AggregateType    string
	AggregateID      string
	AggregateVersion uint64
	OwnerGroup       string // the commit's group; "default" for a cluster's, machine's or package's commit that names none
	TimeSec          int64
	TimeNS           uint32
	Actor            string
	ActorToken       string
	Operation        string
	CorrelationID    string
	CausationID      string
	FencingToken     int64
	Cluster          string
	Machines         []string
	Step             string
	Outcome          string
	Payload          json.RawMessage // aliases the commit's message: written, never changed
}

type clusterRow struct {
	Name       string
	Status     string
	OwnerGroup string
	DMVersion  string
	Revision   uint64
	State      string // the cluster's JSON without instances and operations
	Seq        uint64
}

type instanceRow struct {
	Cluster string
	ID      string
	Idx     uint32
	Name    string
	Role    string
	Host    string
	Port    uint32
	Status  string
	Spec    string // the instance's JSON
	Deleted uint8
	Seq     uint64
}

type machineRow struct {
	Host        string
	Status      string
	OwnerGroup  string
	SSHPort     uint32
	User        string
	Region      string
	Zone        string
	Rack        string
	Fingerprint string
	State       string // the machine's JSON
	Seq         uint64
}

type operationRow struct {
	ID            string
	Kind          string
	Status        string
	Cluster       string
	OwnerGroup    string // the group of the aggregate it belongs to
	AggregateType string
	AggregateID   string
	Actor         string
	CreatedSec    int64
	CreatedNS     uint32
	CommitSeq     uint64 // 0: no commit named the operation (not listed)
	Attempt       uint32
	Error         string
	Owner         string // the aggregate whose fold wrote the row
	InCluster     uint8  // 1: one of its cluster's operations (domain.Cluster.Operations)
	Ord           uint32 // its index there
	State         string // then: its JSON (domain.Operation) without plan and steps
	Deleted       uint8
	Seq           uint64
}

type stepRow struct {
	Operation  string
	ID         string
	Idx        uint32
	InPlan     uint8
	Kind       string
	Host       string
	Instance   string
	Needs      []string
	Status     string // "pending" when the step has no state
	Attempt    uint32
	Agent      string
	Error      string
	ExitCode   int32
	DurationMS int64
	Spec       string // the plan step's JSON: written by schema 1 only, since then the plans table has it
	State      string // the step's state JSON (domain.StepState), "" when pending
	Deleted    uint8
	Seq        uint64
}

type planRow struct {
	Operation string
	Plan      string // the plan's JSON ([]domain.Step)
	Seq       uint64
}

type packageRow struct {
	ID         string
	Name       string
	Version    string
	OS         string
	Arch       string
	OwnerGroup string
	SHA256     string
	Size       uint64
	State      string // the package's JSON
	Seq        uint64
}

// rowSet is what one batch writes.
type rowSet struct {
	events     []eventRow
	clusters   []clusterRow
	instances  []instanceRow
	machines   []machineRow
	operations []operationRow
	steps      []stepRow
	plans      []planRow
	packages   []packageRow
	// minSeq and maxSeq are the first and last commit of the batch; maxSeq
	// is the progress it records.
	minSeq, maxSeq uint64
	commits        int
}

// dateTime clamps a time to what a DateTime column holds (1970–2106).
func dateTime(sec int64) time.Time {
	switch {
	case sec < 0:
		sec = 0
	case sec > 4294967295:
		sec = 4294967295
	}
	return time.Unix(sec, 0).UTC()
}

func splitTime(t time.Time) (int64, uint32) {
	if t.IsZero() {
		return 0, 0
	}
	return t.Unix(), uint32(t.Nanosecond())
}

func joinTime(sec int64, ns uint32) time.Time {
	if sec == 0 && ns == 0 {
		return time.Time{}
	}
	return time.Unix(sec, int64(ns)).UTC()
}

// merge appends the state rows of other sets (the shards'; nil ones
// skipped) to r, growing each table's rows once.
func (r *rowSet) merge(others ...*rowSet) {
	grow := func(n func(*rowSet) int) int {
		total := 0
		for _, o := range others {
			if o != nil {
				total += n(o)
			}
		}
		return total
	}
	r.clusters = slices.Grow(r.clusters, grow(func(o *rowSet) int { return len(o.clusters) }))
	r.instances = slices.Grow(r.instances, grow(func(o *rowSet) int { return len(o.instances) }))
	r.operations = slices.Grow(r.operations, grow(func(o *rowSet) int { return len(o.operations) }))
	r.steps = slices.Grow(r.steps, grow(func(o *rowSet) int { return len(o.steps) }))
	for _, o := range others {
		if o == nil {
			continue
		}
		r.clusters = append(r.clusters, o.clusters...)
		r.instances = append(r.instances, o.instances...)
		r.machines = append(r.machines, o.machines...)
		r.operations = append(r.operations, o.operations...)
		r.steps = append(r.steps, o.steps...)
		r.plans = append(r.plans, o.plans...)
		r.packages = append(r.packages, o.packages...)
	}
}
