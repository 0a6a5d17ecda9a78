// Package busauth is dmgr's NATS role model: who may connect to the bus and
// what each of them may publish and subscribe to.
//
// There is one nkey user per role:
//
//   - server: `dmgr server` (and dev): the API, the coordinator and the live
//     projector. It owns every stream, key-value bucket and object store,
//     appends events and publishes steps; it may not delete a stream.
//   - agent: `dmgr agent`, one user per pool. It pulls its pool's steps
//     through the pool's durable consumer and acks them, publishes step
//     results, and reads (never writes) the event stream by direct get, the
//     vault bucket and the package store.
//   - projector: `dmgr projections rebuild`. It reads the event stream
//     through its own durable consumers and by direct get, and acks.
//   - admin: everything, for operators and stream set-up tools.
//
// Every connection uses a custom inbox prefix (Identity.InboxPrefix) and
// may subscribe only below it, so that no role reads the replies sent to
// another. Credentials are nkey seed files, one per role, mode 0600 in a
// 0700 directory (EnsureSeeds); the embedded server of dev and the tests
// takes the users as []*server.NkeyUser (NkeyUsers), an external
// nats-server as an `authorization { users = [...] }` block (RenderConfig).
// A client loads its seed with ClientOptions, and ProbeAnonymous tells
// whether a bus takes connections without credentials.
package busauth
