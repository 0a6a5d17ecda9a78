package projections

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// insertPlan is one batch's inserts, table by table, remembering which
// tables already have their rows so that a retry after a failure sends
// only the rest (a resend would be harmless, just wasted).
type insertPlan struct {
	rows *rowSet
	done map[string]bool
}

// tableInsert is one table's part of a batch: n rows, appended a chunk
// [lo, hi) at a time.
type tableInsert struct {
	table   string
	columns string
	n       int
	append  func(b driver.Batch, lo, hi int) error
}

// insertChunk is how many rows are appended to a batch's columns before
// they are sent as one block of the INSERT. ClickHouse squashes the
// blocks of an INSERT into parts of up to min_insert_block_size_rows
// (a million) rows, so the parts are as large as with one block; but
// the client's columns, which grow by doubling and cannot be sized up
// front, are reused from block to block instead of growing to the
// whole batch (they were a third of the projector's allocations).
const insertChunk = 2048

func (p *insertPlan) parts() []tableInsert {
	r := p.rows
	// The column-wise tables' columns, one chunk long, reused chunk after
	// chunk (clickhouse-go copies what it is given).
	var stepCols struct {
		idx, attempt []uint32
		inPlan, del  []uint8
		needs        [][]string
		exit         []int32
		dur          []int64
		seq          []uint64
		str          [10][]string
	}
	var eventCols struct {
		seq, version []uint64
		fencing      []int64
		idx, schema  []uint16
		at           []time.Time
		ns           []uint32
		machines     [][]string
		payload      byteRows
		str          [14][]string
	}
	// Current state first and the audit trail and progress last: readers
	// who poll an operation's status find its cluster's rows already there.
	return []tableInsert{
		{tableClusters, "name, status, owner_group, dm_version, revision, state, seq", len(r.clusters), func(b driver.Batch, lo, hi int) error {
			for _, x := range r.clusters[lo:hi] {
				if err := b.Append(x.Name, x.Status, x.OwnerGroup, x.DMVersion, x.Revision, x.State, x.Seq); err != nil {
					return err
				}
			}
			return nil
		}},
		{tableInstances, "cluster, id, idx, name, role, host, port, status, spec, deleted, seq", len(r.instances), func(b driver.Batch, lo, hi int) error {
			for _, x := range r.instances[lo:hi] {
				if err := b.Append(x.Cluster, x.ID, x.Idx, x.Name, x.Role, x.Host, x.Port, x.Status, x.Spec, x.Deleted, x.Seq); err != nil {
					return err
				}
			}
			return nil
		}},
		{tableMachines, "host, status, owner_group, ssh_port, user, region, zone, rack, fingerprint, state, seq", len(r.machines), func(b driver.Batch, lo, hi int) error {
			for _, x := range r.machines[lo:hi] {
				if err := b.Append(x.Host, x.Status, x.OwnerGroup, x.SSHPort, x.User, x.Region, x.Zone, x.Rack, x.Fingerprint, x.State, x.Seq); err != nil {
					return err
				}
			}
			return nil
		}},
		{tablePackages, "id, name, version, os, arch, owner_group, sha256, size, state, seq", len(r.packages), func(b driver.Batch, lo, hi int) error {
			for _, x := range r.packages[lo:hi] {
				if err := b.Append(x.ID, x.Name, x.Version, x.OS, x.Arch, x.OwnerGroup, x.SHA256, x.Size, x.State, x.Seq); err != nil {
					return err
				}
			}
			return nil
		}},
		{tableSteps, "operation, id, idx, in_plan, kind, host, instance, needs, status, attempt, agent, error, exit_code, duration_ms, spec, state, deleted, seq", len(r.steps), func(b driver.Batch, lo, hi int) error {
			// Column by column, like the audit trail: a step row per event.
			rows := r.steps[lo:hi]
			n := len(rows)
			c := &stepCols
			idx, attempt, inPlan, del := reuse(&c.idx, n), reuse(&c.attempt, n), reuse(&c.inPlan, n), reuse(&c.del, n)
			needs, exit, dur, seq := reuse(&c.needs, n), reuse(&c.exit, n), reuse(&c.dur, n), reuse(&c.seq, n)
			var str [10][]string
			for j := range str {
				str[j] = reuse(&c.str[j], n)
			}
			for i, x := range rows {
				idx[i], attempt[i], inPlan[i], del[i], needs[i], exit[i], dur[i], seq[i] = x.Idx, x.Attempt, x.InPlan, x.Deleted, x.Needs, x.ExitCode, x.DurationMS, x.Seq
				for j, v := range [10]string{x.Operation, x.ID, x.Kind, x.Host, x.Instance, x.Status, x.Agent, x.Error, x.Spec, x.State} {
					str[j][i] = v
				}
			}
			return appendColumns(b, str[0], str[1], idx, inPlan, str[2], str[3], str[4], needs, str[5], attempt, str[6], str[7], exit, dur,
				str[8], str[9], del, seq)
		}},
		{tablePlans, "operation, plan, seq", len(r.plans), func(b driver.Batch, lo, hi int) error {
			for _, x := range r.plans[lo:hi] {
				if err := b.Append(x.Operation, x.Plan, x.Seq); err != nil {
					return err
				}
			}
			return nil
		}},
		{tableOperations, "id, kind, status, cluster, owner_group, aggregate_type, aggregate_id, actor, created_at, created_ns, commit_seq, attempt, error, owner, in_cluster, ord, state, deleted, seq", len(r.operations), func(b driver.Batch, lo, hi int) error {
			for _, x := range r.operations[lo:hi] {
				if err := b.Append(x.ID, x.Kind, x.Status, x.Cluster, x.OwnerGroup, x.AggregateType, x.AggregateID, x.Actor, dateTime(x.CreatedSec),
					x.CreatedNS, x.CommitSeq, x.Attempt, x.Error, x.Owner, x.InCluster, x.Ord, x.State, x.Deleted, x.Seq); err != nil {
					return err
				}
			}
			return nil
		}},
		{tableEvents, "seq, idx, commit_id, event_id, type, schema_version, aggregate_type, aggregate_id, aggregate_version, owner_group, time, time_ns, actor, actor_token, operation, correlation_id, causation_id, fencing_token, cluster, machines, step, outcome, payload", len(r.events), func(b driver.Batch, lo, hi int) error {
			// Column by column: the audit trail is most of the rows, and
			// clickhouse-go appends whole columns without reflection.
			rows := r.events[lo:hi]
			n := len(rows)
			c := &eventCols
			seq, version, fencing := reuse(&c.seq, n), reuse(&c.version, n), reuse(&c.fencing, n)
			idx, schema, at, ns := reuse(&c.idx, n), reuse(&c.schema, n), reuse(&c.at, n), reuse(&c.ns, n)
			machines, payload := reuse(&c.machines, n), reuse(&c.payload, n)
			var str [14][]string
			for j := range str {
				str[j] = reuse(&c.str[j], n)
			}
			for i, x := range rows {
				seq[i], idx[i], schema[i], version[i], at[i], ns[i], machines[i] = x.Seq, x.Idx, x.SchemaVersion, x.AggregateVersion, dateTime(x.TimeSec), x.TimeNS, x.Machines
				fencing[i], payload[i] = x.FencingToken, []byte(x.Payload)
				for j, v := range [14]string{x.CommitID, x.EventID, x.Type, x.AggregateType, x.AggregateID, x.Actor, x.Operation,
					x.CorrelationID, x.CausationID, x.Cluster, x.Step, x.Outcome, x.OwnerGroup, x.ActorToken} {
					str[j][i] = v
				}
			}
			return appendColumns(b, seq, idx, str[0], str[1], str[2], schema, str[3], str[4], version, str[12], at, ns, str[5], str[13], str[6], str[7], str[8],
				fencing, str[9], machines, str[10], str[11], payload)
		}},
	}
}

