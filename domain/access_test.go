package domain

import (
	"strings"
	"testing"
	"time"
)

// The permission rules, as a table: who asks, what, and the answer.
func TestAuthorize(t *testing.T) {
	viewer := Principal{User: "vic", Roles: map[string]MemberRole{"g1": MemberViewer}, TokenID: "s-1"}
	operator := Principal{User: "oper", Roles: map[string]MemberRole{"g1": MemberOperator, "g2": MemberViewer}, TokenID: "s-2"}
	admin := Principal{User: "gadm", Roles: map[string]MemberRole{"g1": MemberAdmin}, TokenID: "s-3"}
	super := Principal{User: "root", SuperAdmin: true, TokenID: "admin-token"}
	readOnly := Principal{User: "oper", Roles: map[string]MemberRole{"g1": MemberOperator}, ReadOnly: true, TokenID: "t-9"}
	deploy := func(g string) Access {
		return Access{What: "deploy to group " + g, Group: g, Need: MemberOperator, Write: true}
	}
	read := func(g string) Access { return Access{What: "read cluster c", Group: g, Need: MemberViewer} }
	members := Access{What: "manage the members of group g1", Group: "g1", Need: MemberAdmin, Write: true}
	createUser := Access{What: "create user x", SuperOnly: true, Write: true}
	tests := []struct {
		name string
		who  Principal
		what Access
		want string // "" allowed, else the refusal's text
	}{
		{"a viewer reads", viewer, read("g1"), ""},
		{"a viewer may not deploy", viewer, deploy("g1"), "deploy to group g1 needs operator; you are viewer"},
		{"an operator deploys", operator, deploy("g1"), ""},
		{"an operator is a viewer elsewhere", operator, deploy("g2"), "deploy to group g2 needs operator; you are viewer"},
		{"an operator may not manage members", operator, members, "needs admin; you are operator"},
		{"an admin manages members", admin, members, ""},
		{"an admin deploys", admin, deploy("g1"), ""},
		{"no role outside one's groups", admin, read("g2"), "read cluster c needs viewer in group g2; you are not a member of group g2"},
		{"the default group is a group", viewer, read(""), "needs viewer in group default"},
		{"only super admins make users", admin, createUser, "create user x needs a super admin; gadm is not one"},
		{"a super admin does everything", super, createUser, ""},
		{"a super admin reads every group", super, read("g9"), ""},
		{"a read-only token reads", readOnly, read("g1"), ""},
		{"a read-only token writes nothing", readOnly, deploy("g1"), "needs a token that may write; this one (t-9) is read-only"},
		{"a read-only super admin writes nothing", Principal{User: "root", SuperAdmin: true, ReadOnly: true, TokenID: "t-1"}, createUser, "read-only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.who.Authorize(tt.what)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != "" && (err == nil || ErrorCode(err) != Forbidden || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("got %v, want Forbidden %q", err, tt.want)
			}
		})
	}
}

func TestVisibleGroups(t *testing.T) {
	p := Principal{Roles: map[string]MemberRole{"g2": MemberOperator, "g1": MemberViewer}}
	if got := strings.Join(p.VisibleGroups(), ","); got != "g1,g2" {
		t.Fatalf("visible groups %q", got)
	}
	if (Principal{SuperAdmin: true}).VisibleGroups() != nil {
		t.Fatal("a super admin's groups are not all groups (nil)")
	}
	if got := (Principal{}).VisibleGroups(); got == nil || len(got) != 0 {
		t.Fatalf("a user in no group sees %v, want none (not nil: nil is all)", got)
	}
}

func TestApprovalPolicyRequires(t *testing.T) {
	p := DefaultApprovalPolicy()
	for _, tt := range []struct {
		command string
		labels  map[string]string
		want    bool
	}{
		{"destroy", map[string]string{"env": "prod"}, true},
		{"upgrade", map[string]string{"env": "prod", "team": "a"}, true},
		{"destroy", map[string]string{"env": "staging"}, false},
		{"destroy", nil, false},
		{"start", map[string]string{"env": "prod"}, false},
	} {
		if got := p.Requires(tt.command, tt.labels); got != tt.want {
			t.Errorf("Requires(%s, %v) = %v", tt.command, tt.labels, got)
		}
	}
	all := ApprovalPolicy{Commands: []string{"stop"}}
	if !all.Requires("stop", nil) {
		t.Error("a policy without labels holds the command on every cluster")
	}
	for _, bad := range []ApprovalPolicy{{Commands: []string{"format-disk"}}, {TTLSeconds: 10}, {ClusterLabels: map[string]string{"bad key": "x"}}} {
		if err := ValidateApprovalPolicy(bad); ErrorCode(err) != Invalid {
			t.Errorf("policy %+v: %v, want Invalid", bad, err)
		}
	}
}

