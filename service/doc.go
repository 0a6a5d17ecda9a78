// Package service runs dmgr's commands and its event-store queries.
//
// A command is: load the aggregates the decision needs from the event
// store, let the pure domain decide, append the events as one commit with
// optimistic concurrency, and on a conflict load again and decide again (a
// bounded number of times). Secrets and package bytes are written to their
// stores before the commit and removed again when the commit is refused, so
// a refused command leaves nothing behind.
package service
