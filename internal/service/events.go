package service

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
)

// Event streams: what GET /api/v1/operations/{id}/events and GET
// /api/v1/clusters/{name}/events send. A watch follows one cluster's
// subject of the event stream (an ordered consumer, eventstore.Follow:
// no gap, no repeat) and turns each event into one line of JSON a viewer
// of the cluster may see: the envelope and the event's own fields, chosen
// per event type. Topologies, instance configs, rendered files, copies,
// service specs and server_configs are never sent: they may carry
// secrets (an operation's plan goes out as its slim list of steps).

// EventPos is where an event is in the event stream: the stream sequence
// of its commit and its index in the commit, from 0. Its text form
// "<seq>.<index>" is the id of a server-sent event.
type EventPos struct {
	Seq   uint64
	Index int
}

func (p EventPos) String() string {
	return strconv.FormatUint(p.Seq, 10) + "." + strconv.Itoa(p.Index)
}

// precedes reports whether the event at (seq, index) comes after p.
func (p EventPos) precedes(seq uint64, index int) bool {
	return seq > p.Seq || seq == p.Seq && index > p.Index
}

// maxEventIndex bounds the index an event id may name: a commit holds a
// few events, a large deploy's a few hundred.
const maxEventIndex = 1 << 20

// ParseEventPos reads an event id, "<seq>.<index>" as a stream sent it:
// two decimal integers, the sequence at least 1.
func ParseEventPos(s string) (EventPos, error) {
	seq, idx, ok := strings.Cut(s, ".")
	if !ok || !isDigits(seq) || !isDigits(idx) {
		return EventPos{}, domain.Errorf(domain.Invalid,
			"event id %.64q is not <seq>.<index>: two decimal integers as a stream's id: lines give them, e.g. 42.0", s)
	}
	n, err := strconv.ParseUint(seq, 10, 64)
	if err != nil || n == 0 {
		return EventPos{}, domain.Errorf(domain.Invalid, "event id %.64q: the sequence %.24s is not a stream sequence (1 to %d)", s, seq, uint64(math.MaxUint64))
	}
	i, err := strconv.Atoi(idx)
	if err != nil || i > maxEventIndex {
		return EventPos{}, domain.Errorf(domain.Invalid, "event id %.64q: the index %.24s is larger than a commit holds (at most %d)", s, idx, maxEventIndex)
	}
	return EventPos{Seq: n, Index: i}, nil
}

