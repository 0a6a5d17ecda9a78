package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
)

// appendAs appends events to an aggregate as a command of a member of
// group would: the commit names the group and the actor's token (the
// service of this branch does not set them yet). op names the operation
// ("" for none).
func (e *env) appendAs(typ, id, group, op string, evs ...domain.Event) uint64 {
	e.t.Helper()
	cur, err := e.events.Load(e.ctx, typ, id)
	must(e.t, err, "load "+typ+" "+id)
	c := eventstore.Commit{CommitID: uuid.NewString(), AggregateType: typ, AggregateID: id, Time: time.Now().UTC(),
		Actor: "alice", ActorToken: "tok-" + group, Group: group, OperationID: op}
	for _, ev := range evs {
		p, err := json.Marshal(ev)
		must(e.t, err, "encode")
		c.Events = append(c.Events, eventstore.NewEvent{Type: ev.EventType(), SchemaVersion: 1, Payload: p})
	}
	seq, err := e.events.Append(e.ctx, c, eventstore.Expect{LastSeq: cur.LastSeq, Version: cur.Version()})
	must(e.t, err, "append to "+typ+" "+id)
	return seq
}

func (e *env) registerIn(group, host, op string) {
	e.t.Helper()
	e.appendAs(domain.AggregateMachine, host, group, op, domain.MachineRegistered{Host: host, SSHPort: 22, User: "tidb",
		Credential: domain.CredentialRef{ID: "cred-" + host, Kind: "password"}, Labels: domain.Labels{Zone: "z1"},
		HostKey: domain.HostKey{Key: "ssh-ed25519 AAAA", Fingerprint: "SHA256:x"}, Group: group})
}

func (e *env) uploadIn(group, id, op string) {
	e.t.Helper()
	e.appendAs(domain.AggregatePackage, id, group, op, domain.PackageUploaded{ID: id, Name: "dm", Version: "v8.1.0", OS: "linux",
		Arch: "amd64", SHA256: strings.Repeat("ab", 32), Size: 10, Object: id, Group: group})
}

// deployIn deploys cluster name of group on host: its deploy operation
// op, with one step.
func (e *env) deployIn(group, name, host, op string) {
	e.t.Helper()
	in := domain.Instance{ID: host + ":8261", Name: "dm-" + host + "-8261", Role: domain.RoleMaster, Host: host, Port: 8261, PeerPort: 8291,
		DeployDir: "/dm/deploy/dm-master-8261", DataDir: "/dm/data/dm-master-8261", LogDir: "/dm/deploy/dm-master-8261/log"}
	plan := []domain.Step{{ID: "start/" + in.ID, Kind: domain.StepStart, Host: host, Instance: in.ID, Role: domain.RoleMaster}}
	e.appendAs(domain.AggregateCluster, name, group, op,
		domain.ClusterDeployRequested{Name: name, Group: group, Version: "v8.1.0", PackageID: "dm-v8.1.0-linux-amd64",
			Topology: "master_servers:\n  - host: " + host + "\n", Instances: []domain.Instance{in}},
		domain.OperationRequested{ID: op, Kind: domain.OperationDeploy, Cluster: name, Plan: plan})
}

// groupWorld is two groups, each with a machine, a package and a cluster
// (and the cluster's deploy), a user that belongs to no group, a refusal
// filed under g1, and what an older dmgr wrote without groups (machines,
// a package, clusters through the service).
type groupWorld struct {
	e   *env
	old *scenario
	ops map[string][]string // operation ids by group ("" for none)
}

