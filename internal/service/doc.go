// Package service runs dmgr's commands and its event-store queries.
//
// A command is: load the aggregates the decision needs from the event
// store, let the pure domain decide, append the events as one commit with
// optimistic concurrency, and on a conflict load again and decide again (a
// bounded number of times). Secrets and package bytes are written to their
// stores before the commit and removed again when the commit is refused, so
// a refused command leaves nothing behind.
//
// A command or query that names an operation by id (cancel, retry,
// rollback, GET of one operation) finds the operation's cluster in the
// operation index (eventstore.OperationIndex) and reads only that
// cluster: its cost does not depend on how many operations exist.
package service
