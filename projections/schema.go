package projections

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Table names. The data tables of a generation carry the suffix _g<N>
// (events_g3); the two bookkeeping tables are shared by all generations.
const (
	tableEvents     = "events"
	tableClusters   = "clusters"
	tableInstances  = "instances"
	tableMachines   = "machines"
	tableOperations = "operations"
	tableSteps      = "steps"
	tablePlans      = "plans"
	tablePackages   = "packages"
	tableProgress   = "progress"

	tableMeta       = "meta"
	tableMigrations = "schema_migrations"
)

// dataTables are the tables of one generation, in the order they are
// created and dropped.
var dataTables = []string{tableEvents, tableClusters, tableInstances, tableMachines, tableOperations, tableSteps,
	tablePlans, tablePackages, tableProgress}

// Migration is one versioned change of a generation's tables. Statements
// are templates: {db} is the database and {g} the generation suffix
// ("_g1"). Each statement must be safe to run twice (a crash between a
// statement and the record of its migration runs it again; two servers
// starting at once may both run it): CREATE … IF NOT EXISTS, or a check
// of system.columns before an ALTER, since 18.16 has no ADD COLUMN IF NOT
// EXISTS.
type Migration struct {
	Version    uint32
	Name       string
	Statements []string
	// AddColumns are added to the generation's tables unless they are
	// there already (after the statements).
	AddColumns []AddColumn
}

// AddColumn adds a column to a data table.
type AddColumn struct {
	Table, Column, Type string
	After               string // the column it follows
	// Default, when set, is the column's DEFAULT expression (SQL, a
	// constant of the code, never input): what rows written before the
	// column existed read as.
	Default string
}

