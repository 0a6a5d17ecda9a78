package projections

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/dmgr/dmgr/domain"
)

// The lists page by key (keyset paging): a page is the first Limit items
// whose key follows the last key of the previous page, in the list's
// order. A page costs what its items cost, however long the list, and is
// stable while events arrive: an item committed meanwhile shows up on a
// later page if its key sorts after the cursor, never twice.
//
// Machines, clusters and packages are in key order (host, name, id); the
// key filter runs before the grouping, on the table's sort key. Operations
// are newest first: by the commit that started them, descending, then id.

// Page limits.
const (
	DefaultPageLimit = 100
	MaxPageLimit     = 1000
)

// ListQuery asks for one page of a list. After is the last key of the
// previous page ("" for the first page; for operations PageAfter.String).
// The filters apply where the list has them (ListMachines: Label;
// ListClusters: Status; ListOperations: Status, Cluster, Kind); empty is
// no filter.
type ListQuery struct {
	Limit   int
	After   string
	Status  string
	Cluster string
	Kind    string
	Label   LabelFilter
	// Groups are the groups whose items the caller sees (every list
	// has it): nil sees every item (a super admin), an empty slice none.
	Groups []string
}

// LabelFilter selects machines by one label: Key is region, zone or rack.
type LabelFilter struct {
	Key, Value string
}

// Page is one page of a list: its items and, when more follow, the key
// of its last item (the next page's After); "" on the last page.
type Page[T any] struct {
	Items []T
	Next  string
}

// PageLimit is the page size q asks for: Limit, DefaultPageLimit when
// unset, at most MaxPageLimit.
func (q ListQuery) PageLimit() int {
	switch {
	case q.Limit <= 0:
		return DefaultPageLimit
	case q.Limit > MaxPageLimit:
		return MaxPageLimit
	}
	return q.Limit
}

// CutPage cuts the n+1 items read to a page of n, with the key of its
// last item when there was one more.
func CutPage[T any](items []T, n int, key func(T) string) Page[T] {
	if len(items) <= n {
		return Page[T]{Items: items}
	}
	items = items[:n]
	return Page[T]{Items: items, Next: key(items[n-1])}
}

// labelColumns are the machines table's label columns, by label.
var labelColumns = map[string]string{"region": "region", "zone": "zone", "rack": "rack"}

// ListMachines returns a page of the registered machines, by host.
func (s *Store) ListMachines(ctx context.Context, q ListQuery) (Page[domain.Machine], error) {
	gen, err := s.Generation(ctx)
	if err != nil {
		return Page[domain.Machine]{}, err
	}
	n := q.PageLimit()
	having, args := "argMax(status, seq) = ?", []any{domain.MachineStatusRegistered}
	if q.Label.Key != "" {
		col, ok := labelColumns[q.Label.Key]
		if !ok {
			return Page[domain.Machine]{}, domain.Errorf(domain.Invalid, "label %q: filter on region, zone or rack", q.Label.Key)
		}
		having += " AND argMax(" + col + ", seq) = ?"
		args = append(args, q.Label.Value)
	}
	gcond, gargs, none := groupCond(ownerGroup, q.Groups)
	if none {
		return Page[domain.Machine]{Items: []domain.Machine{}}, nil
	}
	if gcond != "" {
		having += " AND " + gcond
		args = append(args, gargs...)
	}
	machines := table(s.db, tableMachines, gen)
	if q.Label.Key != "" || gcond != "" {
		return s.listMachinesFiltered(ctx, machines, n, q.After, having, args)
	}
	// The hosts of the page are found first, on the host column alone
	// (the table's sort key); the states are then read for that range
	// only. Removed machines may leave the range short: the next range
	// follows.
	out := []domain.Machine{}
	for after := q.After; len(out) <= n; {
		var upper string
		var hosts uint64
		err := s.query(ctx, func(r driver.Rows) error { return r.Scan(&upper, &hosts) },
			"SELECT max(host), count() FROM (SELECT host FROM "+machines+" WHERE host > ? GROUP BY host ORDER BY host LIMIT "+
				fmt.Sprint(n+1)+")", after)
		if err != nil {
			return Page[domain.Machine]{}, err
		}
		if hosts == 0 {
			break
		}
		out, err = s.machineStates(ctx, out, "SELECT host, argMax(state, seq) FROM "+machines+" WHERE host > ? AND host <= ? GROUP BY host HAVING "+
			having+" ORDER BY host", append([]any{after, upper}, args...)...)
		if err != nil {
			return Page[domain.Machine]{}, err
		}
		if hosts <= uint64(n) {
			break
		}
		after = upper
	}
	if len(out) > n+1 {
		out = out[:n+1]
	}
	return CutPage(out, n, func(m domain.Machine) string { return m.Host }), nil
}

