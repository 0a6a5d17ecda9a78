package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"reflect"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
)

// commit is one message of the event stream: the events of one commit,
// decoded by prepare.
type commit struct {
	seq    uint64
	events []eventstore.Event
	// Filled in by prepare, for each event: the domain event (nil when
	// the aggregate has no state here, or on a decode error), the error,
	// and the payload fields the audit trail files it under.
	decoded  []domain.Event
	errs     []error
	fields   []auditFields
	prepared bool
}

// prepare decodes a commit's events: the JSON work of a batch, which
// does not depend on any state, so that batches decode their commits in
// parallel before the fold.
func (c *commit) prepare() { c.prepareWith(nil) }

// prepareWith is prepare with the domain events that were decoded while
// the commit was read (nil, or one per event, nil where not decoded).
func (c *commit) prepareWith(pre []any) {
	if c.prepared {
		return
	}
	c.prepared = true
	c.decoded = make([]domain.Event, len(c.events))
	c.errs = make([]error, len(c.events))
	c.fields = make([]auditFields, len(c.events))
	for i, e := range c.events {
		var de domain.Event
		if pre != nil {
			de, _ = pre[i].(domain.Event)
		}
		keep := stateful(e.AggregateType) || domain.Summarizes(e.Type)
		switch {
		case de != nil:
			if keep {
				c.decoded[i] = de
			}
			c.fields[i] = fieldsOf(de)
			continue
		case stateful(e.AggregateType):
			c.decoded[i], c.errs[i] = domain.DecodeEvent(e.Type, e.SchemaVersion, e.Payload)
		case keep:
			// Other aggregates have no state here; their operations are
			// folded as the service's operation list folds them.
			c.decoded[i], _ = domain.DecodeEvent(e.Type, e.SchemaVersion, e.Payload)
		}
		if c.decoded[i] != nil {
			c.fields[i] = fieldsOf(c.decoded[i])
		} else {
			_ = jsonv2.Unmarshal(e.Payload, &c.fields[i]) // a payload that is not an object has none of the fields
		}
	}
}

// fieldsOf reads the audit fields from a decoded event: the fields whose
// JSON names auditFields has, found once per event type by reflection. The
// payload was encoded from the same struct, so this reads what decoding
// the payload again into auditFields would, without a third JSON pass.
func fieldsOf(e domain.Event) auditFields {
	v := reflect.ValueOf(e)
	if v.Kind() != reflect.Struct {
		return auditFields{}
	}
	ix := auditIndexOf(v.Type())
	var f auditFields
	str := func(i []int) string {
		if i == nil {
			return ""
		}
		return v.FieldByIndex(i).String()
	}
	f.Cluster, f.Operation, f.Step, f.Host = str(ix.cluster), str(ix.operation), str(ix.step), str(ix.host)
	if ix.instances != nil {
		insts := v.FieldByIndex(ix.instances)
		for j := 0; j < insts.Len(); j++ {
			f.Instances = append(f.Instances, struct {
				Host string `json:"host"`
			}{insts.Index(j).FieldByIndex(ix.instanceHost).String()})
		}
	}
	return f
}

// auditIndex is where an event type keeps the audit fields.
type auditIndex struct {
	cluster, operation, step, host []int
	instances, instanceHost        []int
}

var auditIndexes sync.Map // reflect.Type → auditIndex

func auditIndexOf(t reflect.Type) auditIndex {
	if ix, ok := auditIndexes.Load(t); ok {
		return ix.(auditIndex)
	}
	var ix auditIndex
	for _, sf := range reflect.VisibleFields(t) {
		name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
		switch {
		case !sf.IsExported() || len(sf.Index) != 1:
		case sf.Type.Kind() == reflect.String && name == "cluster":
			ix.cluster = sf.Index
		case sf.Type.Kind() == reflect.String && name == "operation":
			ix.operation = sf.Index
		case sf.Type.Kind() == reflect.String && name == "step":
			ix.step = sf.Index
		case sf.Type.Kind() == reflect.String && name == "host":
			ix.host = sf.Index
		case name == "instances" && sf.Type.Kind() == reflect.Slice && sf.Type.Elem().Kind() == reflect.Struct:
			for _, hf := range reflect.VisibleFields(sf.Type.Elem()) {
				if n, _, _ := strings.Cut(hf.Tag.Get("json"), ","); n == "host" && hf.Type.Kind() == reflect.String && len(hf.Index) == 1 {
					ix.instances, ix.instanceHost = sf.Index, hf.Index
				}
			}
		}
	}
	auditIndexes.Store(t, ix)
	return ix
}

