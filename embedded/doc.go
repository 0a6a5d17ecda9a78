// Package embedded runs the NATS JetStream server and the etcd member that
// `dmgr dev` and the tests use in-process. Production runs them as separate
// clusters (see deployments/); nothing outside dev mode and tests imports
// this package.
package embedded