func isDigits(s string) bool {
	if s == "" || len(s) > 20 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// StreamEvent is one event as a watcher gets it.
type StreamEvent struct {
	Pos  EventPos
	Type string // the domain event type, e.g. StepStarted
	// Data is the event as one line of JSON: seq, index, type, time,
	// actor, cluster, operation, and the event's own fields.
	Data []byte
	// Last: the watch ends after this event (the end of the operation's
	// latest attempt, or of the destroy of the cluster).
	Last bool
}

// Watch is a running follow of events (WatchOperation, WatchCluster). It
// ends after its Last event, when its context ends, or when the event
// stream fails; its consumer is deleted then.
type Watch struct {
	// Events delivers the events in stream order; it is closed when the
	// watch has ended.
	Events <-chan StreamEvent
	// Live is closed once every event committed before the watch started
	// is in Events: from then on events come as they are committed. A
	// watch that ends when it has caught up (an operation that had ended
	// when the watch started) closes Events instead.
	Live <-chan struct{}
	err  error
}

// Err is why the watch ended, once Events is closed: nil when it ended by
// itself or its context ended, the failure of the event stream otherwise.
func (w *Watch) Err() error { return w.err }

// Bounds of a watch.
const (
	// watchSetupTimeout bounds what a watch reads before it follows (the
	// operation index, the cluster, the stream's last sequence).
	watchSetupTimeout = 30 * time.Second
	// watchBuffer is how many events wait for a slow watcher before the
	// consumer waits too.
	watchBuffer = 256
)

// WatchOperation follows the events of operation id, strictly after
// position after (the zero EventPos: from its request on), until the end
// of its latest attempt. Which attempt is latest is decided when the watch
// starts: a failed operation retried later does not end the watch at the
// earlier attempt's failure; an operation that has ended is replayed (from
// after) and the watch ends once it has caught up.
func (s *Service) WatchOperation(ctx context.Context, id string, after EventPos) (*Watch, error) {
	sctx, cancel := context.WithTimeout(ctx, watchSetupTimeout)
	defer cancel()
	ref, ok, err := s.ops.Lookup(sctx, id)
	switch {
	case err != nil:
		return nil, s.indexErr(sctx, err)
	case !ok:
		return nil, domain.Errorf(domain.NotFound, "operation %s does not exist", id)
	case ref.Home == "":
		return nil, domain.Errorf(domain.Conflict, "operation %s completed in its commit on %s %s: it has no progress to follow; GET /api/v1/operations/%s shows it",
			id, ref.AggregateType, ref.AggregateID, id)
	}
	if err := s.checkResume(sctx, after); err != nil {
		return nil, err
	}
	snap, err := s.clusters.read(sctx, ref.Home)
	if err != nil {
		return nil, deadlineErr(sctx, err)
	}
	op := snap.state.FindOperation(id)
	if op == nil {
		return nil, fmt.Errorf("watch operation %s: the operation index names cluster %s, whose history does not carry it", id, ref.Home)
	}
	attempt := op.Attempt
	w := &watcher{after: after, state: snap.state, plans: map[string]map[string]*domain.Step{},
		endWhenCaughtUp: !op.Active(),
		keep: func(e *eventstore.Event, de domain.Event) bool {
			return e.OperationID == id || eventOperation(de) == id
		},
		last: func(_ uint64, de domain.Event) bool {
			end, a := operationEnd(de, id)
			return end && a >= attempt
		}}
	s.log.Debug().Str("operation", id).Str("cluster", ref.Home).Stringer("after", after).Int("attempt", attempt).
		Bool("ended", w.endWhenCaughtUp).Msg("watch operation")
	return s.follow(ctx, ref.Home, max(ref.Seq, after.Seq), w), nil
}

// WatchCluster follows every commit of cluster name: strictly after
// position after, or (after nil) the commits made from now on. It ends
// after the cluster's destroy has succeeded; to replay from a stream
// sequence, pass EventPos{Seq: seq, Index: -1}.
func (s *Service) WatchCluster(ctx context.Context, name string, after *EventPos) (*Watch, error) {
	sctx, cancel := context.WithTimeout(ctx, watchSetupTimeout)
	defer cancel()
	if err := domain.ValidateClusterName(name); err != nil {
		return nil, err
	}
	if after != nil {
		if err := s.checkResume(sctx, *after); err != nil {
			return nil, err
		}
	}
	snap, err := s.clusters.read(sctx, name)
	if err != nil {
		return nil, deadlineErr(sctx, err)
	}
	if !snap.exists || !snap.state.Exists() {
		return nil, domain.Errorf(domain.NotFound, "cluster %s does not exist", name)
	}
	pos := EventPos{Seq: snap.lastSeq + 1, Index: -1} // new commits only
	if after != nil {
		pos = *after
	}
	// The watch ends with the cluster's destroy: the one that runs now,
	// or one requested from now on (an earlier destroy of a cluster of the
	// same name, replayed, ended another cluster).
	destroys := map[string]bool{}
	if op := snap.state.ActiveOperation(); op != nil && op.Kind == domain.OperationDestroy {
		destroys[op.ID] = true
	}
	w := &watcher{after: pos, state: snap.state, plans: map[string]map[string]*domain.Step{},
		last: func(seq uint64, de domain.Event) bool {
			switch e := de.(type) {
			case domain.OperationRequested:
				if e.Kind == domain.OperationDestroy && seq > snap.lastSeq {
					destroys[e.ID] = true
				}
			case domain.OperationSucceeded:
				return destroys[e.ID]
			}
			return false
		}}
	s.log.Debug().Str("cluster", name).Stringer("after", pos).Msg("watch cluster")
	return s.follow(ctx, name, max(pos.Seq, 1), w), nil
}

// checkResume refuses a position past the end of the event stream: no
// stream sent it, and a watch from there would wait for nothing. A
// position {seq, -1} (from commit seq on) may name the next commit.
func (s *Service) checkResume(ctx context.Context, p EventPos) error {
	if p.Seq == 0 {
		return nil
	}
	last, err := s.store.LastSeq(ctx)
	if err != nil {
		return deadlineErr(ctx, fmt.Errorf("watch: %w", err))
	}
	if p.Index < 0 {
		if p.Seq > last+1 {
			return domain.Errorf(domain.Invalid, "sequence %d is past the end of the event stream (its last commit is %d)", p.Seq, last)
		}
		return nil
	}
	if p.Seq > last {
		return domain.Errorf(domain.Invalid, "event id %s is past the end of the event stream (its last commit is %d): send an id a stream gave", p, last)
	}
	return nil
}

// follow runs w on cluster's subject from stream sequence from, in the
// background, until ctx ends, w's last event, or (w.endWhenCaughtUp) it
// has caught up.
func (s *Service) follow(ctx context.Context, cluster string, from uint64, w *watcher) *Watch {
	events := make(chan StreamEvent, watchBuffer)
	live := make(chan struct{})
	out := &Watch{Events: events, Live: live}
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		defer close(events)
		defer cancel()
		// Follow may hand over a commit already read while it stops:
		// nothing is sent after the end.
		stopped := false
		apply := func(seq uint64, evs []eventstore.Event) {
			for i := range evs {
				if stopped {
					return
				}
				ev, ok := w.take(seq, i, &evs[i])
				if !ok {
					continue
				}
				select {
				case events <- ev:
				case <-ctx.Done():
					stopped = true
					return
				}
				if ev.Last {
					stopped = true
					cancel()
				}
			}
		}
		caughtUp := func() {
			switch {
			case stopped:
			case w.endWhenCaughtUp:
				stopped = true
				cancel()
			default:
				close(live)
			}
		}
		subject := eventstore.Subject(domain.AggregateCluster, cluster)
		if err := s.store.Follow(ctx, []string{subject}, from, apply, caughtUp); err != nil && ctx.Err() == nil {
			s.log.Warn().Err(err).Str("cluster", cluster).Msg("watch: the event stream failed")
			out.err = domain.Errorf(domain.Unavailable, "the event stream failed: %v; reconnect with Last-Event-ID", err)
		}
	}()
	return out
}