type aggKey struct{ typ, id string }

// opView is what the commits say about one operation, folded exactly as
// the service's operation list folds them (first commit naming it: who, when, where;
// later events: kind and status).
type opView struct {
	sum                        domain.OperationSummary
	aggregateType, aggregateID string
	actor                      string
	group                      string // of the first commit naming it (for aggregates without state here)
	createdSec                 int64
	createdNS                  uint32
	commitSeq                  uint64
}

// aggregate is the folded state of one aggregate, as of commit seq.
type aggregate struct {
	key     aggKey
	seq     uint64 // last commit folded
	version uint64 // aggregate version of the last event folded
	// cluster is the cluster's state as of the last snapshot or diff;
	// fold folds its events (copying what it changes once per batch, not
	// once per event).
	cluster domain.Cluster
	fold    domain.ClusterFold
	machine domain.Machine
	pkg     domain.Package
	// ops are the operations that commits of this aggregate named, in the
	// order they were first named. Copied on the first change in a batch,
	// so that the batch's "before" snapshot keeps the old ones.
	ops      map[string]opView
	opOrder  []string
	opsOwned bool
}

// snapshot returns a copy that later changes to a do not reach. Domain
// states are values that Evolve copies before changing; the operation
// views are copied on write.
func (a *aggregate) snapshot() aggregate {
	a.opsOwned = false
	a.settle()
	return *a
}

// settle brings a.cluster up to the events folded.
func (a *aggregate) settle() {
	if a.key.typ == domain.AggregateCluster {
		a.cluster = a.fold.State()
	}
}

// opGroup is the group of an operation of the aggregate: the group that
// owns the cluster, machine or package (so that a move takes its
// operations along), or for other aggregates the group its first commit
// named.
func (a *aggregate) opGroup(v opView) string {
	switch a.key.typ {
	case domain.AggregateCluster:
		return a.cluster.Group
	case domain.AggregateMachine:
		return a.machine.Group
	case domain.AggregatePackage:
		return a.pkg.Group
	}
	return v.group
}

func (a *aggregate) ownOps() {
	if !a.opsOwned {
		a.ops = maps.Clone(a.ops)
		if a.ops == nil {
			a.ops = map[string]opView{}
		}
		a.opOrder = slices.Clone(a.opOrder)
		a.opsOwned = true
	}
}

// stateful reports whether an aggregate type has current-state views.
// Events of other types (users, groups, approvals, refusals, claims, …)
// go to the audit trail and, when a commit names an operation, to the
// operations view; their state is not folded here.
func stateful(typ string) bool {
	switch typ {
	case domain.AggregateCluster, domain.AggregateMachine, domain.AggregatePackage:
		return true
	}
	return false
}

// apply folds one commit into the aggregate. It is deterministic: the
// state after a commit depends only on the state before and the commit.
func (a *aggregate) apply(c *commit, onDecodeError func(eventstore.Event, error)) {
	c.prepare()
	for i, e := range c.events {
		de := c.decoded[i]
		if c.errs[i] != nil {
			// The audit trail still gets the event; the state cannot.
			onDecodeError(e, c.errs[i])
		}
		if de != nil {
			switch a.key.typ {
			case domain.AggregateCluster:
				a.fold.Apply(de)
			case domain.AggregateMachine:
				a.machine = domain.EvolveMachine(a.machine, de)
			case domain.AggregatePackage:
				a.pkg = domain.EvolvePackage(a.pkg, de)
			}
		}
		a.foldOperation(e, de)
		a.version = e.AggregateVersion
	}
	a.seq = c.seq
}

