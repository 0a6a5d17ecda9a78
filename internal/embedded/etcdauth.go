package embedded

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dmgr/dmgr/internal/leadership"
)

// The etcd users that EnableEtcdAuth creates, one per role, each with a
// role of the same name (root has etcd's built-in root role).
const (
	EtcdRootUser   = "root"
	EtcdServerUser = "dmgr-server"
	EtcdAgentUser  = "dmgr-agent"
)

// EtcdPermission is one key range a role may read, write or both: a
// prefix (every key that starts with Key).
type EtcdPermission struct {
	Prefix string
	Type   clientv3.PermissionType // PermRead, PermWrite or PermReadWrite
}

// The permission types, as clientv3.PermissionType.
const (
	PermRead      = clientv3.PermissionType(clientv3.PermRead)
	PermWrite     = clientv3.PermissionType(clientv3.PermWrite)
	PermReadWrite = clientv3.PermissionType(clientv3.PermReadWrite)
)

func (p EtcdPermission) String() string {
	t := map[clientv3.PermissionType]string{PermRead: "read", PermWrite: "write", PermReadWrite: "readwrite"}[p.Type]
	return fmt.Sprintf("%s %s*", t, p.Prefix)
}

// EtcdRoles returns the permissions of dmgr's etcd roles, by role name:
//
//   - dmgr-server (`dmgr server`, `dmgr dev`): everything under /dmgr/v1/
//     (leadership.Root) — cluster elections (/dmgr/v1/leader/cluster/),
//     the projector's election (/dmgr/v1/leader/projector/), live
//     coordinators (/dmgr/v1/coordinators/), the clusters with a running
//     operation (/dmgr/v1/active-clusters/), the agent list
//     (/dmgr/v1/agents/), the readiness probe key.
//   - dmgr-agent (`dmgr agent`, dev's in-process agent): read the clusters'
//     election keys under /dmgr/v1/leader/cluster/ (the stale-dispatch
//     check reads a cluster's first-created key) and read and write
//     /dmgr/v1/agents/ (its online key, under its own lease, and its seen
//     key). It can neither take nor overwrite a leader key, nor read the
//     projector's election, nor read or write anything else.
//
// The key layout is package leadership's.
//
// Leases need a login but no key permission to be granted or kept alive
// (so a session works with prefix permissions only); revoking one
// needs write permission on every key attached to it.
func EtcdRoles() map[string][]EtcdPermission {
	return map[string][]EtcdPermission{
		EtcdServerUser: {{Prefix: leadership.Root, Type: PermReadWrite}},
		EtcdAgentUser: {
			{Prefix: leadership.ClusterLeaderPrefix, Type: PermRead},
			{Prefix: leadership.AgentsPrefix, Type: PermReadWrite},
		},
	}
}

// EtcdPasswords are the passwords of the etcd users.
type EtcdPasswords struct {
	Root, Server, Agent string
}

func (p EtcdPasswords) byUser() map[string]string {
	return map[string]string{EtcdRootUser: p.Root, EtcdServerUser: p.Server, EtcdAgentUser: p.Agent}
}

// Password is the password of user, "" for a user that is not dmgr's.
func (p EtcdPasswords) Password(user string) string { return p.byUser()[user] }

// authTimeout bounds EnableEtcdAuth when ctx has no earlier deadline.
const authTimeout = time.Minute

// EnableAuth runs EnableEtcdAuth against this member.
func (e *Etcd) EnableAuth(ctx context.Context, pw EtcdPasswords) error {
	return EnableEtcdAuth(ctx, []string{e.clientURL}, nil, pw)
}

