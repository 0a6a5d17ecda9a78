// Package projections is the ClickHouse side of dmgr: it projects the event
// stream (DMGR_EVENTS) into an audit trail and current-state views, and
// answers the queries of the API from them.
//
// # Tables
//
// In the database "dmgr" (Options.Database), one generation of tables:
//
//   - events_gN: the audit trail, one row per event (stream sequence and
//     index in its commit, commit and event ids, time, type, aggregate,
//     owner group, cluster, machines, operation, step, actor and the id
//     of the credential they used, outcome, payload);
//   - clusters_gN, instances_gN, machines_gN, operations_gN, steps_gN,
//     plans_gN, packages_gN: current state, one row per version of each
//     thing (a cluster's row holds the cluster without its instances and
//     operations, which have rows of their own; an operation's plan is
//     written once, its steps' states as they change; a step without a
//     row is pending);
//   - progress_gN: how far the generation has projected;
//
// and two bookkeeping tables, meta (which generation is current) and
// schema_migrations (which migrations each generation ran). Agents are not
// projected: they are not events but leases in etcd, and GET /api/v1/agents
// reads them there.
//
// # Exactly once in every answer
//
// The Projector is a durable JetStream consumer (one per generation,
// ConsumerName) that folds commits in batches (by size and by time),
// inserts every table's rows, records the batch's last sequence in
// progress_gN and only then acks. ClickHouse's progress, not the
// consumer's ack floor, says where to resume: the consumer is positioned
// right after it whenever the projector starts (so the consumer's own
// state is kept in memory). Batches are pipelined: the next is decoded (in
// parallel) and folded (in parallel shards of aggregates) while ClickHouse
// takes the previous one. A batch closes after MaxWait, unless the stream
// holds more than it: while catching up, batches fill up to MaxBatch, which
// makes fewer, larger parts for ClickHouse. A crash anywhere in between makes
// JetStream deliver the batch again; commits at or below the recorded
// progress are skipped, and rows written again are equal to the ones
// already there: every state row carries the stream sequence it was folded
// at as its ReplacingMergeTree version, and the fold is deterministic.
// Reads never rely on merges having happened: current state is read with
// argMax(column, seq) grouped by key, the audit trail with GROUP BY seq,
// idx. While ClickHouse is down the projector keeps its batch, retries with
// a growing pause, and catches up when it is back; the stream keeps every
// commit meanwhile.
//
// Commits come from a Consume callback (delivery.go) and are read in one
// pass by a byte scanner (eventstore.CommitReader), each payload decoded
// into its domain event as it is met; a commit in any other shape is decoded the lenient way
// (eventstore.DecodeCommit, domain.DecodeEvent). A batch's rows go to
// ClickHouse as one INSERT per table, sent in blocks of insertChunk rows.
//
// Current state is the domain's own fold (domain.ClusterFold, which copies
// a changed operation once per batch, and the others) over each
// aggregate's whole history: an aggregate the projector
// has not folded since it started is loaded from the event stream first,
// so a restart needs no state from ClickHouse. Each batch writes only the
// rows that changed.
//
// With an etcd client the projector runs only while it leads the election
// leadership.ProjectorElection (the same election helper, lease window and
// fencing token as a cluster's leader), so several servers have one
// projector; the others read the progress from ClickHouse.
//
// # Generations and rebuilds
//
// Rebuild replays the stream from sequence 1 into the next generation's
// fresh tables through that generation's own consumer, then records it as
// current in meta. The live projector sees the switch and continues the
// new generation where the rebuild stopped; queries follow within
// Options.GenerationTTL.
//
// # Reads
//
// Store answers the API's queries (clusters with instances and
// operations, machines, operations with steps, packages, the audit trail
// with filters and cursor pagination), with every value a bound parameter.
// The audit trail is ordered by (cluster, seq, idx) and partitioned by
// month and by blocks of 2^20 sequences: a cluster's page reads the
// cluster's granules; a page without a cluster looks back over a growing
// window of sequences and reads the recent (or in-range) parts only.
// WaitFor gives read-your-writes: it waits until the projections have the
// commit sequence a command answered.
//
// # Groups
//
// Every cluster, machine, package and operation row, and every event,
// carries the group that owns it (owner_group): a cluster's, machine's or
// package's own group (an operation's is the group of what it runs on,
// so a move takes its rows along), an event its commit's group. What was
// written before groups existed belongs to the default group, rows and
// events alike (the column's DEFAULT for parts written before migration
// 3); events of aggregates that belong to no group (users, claims) have
// none and are for super admins only. Lists and the audit trail take the
// caller's groups (nil: all) and filter on them after the deduplicating
// grouping, as on any other column; OwnedBy says what a group still owns.
// Aggregates other than clusters, machines and packages are not folded:
// their events go to the audit trail, and their operations (if a commit
// names one) to the operations view.
//
// # ClickHouse 18.16
//
// The SQL is the subset 18.16 and current releases share: no ADD COLUMN
// IF NOT EXISTS (migrations check system.columns), no server-side query
// parameters (clickhouse-go binds ? on the client; "x IN ?" takes a
// clickhouse.GroupSet, since a Go slice becomes an array literal), inserts
// only through PrepareBatch (an INSERT … VALUES sent with Exec waits for
// data that never comes).
package projections