// watcher turns the events of one cluster's subject into what a watch
// sends.
type watcher struct {
	after EventPos // send only what comes after
	// state is the cluster when the watch started: the plans of the
	// operations requested before.
	state domain.Cluster
	plans map[string]map[string]*domain.Step // per operation, its steps by id (nil: not known)
	// keep chooses the events to send (nil: all).
	keep func(e *eventstore.Event, de domain.Event) bool
	// last reports whether the watch ends after the event at seq; it sees
	// every event sent, in order.
	last            func(seq uint64, de domain.Event) bool
	endWhenCaughtUp bool
}

// take turns event index i of the commit at seq into what is sent, and
// reports false for an event not to send.
func (w *watcher) take(seq uint64, i int, e *eventstore.Event) (StreamEvent, bool) {
	if !w.after.precedes(seq, i) {
		return StreamEvent{}, false
	}
	// An event this binary cannot decode (a newer type) goes out with its
	// envelope only: its fields are not known to be safe to show.
	de, err := domain.DecodeEvent(e.Type, e.SchemaVersion, e.Payload)
	if err != nil {
		de = nil
	}
	if w.keep != nil && !w.keep(e, de) {
		return StreamEvent{}, false
	}
	if r, ok := de.(domain.OperationRequested); ok {
		w.plans[r.ID] = stepsByID(r.Plan)
	}
	data := eventFields(de, w.step)
	op := eventOperation(de)
	if op == "" {
		op = e.OperationID
	}
	data["seq"], data["index"], data["type"] = seq, i, e.Type
	data["time"], data["actor"], data["cluster"], data["operation"] = e.Time.UTC().Format(time.RFC3339Nano), e.Actor, e.AggregateID, op
	b, err := json.Marshal(data)
	if err != nil {
		// Only strings, numbers, lists and maps of them: not reached.
		b = fmt.Appendf(nil, `{"seq":%d,"index":%d,"type":%q,"error":"the event could not be encoded"}`, seq, i, e.Type)
	}
	typ := e.Type
	if strings.ContainsAny(typ, "\r\n") {
		typ = strconv.Quote(typ) // one line of the stream, whatever a commit holds
	}
	return StreamEvent{Pos: EventPos{Seq: seq, Index: i}, Type: typ, Data: b, Last: w.last != nil && w.last(seq, de)}, true
}

