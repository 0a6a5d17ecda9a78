package busauth

import (
	"fmt"
	"regexp"
)

// Role is one kind of bus client.
type Role string

// The roles.
const (
	Server    Role = "server"
	Agent     Role = "agent"
	Projector Role = "projector"
	Admin     Role = "admin"
)

// Roles lists every role.
var Roles = []Role{Server, Agent, Projector, Admin}

// DefaultPool is the agent pool of dev mode and of steps not routed
// elsewhere (workqueue.DefaultPool).
const DefaultPool = "default"

// The names below are those of workqueue, eventstore, secrets and pkgstore,
// spelled out because those packages' tests import testenv, which imports
// this package; TestNamesMatchThePackagesThatOwnThem keeps them equal.
const (
	eventStream  = "DMGR_EVENTS"   // eventstore.StreamName
	eventSubject = "dmgr.ev.>"     // eventstore.AllSubjects
	stepStream   = "DMGR_STEPS"    // workqueue.StepsStream
	stepSubject  = "dmgr.step."    // workqueue.StepSubject(pool) is this and the pool
	resultSubj   = "dmgr.result.>" // workqueue's results subjects
	agentCons    = "agents-"       // workqueue.AgentConsumer(pool) is this and the pool
	vaultBucket  = "dmgr-secrets"  // secrets.Bucket
	pkgBucket    = "dmgr-packages" // pkgstore.Bucket
)

// poolRE is what a pool name may be: it becomes one token of the pool's
// step subject, the name of its consumer and part of a permission, so only
// characters that mean nothing to NATS are allowed.
var poolRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidPool reports, as an error saying what is allowed, whether pool can
// name an agent pool.
func ValidPool(pool string) error {
	if !poolRE.MatchString(pool) {
		return fmt.Errorf("agent pool %q: a pool name is 1 to 64 letters, digits, '-' or '_'", pool)
	}
	return nil
}

// Identity is one NATS user of dmgr: a role and, for an agent, its pool.
type Identity struct {
	Role Role
	Pool string // agents only
}

// Validate says what is wrong with id, if anything.
func (id Identity) Validate() error {
	switch id.Role {
	case Agent:
		return ValidPool(id.Pool)
	case Server, Projector, Admin:
		if id.Pool != "" {
			return fmt.Errorf("NATS role %s takes no pool (got %q); only agents belong to a pool", id.Role, id.Pool)
		}
		return nil
	default:
		return fmt.Errorf("unknown NATS role %q: it is one of server, agent, projector, admin", id.Role)
	}
}

// String is "server", "agent (pool z1)", ….
func (id Identity) String() string {
	if id.Role == Agent {
		return fmt.Sprintf("agent (pool %s)", id.Pool)
	}
	return string(id.Role)
}

// InboxPrefix is the custom inbox prefix of id's connections: replies to
// its requests (JetStream API answers, fetched messages) go below it, and
// it may subscribe nowhere else. Agents of different pools get different
// prefixes, so one pool cannot read the steps fetched by another.
func (id Identity) InboxPrefix() string {
	if id.Role == Agent {
		return "_INBOX_agent." + id.Pool
	}
	return "_INBOX_" + string(id.Role)
}

// SeedFileName is the base name of id's seed file: nats-server.nk,
// nats-projector.nk, nats-admin.nk, nats-agent.nk for the default pool and
// nats-agent-<pool>.nk for another pool.
func (id Identity) SeedFileName() string {
	if id.Role == Agent && id.Pool != DefaultPool {
		return "nats-agent-" + id.Pool + ".nk"
	}
	return "nats-" + string(id.Role) + ".nk"
}

// Subjects is an allow-list and a deny-list of subjects; deny wins.
type Subjects struct {
	Allow []string
	Deny  []string
}

// Permissions is what a user may publish (including JetStream API
// requests, which are publishes) and subscribe to.
type Permissions struct {
	Publish   Subjects
	Subscribe Subjects
}

