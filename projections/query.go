package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/dmgr/dmgr/domain"
)

// Every current-state read deduplicates on read: GROUP BY the table's key,
// argMax(column, seq) for each column, and filters (deleted, status) after
// the grouping, so a row that a replay wrote twice, or an older version
// not merged away yet, is never shown.

// Clusters lists the clusters that exist (not destroyed), sorted by name,
// each with its instances and operations, as the event-store fold shows
// them (domain.Cluster).
func (s *Store) Clusters(ctx context.Context) ([]domain.Cluster, error) {
	gen, err := s.Generation(ctx)
	if err != nil {
		return nil, err
	}
	return s.clusters(ctx, gen, "", nil)
}

// Cluster returns one existing cluster with its instances and operations.
func (s *Store) Cluster(ctx context.Context, name string) (domain.Cluster, error) {
	gen, err := s.Generation(ctx)
	if err != nil {
		return domain.Cluster{}, err
	}
	where, args := keyFilter("name", []string{name})
	cs, err := s.clusters(ctx, gen, where, args)
	if err != nil {
		return domain.Cluster{}, err
	}
	if len(cs) == 0 {
		return domain.Cluster{}, domain.Errorf(domain.NotFound, "cluster %s does not exist", name)
	}
	return cs[0], nil
}

// clusters reads the existing clusters that where (a WHERE clause on the
// clusters table, with its args, "" for every one) selects, sorted by
// name, with their instances and operations.
func (s *Store) clusters(ctx context.Context, gen uint32, where string, args []any) ([]domain.Cluster, error) {
	var out []domain.Cluster
	err := s.query(ctx, func(r driver.Rows) error {
		var n, state string
		if err := r.Scan(&n, &state); err != nil {
			return err
		}
		var c domain.Cluster
		if err := json.Unmarshal([]byte(state), &c); err != nil {
			return fmt.Errorf("cluster %s: %w", n, err)
		}
		if c.Exists() {
			out = append(out, withGroup(c))
		}
		return nil
	}, "SELECT name, argMax(state, seq) FROM "+table(s.db, tableClusters, gen)+" "+where+" GROUP BY name ORDER BY name", args...)
	if err != nil || len(out) == 0 {
		return []domain.Cluster{}, err
	}
	return out, s.fillClusters(ctx, gen, out, where != "")
}

// fillClusters reads the instances and operations of the clusters out:
// of those alone when only is set, else of every cluster.
func (s *Store) fillClusters(ctx context.Context, gen uint32, out []domain.Cluster, only bool) error {
	var names []string
	if only {
		names = make([]string, len(out))
		for i, c := range out {
			names[i] = c.Name
		}
	}
	owner, ownerArgs := keyFilter("cluster", names)
	insts := map[string][]indexed[domain.Instance]{}
	err := s.query(ctx, func(r driver.Rows) error {
		var cluster, id, spec string
		var idx uint32
		var deleted uint8
		if err := r.Scan(&cluster, &id, &idx, &spec, &deleted); err != nil {
			return err
		}
		var in domain.Instance
		if err := json.Unmarshal([]byte(spec), &in); err != nil {
			return fmt.Errorf("instance %s of cluster %s: %w", id, cluster, err)
		}
		insts[cluster] = append(insts[cluster], indexed[domain.Instance]{idx, in})
		return nil
	}, "SELECT cluster, id, argMax(idx, seq), argMax(spec, seq), argMax(deleted, seq) AS d FROM "+
		table(s.db, tableInstances, gen)+" "+owner+" GROUP BY cluster, id HAVING d = 0", ownerArgs...)
	if err != nil {
		return err
	}
	ops, err := s.clusterOperations(ctx, gen, names)
	if err != nil {
		return err
	}
	for i := range out {
		c := &out[i]
		c.Instances = sorted(insts[c.Name])
		c.Operations = ops[c.Name]
	}
	return nil
}