// step is step id of operation op's plan.
func (w *watcher) step(op, id string) (*domain.Step, bool) {
	steps, known := w.plans[op]
	if !known {
		if o := w.state.FindOperation(op); o != nil {
			steps = stepsByID(o.Plan)
		}
		w.plans[op] = steps
	}
	s, ok := steps[id]
	return s, ok
}

func stepsByID(plan []domain.Step) map[string]*domain.Step {
	out := make(map[string]*domain.Step, len(plan))
	for i := range plan {
		out[plan[i].ID] = &plan[i]
	}
	return out
}

// eventOperation is the operation an event is about ("" for none).
func eventOperation(de domain.Event) string {
	switch e := de.(type) {
	case domain.OperationRequested:
		return e.ID
	case domain.StepStarted:
		return e.Operation
	case domain.StepSucceeded:
		return e.Operation
	case domain.StepFailed:
		return e.Operation
	case domain.OperationSucceeded:
		return e.ID
	case domain.OperationFailed:
		return e.ID
	case domain.OperationCancelled:
		return e.ID
	case domain.OperationRetried:
		return e.ID
	case domain.OperationCancelRequested:
		return e.ID
	}
	return ""
}

// operationEnd reports whether de ends an attempt of operation id, and
// which.
func operationEnd(de domain.Event, id string) (bool, int) {
	switch e := de.(type) {
	case domain.OperationSucceeded:
		return e.ID == id, e.Attempt
	case domain.OperationFailed:
		return e.ID == id, e.Attempt
	case domain.OperationCancelled:
		return e.ID == id, e.Attempt
	}
	return false, 0
}

// SlimStep is a step of a plan as a stream shows it: what it is and
// where it runs, without what it writes (files, copies, services), which
// may carry configuration secrets.
type SlimStep struct {
	ID       string   `json:"id"`
	Kind     string   `json:"kind"`
	Host     string   `json:"host"`
	Instance string   `json:"instance,omitempty"`
	Role     string   `json:"role,omitempty"`
	Needs    []string `json:"needs,omitempty"`
}

// SlimInstance is an instance of a topology as a stream shows it, without
// its config.
type SlimInstance struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Role string `json:"role"`
	Host string `json:"host"`
	Port int    `json:"port"`
}

func slimPlan(plan []domain.Step) []SlimStep {
	out := make([]SlimStep, len(plan))
	for i, s := range plan {
		out[i] = SlimStep{ID: s.ID, Kind: s.Kind, Host: s.Host, Instance: s.Instance, Role: string(s.Role), Needs: s.Needs}
	}
	return out
}

func slimInstances(ins []domain.Instance) []SlimInstance {
	out := make([]SlimInstance, len(ins))
	for i, in := range ins {
		out[i] = SlimInstance{ID: in.ID, Name: in.Name, Role: string(in.Role), Host: in.Host, Port: in.Port}
	}
	return out
}