// Permissions returns id's permissions. id must be valid.
func (id Identity) Permissions() Permissions {
	inbox := id.InboxPrefix() + ".>"
	switch id.Role {
	case Server:
		return Permissions{
			Publish: Subjects{
				Allow: []string{
					"$JS.API.>",  // it creates and updates every stream, bucket and consumer it uses
					"$JS.ACK.>",  // acks of the coordinator's and the projector's consumers
					"$JS.FC.>",   // flow control of the push consumers behind object gets and KV watches
					eventSubject, // appends commits
					stepSubject + ">",
					"$KV.>", // the vault and the idempotency keys
					"$O.>",  // package uploads
				},
				// History is kept: the event stream denies message
				// delete and purge itself; the stream as a whole cannot be
				// deleted with these credentials either.
				Deny: []string{"$JS.API.STREAM.DELETE.>"},
			},
			Subscribe: Subjects{Allow: []string{inbox}},
		}
	case Agent:
		p := id.Pool
		return Permissions{
			Publish: Subjects{
				Allow: []string{
					"$JS.API.INFO",
					// Its pool's steps, through the pool's durable pull
					// consumer: the filter subject is part of the create
					// subject, and the server refuses a body whose filter
					// differs.
					"$JS.API.STREAM.INFO." + stepStream,
					"$JS.API.CONSUMER.CREATE." + stepStream + "." + agentCons + p + "." + stepSubject + p,
					"$JS.API.CONSUMER.INFO." + stepStream + "." + agentCons + p,
					"$JS.API.CONSUMER.MSG.NEXT." + stepStream + "." + agentCons + p,
					"$JS.ACK." + stepStream + "." + agentCons + p + ".>",
					resultSubj,
					// The event stream, read-only: direct get only.
					"$JS.API.STREAM.INFO." + eventStream,
					"$JS.API.DIRECT.GET." + eventStream,
					"$JS.API.DIRECT.GET." + eventStream + ".>",
					// The vault: a key-value Get is a direct get of the
					// key's last value.
					"$JS.API.STREAM.INFO.KV_" + vaultBucket,
					"$JS.API.DIRECT.GET.KV_" + vaultBucket + ".$KV." + vaultBucket + ".>",
					// The package store: a read (pkgstore.Store.Fetch)
					// takes the object's meta by direct get, then pulls its
					// chunks through an ordered pull consumer filtered on
					// the chunk subject, and deletes that consumer when the
					// read ends.
					"$JS.API.STREAM.INFO.OBJ_" + pkgBucket,
					"$JS.API.DIRECT.GET.OBJ_" + pkgBucket + ".$O." + pkgBucket + ".M.>",
					"$JS.API.CONSUMER.CREATE.OBJ_" + pkgBucket + ".*.$O." + pkgBucket + ".C.>",
					"$JS.API.CONSUMER.MSG.NEXT.OBJ_" + pkgBucket + ".*",
					"$JS.API.CONSUMER.DELETE.OBJ_" + pkgBucket + ".*",
				},
				// Implied by the allow-list; spelled out so that a
				// widened allow entry cannot let these through.
				Deny: []string{eventSubject, stepSubject + ">", "$KV.>", "$O.>"},
			},
			Subscribe: Subjects{Allow: []string{inbox}},
		}
	case Projector:
		return Permissions{
			Publish: Subjects{
				Allow: []string{
					"$JS.API.INFO",
					"$JS.API.STREAM.INFO." + eventStream,
					"$JS.API.DIRECT.GET." + eventStream,
					"$JS.API.DIRECT.GET." + eventStream + ".>",
					// Its durable consumers dmgr-projections-g<N> (a
					// permission cannot match part of a token).
					"$JS.API.CONSUMER.CREATE." + eventStream + ".*",
					"$JS.API.CONSUMER.INFO." + eventStream + ".*",
					"$JS.API.CONSUMER.DELETE." + eventStream + ".*",
					"$JS.API.CONSUMER.MSG.NEXT." + eventStream + ".*",
					"$JS.ACK." + eventStream + ".>",
				},
				Deny: []string{eventSubject, stepSubject + ">", "$KV.>", "$O.>"},
			},
			Subscribe: Subjects{Allow: []string{inbox}},
		}
	default: // Admin
		return Permissions{
			Publish:   Subjects{Allow: []string{">"}},
			Subscribe: Subjects{Allow: []string{">"}},
		}
	}
}