// EnableEtcdAuth makes the etcd cluster at endpoints require a login: it
// creates the users root, dmgr-server and dmgr-agent with the given
// passwords, the roles dmgr-server and dmgr-agent with the permissions of
// EtcdRoles (root gets etcd's root role), and enables authentication.
//
// It is idempotent and reconciles: on a cluster whose auth is already
// enabled it logs in as root and brings the roles' permissions and the
// users' passwords to what is given (so changing a password file and
// restarting rotates the password), changing nothing that is already so.
// A cluster left half set up by an interrupted run is finished. tlsCfg is
// nil for plain http endpoints.
func EnableEtcdAuth(ctx context.Context, endpoints []string, tlsCfg *tls.Config, pw EtcdPasswords) error {
	for user, p := range pw.byUser() {
		if p == "" {
			return fmt.Errorf("etcd auth: no password for user %s", user)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, authTimeout)
	defer cancel()
	where := strings.Join(endpoints, ",")
	anon, err := clientv3.New(clientv3.Config{Endpoints: endpoints, TLS: tlsCfg, DialTimeout: 5 * time.Second, Context: ctx,
		Logger: EtcdClientLogger()})
	if err != nil {
		return fmt.Errorf("etcd auth at %s: connect: %w", where, err)
	}
	defer anon.Close()
	st, err := anon.AuthStatus(ctx)
	if err != nil {
		return fmt.Errorf("etcd auth at %s: read auth status: %w", where, err)
	}
	cli := anon
	if st.Enabled {
		// Check root's password first, so that a lost password file gets
		// a message that says so rather than "authentication failed".
		if _, err := anon.Authenticate(ctx, EtcdRootUser, pw.Root); err != nil {
			if errors.Is(err, rpctypes.ErrAuthFailed) {
				return fmt.Errorf("etcd at %s requires a login and the root password given does not log in: restore the root password file it was set up with, or start this etcd afresh on an empty data directory", where)
			}
			return fmt.Errorf("etcd auth at %s: log in as root: %w", where, err)
		}
		if cli, err = clientv3.New(clientv3.Config{Endpoints: endpoints, TLS: tlsCfg, DialTimeout: 5 * time.Second,
			Context: ctx, Username: EtcdRootUser, Password: pw.Root, Logger: EtcdClientLogger()}); err != nil {
			return fmt.Errorf("etcd auth at %s: connect as root: %w", where, err)
		}
		defer cli.Close()
	}
	roles := EtcdRoles()
	for _, role := range []string{EtcdServerUser, EtcdAgentUser} {
		if err := ensureRole(ctx, cli, role, roles[role]); err != nil {
			return fmt.Errorf("etcd auth at %s: %w", where, err)
		}
	}
	for _, u := range []struct{ user, role string }{
		{EtcdRootUser, "root"}, {EtcdServerUser, EtcdServerUser}, {EtcdAgentUser, EtcdAgentUser},
	} {
		if err := ensureUser(ctx, cli, anon, u.user, pw.Password(u.user), u.role); err != nil {
			return fmt.Errorf("etcd auth at %s: %w", where, err)
		}
	}
	if !st.Enabled {
		if _, err := cli.AuthEnable(ctx); err != nil {
			return fmt.Errorf("etcd auth at %s: enable authentication: %w", where, err)
		}
	}
	return nil
}

// ensureRole creates role when missing and makes its permissions exactly
// want.
func ensureRole(ctx context.Context, cli *clientv3.Client, role string, want []EtcdPermission) error {
	if _, err := cli.RoleAdd(ctx, role); err != nil && !errors.Is(err, rpctypes.ErrRoleAlreadyExist) {
		return fmt.Errorf("add role %s: %w", role, err)
	}
	got, err := cli.RoleGet(ctx, role)
	if err != nil {
		return fmt.Errorf("read role %s: %w", role, err)
	}
	type rng struct{ key, end string }
	wanted := map[rng]clientv3.PermissionType{}
	for _, p := range want {
		wanted[rng{p.Prefix, clientv3.GetPrefixRangeEnd(p.Prefix)}] = p.Type
	}
	for _, p := range got.Perm {
		r := rng{string(p.Key), string(p.RangeEnd)}
		if t, ok := wanted[r]; ok && t == clientv3.PermissionType(p.PermType) {
			delete(wanted, r)
			continue
		}
		if _, ok := wanted[r]; ok {
			continue // granted again below with the wanted type
		}
		if _, err := cli.RoleRevokePermission(ctx, role, r.key, r.end); err != nil {
			return fmt.Errorf("role %s: revoke permission on [%q, %q): %w", role, r.key, r.end, err)
		}
	}
	keys := make([]rng, 0, len(wanted))
	for r := range wanted {
		keys = append(keys, r)
	}
	slices.SortFunc(keys, func(a, b rng) int { return strings.Compare(a.key, b.key) })
	for _, r := range keys {
		if _, err := cli.RoleGrantPermission(ctx, role, r.key, r.end, wanted[r]); err != nil {
			return fmt.Errorf("role %s: grant permission on prefix %s: %w", role, r.key, err)
		}
	}
	return nil
}

// ensureUser creates user with password and role, or, when it exists,
// sets its password unless the password already logs in, and grants the
// role. anon checks the password without changing the client's login.
func ensureUser(ctx context.Context, cli, anon *clientv3.Client, user, password, role string) error {
	_, err := cli.UserAdd(ctx, user, password)
	switch {
	case errors.Is(err, rpctypes.ErrUserAlreadyExist):
		if _, err := anon.Authenticate(ctx, user, password); err != nil {
			if !errors.Is(err, rpctypes.ErrAuthFailed) && !errors.Is(err, rpctypes.ErrAuthNotEnabled) {
				return fmt.Errorf("check the password of user %s: %w", user, err)
			}
			if _, err := cli.UserChangePassword(ctx, user, password); err != nil {
				return fmt.Errorf("set the password of user %s: %w", user, err)
			}
		}
	case err != nil:
		return fmt.Errorf("add user %s: %w", user, err)
	}
	if _, err := cli.UserGrantRole(ctx, user, role); err != nil {
		return fmt.Errorf("grant role %s to user %s: %w", role, user, err)
	}
	if user == EtcdRootUser {
		return nil
	}
	// A role granted by hand (say dmgr-server to dmgr-agent) would widen
	// what the user may do: take it away.
	got, err := cli.UserGet(ctx, user)
	if err != nil {
		return fmt.Errorf("read user %s: %w", user, err)
	}
	for _, r := range got.Roles {
		if r == role {
			continue
		}
		if _, err := cli.UserRevokeRole(ctx, user, r); err != nil {
			return fmt.Errorf("revoke role %s from user %s: %w", r, user, err)
		}
	}
	return nil
}
