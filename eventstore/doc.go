// Package eventstore is dmgr's event store on NATS JetStream.
//
// One JetStream message is one commit: every event that one command
// produced, appended atomically to the subject of the aggregate it belongs to
// (dmgr.ev.<aggregate type>.<aggregate id>). Appends use optimistic
// concurrency on that subject (the expected last stream sequence of the
// subject), or on a wider subject filter when a decision read more than one
// aggregate, and set Nats-Msg-Id to the commit id so that a retried append is
// deduplicated. The stream denies delete and purge: history is immutable.
package eventstore