func newGroupWorld(t *testing.T) *groupWorld {
	e := newEnv(t, "")
	e.start(e.store)
	w := &groupWorld{e: e, old: newScenario(e), ops: map[string][]string{}}
	// Before groups: the commits name none.
	w.old.run()
	for _, g := range []string{"g1", "g2"} {
		n := map[string]int{"g1": 1, "g2": 2}[g]
		host := fmt.Sprintf("10.0.%d.1", n)
		reg, up, dep := "reg-"+g, "upload-"+g, "deploy-"+g
		e.registerIn(g, host, reg)
		e.uploadIn(g, "dm-v8.1.0-"+g, up)
		e.deployIn(g, "c"+fmt.Sprint(n), host, dep)
		w.ops[g] = append(w.ops[g], reg, up, dep)
	}
	// A group's own commits are the group's; a user's are no group's.
	e.appendAs(domain.AggregateGroup, "g1", "g1", "create-g1", domain.GroupCreated{ID: "g1", Name: "g1"})
	w.ops["g1"] = append(w.ops["g1"], "create-g1")
	e.appendAs(domain.AggregateUser, "dave", "", "user-dave", domain.UserCreated{Name: "dave"})
	w.ops[""] = append(w.ops[""], "user-dave")
	e.appendAs(domain.AggregateAccess, "dave", "g1", "", domain.AccessRefused{User: "dave", What: "deploy cluster c1", Group: "g1",
		Need: "operator", Reason: "not a member", Cluster: "c1", Host: "10.0.1.1"})
	e.caughtUp(e.store, 30*time.Second)
	return w
}

// listAll pages through a list one item at a time (so that every page's
// cursor is used) and returns the keys.
func listAll[T any](t *testing.T, list func(ListQuery) (Page[T], error), q ListQuery, key func(T) string) []string {
	t.Helper()
	q.Limit = 1
	out := []string{}
	for i := 0; ; i++ {
		p, err := list(q)
		must(t, err, "list")
		for _, x := range p.Items {
			out = append(out, key(x))
		}
		if p.Next == "" {
			return out
		}
		if i > 1000 {
			t.Fatalf("paging does not end: %v", out)
		}
		q.After = p.Next
	}
}

func (w *groupWorld) clusters(groups []string) []string {
	return listAll(w.e.t.(*testing.T), func(q ListQuery) (Page[domain.Cluster], error) { return w.e.store.ListClusters(w.e.ctx, q) },
		ListQuery{Groups: groups}, func(c domain.Cluster) string { return c.Group + "/" + c.Name })
}

func (w *groupWorld) machines(q ListQuery) []string {
	return listAll(w.e.t.(*testing.T), func(q ListQuery) (Page[domain.Machine], error) { return w.e.store.ListMachines(w.e.ctx, q) },
		q, func(m domain.Machine) string { return m.Group + "/" + m.Host })
}

func (w *groupWorld) packages(groups []string) []string {
	return listAll(w.e.t.(*testing.T), func(q ListQuery) (Page[domain.Package], error) { return w.e.store.ListPackages(w.e.ctx, q) },
		ListQuery{Groups: groups}, func(p domain.Package) string { return p.Group + "/" + p.ID })
}

func (w *groupWorld) operations(groups []string) []string {
	ids := listAll(w.e.t.(*testing.T), func(q ListQuery) (Page[domain.OperationView], error) { return w.e.store.ListOperations(w.e.ctx, q) },
		ListQuery{Groups: groups}, func(o domain.OperationView) string { return o.ID })
	slices.Sort(ids)
	return ids
}

func sortedCopy(xs []string) []string {
	out := slices.Clone(xs)
	slices.Sort(out)
	return out
}

func same(t *testing.T, what string, got, want []string) {
	t.Helper()
	if want == nil {
		want = []string{}
	}
	if jsonOf(t, got) != jsonOf(t, want) {
		t.Fatalf("%s:\n got %v\nwant %v", what, got, want)
	}
}