// migrations is the schema of the data tables, oldest first. A new
// generation (a rebuild) runs all of them; a running generation runs the
// ones it has not recorded.
//
// The SQL stays within what ClickHouse 18.16 and current LTS releases both
// accept: MergeTree family engines with the ENGINE = … ORDER BY syntax,
// String, UInt*/Int*, DateTime, Array; no DateTime64, Map, JSON or
// LowCardinality. Versions are stream sequences, so an insert replayed
// after a crash writes rows equal to the ones already there, and reads
// deduplicate (argMax by seq for current state, GROUP BY seq, idx for the
// audit trail), so a row that is still duplicated before a merge is never
// shown twice.
var migrations = []Migration{{
	Version: 1,
	Name:    "audit trail and current-state views",
	Statements: []string{
		// The audit trail: one row per event. cluster first in the key
		// makes "audit of one cluster" read only that cluster's granules.
		// Partitions by month and by blocks of 2^20 sequences give every
		// part a narrow range of times and sequences (the partition key's
		// minmax indexes), so a time range or the newest events skip
		// whole parts. (Generations made before this layout keep
		// monthly partitions until a rebuild.)
		`CREATE TABLE IF NOT EXISTS {db}.events{g} (
			seq UInt64, idx UInt16, commit_id String, event_id String, type String, schema_version UInt16,
			aggregate_type String, aggregate_id String, aggregate_version UInt64,
			time DateTime, time_ns UInt32, actor String, operation String, correlation_id String, causation_id String,
			cluster String, machines Array(String), step String, outcome String, payload String
		) ENGINE = ReplacingMergeTree() PARTITION BY (toYYYYMM(time), intDiv(seq, 1048576)) ORDER BY (cluster, seq, idx)`,
		// Current state. Every row carries seq, the stream sequence of the
		// last commit folded into it: the ReplacingMergeTree version.
		`CREATE TABLE IF NOT EXISTS {db}.clusters{g} (
			name String, status String, dm_version String, revision UInt64, state String, seq UInt64
		) ENGINE = ReplacingMergeTree(seq) ORDER BY name`,
		`CREATE TABLE IF NOT EXISTS {db}.instances{g} (
			cluster String, id String, idx UInt32, name String, role String, host String, port UInt32,
			status String, spec String, deleted UInt8, seq UInt64
		) ENGINE = ReplacingMergeTree(seq) ORDER BY (cluster, id)`,
		`CREATE TABLE IF NOT EXISTS {db}.machines{g} (
			host String, status String, ssh_port UInt32, user String, region String, zone String, rack String,
			fingerprint String, state String, seq UInt64
		) ENGINE = ReplacingMergeTree(seq) ORDER BY host`,
		`CREATE TABLE IF NOT EXISTS {db}.operations{g} (
			id String, kind String, status String, cluster String, aggregate_type String, aggregate_id String,
			actor String, created_at DateTime, created_ns UInt32, commit_seq UInt64, attempt UInt32, error String,
			owner String, in_cluster UInt8, ord UInt32, state String, deleted UInt8, seq UInt64
		) ENGINE = ReplacingMergeTree(seq) ORDER BY id`,
		`CREATE TABLE IF NOT EXISTS {db}.steps{g} (
			operation String, id String, idx UInt32, in_plan UInt8, kind String, host String, instance String,
			needs Array(String), status String, attempt UInt32, agent String, error String, exit_code Int32,
			duration_ms Int64, spec String, state String, deleted UInt8, seq UInt64
		) ENGINE = ReplacingMergeTree(seq) ORDER BY (operation, id)`,
		`CREATE TABLE IF NOT EXISTS {db}.packages{g} (
			id String, name String, version String, os String, arch String, sha256 String, size UInt64,
			state String, seq UInt64
		) ENGINE = ReplacingMergeTree(seq) ORDER BY id`,
		// How far this generation has projected: every commit up to
		// max(seq) is in the tables above.
		`CREATE TABLE IF NOT EXISTS {db}.progress{g} (seq UInt64) ENGINE = ReplacingMergeTree(seq) ORDER BY tuple()`,
	},
}, {
	Version: 2,
	Name:    "fencing tokens in the audit trail; plans apart from step states",
	Statements: []string{
		// An operation's plan, written once; steps_gN rows written since
		// carry the step's state without its spec (plans with rendered
		// files are large, and a step's state changes three times).
		`CREATE TABLE IF NOT EXISTS {db}.plans{g} (operation String, plan String, seq UInt64)
			ENGINE = ReplacingMergeTree(seq) ORDER BY operation`,
	},
	AddColumns: []AddColumn{
		// The leader token of the coordinator that made the commit.
		{Table: tableEvents, Column: "fencing_token", Type: "Int64", After: "causation_id"},
	},
}, {
	Version: 3,
	Name:    "owner groups on every view and the audit trail; the actor's credential",
	AddColumns: []AddColumn{
		// The group that owns the row: queries of a user who is not a
		// super admin keep their groups' rows only. Rows written before
		// groups existed belong to the default group (the column's
		// default is computed for old parts when they are read), but for
		// events of aggregates that belong to no group (claims, the
		// store), which only super admins see.
		{Table: tableEvents, Column: "owner_group", Type: "String", After: "aggregate_version",
			Default: "if(aggregate_type IN ('cluster', 'machine', 'package'), 'default', '')"},
		{Table: tableClusters, Column: "owner_group", Type: "String", After: "status", Default: "'default'"},
		{Table: tableMachines, Column: "owner_group", Type: "String", After: "status", Default: "'default'"},
		{Table: tablePackages, Column: "owner_group", Type: "String", After: "arch", Default: "'default'"},
		{Table: tableOperations, Column: "owner_group", Type: "String", After: "cluster", Default: "'default'"},
		// The id (never the secret) of the session or API token the actor
		// used.
		{Table: tableEvents, Column: "actor_token", Type: "String", After: "actor"},
	},
}}

// bootstrap creates the database and the bookkeeping tables.
var bootstrap = []string{
	`CREATE DATABASE IF NOT EXISTS {db}`,
	// meta holds small named values; the row with the highest version of
	// a key wins. Key "generation": the generation that queries read and
	// the live projector writes.
	`CREATE TABLE IF NOT EXISTS {db}.meta (key String, value UInt64, version UInt64)
		ENGINE = ReplacingMergeTree(version) ORDER BY key`,
	`CREATE TABLE IF NOT EXISTS {db}.schema_migrations (generation UInt32, version UInt32, name String,
		applied_at DateTime DEFAULT now()) ENGINE = ReplacingMergeTree() ORDER BY (generation, version)`,
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)