// listMachinesFiltered is ListMachines with a filter (a label, groups)
// that may keep few machines, far apart: the hosts of the page are found
// in one read of the columns the filter needs, over the machines after
// the cursor; then their states are read (the filter checked again, for
// a machine changed in between).
func (s *Store) listMachinesFiltered(ctx context.Context, machines string, n int, after, having string, args []any) (Page[domain.Machine], error) {
	var hosts []string
	err := s.query(ctx, func(r driver.Rows) error {
		var h string
		if err := r.Scan(&h); err != nil {
			return err
		}
		hosts = append(hosts, h)
		return nil
	}, "SELECT host FROM "+machines+" WHERE host > ? GROUP BY host HAVING "+having+" ORDER BY host LIMIT "+fmt.Sprint(n+1),
		append([]any{after}, args...)...)
	if err != nil || len(hosts) == 0 {
		return Page[domain.Machine]{Items: []domain.Machine{}}, err
	}
	out, err := s.machineStates(ctx, nil, "SELECT host, argMax(state, seq) FROM "+machines+" WHERE host IN ? GROUP BY host HAVING "+
		having+" ORDER BY host", append([]any{inSet(hosts)}, args...)...)
	if err != nil {
		return Page[domain.Machine]{}, err
	}
	// A machine the first read found and the second did not (changed in
	// between) leaves the page one shorter; the cursor is still the last
	// host found.
	page := Page[domain.Machine]{Items: out}
	if len(hosts) > n {
		page.Next = hosts[n-1]
		for len(page.Items) > 0 && page.Items[len(page.Items)-1].Host > page.Next {
			page.Items = page.Items[:len(page.Items)-1]
		}
	}
	return page, nil
}

// machineStates appends to out the machines that q (host, state) reads.
func (s *Store) machineStates(ctx context.Context, out []domain.Machine, q string, args ...any) ([]domain.Machine, error) {
	if out == nil {
		out = []domain.Machine{}
	}
	err := s.query(ctx, func(r driver.Rows) error {
		var h, state string
		if err := r.Scan(&h, &state); err != nil {
			return err
		}
		var m domain.Machine
		if err := json.Unmarshal([]byte(state), &m); err != nil {
			return fmt.Errorf("machine %s: %w", h, err)
		}
		out = append(out, withGroup(m))
		return nil
	}, q, args...)
	return out, err
}

// ListPackages returns a page of the uploaded packages, by id.
func (s *Store) ListPackages(ctx context.Context, q ListQuery) (Page[domain.Package], error) {
	gen, err := s.Generation(ctx)
	if err != nil {
		return Page[domain.Package]{}, err
	}
	n := q.PageLimit()
	gcond, gargs, none := groupCond(ownerGroup, q.Groups)
	if none {
		return Page[domain.Package]{Items: []domain.Package{}}, nil
	}
	if gcond != "" {
		gcond = "HAVING " + gcond
	}
	out, err := s.packageRows(ctx, gen, "WHERE id > ?", gcond+" ORDER BY id LIMIT "+fmt.Sprint(n+1), append([]any{q.After}, gargs...))
	if err != nil {
		return Page[domain.Package]{}, err
	}
	return CutPage(out, n, func(p domain.Package) string { return p.ID }), nil
}

