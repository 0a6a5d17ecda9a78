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
//     cluster, machines, operation, step, actor, outcome, payload);
//   - clusters_gN, instances_gN, machines_gN, operations_gN, steps_gN,
//     packages_gN: current state, one row per version of each thing;
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
// progress_gN and only then acks. A crash anywhere in between makes
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
// Current state is the domain's own fold (domain.EvolveCluster and the
// others) over each aggregate's whole history: an aggregate the projector
// has not folded since it started is loaded from the event stream first,
// so a restart needs no state from ClickHouse. Each batch writes only the
// rows that changed.
//
// With an etcd client the projector runs only while it leads the election
// LeaderKey, so several servers have one projector; the others read the
// progress from ClickHouse.
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
// WaitFor gives read-your-writes: it waits until the projections have the
// commit sequence a command answered.
package projections
