// Package service runs dmgr's commands and its event-store queries.
//
// # The write model
//
// A command reads the aggregates its decision touches, lets the pure
// domain decide, and appends the events on the condition that none of
// those aggregates changed since it read them; on a conflict it reads
// again and decides again (a bounded number of times, with a short random
// pause). What it reads and what it conditions on:
//
//   - a deploy or scale-out: the cluster, the machines its topology places
//     on, the clusters those machines list (the only ones that may have an
//     instance there), and the packages of its version and platforms;
//   - a registration: the machine and its two identity claims (the host
//     name folded to lower case; the address with the SSH port), and the
//     machines holding them;
//   - a machine's removal: the machine, the clusters it lists, its claims;
//   - every other lifecycle command: its cluster (and the packages an
//     upgrade or patch installs).
//
// No command reads a whole aggregate type or the whole stream, and none
// conditions on a subject it did not read: a machine registration never
// refuses a deploy, nor a step result of one cluster a command on another.
//
// The invariants that span aggregates stay exact under concurrency
// because every command that could break one writes to the aggregate that
// another command breaking it would also write (domain/reservations.go):
// a deploy or scale-out appends its cluster's commit and, in the same
// JetStream atomic batch (eventstore.AppendAtomic, nats-server ≥ 2.12), an
// InstancesPlaced on each machine it places on, each message with the
// expected last sequence of its own subject. Two deploys that clash on a
// machine's port, or a deploy onto a machine racing its removal, both
// write that machine: the server stores one batch and refuses the other
// whole, which then decides again on what the first wrote and is refused
// for the clash. A cluster name is unique because a deploy expects the
// cluster's subject to be empty; a machine identity is unique because a
// registration takes its claims in the same batch (ClaimTaken, expecting
// each claim as read) and a removal releases them. ReserveExisting makes,
// once per store, the claims and placements of history written before
// reservations.
//
// Reads are cheap because the service keeps each aggregate it read as a
// snapshot in memory (aggregates.go: an LRU per type); reading one again
// asks the store for the commits after the snapshot only (one direct get,
// usually answering none), so a read costs what changed since, not the
// aggregate's history. Snapshots never change once handed out (the
// domain's folds copy before they change), so concurrent commands share
// them without locks. Several servers may run: a snapshot another server
// made stale is caught by the append's condition.
//
// The stream stages atomic batches one at a time (on a single-replica
// file stream each in a small file store of its own, a few milliseconds),
// and reads of the same stream wait behind them. Registrations and
// removals of machines therefore take turns, at most
// Config.MaxConcurrentRegistrations at once: a bulk of them (an inventory
// import by sixteen clients) keeps the stream as busy as before, but a
// deploy or a dry run waits behind two batches, not sixteen
// (BenchmarkCommandsAtScale, scale+load).
//
// Secrets and package bytes are written to their stores before the commit
// and removed again when the commit is refused, so a refused command
// leaves nothing behind.
//
// A command or query that names an operation by id (cancel, retry,
// rollback, GET of one operation) finds the operation's cluster in the
// operation index (eventstore.OperationIndex) and reads only that
// cluster: its cost does not depend on how many operations exist.
package service
