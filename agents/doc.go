// Package agents is `dmgr agent`: a stateless executor that pulls steps
// from its pool's JetStream work queue (one durable consumer shared by every
// agent of the pool), runs them on the target machines over SSH, reports
// each step's start and result to DMGR_RESULTS, and acks the step only once
// its result is stored. Long steps send in-progress acks; a step whose agent
// dies is redelivered to another agent, which is safe because every step is
// idempotent (mkdir -p, upload unless the checksum matches, replace files
// atomically, start unless the pid file names a live process).
//
// Agents register in etcd under a lease (online) and leave a record that
// outlives it (seen), so the platform lists them online or offline.
package agents