// Issue [8]: a caller sees the clusters, machines, packages, operations
// and events of their groups only; nil groups (a super admin) see
// everything, an empty list nothing; what was written before groups is
// the default group's.
func TestListsAndAuditKeepTheCallersGroups(t *testing.T) {
	w := newGroupWorld(t)
	e := w.e
	var oldMachines []string
	for _, h := range w.old.machines[:len(w.old.machines)-1] { // the last one was removed
		oldMachines = append(oldMachines, "default/"+h)
	}

	same(t, "clusters of g1", w.clusters([]string{"g1"}), []string{"g1/c1"})
	same(t, "clusters of g2", w.clusters([]string{"g2"}), []string{"g2/c2"})
	same(t, "clusters of g1 and g2", w.clusters([]string{"g1", "g2"}), []string{"g1/c1", "g2/c2"})
	same(t, "clusters of default", w.clusters([]string{domain.DefaultGroup}), []string{"default/prod-a", "default/prod-c", "default/prod.b"})
	same(t, "clusters of nobody", w.clusters([]string{}), nil)
	same(t, "clusters of a group that owns none", w.clusters([]string{"g3"}), nil)
	same(t, "every cluster", w.clusters(nil), []string{"g1/c1", "g2/c2", "default/prod-a", "default/prod-c", "default/prod.b"})
	// The group filter goes with the others.
	page, err := e.store.ListClusters(e.ctx, ListQuery{Groups: []string{"g1", "default"}, Status: domain.ClusterStatusRunning})
	must(t, err, "list running clusters")
	if len(page.Items) != 1 || page.Items[0].Name != "prod-a" {
		t.Fatalf("running clusters of g1 and default: %s", jsonOf(t, page.Items))
	}

	same(t, "machines of g1", w.machines(ListQuery{Groups: []string{"g1"}}), []string{"g1/10.0.1.1"})
	same(t, "machines of g2 in zone z1", w.machines(ListQuery{Groups: []string{"g2"}, Label: LabelFilter{"zone", "z1"}}), []string{"g2/10.0.2.1"})
	same(t, "machines of g1 in zone z2", w.machines(ListQuery{Groups: []string{"g1"}, Label: LabelFilter{"zone", "z2"}}), nil)
	same(t, "machines of default", w.machines(ListQuery{Groups: []string{"default"}}), oldMachines)
	same(t, "machines of nobody", w.machines(ListQuery{Groups: []string{}}), nil)
	same(t, "every machine", w.machines(ListQuery{}), append([]string{"g1/10.0.1.1", "g2/10.0.2.1"}, oldMachines...))

	same(t, "packages of g2", w.packages([]string{"g2"}), []string{"g2/dm-v8.1.0-g2"})
	same(t, "packages of default", w.packages([]string{"default"}), []string{"default/dm-v8.1.0-linux-amd64"})
	same(t, "packages of nobody", w.packages([]string{}), nil)
	same(t, "every package", w.packages(nil), []string{"g1/dm-v8.1.0-g1", "g2/dm-v8.1.0-g2", "default/dm-v8.1.0-linux-amd64"})

	same(t, "operations of g1", w.operations([]string{"g1"}), sortedCopy(w.ops["g1"]))
	same(t, "operations of g2", w.operations([]string{"g2"}), sortedCopy(w.ops["g2"]))
	same(t, "operations of nobody", w.operations([]string{}), nil)
	// Every operation of the commands before groups is the default
	// group's; every operation is one group's or another's, or no group's.
	all, defaults := w.operations(nil), w.operations([]string{"default"})
	for _, id := range w.old.ops {
		if !slices.Contains(defaults, id) {
			t.Fatalf("operation %s of the commands before groups is not the default group's: %v", id, defaults)
		}
	}
	same(t, "every operation", all, sortedCopy(slices.Concat(w.ops["g1"], w.ops["g2"], w.ops[""], defaults)))
	for g, ids := range w.ops {
		for _, id := range ids {
			got, err := e.store.OperationGroup(e.ctx, id)
			must(t, err, "operation group")
			if got != g {
				t.Fatalf("operation %s belongs to %q, want %q", id, got, g)
			}
		}
	}
	if _, err := e.store.OperationGroup(e.ctx, "no-such-operation"); domain.ErrorCode(err) != domain.NotFound {
		t.Fatalf("group of an operation that does not exist: %v", err)
	}

	// Single reads carry the group.
	c, err := e.store.Cluster(e.ctx, "c2")
	must(t, err, "cluster")
	m, err := e.store.Machine(e.ctx, "10.0.1.1")
	must(t, err, "machine")
	old, err := e.store.Cluster(e.ctx, "prod-a")
	must(t, err, "cluster")
	if c.Group != "g2" || m.Group != "g1" || old.Group != domain.DefaultGroup {
		t.Fatalf("groups of c2, 10.0.1.1, prod-a: %q, %q, %q", c.Group, m.Group, old.Group)
	}

	// The audit trail: a group's events are the ones its commits named,
	// and the default group's are the clusters', machines' and packages'
	// events that named none. Others (claims, users) are for super
	// admins only.
	st, err := e.events.LoadFilter(e.ctx, eventstore.AllSubjects)
	must(t, err, "load stream")
	for _, c := range []struct {
		name   string
		groups []string
		keep   func(eventstore.Event) bool
	}{
		{"g1", []string{"g1"}, func(ev eventstore.Event) bool { return ev.Group == "g1" }},
		{"g1 and g2", []string{"g1", "g2"}, func(ev eventstore.Event) bool { return ev.Group == "g1" || ev.Group == "g2" }},
		{"default", []string{"default"}, func(ev eventstore.Event) bool {
			return ev.Group == domain.DefaultGroup || ev.Group == "" && stateful(ev.AggregateType)
		}},
		{"nobody", []string{}, func(eventstore.Event) bool { return false }},
		{"everybody", nil, func(eventstore.Event) bool { return true }},
	} {
		want := expectedAudit(t, st.Events, func(ev eventstore.Event, _ int) bool { return c.keep(ev) })
		got := e.allAudit(e.store, AuditQuery{Groups: c.groups, Limit: 3})
		same(t, "audit of "+c.name, keysOf(got), want)
		if c.groups == nil && len(want) < 40 {
			t.Fatalf("the trail has only %d events", len(want))
		}
	}
	// Filters combine with the groups: g2 sees nothing of cluster c1, g1
	// its deploy and the refusal filed under it.
	same(t, "audit of c1 for g2", keysOf(e.allAudit(e.store, AuditQuery{Cluster: "c1", Groups: []string{"g2"}})), nil)
	got := e.allAudit(e.store, AuditQuery{Cluster: "c1", Groups: []string{"g1"}})
	var types []string
	for _, ev := range got {
		types = append(types, ev.Type)
		if ev.Group != "g1" || ev.ActorToken != "tok-g1" {
			t.Fatalf("event %s of c1: group %q, actor token %q", ev.Type, ev.Group, ev.ActorToken)
		}
	}
	same(t, "c1's trail for g1", types, []string{domain.TypeAccessRefused, domain.TypeOperationRequested, domain.TypeClusterDeployRequested})
	raw, err := json.Marshal(got[0])
	must(t, err, "encode")
	if !strings.Contains(string(raw), `"group":"g1"`) || !strings.Contains(string(raw), `"actor_token":"tok-g1"`) {
		t.Fatalf("audit JSON: %s", raw)
	}

	// The projections still answer as the service's fold (which sets the
	// groups too).
	e.sameAnswers(e.store)
}

