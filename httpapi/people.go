package httpapi

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/service"
	"github.com/dmgr/dmgr/projections"
)

// People: login and logout, the caller, users, groups, API tokens and
// approval requests.

type loginBody struct {
	User     string `json:"user"`
	Password string `json:"password"`
}

func (a *api) login(w http.ResponseWriter, r *http.Request) {
	var b loginBody
	if err := decodeJSON(r, a.maxJSON, &b); err != nil {
		writeError(w, r, err)
		return
	}
	if err := required([2]string{"user", b.User}, [2]string{"password", b.Password}); err != nil {
		writeError(w, r, err)
		return
	}
	res, err := a.svc.Login(r.Context(), b.User, b.Password)
	if err != nil {
		writeError(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]any{"token": res.Token, "expires_at": res.ExpiresAt, "id": res.ID})
}

func (a *api) logout(w http.ResponseWriter, r *http.Request) {
	if err := a.svc.Logout(r.Context(), meta(r)); err != nil {
		writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// meAnswer is GET /api/v1/me.
type meAnswer struct {
	User       string        `json:"user"`
	SuperAdmin bool          `json:"super_admin"`
	Groups     []groupRole   `json:"groups"`
	Token      *domain.Token `json:"token,omitempty"`
	TokenID    string        `json:"token_id"`
	ReadOnly   bool          `json:"read_only"`
}

type groupRole struct {
	Group string            `json:"group"`
	Name  string            `json:"name"`
	Role  domain.MemberRole `json:"role"`
}

func (a *api) me(w http.ResponseWriter, r *http.Request) {
	p := principalOf(r.Context())
	ans := meAnswer{User: p.User, SuperAdmin: p.SuperAdmin, TokenID: p.TokenID, ReadOnly: p.ReadOnly, Groups: []groupRole{}}
	for _, g := range domain.SortedKeys(p.Roles) {
		gr := groupRole{Group: g, Name: g, Role: p.Roles[g]}
		if grp, ok := a.svc.Directory().Group(g); ok {
			gr.Name = grp.Name
		}
		ans.Groups = append(ans.Groups, gr)
	}
	if u, ok := a.svc.Directory().User(p.User); ok {
		if t, ok := u.Tokens[p.TokenID]; ok {
			ans.Token = &t
		}
	}
	writeJSON(w, http.StatusOK, ans)
}

type passwordBody struct {
	Password string `json:"password"`
}

type createUserBody struct {
	Name       string `json:"name"`
	Password   string `json:"password"`
	SuperAdmin bool   `json:"super_admin"`
}

// userView is a user as the API shows it (never a password or verifier).
type userView struct {
	Name       string    `json:"name"`
	SuperAdmin bool      `json:"super_admin"`
	Disabled   bool      `json:"disabled"`
	CreatedAt  time.Time `json:"created_at"`
}

func viewOfUser(u domain.User) userView {
	return userView{Name: u.Name, SuperAdmin: u.SuperAdmin, Disabled: u.Disabled, CreatedAt: u.CreatedAt}
}

func (a *api) createUser(w http.ResponseWriter, r *http.Request) {
	var b createUserBody
	if err := decodeJSON(r, a.maxJSON, &b); err != nil {
		writeError(w, r, err)
		return
	}
	if err := required([2]string{"name", b.Name}, [2]string{"password", b.Password}); err != nil {
		writeError(w, r, err)
		return
	}
	u, err := a.svc.CreateUser(r.Context(), meta(r), b.Name, b.Password, b.SuperAdmin)
	if err != nil {
		writeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/api/v1/users/"+u.Name)
	writeJSON(w, http.StatusCreated, viewOfUser(u))
}

func (a *api) listUsers(w http.ResponseWriter, r *http.Request) {
	q, err := listQuery(r.URL.Query())
	if err != nil {
		writeError(w, r, err)
		return
	}
	us, more, err := a.svc.Users(r.Context(), meta(r), q.After, q.PageLimit())
	if err != nil {
		writeError(w, r, err)
		return
	}
	items := make([]userView, len(us))
	for i, u := range us {
		items[i] = viewOfUser(u)
	}
	writeJSON(w, http.StatusOK, pageOf(items, more, func(u userView) string { return u.Name }))
}

// pageOf is a page of items of which more follow when more is set.
func pageOf[T any](items []T, more bool, key func(T) string) any {
	if items == nil {
		items = []T{}
	}
	next := ""
	if more && len(items) > 0 {
		next = key(items[len(items)-1])
	}
	return pageAnswer(projections.Page[T]{Items: items, Next: next})
}

func (a *api) getUser(w http.ResponseWriter, r *http.Request) {
	u, err := a.svc.UserOf(r.Context(), meta(r), chi.URLParam(r, "name"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, viewOfUser(u))
}

func (a *api) changeUser(c service.UserCommand) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		u, err := a.svc.ChangeUser(r.Context(), meta(r), chi.URLParam(r, "name"), c)
		if err != nil {
			writeError(w, r, err)
			return
		}
		if c == service.DeleteUser {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		writeJSON(w, http.StatusOK, viewOfUser(u))
	}
}

func (a *api) resetPassword(w http.ResponseWriter, r *http.Request) {
	var b passwordBody
	if err := decodeJSON(r, a.maxJSON, &b); err != nil {
		writeError(w, r, err)
		return
	}
	if err := a.svc.ResetPassword(r.Context(), meta(r), chi.URLParam(r, "name"), b.Password); err != nil {
		writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

type groupBody struct {
	Name string `json:"name"`
}

type memberBody struct {
	Role string `json:"role"`
}

// policyBody is PUT /api/v1/groups/{group}/policy.
type policyBody struct {
	Commands      []string          `json:"commands"`
	ClusterLabels map[string]string `json:"cluster_labels"`
	TTL           string            `json:"ttl"` // a duration, "24h"
}

// groupView is a group as the API shows it.
type groupView struct {
	ID      string                       `json:"id"`
	Name    string                       `json:"name"`
	Members map[string]domain.MemberRole `json:"members"`
	Policy  policyView                   `json:"approval_policy"`
}

type policyView struct {
	Commands      []string          `json:"commands"`
	ClusterLabels map[string]string `json:"cluster_labels"`
	TTL           string            `json:"ttl"`
}

func viewOfGroup(g domain.Group) groupView {
	v := groupView{ID: g.ID, Name: g.Name, Members: g.Members, Policy: policyView{Commands: g.Policy.Commands,
		ClusterLabels: g.Policy.ClusterLabels, TTL: g.Policy.TTL().String()}}
	if v.Members == nil {
		v.Members = map[string]domain.MemberRole{}
	}
	if v.Policy.Commands == nil {
		v.Policy.Commands = []string{}
	}
	if v.Policy.ClusterLabels == nil {
		v.Policy.ClusterLabels = map[string]string{}
	}
	return v
}

func (a *api) answerGroup(w http.ResponseWriter, r *http.Request, status int, g domain.Group, err error) {
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, status, viewOfGroup(g))
}

func (a *api) createGroup(w http.ResponseWriter, r *http.Request) {
	var b groupBody
	if err := decodeJSON(r, a.maxJSON, &b); err != nil {
		writeError(w, r, err)
		return
	}
	if err := required([2]string{"name", b.Name}); err != nil {
		writeError(w, r, err)
		return
	}
	g, err := a.svc.CreateGroup(r.Context(), meta(r), b.Name)
	if err == nil {
		w.Header().Set("Location", "/api/v1/groups/"+g.ID)
	}
	a.answerGroup(w, r, http.StatusCreated, g, err)
}

func (a *api) listGroups(w http.ResponseWriter, r *http.Request) {
	q, err := listQuery(r.URL.Query())
	if err != nil {
		writeError(w, r, err)
		return
	}
	gs, more := a.svc.Groups(meta(r), q.After, q.PageLimit())
	items := make([]groupView, len(gs))
	for i, g := range gs {
		items[i] = viewOfGroup(g)
	}
	writeJSON(w, http.StatusOK, pageOf(items, more, func(g groupView) string { return g.ID }))
}

func (a *api) getGroup(w http.ResponseWriter, r *http.Request) {
	g, err := a.svc.Group(r.Context(), meta(r), chi.URLParam(r, "group"))
	a.answerGroup(w, r, http.StatusOK, g, err)
}

func (a *api) renameGroup(w http.ResponseWriter, r *http.Request) {
	var b groupBody
	if err := decodeJSON(r, a.maxJSON, &b); err != nil {
		writeError(w, r, err)
		return
	}
	if err := required([2]string{"name", b.Name}); err != nil {
		writeError(w, r, err)
		return
	}
	g, err := a.svc.RenameGroup(r.Context(), meta(r), chi.URLParam(r, "group"), b.Name)
	a.answerGroup(w, r, http.StatusOK, g, err)
}

func (a *api) deleteGroup(w http.ResponseWriter, r *http.Request) {
	if err := a.svc.DeleteGroup(r.Context(), meta(r), chi.URLParam(r, "group")); err != nil {
		writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *api) setMember(w http.ResponseWriter, r *http.Request) {
	var b memberBody
	if err := decodeJSON(r, a.maxJSON, &b); err != nil {
		writeError(w, r, err)
		return
	}
	role, err := domain.ParseMemberRole(b.Role)
	if err != nil {
		writeError(w, r, err)
		return
	}
	g, err := a.svc.SetMember(r.Context(), meta(r), chi.URLParam(r, "group"), chi.URLParam(r, "user"), role)
	a.answerGroup(w, r, http.StatusOK, g, err)
}

func (a *api) removeMember(w http.ResponseWriter, r *http.Request) {
	g, err := a.svc.RemoveMember(r.Context(), meta(r), chi.URLParam(r, "group"), chi.URLParam(r, "user"))
	a.answerGroup(w, r, http.StatusOK, g, err)
}

func (a *api) setPolicy(w http.ResponseWriter, r *http.Request) {
	var b policyBody
	if err := decodeJSON(r, a.maxJSON, &b); err != nil {
		writeError(w, r, err)
		return
	}
	p := domain.ApprovalPolicy{Commands: b.Commands, ClusterLabels: b.ClusterLabels}
	if b.TTL != "" {
		ttl, err := parseDuration(b.TTL)
		if err != nil || ttl < time.Second {
			writeError(w, r, domain.Errorf(domain.Invalid, "ttl %q is not a duration such as \"24h\" or \"7d\"", b.TTL))
			return
		}
		p.TTLSeconds = int64(ttl / time.Second)
	}
	g, err := a.svc.SetApprovalPolicy(r.Context(), meta(r), chi.URLParam(r, "group"), p)
	a.answerGroup(w, r, http.StatusOK, g, err)
}

// moveBody moves a resource into another group.
type moveBody struct {
	Group string `json:"group"`
}

func (a *api) moveOwner(kind, param string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var b moveBody
		if err := decodeJSON(r, a.maxJSON, &b); err != nil {
			writeError(w, r, err)
			return
		}
		if err := required([2]string{"group", b.Group}); err != nil {
			writeError(w, r, err)
			return
		}
		acc, err := a.svc.MoveOwner(r.Context(), meta(r), kind, chi.URLParam(r, param), b.Group)
		if err != nil {
			writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"group": b.Group, "commit_seq": acc.CommitSeq})
	}
}

type labelsBody struct {
	Labels map[string]string `json:"labels"`
}

func (a *api) setClusterLabels(w http.ResponseWriter, r *http.Request) {
	var b labelsBody
	if err := decodeJSON(r, a.maxJSON, &b); err != nil {
		writeError(w, r, err)
		return
	}
	acc, err := a.svc.SetClusterLabels(r.Context(), meta(r), chi.URLParam(r, "name"), b.Labels)
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"labels": b.Labels, "commit_seq": acc.CommitSeq})
}

type tokenBody struct {
	Name      string `json:"name"`
	ExpiresIn string `json:"expires_in"`
	ReadOnly  bool   `json:"read_only"`
}

func (a *api) createToken(w http.ResponseWriter, r *http.Request) {
	var b tokenBody
	if err := decodeJSON(r, a.maxJSON, &b); err != nil {
		writeError(w, r, err)
		return
	}
	if err := required([2]string{"name", b.Name}, [2]string{"expires_in", b.ExpiresIn}); err != nil {
		writeError(w, r, err)
		return
	}
	d, err := parseDuration(b.ExpiresIn)
	if err != nil {
		writeError(w, r, domain.Errorf(domain.Invalid, "expires_in %q is not a duration such as \"720h\" or \"30d\"", b.ExpiresIn))
		return
	}
	t, err := a.svc.CreateToken(r.Context(), meta(r), b.Name, d, b.ReadOnly)
	if err != nil {
		writeError(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, t)
}

func (a *api) listTokens(w http.ResponseWriter, r *http.Request) {
	q, err := listQuery(r.URL.Query())
	if err != nil {
		writeError(w, r, err)
		return
	}
	all := a.svc.Tokens(meta(r), r.URL.Query().Get("kind"))
	var items []domain.Token
	for _, t := range all {
		if t.ID > q.After {
			items = append(items, t)
		}
	}
	more := len(items) > q.PageLimit()
	if more {
		items = items[:q.PageLimit()]
	}
	writeJSON(w, http.StatusOK, pageOf(items, more, func(t domain.Token) string { return t.ID }))
}

func (a *api) revokeToken(w http.ResponseWriter, r *http.Request) {
	if err := a.svc.RevokeToken(r.Context(), meta(r), chi.URLParam(r, "token")); err != nil {
		writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

type commentBody struct {
	Comment string `json:"comment"`
}

func (a *api) decideApproval(verb string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var b commentBody
		if r.ContentLength != 0 {
			if err := decodeJSON(r, a.maxJSON, &b); err != nil {
				writeError(w, r, err)
				return
			}
		}
		ans, err := a.svc.DecideApproval(r.Context(), meta(r), chi.URLParam(r, "id"), verb, b.Comment)
		if err != nil {
			writeError(w, r, err)
			return
		}
		if verb == "approve" {
			w.Header().Set("Location", "/api/v1/operations/"+ans.OperationID)
		}
		writeJSON(w, http.StatusOK, ans)
	}
}

func (a *api) listApprovals(w http.ResponseWriter, r *http.Request) {
	q, err := listQuery(r.URL.Query())
	if err != nil {
		writeError(w, r, err)
		return
	}
	state := r.URL.Query().Get("state")
	list, more := a.svc.Approvals(meta(r), state, r.URL.Query().Get("group"), q.After, q.PageLimit())
	writeJSON(w, http.StatusOK, pageOf(list, more, func(a domain.Approval) string { return a.ID }))
}

func (a *api) getApproval(w http.ResponseWriter, r *http.Request) {
	ap, err := a.svc.Approval(r.Context(), meta(r), chi.URLParam(r, "id"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ap)
}

// mayRead authorizes reading one cluster, machine or operation (viewer
// in its group), answering the refusal itself.
func (a *api) mayRead(w http.ResponseWriter, r *http.Request, kind, id string) bool {
	p := principalOf(r.Context())
	var (
		group, cluster, host string
		err                  error
	)
	switch kind {
	case "cluster":
		group, err = a.svc.ClusterGroup(r.Context(), id)
		cluster = id
	case "machine":
		group, err = a.svc.MachineGroup(r.Context(), id)
		host = id
	case "operation":
		group, cluster, err = a.svc.OperationGroup(r.Context(), id)
	}
	if err != nil {
		writeError(w, r, err)
		return false
	}
	if err := a.svc.Authorize(r.Context(), *p, domain.Access{What: "read " + kind + " " + id, Group: group, Need: domain.MemberViewer}, cluster, host); err != nil {
		writeError(w, r, err)
		return false
	}
	return true
}

// readable wraps a handler of one resource with mayRead.
func (a *api) readable(kind, param string, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.mayRead(w, r, kind, chi.URLParam(r, param)) {
			next(w, r)
		}
	}
}

// visible is the groups whose resources the caller sees (nil: all).
func visible(r *http.Request) []string {
	if p := principalOf(r.Context()); p != nil {
		return p.VisibleGroups()
	}
	return []string{}
}

// inGroups reports whether group is one of groups (nil: all).
func inGroups(groups []string, group string) bool {
	if groups == nil {
		return true
	}
	for _, g := range groups {
		if g == domain.OwnerGroup(group) {
			return true
		}
	}
	return false
}

// parseDuration reads a Go duration ("1h30m"), or a whole number of days
// ("30d"), which people write for token lifetimes.
func parseDuration(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok && days != "" && !strings.ContainsAny(days, "hms.+-") {
		n, err := strconv.Atoi(days)
		if err != nil || n > 10000 {
			return 0, fmt.Errorf("duration %q: days %q is not a number of days", s, days)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}