// The approval flow's decisions: who may decide, in which state.
func TestDecideOnApproval(t *testing.T) {
	now := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	requested := EvolveApproval(Approval{}, ApprovalRequested{ID: "a1", Group: "g1", Cluster: "c1", Command: "destroy",
		Requester: "oper", RequestedAt: now, ExpiresAt: now.Add(time.Hour), OperationID: "op1"})
	oper := Principal{User: "oper", Roles: map[string]MemberRole{"g1": MemberOperator}}
	oper2 := Principal{User: "oper2", Roles: map[string]MemberRole{"g1": MemberOperator}}
	vic := Principal{User: "vic", Roles: map[string]MemberRole{"g1": MemberViewer}}
	super := Principal{User: "root", SuperAdmin: true}
	decided := func(a Approval, e Event) Approval { return EvolveApproval(a, e) }
	tests := []struct {
		name  string
		state Approval
		d     ApprovalDecision
		want  string // the event type, or the error's text
	}{
		{"another operator approves", requested, ApprovalDecision{Verb: "approve", By: oper2, Now: now}, TypeApprovalGranted},
		{"another operator rejects", requested, ApprovalDecision{Verb: "reject", By: oper2, Comment: "no", Now: now}, TypeApprovalRejected},
		{"a super admin approves", requested, ApprovalDecision{Verb: "approve", By: super, Now: now}, TypeApprovalGranted},
		{"never the requester", requested, ApprovalDecision{Verb: "approve", By: oper, Now: now}, "needs another person"},
		{"not a viewer", requested, ApprovalDecision{Verb: "approve", By: vic, Now: now}, "needs operator; you are viewer"},
		{"the requester withdraws", requested, ApprovalDecision{Verb: "withdraw", By: oper, Now: now}, TypeApprovalWithdrawn},
		{"another may not withdraw", requested, ApprovalDecision{Verb: "withdraw", By: oper2, Now: now}, "needs its requester (oper)"},
		{"past its expiry", requested, ApprovalDecision{Verb: "approve", By: oper2, Now: now.Add(time.Hour)}, "expired"},
		{"once approved, approved", decided(requested, ApprovalGranted{By: "oper2", At: now}), ApprovalDecision{Verb: "approve", By: super, Now: now}, "already approved by oper2"},
		{"once rejected, rejected", decided(requested, ApprovalRejected{By: "oper2", At: now}), ApprovalDecision{Verb: "approve", By: super, Now: now}, "already rejected by oper2"},
		{"a comment has a limit", requested, ApprovalDecision{Verb: "reject", By: oper2, Comment: strings.Repeat("x", MaxApprovalComment+1), Now: now}, "too long"},
		{"an unknown verb", requested, ApprovalDecision{Verb: "maybe", By: oper2, Now: now}, "not a decision"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := tt.state
			evs, err := DecideOnApproval(&a, "a1", tt.d)
			if strings.HasPrefix(tt.want, "Approval") {
				if err != nil || len(evs) != 1 || evs[0].EventType() != tt.want {
					t.Fatalf("got %v, %v; want %s", evs, err, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, %v; want an error with %q", evs, err, tt.want)
			}
		})
	}
	if st := requested.StateAt(now.Add(2 * time.Hour)); st != ApprovalStateExpired {
		t.Fatalf("a pending request past its expiry reads %q", st)
	}
}

func TestUserCredentials(t *testing.T) {
	now := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	u := EvolveUser(User{}, UserCreated{Name: "alice", PasswordRef: "cred-1", At: now})
	issue := func(u *User, id, kind string, at time.Time, life time.Duration) ([]Event, error) {
		return DecideIssueToken(u, "alice", IssueToken{ID: id, Name: "n", Kind: kind, Now: at, ExpiresAt: at.Add(life), Verifier: strings.Repeat("a", 64)})
	}
	evs, err := issue(&u, "s-1", TokenSession, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	u = EvolveUser(u, evs[0])
	if len(u.TokensOf(TokenSession, now)) != 1 {
		t.Fatal("the session is not live")
	}
	// A credential that expired is dropped when the next one is issued.
	later := now.Add(2 * time.Hour)
	evs, _ = issue(&u, "t-2", TokenAPI, later, 24*time.Hour)
	u = EvolveUser(u, evs[0])
	if _, kept := u.Tokens["s-1"]; kept || len(u.Tokens) != 1 {
		t.Fatalf("tokens after the session expired: %v", u.Tokens)
	}
	if _, err := issue(&u, "t-3", TokenAPI, later, 400*24*time.Hour); ErrorCode(err) != Invalid {
		t.Fatalf("a token for 400 days: %v", err)
	}
	// The session limit ends the oldest session.
	for i := 0; i < MaxSessions; i++ {
		evs, _ := issue(&u, "s-x"+string(rune('a'+i%26))+strings.Repeat("z", i/26), TokenSession, later.Add(time.Duration(i)*time.Second), time.Hour)
		for _, e := range evs {
			u = EvolveUser(u, e)
		}
	}
	if n := len(u.TokensOf(TokenSession, later)); n != MaxSessions {
		t.Fatalf("%d live sessions, want the limit %d", n, MaxSessions)
	}
	// Disabled, deleted: no credential is issued.
	d := EvolveUser(u, UserDisabled{})
	if _, err := issue(&d, "s-9", TokenSession, later, time.Hour); ErrorCode(err) != Forbidden {
		t.Fatalf("a disabled user's login: %v", err)
	}
	gone := EvolveUser(u, UserDeleted{})
	if len(gone.Tokens) != 0 {
		t.Fatal("a deleted user keeps credentials")
	}
	if _, err := DecideCreateUser(&gone, CreateUser{Name: "alice"}); ErrorCode(err) != Conflict || !strings.Contains(err.Error(), "never given again") {
		t.Fatalf("the name of a deleted user: %v", err)
	}
	for _, bad := range []string{"", "Alice", "a b", strings.Repeat("a", 65), "-x"} {
		if err := ValidateUserName(bad); ErrorCode(err) != Invalid {
			t.Errorf("user name %q: %v", bad, err)
		}
	}
	if err := ValidatePassword("short"); ErrorCode(err) != Invalid {
		t.Error("a 5-character password is accepted")
	}
}

func TestGroupDecisions(t *testing.T) {
	evs, err := DecideCreateGroup(nil, "g1")
	if err != nil || len(evs) != 1 {
		t.Fatal(evs, err)
	}
	g := EvolveGroup(Group{}, evs[0])
	if g.Policy.Commands == nil || !g.Policy.Requires("destroy", map[string]string{"env": "prod"}) {
		t.Fatalf("a new group's policy: %+v", g.Policy)
	}
	evs, _ = DecideSetMember(&g, "g1", "oper", MemberOperator)
	g = EvolveGroup(g, evs[0])
	if evs, _ := DecideSetMember(&g, "g1", "oper", MemberOperator); len(evs) != 0 {
		t.Fatal("setting the same role again records something")
	}
	if _, err := DecideSetMember(&g, "g1", "oper", "owner"); ErrorCode(err) != Invalid {
		t.Fatalf("role owner: %v", err)
	}
	if _, err := DecideDeleteGroup(&g, "g1", "cluster c1"); ErrorCode(err) != Conflict || !strings.Contains(err.Error(), "still owns cluster c1") {
		t.Fatalf("delete a group that owns a cluster: %v", err)
	}
	evs, _ = DecideDeleteGroup(&g, "g1", "")
	g = EvolveGroup(g, evs[0])
	if _, err := DecideCreateGroup(&g, "g1"); ErrorCode(err) != Conflict {
		t.Fatalf("the id of a deleted group: %v", err)
	}
	def := EvolveGroup(Group{}, GroupCreated{ID: DefaultGroup, Name: DefaultGroup})
	if _, err := DecideDeleteGroup(&def, DefaultGroup, ""); ErrorCode(err) != Conflict {
		t.Fatalf("delete the default group: %v", err)
	}
}