// Moving a cluster moves its row and every one of its operations; its
// later operations follow it. A machine moves the same way. OwnedBy names
// what a group still owns.
func TestOwnerMovedMovesRowsAndOwnedByNamesWhatIsLeft(t *testing.T) {
	w := newGroupWorld(t)
	e := w.e
	owned := func(g, want string) {
		t.Helper()
		e.caughtUp(e.store, 30*time.Second)
		got, err := e.store.OwnedBy(e.ctx, g)
		must(t, err, "owned by "+g)
		if got != want {
			t.Fatalf("OwnedBy(%s) = %q, want %q", g, got, want)
		}
	}
	owned("g1", "cluster c1")
	owned("default", "cluster prod-a")
	owned("g3", "")

	e.appendAs(domain.AggregateCluster, "c1", "g2", "move-c1", domain.OwnerMoved{From: "g1", To: "g2"})
	owned("g1", "machine 10.0.1.1")
	same(t, "clusters of g1 after the move", w.clusters([]string{"g1"}), nil)
	same(t, "clusters of g2 after the move", w.clusters([]string{"g2"}), []string{"g2/c1", "g2/c2"})
	g1ops := []string{"create-g1", "reg-g1", "upload-g1"}
	same(t, "operations of g1 after the move", w.operations([]string{"g1"}), g1ops)
	same(t, "operations of g2 after the move", w.operations([]string{"g2"}), sortedCopy(append(w.ops["g2"], "deploy-g1", "move-c1")))
	// The moved cluster's operation goes on (its deploy starts a step).
	e.appendAs(domain.AggregateCluster, "c1", "g2", "deploy-g1", domain.StepStarted{Operation: "deploy-g1", Step: "start/10.0.1.1:8261",
		Attempt: 1, Host: "10.0.1.1", Agent: "agent-1"})
	e.caughtUp(e.store, 30*time.Second)
	for _, id := range []string{"deploy-g1", "move-c1"} {
		if g, err := e.store.OperationGroup(e.ctx, id); err != nil || g != "g2" {
			t.Fatalf("operation %s after the move: group %q, %v", id, g, err)
		}
	}
	c, err := e.store.Cluster(e.ctx, "c1")
	must(t, err, "cluster")
	if c.Group != "g2" || len(c.Operations) != 1 || c.Operations[0].Status != domain.OperationStatusRunning {
		t.Fatalf("c1 after the move: %s", jsonOf(t, c))
	}

	// The machine follows; then the group owns only its package.
	e.appendAs(domain.AggregateMachine, "10.0.1.1", "g2", "move-m1", domain.OwnerMoved{From: "g1", To: "g2"})
	owned("g1", "package dm-v8.1.0-g1")
	same(t, "machines of g2 after the move", w.machines(ListQuery{Groups: []string{"g2"}}), []string{"g2/10.0.1.1", "g2/10.0.2.1"})
	same(t, "operations of g1 after both moves", w.operations([]string{"g1"}), []string{"create-g1", "upload-g1"})
	e.appendAs(domain.AggregatePackage, "dm-v8.1.0-g1", "g2", "move-p1", domain.OwnerMoved{From: "g1", To: "g2"})
	owned("g1", "")
	same(t, "packages of g2 after the move", w.packages([]string{"g2"}), []string{"g2/dm-v8.1.0-g1", "g2/dm-v8.1.0-g2"})

	// A destroyed cluster and a removed machine are not owned any more.
	e.appendAs(domain.AggregatePackage, "dm-v8.1.0-g2", "g1", "move-p2", domain.OwnerMoved{From: "g2", To: "g1"})
	e.appendAs(domain.AggregatePackage, "dm-v8.1.0-g1", "g1", "move-p1-back", domain.OwnerMoved{From: "g2", To: "g1"})
	owned("g2", "cluster c1")
	for _, name := range []string{"c1", "c2"} {
		op := "destroy-" + name
		e.appendAs(domain.AggregateCluster, name, "g2", op, domain.OperationRequested{ID: op, Kind: domain.OperationDestroy, Cluster: name},
			domain.OperationSucceeded{ID: op, Attempt: 1})
	}
	owned("g2", "machine 10.0.1.1")
	for _, h := range []string{"10.0.1.1", "10.0.2.1"} {
		e.appendAs(domain.AggregateMachine, h, "g2", "remove-"+h, domain.MachineRemoved{Host: h})
	}
	owned("g2", "")
	owned("g1", "package dm-v8.1.0-g1")

	// The audit trail keeps history where it happened: c1's deploy stays
	// g1's, its move and what followed are g2's.
	var g1, g2 []string
	for _, ev := range e.allAudit(e.store, AuditQuery{Cluster: "c1", Groups: []string{"g1"}}) {
		g1 = append(g1, ev.Type)
	}
	for _, ev := range e.allAudit(e.store, AuditQuery{Cluster: "c1", Groups: []string{"g2"}}) {
		g2 = append(g2, ev.Type)
	}
	same(t, "c1's trail for g1", g1, []string{domain.TypeAccessRefused, domain.TypeOperationRequested, domain.TypeClusterDeployRequested})
	same(t, "c1's trail for g2", g2, []string{domain.TypeOperationSucceeded, domain.TypeOperationRequested, domain.TypeStepStarted, domain.TypeOwnerMoved})
	e.sameAnswers(e.store)
}

