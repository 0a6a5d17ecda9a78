// Package cli is the client side of the one dmgr binary: the subcommands a
// DBA types (dmgr login, dmgr cluster deploy|display|scale-out|…, dmgr
// operation watch, dmgr machine add, …), named and shaped like `tiup dm`'s.
// Every subcommand is a thin shell over the HTTP API of a dmgr server: it
// reads flags and files, sends one request (with the user's token), prints
// the answer as a table, JSON or YAML, and, for commands that start an
// operation, follows the operation's event stream until it ends.
//
// The package holds no global state: an App carries the standard streams,
// the environment and the config directory, so tests run the commands
// in-process exactly as the binary does.
package cli
