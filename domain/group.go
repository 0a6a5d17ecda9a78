package domain

import (
	"slices"
	"time"
)

// Groups own clusters, machines and packages (seed 001's tower: every
// instance in exactly one group, users in several groups, group admins).
// A group's id is the name it was created with and never changes, so that
// what it owns names it for ever; a rename changes its name. Ids and names
// share one namespace, held by claims ("group:<name>").

// AggregateGroup is the aggregate type of groups.
const AggregateGroup = "group"

// Event types of groups.
const (
	TypeGroupCreated       = "GroupCreated"
	TypeGroupRenamed       = "GroupRenamed"
	TypeGroupDeleted       = "GroupDeleted"
	TypeGroupMemberSet     = "GroupMemberSet"
	TypeGroupMemberRemoved = "GroupMemberRemoved"
	TypeApprovalPolicySet  = "ApprovalPolicySet"
)

// Group is the state of a group.
type Group struct {
	ID       string                `json:"id"`
	Name     string                `json:"name"`
	Members  map[string]MemberRole `json:"members"`
	Policy   ApprovalPolicy        `json:"approval_policy"`
	Deleted  bool                  `json:"deleted,omitempty"`
	Revision uint64                `json:"-"`
}

// Exists reports whether the group was created and not deleted.
func (g *Group) Exists() bool { return g != nil && g.ID != "" && !g.Deleted }

// ApprovalPolicy names the commands on a group's clusters that wait for a
// second person's approval: a command in Commands on a cluster whose
// labels include every one of ClusterLabels (empty: every cluster).
type ApprovalPolicy struct {
	Commands      []string          `json:"commands"`
	ClusterLabels map[string]string `json:"cluster_labels"`
	// TTLSeconds is how long a request waits before it expires.
	TTLSeconds int64 `json:"ttl_seconds"`
}

// Commands a policy may name: the cluster commands of the API.
var ApprovableCommands = []string{"deploy", "scale-out", "scale-in", "upgrade", "patch", "rollback",
	"start", "stop", "restart", "reload", "destroy", "import"}

// DefaultApprovalTTL is how long a request waits by default.
const DefaultApprovalTTL = 24 * time.Hour

// DefaultApprovalPolicy is a new group's policy: the commands that lose
// data or change a running production cluster wait for approval on
// clusters labelled env=prod.
func DefaultApprovalPolicy() ApprovalPolicy {
	return ApprovalPolicy{Commands: []string{"destroy", "scale-in", "upgrade", "reload", "patch"},
		ClusterLabels: map[string]string{"env": "prod"}, TTLSeconds: int64(DefaultApprovalTTL / time.Second)}
}

// TTL is how long a request under the policy waits.
func (p ApprovalPolicy) TTL() time.Duration {
	if p.TTLSeconds <= 0 {
		return DefaultApprovalTTL
	}
	return time.Duration(p.TTLSeconds) * time.Second
}

