package domain

import (
	"fmt"
	"slices"
)

// Access: who may do what. A principal is a user as one credential
// presents them: their roles in their groups, whether they are a super
// admin, and whether the credential is read-only. Every command and query
// names the group it touches and the role it needs; Authorize says yes, or
// says what is missing in words a person can act on.

// MemberRole is a member's role in a group. Each role includes the ones below it.
type MemberRole string

// Roles, weakest first.
const (
	MemberViewer   MemberRole = "viewer"   // reads the group's resources
	MemberOperator MemberRole = "operator" // also runs commands on them, approves requests
	MemberAdmin    MemberRole = "admin"    // also manages the group's members and policies
)

// MemberRoles are the roles, from least to most.
var MemberRoles = []MemberRole{MemberViewer, MemberOperator, MemberAdmin}

// rank orders roles by their place in MemberRoles; 0 is no role.
func (r MemberRole) rank() int { return slices.Index(MemberRoles, r) + 1 }

// Valid reports whether r is one of the three roles.
func (r MemberRole) Valid() bool { return r.rank() > 0 }

// Includes reports whether r grants what need does.
func (r MemberRole) Includes(need MemberRole) bool { return r.rank() >= need.rank() && need.rank() > 0 }

// ParseRole reads a role name.
func ParseMemberRole(s string) (MemberRole, error) {
	r := MemberRole(s)
	if !r.Valid() {
		return "", Errorf(Invalid, "role %q is invalid: use viewer, operator or admin", s)
	}
	return r, nil
}

// Principal is who sends a request.
type Principal struct {
	User       string
	SuperAdmin bool
	// Roles maps each group the user is a member of to their role there.
	Roles map[string]MemberRole
	// ReadOnly is set when the credential was narrowed to reading.
	ReadOnly bool
	// TokenID identifies the credential (a session or API token id, or
	// "admin-token"); never its secret.
	TokenID string
}

// RoleIn is p's role in group ("" when none).
func (p Principal) RoleIn(group string) MemberRole { return p.Roles[group] }

// Sees reports whether p may read what group owns.
func (p Principal) Sees(group string) bool {
	return p.SuperAdmin || p.RoleIn(OwnerGroup(group)).Includes(MemberViewer)
}

// VisibleGroups are the groups whose resources p may read; nil means every
// group (a super admin).
func (p Principal) VisibleGroups() []string {
	if p.SuperAdmin {
		return nil
	}
	out := make([]string, 0, len(p.Roles))
	for _, g := range SortedKeys(p.Roles) {
		if p.Roles[g].Includes(MemberViewer) {
			out = append(out, g)
		}
	}
	return out
}

// Access is one thing a principal asks to do: in words ("deploy to group
// g1", "read cluster c1"), the group that owns it, the role it needs, and
// whether it changes anything. Super admins may do everything; SuperOnly
// reserves an access to them.
type Access struct {
	What      string
	Group     string
	Need      MemberRole
	Write     bool
	SuperOnly bool
}

// Authorize says whether p may do a, or a Forbidden error that says what
// is missing ("deploy to group g1 needs operator; you are viewer").
func (p Principal) Authorize(a Access) error {
	if a.Write && p.ReadOnly {
		return Errorf(Forbidden, "%s needs a token that may write; this one (%s) is read-only", a.What, p.TokenID)
	}
	if p.SuperAdmin {
		return nil
	}
	if a.SuperOnly {
		return Errorf(Forbidden, "%s needs a super admin; %s is not one", a.What, p.User)
	}
	group := OwnerGroup(a.Group)
	have := p.RoleIn(group)
	if have.Includes(a.Need) {
		return nil
	}
	if have == "" {
		return Errorf(Forbidden, "%s needs %s in group %s; you are not a member of group %s", a.What, a.Need, group, group)
	}
	return Errorf(Forbidden, "%s needs %s; you are %s", a.What, a.Need, have)
}

// AggregateAccess is the aggregate type of refusals: one subject per user
// (dmgr.ev.access.<user>), appended to without a condition, so that a
// refusal costs one append and never conflicts.
const AggregateAccess = "access"

// TypeAccessRefused is the event type of AccessRefused.
const TypeAccessRefused = "AccessRefused"

// AccessRefused (access): a request was refused. It names what was asked
// and what was missing; Cluster and Host put it in the audit trail of what
// it was about.
type AccessRefused struct {
	User    string `json:"user"`
	TokenID string `json:"token_id,omitempty"`
	What    string `json:"what"`
	Group   string `json:"group,omitempty"`
	Need    string `json:"need,omitempty"`
	Reason  string `json:"reason"`
	Cluster string `json:"cluster,omitempty"`
	Host    string `json:"host,omitempty"`
}

func (AccessRefused) EventType() string { return TypeAccessRefused }

// Refusal is the AccessRefused that records p being refused a with err.
func (p Principal) Refusal(a Access, err error) AccessRefused {
	need := string(a.Need)
	if a.SuperOnly {
		need = "super_admin"
	}
	return AccessRefused{User: p.User, TokenID: p.TokenID, What: a.What, Group: OwnerGroup(a.Group), Need: need, Reason: ErrorMessage(err)}
}

// String names p for logs: user, token id, and the flags that matter.
func (p Principal) String() string {
	s := fmt.Sprintf("%s (token %s)", p.User, p.TokenID)
	if p.SuperAdmin {
		s += " super admin"
	}
	if p.ReadOnly {
		s += " read-only"
	}
	return s
}
