package projections

import (
	"context"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/dmgr/dmgr/domain"
)

// Ownership: every row of the clusters, machines, packages and
// operations tables, and every event of the audit trail, carries the
// group that owns it (owner_group). Lists and the audit trail keep the
// rows of the caller's groups (ListQuery.Groups, AuditQuery.Groups);
// single reads return the group with the thing (domain.Cluster.Group, …,
// OperationGroup) for the caller to check.

// groupCond is the condition that keeps the rows whose owner group (the
// SQL expression col) is one of groups, with its argument: "" for nil
// groups (no filter). none reports an empty, non-nil groups: no row
// is seen, and no query need run (IN () is not SQL).
func groupCond(col string, groups []string) (cond string, args []any, none bool) {
	switch {
	case groups == nil:
		return "", nil, false
	case len(groups) == 0:
		return "", nil, true
	}
	return col + " IN ?", []any{inSet(groups)}, false
}

// ownerGroup is the owner_group of a current-state row, deduplicated as
// every column is.
const ownerGroup = "argMax(owner_group, seq)"

// withGroup is a cluster, machine or package read from its row, with the
// group that owns it: rows written before groups existed hold a state
// without one, and belong to the default group.
func withGroup[T interface {
	domain.Cluster | domain.Machine | domain.Package
}](v T) T {
	switch x := any(&v).(type) {
	case *domain.Cluster:
		x.Group = domain.OwnerGroup(x.Group)
	case *domain.Machine:
		x.Group = domain.OwnerGroup(x.Group)
	case *domain.Package:
		x.Group = domain.OwnerGroup(x.Group)
	}
	return v
}

// OperationGroup is the group that owns operation id: the group of the
// cluster, machine or package it runs on (of the group, approval, … its
// commits named for other aggregates; "" when they named none).
func (s *Store) OperationGroup(ctx context.Context, id string) (string, error) {
	gen, err := s.Generation(ctx)
	if err != nil {
		return "", err
	}
	var groups []string
	err = s.query(ctx, func(r driver.Rows) error {
		var g string
		var cs uint64
		var d uint8
		if err := r.Scan(&g, &cs, &d); err != nil {
			return err
		}
		groups = append(groups, g)
		return nil
	}, "SELECT "+ownerGroup+", argMax(commit_seq, seq) AS cs, argMax(deleted, seq) AS d FROM "+table(s.db, tableOperations, gen)+
		" WHERE id = ? GROUP BY id HAVING cs > 0 AND d = 0", id)
	if err != nil {
		return "", err
	}
	if len(groups) == 0 {
		return "", domain.Errorf(domain.NotFound, "operation %s does not exist", id)
	}
	return groups[0], nil
}

// OwnedBy names one thing that group still owns ("cluster c1", "machine
// 10.0.0.1", "package dm-v8.1.0-linux-amd64"): a cluster not destroyed, a
// registered machine, or any package; "" when it owns none of them (a
// group that owns something cannot be deleted).
func (s *Store) OwnedBy(ctx context.Context, group string) (string, error) {
	gen, err := s.Generation(ctx)
	if err != nil {
		return "", err
	}
	for _, q := range []struct {
		what, table, key, having string
		args                     []any
	}{
		{"cluster", tableClusters, "name", "argMax(status, seq) NOT IN ('', ?, ?)", []any{domain.ClusterStatusDestroyed, domain.ClusterStatusImportFailed}},
		{"machine", tableMachines, "host", "argMax(status, seq) = ?", []any{domain.MachineStatusRegistered}},
		{"package", tablePackages, "id", "1", nil},
	} {
		var found string
		err := s.query(ctx, func(r driver.Rows) error { return r.Scan(&found) },
			"SELECT "+q.key+" FROM "+table(s.db, q.table, gen)+" GROUP BY "+q.key+" HAVING "+ownerGroup+" = ? AND "+q.having+
				" ORDER BY "+q.key+" LIMIT 1", append([]any{group}, q.args...)...)
		if err != nil {
			return "", err
		}
		if found != "" {
			return q.what + " " + found, nil
		}
	}
	return "", nil
}