// Refusals are appended to a user's access subject without a condition:
// their aggregate versions do not count up. The fold puts them in the
// audit trail only, and never loads their history (which would cost more
// with every refusal). A user's commits that name an operation still give
// it a row, in no group.
func TestAggregatesWithoutStateAreAuditedNotLoaded(t *testing.T) {
	loads := 0
	f := newFolder(func(context.Context, string, string) ([]eventstore.Event, error) {
		loads++
		return nil, nil
	}, zerologNop, func(ev eventstore.Event, err error) { t.Errorf("decode %s: %v", ev.Type, err) })
	refusal, err := json.Marshal(domain.AccessRefused{User: "dave", What: "deploy", Group: "g1", Reason: "not a member", Cluster: "c1", Host: "10.0.1.1"})
	must(t, err, "encode")
	created, err := json.Marshal(domain.UserCreated{Name: "dave"})
	must(t, err, "encode")
	ev := func(seq uint64, typ, agg, id, group, op string, version uint64, payload []byte) commit {
		return commit{seq: seq, events: []eventstore.Event{{Seq: seq, CommitID: fmt.Sprint(seq), EventID: fmt.Sprint(seq), Type: typ, SchemaVersion: 1,
			AggregateType: agg, AggregateID: id, AggregateVersion: version, Group: group, ActorToken: "tok", OperationID: op,
			Time: time.Unix(int64(seq), 0), Actor: "dave", Payload: payload}}}
	}
	var seq uint64
	for batch := 0; batch < 3; batch++ {
		var cs []commit
		for i := 0; i < 4; i++ {
			seq++
			cs = append(cs, ev(seq, domain.TypeAccessRefused, domain.AggregateAccess, "dave", "g1", "", 1, refusal))
		}
		if batch == 1 {
			seq++
			cs = append(cs, ev(seq, domain.TypeUserCreated, domain.AggregateUser, "erin", "", "op-erin", 1, created))
		}
		rows, err := f.project(context.Background(), cs)
		must(t, err, "project")
		if len(rows.events) != len(cs) {
			t.Fatalf("batch %d: %d audit rows for %d events", batch, len(rows.events), len(cs))
		}
		for _, r := range rows.events {
			if r.AggregateType == domain.AggregateAccess && (r.OwnerGroup != "g1" || r.Cluster != "c1" || jsonOf(t, r.Machines) != `["10.0.1.1"]` || r.ActorToken != "tok") {
				t.Fatalf("refusal's audit row: %+v", r)
			}
			if r.AggregateType == domain.AggregateUser && r.OwnerGroup != "" {
				t.Fatalf("a user's event is filed under group %q", r.OwnerGroup)
			}
		}
		wantOps := 0
		if batch == 1 {
			wantOps = 1
			if op := rows.operations[0]; op.ID != "op-erin" || op.OwnerGroup != "" || op.CommitSeq != seq {
				t.Fatalf("the user's operation: %+v", op)
			}
		}
		if len(rows.operations) != wantOps || len(rows.clusters)+len(rows.machines)+len(rows.packages) != 0 {
			t.Fatalf("batch %d: state rows %+v", batch, rows)
		}
	}
	if loads != 0 || f.loads() != 0 {
		t.Fatalf("the fold loaded %d histories", loads)
	}
}

