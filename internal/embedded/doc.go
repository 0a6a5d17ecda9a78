// Package embedded runs the NATS JetStream server and the etcd member that
// `dmgr dev` and the tests use in-process. EnableEtcdAuth makes an etcd
// cluster require a login, with dmgr's users and roles (EtcdRoles).
// Production runs them as separate clusters (see deployments/); nothing
// outside dev mode and tests imports this package.
package embedded
