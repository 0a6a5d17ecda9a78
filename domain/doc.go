// Package domain holds dmgr's aggregates as pure deciders: for each aggregate
// (Machine, Package, Cluster) a state type, its commands, its events, a Decide
// function that turns a command into events or an *Error, and an Evolve
// function that folds an event into the state.
//
// The package does no I/O and reads no clock: time and ids arrive on the
// command. Every invariant of the platform lives here and only here (unique
// names, no port or directory clash on a machine, a machine in use cannot be
// removed, ...), so that it can be tested without NATS, etcd or SSH.
package domain