// foldOperation mirrors the service's operationsOf for one event.
func (a *aggregate) foldOperation(e eventstore.Event, de domain.Event) {
	if e.OperationID == "" {
		return
	}
	a.ownOps()
	op, seen := a.ops[e.OperationID]
	if !seen {
		sec, ns := splitTime(e.Time)
		op = opView{aggregateType: e.AggregateType, aggregateID: e.AggregateID, actor: e.Actor, group: e.Group,
			createdSec: sec, createdNS: ns, commitSeq: e.Seq}
		a.opOrder = append(a.opOrder, e.OperationID)
	}
	op.sum = op.sum.Apply(e.Type, de)
	a.ops[e.OperationID] = op
}

// folder turns batches of commits into rows. It keeps every aggregate's
// state between batches; an aggregate it has not seen, or whose history it
// missed (a gap in aggregate versions), is loaded from the event stream, so
// the state is always the fold of the aggregate's whole history.
//
// Aggregates are independent: the folder keeps them in shards (by a hash
// of the aggregate) that fold a batch in parallel, each its aggregates'
// commits in stream order.
type folder struct {
	shards  []*shard
	history func(ctx context.Context, typ, id string) ([]eventstore.Event, error)
	log     zerolog.Logger
	// onDecodeError counts and logs events the domain cannot decode; it
	// is called from several goroutines.
	onDecodeError func(eventstore.Event, error)
}

// shard is the aggregates of one part of the hash space.
type shard struct {
	f     *folder
	aggs  map[aggKey]*aggregate
	loads int // aggregates loaded from the stream
}

func newFolder(history func(ctx context.Context, typ, id string) ([]eventstore.Event, error), log zerolog.Logger,
	onDecodeError func(eventstore.Event, error)) *folder {
	f := &folder{history: history, log: log, onDecodeError: onDecodeError}
	for i := 0; i < max(runtime.GOMAXPROCS(0), 1); i++ {
		f.shards = append(f.shards, &shard{f: f, aggs: map[aggKey]*aggregate{}})
	}
	return f
}

// loads is how many aggregates the folder loaded from the stream.
func (f *folder) loads() int {
	n := 0
	for _, s := range f.shards {
		n += s.loads
	}
	return n
}

func (f *folder) shardOf(key aggKey) int {
	h := fnv.New32a()
	h.Write([]byte(key.typ))
	h.Write([]byte{0})
	h.Write([]byte(key.id))
	return int(h.Sum32() % uint32(len(f.shards)))
}