// keyFilter is a WHERE clause selecting the rows whose column col is one
// of names: "" (every row) for nil names.
func keyFilter(col string, names []string) (string, []any) {
	switch {
	case names == nil:
		return "", nil
	case len(names) == 1:
		return "WHERE " + col + " = ?", []any{names[0]}
	}
	return "WHERE has(?, " + col + ")", []any{names}
}

type indexed[T any] struct {
	idx uint32
	v   T
}

func sorted[T any](xs []indexed[T]) []T {
	if len(xs) == 0 {
		return nil
	}
	sort.SliceStable(xs, func(i, j int) bool { return xs[i].idx < xs[j].idx })
	out := make([]T, len(xs))
	for i, x := range xs {
		out[i] = x.v
	}
	return out
}

// clusterOperations reads the operations of every cluster, or of the ones
// named (names not nil), with their plans and step states, by cluster.
func (s *Store) clusterOperations(ctx context.Context, gen uint32, names []string) (map[string][]*domain.Operation, error) {
	ownerCond, args := keyFilter("owner", names)
	type opRow struct {
		owner string
		ord   uint32
		op    domain.Operation
	}
	var rows []opRow
	err := s.query(ctx, func(r driver.Rows) error {
		var x opRow
		var id, state string
		var inCluster, deleted uint8
		if err := r.Scan(&id, &x.owner, &x.ord, &state, &inCluster, &deleted); err != nil {
			return err
		}
		if err := json.Unmarshal([]byte(state), &x.op); err != nil {
			return fmt.Errorf("operation %s: %w", id, err)
		}
		rows = append(rows, x)
		return nil
	}, "SELECT id, argMax(owner, seq), argMax(ord, seq), argMax(state, seq), argMax(in_cluster, seq) AS ic, argMax(deleted, seq) AS d FROM "+
		table(s.db, tableOperations, gen)+" "+ownerCond+" GROUP BY id HAVING ic = 1 AND d = 0", args...)
	if err != nil {
		return nil, err
	}
	stepCond := ""
	if names != nil {
		stepCond = "WHERE operation IN (SELECT id FROM " + table(s.db, tableOperations, gen) + " " + ownerCond + ")"
	}
	steps, err := s.steps(ctx, gen, stepCond, args...)
	if err != nil {
		return nil, err
	}
	plans, err := s.plans(ctx, gen, stepCond, args...)
	if err != nil {
		return nil, err
	}
	byOwner := map[string][]indexed[*domain.Operation]{}
	for _, x := range rows {
		x.op.Plan, x.op.Steps = plans[x.op.ID], steps.states(x.op.ID)
		if _, ok := plans[x.op.ID]; !ok {
			x.op.Plan = steps.plan(x.op.ID) // written by schema 1
		}
		byOwner[x.owner] = append(byOwner[x.owner], indexed[*domain.Operation]{x.ord, &x.op})
	}
	out := map[string][]*domain.Operation{}
	for owner, ops := range byOwner {
		out[owner] = sorted(ops)
	}
	return out, nil
}

// plans reads the plans of the operations that where selects (all when
// empty), by operation. Operations projected by schema 1 have none (their
// step rows hold the plan).
func (s *Store) plans(ctx context.Context, gen uint32, where string, args ...any) (map[string][]domain.Step, error) {
	plans := map[string][]domain.Step{}
	err := s.query(ctx, func(r driver.Rows) error {
		var op, plan string
		if err := r.Scan(&op, &plan); err != nil {
			return err
		}
		var p []domain.Step
		if err := json.Unmarshal([]byte(plan), &p); err != nil {
			return fmt.Errorf("plan of operation %s: %w", op, err)
		}
		plans[op] = p
		return nil
	}, "SELECT operation, argMax(plan, seq) FROM "+table(s.db, tablePlans, gen)+" "+where+" GROUP BY operation", args...)
	return plans, err
}

// stepSet is the steps read for some operations.
type stepSet map[string][]stepRow // by operation, in plan order

