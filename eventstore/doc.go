// Package eventstore is dmgr's event store on NATS JetStream.
//
// One JetStream message is one commit: every event that one command
// produced, appended atomically to the subject of the aggregate it belongs to
// (dmgr.ev.<aggregate type>.<aggregate id>). Appends use optimistic
// concurrency on that subject (the expected last stream sequence of the
// subject) and set Nats-Msg-Id to the commit id so that a retried append
// is deduplicated. A decision that touches several aggregates appends one
// commit to each in one JetStream atomic batch (AppendAtomic: the stream
// allows atomic publish, nats-server ≥ 2.12), each message expecting its
// own subject's last sequence: all are stored, at consecutive sequences,
// or none. The stream denies delete and purge: history is immutable.
//
// Finding an operation. A command on an operation (cancel, retry,
// rollback, GET of one operation) names only the operation's id, and
// must find the aggregate (the cluster) it runs on without reading the
// log. OperationIndex keeps, in memory, the map from operation id to its
// first commit and its cluster, folded from the stream by a headers-only
// ordered consumer (the id and the aggregate are message headers, so no
// body is read). It is exact whatever number of servers append: the map is
// a fold of the stream's prefix, an entry with a cluster never changes
// once made, and an id that has no entry is declared unknown only after
// the index has folded every commit up to the stream's last sequence, read
// when the lookup began; every commit acknowledged before that (every 202,
// from any server) is at or below it. Operations committed before the
// index existed are in the stream like any other, and the tail starts at
// its first sequence. A lookup costs a map read (plus one stream-info
// request for an id not yet known), whatever the history; the index costs
// one small entry per operation in memory, and a read of every commit's
// headers when a server starts (72 ms at 20,000 commits), which only
// lookups, not start-up, wait for.
package eventstore