// Requires reports whether command on a cluster with these labels waits
// for approval.
func (p ApprovalPolicy) Requires(command string, labels map[string]string) bool {
	if !slices.Contains(p.Commands, command) {
		return false
	}
	for k, v := range p.ClusterLabels {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// ValidateApprovalPolicy checks a policy.
func ValidateApprovalPolicy(p ApprovalPolicy) error {
	for _, c := range p.Commands {
		if !slices.Contains(ApprovableCommands, c) {
			return Errorf(Invalid, "approval policy: command %q is not one of %v", c, ApprovableCommands)
		}
	}
	if err := ValidateLabels(p.ClusterLabels); err != nil {
		return Errorf(Invalid, "approval policy: %s", ErrorMessage(err))
	}
	if ttl := p.TTL(); ttl < time.Minute || ttl > 30*24*time.Hour {
		return Errorf(Invalid, "approval policy: ttl %s is out of range: use 1m to 720h", ttl)
	}
	return nil
}

// GroupCreated (group).
type GroupCreated struct {
	ID     string         `json:"id"`
	Name   string         `json:"name"`
	Policy ApprovalPolicy `json:"approval_policy"`
}

// GroupRenamed (group).
type GroupRenamed struct {
	From string `json:"from"`
	Name string `json:"name"`
}

// GroupDeleted (group).
type GroupDeleted struct{}

// GroupMemberSet (group): User now has Role in the group.
type GroupMemberSet struct {
	User string     `json:"user"`
	Role MemberRole `json:"role"`
}

// GroupMemberRemoved (group).
type GroupMemberRemoved struct {
	User string `json:"user"`
}

// ApprovalPolicySet (group).
type ApprovalPolicySet struct {
	Policy ApprovalPolicy `json:"approval_policy"`
}

func (GroupCreated) EventType() string       { return TypeGroupCreated }
func (GroupRenamed) EventType() string       { return TypeGroupRenamed }
func (GroupDeleted) EventType() string       { return TypeGroupDeleted }
func (GroupMemberSet) EventType() string     { return TypeGroupMemberSet }
func (GroupMemberRemoved) EventType() string { return TypeGroupMemberRemoved }
func (ApprovalPolicySet) EventType() string  { return TypeApprovalPolicySet }

// EvolveGroup folds one event into a group.
func EvolveGroup(g Group, e Event) Group {
	switch e := e.(type) {
	case GroupCreated:
		g = Group{ID: e.ID, Name: e.Name, Policy: e.Policy, Revision: g.Revision}
	case GroupRenamed:
		g.Name = e.Name
	case GroupDeleted:
		g.Deleted, g.Members = true, nil
	case GroupMemberSet:
		g.Members = copyMembers(g.Members)
		g.Members[e.User] = e.Role
	case GroupMemberRemoved:
		g.Members = copyMembers(g.Members)
		delete(g.Members, e.User)
	case ApprovalPolicySet:
		g.Policy = e.Policy
	}
	g.Revision++
	return g
}

func copyMembers(m map[string]MemberRole) map[string]MemberRole {
	out := make(map[string]MemberRole, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}

// GroupClaim is the claim that keeps a group id or name unique.
func GroupClaim(name string) string { return "group:" + name }

// DecideCreateGroup creates group name (nil g: none by that id).
func DecideCreateGroup(g *Group, name string) ([]Event, error) {
	if err := ValidateGroupName(name); err != nil {
		return nil, err
	}
	if g != nil && g.ID != "" {
		if g.Deleted {
			return nil, Errorf(Conflict, "group %s was deleted; a group id is never given again (what it owned names it): choose another name", name)
		}
		return nil, Errorf(Conflict, "group %s already exists", name)
	}
	return []Event{GroupCreated{ID: name, Name: name, Policy: DefaultApprovalPolicy()}}, nil
}

func existingGroup(g *Group, ref string) error {
	if !g.Exists() {
		return Errorf(NotFound, "group %s does not exist", ref)
	}
	return nil
}

// DecideRenameGroup renames a group.
func DecideRenameGroup(g *Group, ref, name string) ([]Event, error) {
	if err := existingGroup(g, ref); err != nil {
		return nil, err
	}
	if err := ValidateGroupName(name); err != nil {
		return nil, err
	}
	if g.Name == name {
		return nil, nil
	}
	return []Event{GroupRenamed{From: g.Name, Name: name}}, nil
}

// DecideSetMember gives user role in the group.
func DecideSetMember(g *Group, ref, user string, role MemberRole) ([]Event, error) {
	if err := existingGroup(g, ref); err != nil {
		return nil, err
	}
	if !role.Valid() {
		return nil, Errorf(Invalid, "role %q is invalid: use viewer, operator or admin", role)
	}
	if g.Members[user] == role {
		return nil, nil
	}
	return []Event{GroupMemberSet{User: user, Role: role}}, nil
}

// DecideRemoveMember takes user out of the group.
func DecideRemoveMember(g *Group, ref, user string) ([]Event, error) {
	if err := existingGroup(g, ref); err != nil {
		return nil, err
	}
	if _, ok := g.Members[user]; !ok {
		return nil, Errorf(NotFound, "user %s is not a member of group %s", user, g.ID)
	}
	return []Event{GroupMemberRemoved{User: user}}, nil
}

// DecideSetApprovalPolicy replaces the group's approval policy.
func DecideSetApprovalPolicy(g *Group, ref string, p ApprovalPolicy) ([]Event, error) {
	if err := existingGroup(g, ref); err != nil {
		return nil, err
	}
	if err := ValidateApprovalPolicy(p); err != nil {
		return nil, err
	}
	if p.Commands == nil {
		p.Commands = []string{}
	}
	if p.ClusterLabels == nil {
		p.ClusterLabels = map[string]string{}
	}
	if p.TTLSeconds <= 0 {
		p.TTLSeconds = int64(DefaultApprovalTTL / time.Second)
	}
	return []Event{ApprovalPolicySet{Policy: p}}, nil
}

// DecideDeleteGroup deletes a group that owns nothing; owned describes
// one thing it still owns ("" when none).
func DecideDeleteGroup(g *Group, ref, owned string) ([]Event, error) {
	if err := existingGroup(g, ref); err != nil {
		return nil, err
	}
	if g.ID == DefaultGroup {
		return nil, Errorf(Conflict, "group %s owns what was made without a group and cannot be deleted", DefaultGroup)
	}
	if owned != "" {
		return nil, Errorf(Conflict, "group %s still owns %s: move or remove what it owns first", g.ID, owned)
	}
	return []Event{GroupDeleted{}}, nil
}