func (s *Store) steps(ctx context.Context, gen uint32, where string, args ...any) (stepSet, error) {
	out := stepSet{}
	err := s.query(ctx, func(r driver.Rows) error {
		var x stepRow
		if err := r.Scan(&x.Operation, &x.ID, &x.Idx, &x.InPlan, &x.Kind, &x.Host, &x.Instance, &x.Needs, &x.Status,
			&x.Attempt, &x.Agent, &x.Error, &x.ExitCode, &x.DurationMS, &x.Spec, &x.State, &x.Deleted); err != nil {
			return err
		}
		out[x.Operation] = append(out[x.Operation], x)
		return nil
	}, "SELECT operation, id, argMax(idx, seq), argMax(in_plan, seq), argMax(kind, seq), argMax(host, seq), "+
		"argMax(instance, seq), argMax(needs, seq), argMax(status, seq), argMax(attempt, seq), argMax(agent, seq), "+
		"argMax(error, seq), argMax(exit_code, seq), argMax(duration_ms, seq), argMax(spec, seq), argMax(state, seq), argMax(deleted, seq) AS d FROM "+
		table(s.db, tableSteps, gen)+" "+where+" GROUP BY operation, id HAVING d = 0", args...)
	for _, xs := range out {
		sort.SliceStable(xs, func(i, j int) bool {
			if xs[i].Idx != xs[j].Idx {
				return xs[i].Idx < xs[j].Idx
			}
			return xs[i].ID < xs[j].ID
		})
	}
	return out, err
}

// plan is an operation's plan from its steps' specs, as schema 1 wrote
// them (since schema 2 the plans table has it).
func (ss stepSet) plan(op string) []domain.Step {
	var out []domain.Step
	for _, x := range ss[op] {
		if x.InPlan == 0 {
			continue
		}
		var st domain.Step
		if err := json.Unmarshal([]byte(x.Spec), &st); err != nil {
			st = domain.Step{ID: x.ID, Kind: x.Kind, Host: x.Host, Instance: x.Instance, Needs: x.Needs}
		}
		out = append(out, st)
	}
	return out
}

// states are an operation's step states (domain.Operation.Steps): the
// steps that have one.
func (ss stepSet) states(op string) map[string]domain.StepState {
	var out map[string]domain.StepState
	for _, x := range ss[op] {
		if x.State == "" {
			continue
		}
		var st domain.StepState
		if err := json.Unmarshal([]byte(x.State), &st); err != nil {
			st = domain.StepState{Status: x.Status, Attempt: int(x.Attempt), Agent: x.Agent, Error: x.Error,
				ExitCode: int(x.ExitCode), DurationMS: x.DurationMS}
		}
		if out == nil {
			out = map[string]domain.StepState{}
		}
		out[x.ID] = st
	}
	return out
}

// views are an operation's steps as the API shows them, in plan order:
// each step of the plan with its row, or pending when it has none (a new
// operation's pending steps have no rows). Without a plan (schema 1), the
// rows are the plan.
func (ss stepSet) views(op string, plan []domain.Step) []domain.StepView {
	rows := map[string]stepRow{}
	for _, x := range ss[op] {
		if x.InPlan != 0 {
			rows[x.ID] = x
		}
	}
	if plan == nil {
		for _, x := range ss[op] {
			if x.InPlan != 0 {
				plan = append(plan, domain.Step{ID: x.ID})
			}
		}
	}
	var out []domain.StepView
	for _, st := range plan {
		x, ok := rows[st.ID]
		if !ok {
			x = stepRow{ID: st.ID, Kind: st.Kind, Host: st.Host, Instance: st.Instance, Needs: st.Needs, Status: "pending"}
		}
		needs := x.Needs
		if len(needs) == 0 {
			needs = nil
		}
		out = append(out, domain.StepView{ID: x.ID, Kind: x.Kind, Host: x.Host, Instance: x.Instance, Needs: needs,
			Status: x.Status, Attempt: int(x.Attempt), Agent: x.Agent, Error: x.Error, DurationMS: x.DurationMS})
	}
	return out
}