// ListClusters returns a page of the existing clusters, by name, each
// with its instances and operations.
func (s *Store) ListClusters(ctx context.Context, q ListQuery) (Page[domain.Cluster], error) {
	gen, err := s.Generation(ctx)
	if err != nil {
		return Page[domain.Cluster]{}, err
	}
	n := q.PageLimit()
	having, args := "st != '' AND st != ? AND st != ?", []any{q.After, domain.ClusterStatusDestroyed, domain.ClusterStatusImportFailed}
	if q.Status != "" {
		having += " AND st = ?"
		args = append(args, q.Status)
	}
	gcond, gargs, none := groupCond(ownerGroup, q.Groups)
	if none {
		return Page[domain.Cluster]{Items: []domain.Cluster{}}, nil
	}
	if gcond != "" {
		having += " AND " + gcond
		args = append(args, gargs...)
	}
	var names []string
	err = s.query(ctx, func(r driver.Rows) error {
		var name, st string
		if err := r.Scan(&name, &st); err != nil {
			return err
		}
		names = append(names, name)
		return nil
	}, "SELECT name, argMax(status, seq) AS st FROM "+table(s.db, tableClusters, gen)+" WHERE name > ? GROUP BY name HAVING "+
		having+" ORDER BY name LIMIT "+fmt.Sprint(n+1), args...)
	if err != nil {
		return Page[domain.Cluster]{}, err
	}
	if len(names) == 0 {
		return Page[domain.Cluster]{Items: []domain.Cluster{}}, nil
	}
	where, wargs := keyFilter("name", names)
	cs, err := s.clusters(ctx, gen, where, wargs)
	if err != nil {
		return Page[domain.Cluster]{}, err
	}
	// A cluster the first read listed is in the second unless it was
	// destroyed in between: the page is then one shorter, and its cursor
	// still the last name listed.
	next := ""
	if len(names) > n {
		next = names[n-1]
		for len(cs) > 0 && cs[len(cs)-1].Name > next {
			cs = cs[:len(cs)-1]
		}
	}
	return Page[domain.Cluster]{Items: cs, Next: next}, nil
}

// OperationsAfter is the position of an operation in the newest-first
// list of operations: the commit that started it, and its id.
type OperationsAfter struct {
	CommitSeq uint64
	ID        string
}

// String is the After of ListQuery for the operations after o.
func (o OperationsAfter) String() string { return fmt.Sprintf("%d/%s", o.CommitSeq, o.ID) }

// ParseOperationsAfter reads OperationsAfter.String; "" is the start.
func ParseOperationsAfter(s string) (OperationsAfter, bool) {
	if s == "" {
		return OperationsAfter{}, true
	}
	var o OperationsAfter
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		o.CommitSeq = o.CommitSeq*10 + uint64(s[i]-'0')
		i++
	}
	if i == 0 || i > 19 || i >= len(s) || s[i] != '/' || o.CommitSeq == 0 {
		return OperationsAfter{}, false
	}
	o.ID = s[i+1:]
	return o, o.ID != ""
}

// ErrNotAnOperationsCursor refuses a position that no page of operations
// gave (the cursor of another list, say).
var ErrNotAnOperationsCursor = domain.Errorf(domain.Invalid,
	"cursor is not one of the operations list: pass the next_cursor of the previous page of operations unchanged")

// ListOperations returns a page of the operations, newest first, as
// Operations shows them (without steps).
func (s *Store) ListOperations(ctx context.Context, q ListQuery) (Page[domain.OperationView], error) {
	gen, err := s.Generation(ctx)
	if err != nil {
		return Page[domain.OperationView]{}, err
	}
	after, ok := ParseOperationsAfter(q.After)
	if !ok {
		return Page[domain.OperationView]{}, ErrNotAnOperationsCursor
	}
	n := q.PageLimit()
	having, args := "cs > 0 AND d = 0", []any{}
	if after.CommitSeq != 0 {
		having += " AND (cs < ? OR (cs = ? AND id > ?))"
		args = append(args, after.CommitSeq, after.CommitSeq, after.ID)
	}
	for _, f := range []struct{ col, v string }{{"st", q.Status}, {"cl", q.Cluster}, {"kd", q.Kind}} {
		if f.v != "" {
			having += " AND " + f.col + " = ?"
			args = append(args, f.v)
		}
	}
	gcond, gargs, none := groupCond(ownerGroup, q.Groups)
	if none {
		return Page[domain.OperationView]{Items: []domain.OperationView{}}, nil
	}
	if gcond != "" {
		having += " AND " + gcond
		args = append(args, gargs...)
	}
	out, err := s.operationRows(ctx, gen, "", "HAVING "+having+" ORDER BY cs DESC, id LIMIT "+fmt.Sprint(n+1), args)
	if err != nil {
		return Page[domain.OperationView]{}, err
	}
	return CutPage(out, n, func(v domain.OperationView) string {
		return OperationsAfter{CommitSeq: v.CommitSeq, ID: v.ID}.String()
	}), nil
}