// validDatabase checks a database name before it is put into SQL as an
// identifier (identifiers cannot be bound parameters).
func validDatabase(db string) error {
	if !identRE.MatchString(db) {
		return fmt.Errorf("projections: database name %q is invalid: use letters, digits and '_'", db)
	}
	return nil
}

func suffix(gen uint32) string { return fmt.Sprintf("_g%d", gen) }

// expand fills in a statement template.
func expand(stmt, db string, gen uint32) string {
	return strings.NewReplacer("{db}", db, "{g}", suffix(gen)).Replace(stmt)
}

// table is the qualified name of a data table of generation gen.
func table(db, name string, gen uint32) string { return db + "." + name + suffix(gen) }

// applyMigrations runs the migrations that generation gen has not recorded
// yet, in order, and records each after its statements ran.
func applyMigrations(ctx context.Context, conn driver.Conn, db string, gen uint32, list []Migration) (applied int, err error) {
	done := map[uint32]bool{}
	rows, err := conn.Query(ctx, "SELECT version FROM "+db+"."+tableMigrations+" WHERE generation = ?", gen)
	if err != nil {
		return 0, fmt.Errorf("read applied migrations: %w", err)
	}
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return 0, fmt.Errorf("read applied migrations: %w", err)
		}
		done[v] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("read applied migrations: %w", err)
	}
	last := uint32(0)
	for _, m := range list {
		if m.Version <= last {
			return applied, fmt.Errorf("migration %d (%s) is out of order after %d", m.Version, m.Name, last)
		}
		last = m.Version
		if done[m.Version] {
			continue
		}
		for _, s := range m.Statements {
			if err := conn.Exec(ctx, expand(s, db, gen)); err != nil {
				return applied, fmt.Errorf("migration %d (%s) on generation %d: %w", m.Version, m.Name, gen, err)
			}
		}
		for _, c := range m.AddColumns {
			if err := addColumn(ctx, conn, db, gen, c); err != nil {
				return applied, fmt.Errorf("migration %d (%s) on generation %d: %w", m.Version, m.Name, gen, err)
			}
		}
		if err := insertTable(ctx, conn, db+"."+tableMigrations, "generation, version, name", func(b driver.Batch) error {
			return b.Append(gen, m.Version, m.Name)
		}); err != nil {
			return applied, fmt.Errorf("record migration %d: %w", m.Version, err)
		}
		applied++
	}
	return applied, nil
}

// addColumn adds a column unless the table has it: 18.16 knows no ADD
// COLUMN IF NOT EXISTS.
func addColumn(ctx context.Context, conn driver.Conn, db string, gen uint32, c AddColumn) error {
	if !identRE.MatchString(c.Column) || !identRE.MatchString(c.After) {
		return fmt.Errorf("add column %q after %q: not identifiers", c.Column, c.After)
	}
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = ?",
		db, c.Table+suffix(gen), c.Column).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	def, after := "", ""
	if c.Default != "" {
		def = " DEFAULT " + c.Default
	}
	if c.After != "" {
		after = " AFTER " + c.After
	}
	return conn.Exec(ctx, "ALTER TABLE "+table(db, c.Table, gen)+" ADD COLUMN "+c.Column+" "+c.Type+def+after)
}

// dropGeneration drops every data table of generation gen. Its migration
// records stay: generation numbers are never used twice.
func dropGeneration(ctx context.Context, conn driver.Conn, db string, gen uint32) error {
	for _, t := range dataTables {
		if err := conn.Exec(ctx, "DROP TABLE IF EXISTS "+table(db, t, gen)); err != nil {
			return fmt.Errorf("drop %s: %w", table(db, t, gen), err)
		}
	}
	return nil
}