// eventFields are the fields of de that a stream shows, by name; step
// finds a step of an operation's plan, whose instance, role and kind
// step events carry. A type not listed shows no field of its own.
func eventFields(de domain.Event, step func(op, id string) (*domain.Step, bool)) map[string]any {
	f := map[string]any{}
	withStep := func(op, id string) {
		if s, ok := step(op, id); ok {
			f["instance"], f["role"], f["kind"] = s.Instance, string(s.Role), s.Kind
		}
	}
	setIf := func(k, v string) {
		if v != "" {
			f[k] = v
		}
	}
	switch e := de.(type) {
	case domain.OperationRequested:
		f["id"], f["kind"], f["plan"] = e.ID, e.Kind, slimPlan(e.Plan)
		setIf("version", e.Version)
		setIf("package_id", e.PackageID)
		setIf("from_version", e.FromVersion)
		setIf("from_package_id", e.FromPackageID)
		setIf("rollback_of", e.RollbackOf)
	case domain.StepStarted:
		f["step"], f["attempt"], f["host"], f["agent"] = e.Step, e.Attempt, e.Host, e.Agent
		withStep(e.Operation, e.Step)
	case domain.StepSucceeded:
		f["step"], f["attempt"], f["host"], f["agent"], f["duration_ms"] = e.Step, e.Attempt, e.Host, e.Agent, e.DurationMS
		f["stdout"], f["stderr"] = e.Stdout, e.Stderr
		withStep(e.Operation, e.Step)
	case domain.StepFailed:
		f["step"], f["attempt"], f["host"], f["agent"], f["duration_ms"] = e.Step, e.Attempt, e.Host, e.Agent, e.DurationMS
		f["exit_code"], f["error"], f["stdout"], f["stderr"] = e.ExitCode, e.Error, e.Stdout, e.Stderr
		withStep(e.Operation, e.Step)
	case domain.OperationSucceeded:
		f["id"], f["attempt"], f["status"] = e.ID, e.Attempt, domain.OperationStatusSucceeded
	case domain.OperationFailed:
		f["id"], f["attempt"], f["status"] = e.ID, e.Attempt, domain.OperationStatusFailed
		f["failed_steps"], f["error"] = orEmpty(e.FailedSteps), e.Error
	case domain.OperationCancelled:
		f["id"], f["attempt"], f["status"] = e.ID, e.Attempt, domain.OperationStatusCancelled
	case domain.OperationRetried:
		f["id"], f["attempt"], f["steps"] = e.ID, e.Attempt, orEmpty(e.Steps)
	case domain.OperationCancelRequested:
		f["id"] = e.ID
	case domain.ClusterLeaderElected:
		f["token"], f["coordinator"] = e.Token, e.Coordinator
	case domain.ClusterDeployRequested:
		f["name"], f["group"], f["version"], f["package_id"] = e.Name, domain.OwnerGroup(e.Group), e.Version, e.PackageID
		f["labels"], f["instances"] = e.Labels, slimInstances(e.Instances)
	case domain.ClusterScaleOutRequested:
		f["instances"] = slimInstances(e.Instances)
	case domain.ClusterScaleInRequested:
		f["nodes"], f["force"] = orEmpty(e.Nodes), e.Force
	case domain.ClusterReloadRequested:
		// Which sections changed, never their values.
		sections := make([]string, 0, len(e.ServerConfigs))
		for k := range e.ServerConfigs {
			sections = append(sections, k)
		}
		slices.Sort(sections)
		f["sections"] = sections
	case domain.ClusterDestroyRequested:
		f["force"], f["retain_data"] = e.Force, e.RetainData
	case domain.OwnerMoved:
		f["from"], f["to"] = e.From, e.To
	case domain.ClusterLabelsSet:
		f["labels"] = e.Labels
	}
	return f
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
