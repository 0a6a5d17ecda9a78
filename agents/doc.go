// Package agents is `dmgr agent`: a stateless executor that pulls steps
// from its pool's JetStream work queue (one durable consumer shared by every
// agent of the pool), runs them on the target machines over SSH, reports
// each step's start and result to DMGR_RESULTS, and acks the step only once
// its result is stored. Long steps send in-progress acks; a step whose agent
// dies is redelivered to another agent, which is safe because every step is
// idempotent (mkdir -p, upload unless the checksum matches, replace files
// atomically, start unless the pid file names a live process).
//
// A step message names a step only. An agent runs it only when etcd and
// the committed events order it (verify.go): the message's token is the
// cluster's leader's, in etcd and in the events; the operation, attempt and
// step are what the cluster runs now; the step's definition comes from the
// operation's plan, its target from the machine's registration (address,
// port, login, pinned host key), and the credential from the vault, which
// opens it for that machine only. A forged, replayed or re-targeted message
// is refused, logged and never run. Agents read the event store by direct
// get only (Config.Events), keeping each cluster's and machine's state
// folded with the last stream sequence read.
//
// Agents register in etcd under a lease (online) and leave a record that
// outlives it (seen), so the platform lists them online or offline.
package agents