// A generation projected before groups (migrations 1 and 2) gets the
// columns of migration 3 when this dmgr starts, and its rows read as the
// default group's: every cluster, machine, package and operation, and
// the events of clusters, machines and packages (not a claim's).
func TestMigration3FilesOldRowsUnderTheDefaultGroup(t *testing.T) {
	e := newEnv(t, "")
	for _, stmt := range bootstrap {
		must(t, e.conn.Exec(e.ctx, expand(stmt, e.db, 0)), "bootstrap")
	}
	_, err := applyMigrations(e.ctx, e.conn, e.db, 1, migrations[:2])
	must(t, err, "migrations 1 and 2")
	must(t, e.store.setGeneration(e.ctx, 1), "generation")
	hasColumn := func(table, col string) bool {
		var n uint64
		must(t, e.conn.QueryRow(e.ctx, "SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = ?", e.db, table, col).Scan(&n), "columns")
		return n == 1
	}
	for _, tc := range [][2]string{{"events_g1", "owner_group"}, {"events_g1", "actor_token"}} {
		if hasColumn(tc[0], tc[1]) {
			t.Fatalf("migrations 1 and 2 made %s.%s", tc[0], tc[1])
		}
	}

	// Rows as an older dmgr wrote them: states without a group.
	noGroup := func(v any) string {
		b, err := json.Marshal(v)
		must(t, err, "encode")
		var m map[string]any
		must(t, json.Unmarshal(b, &m), "decode")
		if g, ok := m["group"]; !ok || g != "" {
			t.Fatalf("no empty group in %s", b)
		}
		delete(m, "group")
		return jsonOf(t, m)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ins := func(tbl, cols string, rows ...[]any) {
		t.Helper()
		must(t, insertRows(e.ctx, e.conn, table(e.db, tbl, 1), cols, len(rows), func(b driver.Batch, lo, hi int) error {
			for _, r := range rows[lo:hi] {
				if err := b.Append(r...); err != nil {
					return err
				}
			}
			return nil
		}), "insert into "+tbl)
	}
	ins(tableEvents, "seq, idx, commit_id, event_id, type, schema_version, aggregate_type, aggregate_id, aggregate_version, time, time_ns, "+
		"actor, operation, correlation_id, causation_id, fencing_token, cluster, machines, step, outcome, payload",
		[]any{uint64(1), uint16(0), "c1", "e1", domain.TypeClusterDeployRequested, uint16(1), domain.AggregateCluster, "old-c", uint64(1), at, uint32(0),
			"alice", "op-old", "", "", int64(0), "old-c", []string{"10.9.0.1"}, "", "", `{}`},
		[]any{uint64(2), uint16(0), "c2", "e2", domain.TypeClaimTaken, uint16(1), domain.AggregateClaim, "addr:10.9.0.1", uint64(1), at, uint32(0),
			"admin", "", "", "", int64(0), "", []string{}, "", "", `{}`})
	ins(tableClusters, "name, status, dm_version, revision, state, seq",
		[]any{"old-c", domain.ClusterStatusRunning, "v8.1.0", uint64(1), noGroup(domain.Cluster{Name: "old-c", Version: "v8.1.0", Status: domain.ClusterStatusRunning}), uint64(1)})
	ins(tableMachines, "host, status, ssh_port, user, region, zone, rack, fingerprint, state, seq",
		[]any{"10.9.0.1", domain.MachineStatusRegistered, uint32(22), "tidb", "", "", "", "", noGroup(domain.Machine{Host: "10.9.0.1", SSHPort: 22, Status: domain.MachineStatusRegistered}), uint64(2)})
	ins(tablePackages, "id, name, version, os, arch, sha256, size, state, seq",
		[]any{"dm-old", "dm", "v8.1.0", "linux", "amd64", "", uint64(1), noGroup(domain.Package{ID: "dm-old", Name: "dm", Version: "v8.1.0"}), uint64(1)})
	ins(tableOperations, "id, kind, status, cluster, aggregate_type, aggregate_id, actor, created_at, created_ns, commit_seq, attempt, error, owner, in_cluster, ord, state, deleted, seq",
		[]any{"op-old", domain.OperationDeploy, domain.OperationStatusSucceeded, "old-c", domain.AggregateCluster, "old-c", "alice", at, uint32(0), uint64(1),
			uint32(1), "", "old-c", uint8(0), uint32(0), "", uint8(0), uint64(1)})
	must(t, recordProgress(e.ctx, e.conn, e.db, 1, 2), "progress")

	// This dmgr starts.
	gen, err := e.store.EnsureSchema(e.ctx)
	must(t, err, "ensure schema")
	for _, tbl := range []string{tableEvents, tableClusters, tableMachines, tablePackages, tableOperations} {
		if gen != 1 || !hasColumn(tbl+"_g1", "owner_group") {
			t.Fatalf("generation %d after the upgrade; %s has owner_group: %v", gen, tbl, hasColumn(tbl+"_g1", "owner_group"))
		}
	}
	if !hasColumn("events_g1", "actor_token") {
		t.Fatal("no actor_token in the audit trail after the upgrade")
	}

	def := []string{domain.DefaultGroup}
	var groups []string
	for _, ev := range e.allAudit(e.store, AuditQuery{}) {
		groups = append(groups, ev.Type+":"+ev.Group+":"+ev.ActorToken)
	}
	same(t, "the old trail's groups", groups, []string{domain.TypeClaimTaken + "::", domain.TypeClusterDeployRequested + ":default:"})
	same(t, "the old trail of the default group", keysOf(e.allAudit(e.store, AuditQuery{Groups: def})), []string{"1.0"})
	same(t, "the old trail of g1", keysOf(e.allAudit(e.store, AuditQuery{Groups: []string{"g1"}})), nil)

	cs, err := e.store.ListClusters(e.ctx, ListQuery{Groups: def})
	must(t, err, "clusters")
	ms, err := e.store.ListMachines(e.ctx, ListQuery{Groups: def})
	must(t, err, "machines")
	ps, err := e.store.ListPackages(e.ctx, ListQuery{Groups: def})
	must(t, err, "packages")
	ops, err := e.store.ListOperations(e.ctx, ListQuery{Groups: def})
	must(t, err, "operations")
	if len(cs.Items) != 1 || cs.Items[0].Group != "default" || len(ms.Items) != 1 || ms.Items[0].Group != "default" ||
		len(ps.Items) != 1 || ps.Items[0].Group != "default" || len(ops.Items) != 1 || ops.Items[0].ID != "op-old" {
		t.Fatalf("the default group's old rows: clusters %s, machines %s, packages %s, operations %s",
			jsonOf(t, cs.Items), jsonOf(t, ms.Items), jsonOf(t, ps.Items), jsonOf(t, ops.Items))
	}
	cs, err = e.store.ListClusters(e.ctx, ListQuery{Groups: []string{"g1"}})
	must(t, err, "clusters of g1")
	if len(cs.Items) != 0 {
		t.Fatalf("g1 sees old clusters: %s", jsonOf(t, cs.Items))
	}
	if g, err := e.store.OperationGroup(e.ctx, "op-old"); err != nil || g != "default" {
		t.Fatalf("the old operation's group: %q, %v", g, err)
	}
	if what, err := e.store.OwnedBy(e.ctx, "default"); err != nil || what != "cluster old-c" {
		t.Fatalf("OwnedBy(default) = %q, %v", what, err)
	}
}