// Instances lists the instances of the existing clusters, filtered by
// cluster and host when they are not empty, by cluster and then in
// topology order.
func (s *Store) Instances(ctx context.Context, cluster, host string) ([]ClusterInstance, error) {
	gen, err := s.Generation(ctx)
	if err != nil {
		return nil, err
	}
	out := []ClusterInstance{}
	err = s.query(ctx, func(r driver.Rows) error {
		var c, id, spec, h string
		var idx uint32
		var deleted uint8
		if err := r.Scan(&c, &id, &idx, &spec, &deleted, &h); err != nil {
			return err
		}
		var in domain.Instance
		if err := json.Unmarshal([]byte(spec), &in); err != nil {
			return fmt.Errorf("instance %s of cluster %s: %w", id, c, err)
		}
		out = append(out, ClusterInstance{Cluster: c, Instance: in})
		return nil
	}, "SELECT cluster, id, argMax(idx, seq) AS i, argMax(spec, seq), argMax(deleted, seq) AS d, argMax(host, seq) AS h FROM "+
		table(s.db, tableInstances, gen)+" GROUP BY cluster, id HAVING d = 0 AND (? = '' OR cluster = ?) AND (? = '' OR h = ?) "+
		"AND cluster IN (SELECT name FROM "+table(s.db, tableClusters, gen)+" GROUP BY name HAVING argMax(status, seq) NOT IN ('', ?, ?)) "+
		"ORDER BY cluster, i", cluster, cluster, host, host, domain.ClusterStatusDestroyed, domain.ClusterStatusImportFailed)
	return out, err
}

// ClusterInstance is an instance with the cluster it belongs to.
type ClusterInstance struct {
	Cluster string `json:"cluster"`
	domain.Instance
}

// Machines lists the registered machines, sorted by host.
func (s *Store) Machines(ctx context.Context) ([]domain.Machine, error) {
	return s.machines(ctx, nil)
}

// Machine returns one registered machine.
func (s *Store) Machine(ctx context.Context, host string) (domain.Machine, error) {
	ms, err := s.machines(ctx, &host)
	if err != nil {
		return domain.Machine{}, err
	}
	if len(ms) == 0 {
		return domain.Machine{}, domain.Errorf(domain.NotFound, "machine %s is not registered", host)
	}
	return ms[0], nil
}

func (s *Store) machines(ctx context.Context, host *string) ([]domain.Machine, error) {
	gen, err := s.Generation(ctx)
	if err != nil {
		return nil, err
	}
	where, args := "", []any{}
	if host != nil {
		where, args = "WHERE host = ?", []any{*host}
	}
	all, err := s.machineStates(ctx, nil, "SELECT host, argMax(state, seq) FROM "+table(s.db, tableMachines, gen)+" "+where+" GROUP BY host ORDER BY host", args...)
	out := all[:0]
	for _, m := range all {
		if m.Active() {
			out = append(out, m)
		}
	}
	return out, err
}

// Packages lists the uploaded packages, sorted by id.
func (s *Store) Packages(ctx context.Context) ([]domain.Package, error) {
	gen, err := s.Generation(ctx)
	if err != nil {
		return nil, err
	}
	return s.packageRows(ctx, gen, "", "ORDER BY id", nil)
}

// packageRows reads the packages that where selects, grouped by id, with
// tail (HAVING, ORDER BY, LIMIT) after the grouping.
func (s *Store) packageRows(ctx context.Context, gen uint32, where, tail string, args []any) ([]domain.Package, error) {
	out := []domain.Package{}
	err := s.query(ctx, func(r driver.Rows) error {
		var id, state string
		if err := r.Scan(&id, &state); err != nil {
			return err
		}
		var p domain.Package
		if err := json.Unmarshal([]byte(state), &p); err != nil {
			return fmt.Errorf("package %s: %w", id, err)
		}
		if p.ID != "" {
			out = append(out, withGroup(p))
		}
		return nil
	}, "SELECT id, argMax(state, seq) FROM "+table(s.db, tablePackages, gen)+" "+where+" GROUP BY id "+tail, args...)
	return out, err
}