// project folds a batch (commits in stream order) and returns the rows
// that record it: every event for the audit trail, and the current-state
// rows that changed.
func (f *folder) project(ctx context.Context, commits []commit) (*rowSet, error) {
	n := 0
	for ci := range commits {
		n += len(commits[ci].events)
	}
	out := &rowSet{events: make([]eventRow, 0, n)}
	parts := make([][]*commit, len(f.shards))
	for ci := range commits {
		c := &commits[ci]
		c.prepare()
		out.maxSeq = max(out.maxSeq, c.seq)
		if out.minSeq == 0 || c.seq < out.minSeq {
			out.minSeq = c.seq
		}
		for i, e := range c.events {
			out.events = append(out.events, auditRow(e, i, c.fields[i]))
		}
		if len(c.events) > 0 {
			i := f.shardOf(aggKey{c.events[0].AggregateType, c.events[0].AggregateID})
			parts[i] = append(parts[i], c)
		}
	}
	results := make([]*rowSet, len(f.shards))
	errs := make([]error, len(f.shards))
	var wg sync.WaitGroup
	for i, sh := range f.shards {
		if len(parts[i]) == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = sh.project(ctx, parts[i])
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	out.merge(results...)
	return out, nil
}

// project folds one shard's commits of a batch into the state rows that
// changed.
func (sh *shard) project(ctx context.Context, commits []*commit) (*rowSet, error) {
	// Most events change one step: room for a step row each.
	events := 0
	for _, c := range commits {
		events += len(c.events)
	}
	out := &rowSet{steps: make([]stepRow, 0, events)}
	before := map[aggKey]aggregate{}
	var touched []aggKey
	for _, c := range commits {
		first := c.events[0]
		key := aggKey{first.AggregateType, first.AggregateID}
		a := sh.aggs[key]
		if !stateful(key.typ) && first.OperationID == "" {
			// No state and no operation: nothing to fold (the audit trail
			// has its events). Such subjects may be appended to without
			// a condition (refusals), their aggregate versions not
			// counting up: a gap must not load their history each time.
			if a != nil && c.seq > a.seq && first.AggregateVersion == a.version+1 {
				a.version, a.seq = c.events[len(c.events)-1].AggregateVersion, c.seq
			}
			continue
		}
		if a != nil && c.seq <= a.seq {
			continue // folded before: a redelivery
		}
		if _, ok := before[key]; !ok && a != nil {
			before[key] = a.snapshot()
			touched = append(touched, key)
		}
		if a == nil && first.AggregateVersion == 1 {
			a = &aggregate{key: key}
			sh.aggs[key] = a
		} else if a == nil || first.AggregateVersion != a.version+1 {
			loaded, err := sh.load(ctx, key, c.seq)
			if err != nil {
				return nil, err
			}
			a = loaded
			sh.aggs[key] = a
		}
		if _, ok := before[key]; !ok {
			// Not seen before in this process: its rows up to here are
			// in ClickHouse (everything before the batch is).
			before[key] = a.snapshot()
			touched = append(touched, key)
		}
		a.apply(c, sh.f.onDecodeError)
	}
	for _, key := range touched {
		b, a := before[key], sh.aggs[key]
		a.settle()
		if err := diff(out, &b, a); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// load folds an aggregate's history from the event stream up to (not
// including) commit seq.
func (sh *shard) load(ctx context.Context, key aggKey, seq uint64) (*aggregate, error) {
	evs, err := sh.f.history(ctx, key.typ, key.id)
	if err != nil {
		return nil, fmt.Errorf("load %s %s from the event stream: %w", key.typ, key.id, err)
	}
	sh.loads++
	a := &aggregate{key: key}
	for i := 0; i < len(evs); {
		j := i
		for j < len(evs) && evs[j].Seq == evs[i].Seq {
			j++
		}
		if evs[i].Seq >= seq {
			break
		}
		a.apply(&commit{seq: evs[i].Seq, events: evs[i:j]}, sh.f.onDecodeError)
		i = j
	}
	return a, nil
}

// auditFields are the payload fields, common to several event types, that
// the audit trail filters on. Unknown event types are read the same way.
type auditFields struct {
	Cluster   string `json:"cluster"`
	Operation string `json:"operation"`
	Step      string `json:"step"`
	Host      string `json:"host"`
	Instances []struct {
		Host string `json:"host"`
	} `json:"instances"`
}

func auditRow(e eventstore.Event, idx int, p auditFields) eventRow {
	sec, ns := splitTime(e.Time)
	r := eventRow{
		Seq: e.Seq, Idx: uint16(idx), CommitID: e.CommitID, EventID: e.EventID, Type: e.Type,
		SchemaVersion: uint16(e.SchemaVersion), AggregateType: e.AggregateType, AggregateID: e.AggregateID,
		AggregateVersion: e.AggregateVersion, OwnerGroup: eventGroup(e), TimeSec: sec, TimeNS: ns, Actor: e.Actor, ActorToken: e.ActorToken,
		Operation: e.OperationID, CorrelationID: e.CorrelationID, CausationID: e.CausationID, FencingToken: e.FencingToken,
		Cluster: p.Cluster, Step: p.Step, Payload: e.Payload, Machines: []string{},
	}
	if r.Operation == "" {
		r.Operation = p.Operation
	}
	if e.AggregateType == domain.AggregateCluster {
		r.Cluster = e.AggregateID
	}
	hosts := map[string]bool{}
	if e.AggregateType == domain.AggregateMachine {
		hosts[e.AggregateID] = true
	}
	if p.Host != "" {
		hosts[p.Host] = true
	}
	for _, in := range p.Instances {
		if in.Host != "" {
			hosts[in.Host] = true
		}
	}
	for h := range hosts {
		r.Machines = append(r.Machines, h)
	}
	sort.Strings(r.Machines)
	switch {
	case strings.HasSuffix(e.Type, "Succeeded"):
		r.Outcome = "succeeded"
	case strings.HasSuffix(e.Type, "Failed"):
		r.Outcome = "failed"
	case strings.HasSuffix(e.Type, "Cancelled"):
		r.Outcome = "cancelled"
	}
	return r
}

// eventGroup is the group an event belongs to in the audit trail: its
// commit's, and for a cluster's, machine's or package's commit that names
// none (written before groups existed) the default group. Other events
// without a group (users, claims) are for super admins only.
func eventGroup(e eventstore.Event) string {
	if e.Group == "" && stateful(e.AggregateType) {
		return domain.DefaultGroup
	}
	return e.Group
}

// diff appends the rows that take an aggregate's views from b to a, each
// with version a.seq.
func diff(out *rowSet, b, a *aggregate) error {
	seq := a.seq
	switch a.key.typ {
	case domain.AggregateCluster:
		if err := diffCluster(out, b, a); err != nil {
			return err
		}
	case domain.AggregateMachine:
		m := a.machine
		state, err := json.Marshal(m)
		if err != nil {
			return fmt.Errorf("encode machine %s: %w", a.key.id, err)
		}
		out.machines = append(out.machines, machineRow{Host: a.key.id, Status: m.Status, OwnerGroup: m.Group, SSHPort: uint32(m.SSHPort),
			User: m.User, Region: m.Labels.Region, Zone: m.Labels.Zone, Rack: m.Labels.Rack,
			Fingerprint: m.HostKey.Fingerprint, State: string(state), Seq: seq})
	case domain.AggregatePackage:
		p := a.pkg
		state, err := json.Marshal(p)
		if err != nil {
			return fmt.Errorf("encode package %s: %w", a.key.id, err)
		}
		out.packages = append(out.packages, packageRow{ID: a.key.id, Name: p.Name, Version: p.Version, OS: p.OS,
			Arch: p.Arch, OwnerGroup: p.Group, SHA256: p.SHA256, Size: uint64(max(p.Size, 0)), State: string(state), Seq: seq})
	}
	// Operations that are not (or not yet) one of a cluster's operations:
	// inventory commands, and any command named in a commit only.
	inCluster := map[string]bool{}
	for _, o := range a.cluster.Operations {
		inCluster[o.ID] = true
	}
	for _, id := range a.opOrder {
		if inCluster[id] {
			continue
		}
		r := envelopeRow(id, a.ops[id], a.opGroup(a.ops[id]), a.key.id, seq)
		if old, ok := b.ops[id]; ok && envelopeRow(id, old, b.opGroup(old), a.key.id, seq) == r {
			continue
		}
		out.operations = append(out.operations, r)
	}
	return nil
}

func envelopeRow(id string, v opView, group, owner string, seq uint64) operationRow {
	return operationRow{ID: id, Kind: v.sum.Kind, Status: v.sum.Status, Cluster: v.sum.Cluster, OwnerGroup: group, AggregateType: v.aggregateType,
		AggregateID: v.aggregateID, Actor: v.actor, CreatedSec: v.createdSec, CreatedNS: v.createdNS,
		CommitSeq: v.commitSeq, Attempt: uint32(max(v.sum.Attempt, 0)), Error: v.sum.Error, Owner: owner, Seq: seq}
}

// clusterState is the JSON of a cluster row: the cluster without its
// instances and operations, which have rows of their own.
func clusterState(c domain.Cluster) ([]byte, error) {
	c.Instances, c.Operations = nil, nil
	return json.Marshal(c)
}

func diffCluster(out *rowSet, b, a *aggregate) error {
	seq, name := a.seq, a.key.id
	c := a.cluster
	state, err := clusterState(c)
	if err != nil {
		return fmt.Errorf("encode cluster %s: %w", name, err)
	}
	out.clusters = append(out.clusters, clusterRow{Name: name, Status: c.Status, OwnerGroup: c.Group, DMVersion: c.Version,
		Revision: c.Revision, State: string(state), Seq: seq})

	// Instances, by id.
	oldInst := map[string]int{}
	for i, in := range b.cluster.Instances {
		oldInst[in.ID] = i
	}
	seen := map[string]bool{}
	for i, in := range c.Instances {
		seen[in.ID] = true
		if j, ok := oldInst[in.ID]; ok && j == i && reflect.DeepEqual(b.cluster.Instances[j], in) {
			continue
		}
		spec, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode instance %s of cluster %s: %w", in.ID, name, err)
		}
		out.instances = append(out.instances, instanceRow{Cluster: name, ID: in.ID, Idx: uint32(i), Name: in.Name,
			Role: string(in.Role), Host: in.Host, Port: uint32(max(in.Port, 0)), Status: in.Status, Spec: string(spec), Seq: seq})
	}
	for _, in := range b.cluster.Instances {
		if !seen[in.ID] {
			seen[in.ID] = true
			out.instances = append(out.instances, instanceRow{Cluster: name, ID: in.ID, Deleted: 1, Seq: seq})
		}
	}

	// The cluster's operations and their steps. The cluster fold copies the
	// operations it changes and shares the rest, so an unchanged
	// operation is the same pointer; only the others are encoded and
	// compared. A cluster that moved to another group takes its
	// operations along: each gets a row in the new group.
	moved := b.cluster.Group != c.Group
	oldOps := make(map[string]int, len(b.cluster.Operations))
	for i, o := range b.cluster.Operations {
		oldOps[o.ID] = i
	}
	for i, o := range c.Operations {
		var bo *domain.Operation
		j, existed := oldOps[o.ID]
		if existed {
			bo = b.cluster.Operations[j]
			if bo == o && i == j && !moved && envelopeOf(b.ops, o.ID) == envelopeOf(a.ops, o.ID) {
				continue
			}
		}
		r, err := clusterOpRow(o, i, a.ops, c.Group, name, seq)
		if err != nil {
			return err
		}
		if existed {
			old, err := clusterOpRow(bo, j, b.ops, b.cluster.Group, name, seq)
			if err != nil {
				return err
			}
			existed = old == r
		}
		if !existed {
			out.operations = append(out.operations, r)
		}
		if err := diffSteps(out, bo, o, seq); err != nil {
			return err
		}
	}
	return nil
}

func envelopeOf(ops map[string]opView, id string) opView { return ops[id] }

// clusterOpRow is the row of one of a cluster's operations: its own state
// from the cluster's fold (as the service's Operation shows it), with who asked
// for it and when from the commits.
func clusterOpRow(o *domain.Operation, ord int, ops map[string]opView, group, owner string, seq uint64) (operationRow, error) {
	own := *o
	own.Plan, own.Steps = nil, nil
	state, err := json.Marshal(own)
	if err != nil {
		return operationRow{}, fmt.Errorf("encode operation %s: %w", o.ID, err)
	}
	r := operationRow{ID: o.ID, Kind: o.Kind, Status: o.Status, Cluster: o.Cluster, OwnerGroup: group, Attempt: uint32(max(o.Attempt, 0)),
		Error: o.Error, Owner: owner, InCluster: 1, Ord: uint32(ord), State: string(state), Seq: seq}
	if v, ok := ops[o.ID]; ok {
		r.AggregateType, r.AggregateID, r.Actor = v.aggregateType, v.aggregateID, v.actor
		r.CreatedSec, r.CreatedNS, r.CommitSeq = v.createdSec, v.createdNS, v.commitSeq
	}
	return r, nil
}

// samePlan reports whether two plans are the same slice (Evolve never
// changes a plan in place, so the same slice means the same plan).
func samePlan(x, y []domain.Step) bool {
	return len(x) == len(y) && (len(x) == 0 || &x[0] == &y[0])
}

// sameMap reports whether two step maps are the same map (Evolve copies
// an operation's map before it changes it).
func sameMap(x, y map[string]domain.StepState) bool {
	return reflect.ValueOf(x).UnsafePointer() == reflect.ValueOf(y).UnsafePointer()
}

// diffSteps appends the rows of the steps of o that changed since bo (nil:
// a new operation).
func diffSteps(out *rowSet, bo, o *domain.Operation, seq uint64) error {
	plan := bo != nil && samePlan(bo.Plan, o.Plan)
	if plan && sameMap(bo.Steps, o.Steps) {
		return nil
	}
	var oldSteps map[string]domain.StepState
	if bo != nil {
		oldSteps = bo.Steps
	}
	// How many of the plan's steps have a state, now and before: when
	// that is every state, no state is outside the plan and none is gone.
	withState, hadState := 0, 0
	for i, st := range o.Plan {
		state, present := o.Steps[st.ID]
		old, had := oldSteps[st.ID]
		if present {
			withState++
		}
		if had {
			hadState++
		}
		switch {
		case plan:
			if had == present && old == state {
				continue
			}
		case bo == nil && !present:
			// A new operation's pending steps have no rows: readers
			// take them from the plan row (most steps change within
			// the batches after, and each row is ClickHouse's work).
			continue
		}
		out.steps = append(out.steps, stepRow{Operation: o.ID, ID: st.ID, Idx: uint32(i), InPlan: 1, Kind: st.Kind,
			Host: st.Host, Instance: st.Instance, Needs: nonNil(st.Needs), Seq: seq}.withState(state, present))
	}
	if !plan {
		// The plan itself (rendered files and all) is written once, not
		// with every change of a step's state.
		spec, err := json.Marshal(o.Plan)
		if err != nil {
			return fmt.Errorf("encode the plan of operation %s: %w", o.ID, err)
		}
		out.plans = append(out.plans, planRow{Operation: o.ID, Plan: string(spec), Seq: seq})
	}
	if withState == len(o.Steps) && (bo == nil || plan && hadState == len(oldSteps)) {
		return nil
	}
	inPlan := make(map[string]bool, len(o.Plan))
	for _, st := range o.Plan {
		inPlan[st.ID] = true
	}
	// States of steps that are not in the plan (no event makes them today,
	// but the fold allows it), in id order.
	for _, id := range sortedKeys(o.Steps) {
		if inPlan[id] {
			continue
		}
		old, ok := oldSteps[id]
		if plan && ok && old == o.Steps[id] {
			continue
		}
		out.steps = append(out.steps, stepRow{Operation: o.ID, ID: id, Idx: uint32(len(o.Plan)), Needs: []string{},
			Seq: seq}.withState(o.Steps[id], true))
	}
	// Steps that are gone: from the plan when it changed, or states that
	// were removed.
	if bo != nil {
		gone := map[string]bool{}
		for _, st := range bo.Plan {
			if !inPlan[st.ID] && !hasKey(o.Steps, st.ID) {
				gone[st.ID] = true
			}
		}
		for id := range oldSteps {
			if !inPlan[id] && !hasKey(o.Steps, id) {
				gone[id] = true
			}
		}
		for _, id := range sortedKeys(gone) {
			out.steps = append(out.steps, stepRow{Operation: o.ID, ID: id, Needs: []string{}, Deleted: 1, Seq: seq})
		}
	}
	return nil
}

// withState fills in a step's state; present says whether the operation's
// step map has it (a step without state is pending).
func (r stepRow) withState(s domain.StepState, present bool) stepRow {
	r.Status = s.Status
	if !present || r.Status == domain.StepStatusPending {
		r.Status = "pending"
	}
	r.Attempt, r.Agent, r.Error = uint32(max(s.Attempt, 0)), s.Agent, s.Error
	r.ExitCode, r.DurationMS = int32(s.ExitCode), s.DurationMS
	if present {
		r.State = stepStateJSON(s)
	}
	return r
}

// stepStateJSON is s as encoding/json encodes it (the same fields, empty
// ones left out; strings quoted the RFC 8785 way, which decodes the same),
// a row at a time without reflection: a step row is written for most
// events.
func stepStateJSON(s domain.StepState) string {
	b := make([]byte, 0, 64+len(s.Status)+len(s.Agent)+len(s.Error))
	b = append(b, `{"status":`...)
	b, _ = jsontext.AppendQuote(b, s.Status) // invalid UTF-8 becomes U+FFFD, as encoding/json does
	if s.Attempt != 0 {
		b = strconv.AppendInt(append(b, `,"attempt":`...), int64(s.Attempt), 10)
	}
	if s.Agent != "" {
		b, _ = jsontext.AppendQuote(append(b, `,"agent":`...), s.Agent)
	}
	if s.Error != "" {
		b, _ = jsontext.AppendQuote(append(b, `,"error":`...), s.Error)
	}
	if s.ExitCode != 0 {
		b = strconv.AppendInt(append(b, `,"exit_code":`...), int64(s.ExitCode), 10)
	}
	if s.DurationMS != 0 {
		b = strconv.AppendInt(append(b, `,"duration_ms":`...), s.DurationMS, 10)
	}
	return string(append(b, '}'))
}

func hasKey[V any](m map[string]V, k string) bool {
	_, ok := m[k]
	return ok
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