// insertRows inserts n rows into a table with one INSERT, fill appending
// rows [lo, hi) to the batch, sent as a block every insertChunk rows.
func insertRows(ctx context.Context, conn driver.Conn, qualified, columns string, n int, fill func(b driver.Batch, lo, hi int) error) error {
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+qualified+" ("+columns+")")
	if err != nil {
		return err
	}
	for lo := 0; lo < n; lo += insertChunk {
		hi := min(lo+insertChunk, n)
		err := fill(b, lo, hi)
		if err == nil && hi < n {
			err = b.Flush()
		}
		if err != nil {
			_ = b.Abort()
			return err
		}
	}
	return b.Send()
}

// reuse returns *s resliced to n, allocating only when it is too short.
func reuse[S ~[]T, T any](s *S, n int) S {
	if cap(*s) < n {
		*s = make(S, n)
	}
	*s = (*s)[:n]
	return *s
}

// insertTable inserts the rows fill appends (a few) with one INSERT.
func insertTable(ctx context.Context, conn driver.Conn, qualified, columns string, fill func(driver.Batch) error) error {
	return insertRows(ctx, conn, qualified, columns, 1, func(b driver.Batch, _, _ int) error { return fill(b) })
}

// recordProgress records that every commit up to seq is in generation
// gen's tables.
func recordProgress(ctx context.Context, conn driver.Conn, db string, gen uint32, seq uint64) error {
	return insertTable(ctx, conn, table(db, tableProgress, gen), "seq", func(b driver.Batch) error { return b.Append(seq) })
}

// byteRows is a String column's rows as bytes: appended row by row, as
// clickhouse-go copies a whole column of bytes into strings first.
type byteRows [][]byte

// appendColumns appends whole columns, in the order of the INSERT's column
// list.
func appendColumns(b driver.Batch, cols ...any) error {
	for i, c := range cols {
		col := b.Column(i)
		if rows, ok := c.(byteRows); ok {
			for j := range rows {
				if err := col.AppendRow(&rows[j]); err != nil { // a *[]byte is appended without a copy
					return fmt.Errorf("column %d: %w", i, err)
				}
			}
			continue
		}
		if err := col.Append(c); err != nil {
			return fmt.Errorf("column %d: %w", i, err)
		}
	}
	return nil
}