// Operations lists every operation, newest first, as service.Operations
// shows them (without steps).
func (s *Store) Operations(ctx context.Context) ([]domain.OperationView, error) {
	gen, err := s.Generation(ctx)
	if err != nil {
		return nil, err
	}
	return s.operations(ctx, gen, nil)
}

// Operation returns one operation, with its steps when it runs on a
// cluster.
func (s *Store) Operation(ctx context.Context, id string) (domain.OperationView, error) {
	gen, err := s.Generation(ctx)
	if err != nil {
		return domain.OperationView{}, err
	}
	ops, err := s.operations(ctx, gen, &id)
	if err != nil {
		return domain.OperationView{}, err
	}
	if len(ops) == 0 {
		return domain.OperationView{}, domain.Errorf(domain.NotFound, "operation %s does not exist", id)
	}
	op := ops[0]
	if op.Cluster == "" {
		return op, nil
	}
	steps, err := s.steps(ctx, gen, "WHERE operation = ?", id)
	if err != nil {
		return domain.OperationView{}, err
	}
	plans, err := s.plans(ctx, gen, "WHERE operation = ?", id)
	if err != nil {
		return domain.OperationView{}, err
	}
	op.Steps = steps.views(id, plans[id])
	return op, nil
}

func (s *Store) operations(ctx context.Context, gen uint32, id *string) ([]domain.OperationView, error) {
	where, args := "", []any{}
	if id != nil {
		where, args = "WHERE id = ?", []any{*id}
	}
	return s.operationRows(ctx, gen, where, "HAVING cs > 0 AND d = 0 ORDER BY cs DESC", args)
}

// operationRows reads the operations of the operations table that where
// selects, grouped by id, with tail (HAVING, ORDER BY, LIMIT) over the
// aliases cs (the commit that started it), d (deleted), st (status), cl
// (cluster) and kd (kind).
func (s *Store) operationRows(ctx context.Context, gen uint32, where, tail string, args []any) ([]domain.OperationView, error) {
	out := []domain.OperationView{}
	err := s.query(ctx, func(r driver.Rows) error {
		var v domain.OperationView
		var created uint32
		var ns, attempt uint32
		var deleted uint8
		if err := r.Scan(&v.ID, &v.Kind, &v.Status, &v.Cluster, &v.AggregateType, &v.AggregateID, &v.Actor, &created, &ns,
			&v.CommitSeq, &attempt, &v.Error, &deleted); err != nil {
			return err
		}
		v.CreatedAt, v.Attempt = joinTime(int64(created), ns), int(attempt)
		out = append(out, v)
		return nil
	}, "SELECT id, argMax(kind, seq) AS kd, argMax(status, seq) AS st, argMax(cluster, seq) AS cl, argMax(aggregate_type, seq), "+
		"argMax(aggregate_id, seq), argMax(actor, seq), toUInt32(argMax(created_at, seq)), argMax(created_ns, seq), "+
		"argMax(commit_seq, seq) AS cs, argMax(attempt, seq), argMax(error, seq), argMax(deleted, seq) AS d FROM "+
		table(s.db, tableOperations, gen)+" "+where+" GROUP BY id "+tail, args...)
	return out, err
}

// query runs a query and calls each for every row.
func (s *Store) query(ctx context.Context, each func(driver.Rows) error, q string, args ...any) error {
	rows, err := s.conn.Query(ctx, q, args...)
	if err != nil {
		return unavailable(fmt.Errorf("query projections: %w", err))
	}
	defer rows.Close()
	for rows.Next() {
		if err := each(rows); err != nil {
			return fmt.Errorf("read projections: %w", err)
		}
	}
	if err := rows.Err(); err != nil {
		return unavailable(fmt.Errorf("read projections: %w", err))
	}
	return nil
}
