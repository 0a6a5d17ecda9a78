// Package httpapi is dmgr's HTTP API (go-chi): commands are POSTs and
// DELETEs that answer 202 Accepted with the operation id and the commit's
// stream sequence; queries are GETs; errors are application/problem+json.
// Every route but /healthz and /readyz needs the bearer token, and every
// command honours Idempotency-Key. Two GETs are server-sent event streams
// read from the event stream as it is committed (events.go): an
// operation's progress and a cluster's commits. The routes are described in
// openapi.yaml, served at /api/v1/openapi.yaml and checked against the
// router by a test.
package httpapi
