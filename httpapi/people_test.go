package httpapi_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/pkgstore"
	"github.com/dmgr/dmgr/internal/testenv"
)

// team is the cast of the permission tests: groups g1 and g2; vic a
// viewer, oper and oper2 operators and gadm the admin of g1; machines and
// a cluster in each group.
type team struct {
	*stack
	tokens map[string]string // user → session token
	ops    map[string]string // cluster → its deploy operation
}

var teamPasswords = map[string]string{"vic": "vic-password-1", "oper": "oper-password-1", "oper2": "oper2-password-1", "gadm": "gadm-password-1"}

func groupMachines(g string) []string {
	if g == "g1" {
		return []string{"198.18.1.11", "198.18.1.12", "198.18.1.13"}
	}
	return []string{"198.18.2.11", "198.18.2.12", "198.18.2.13"}
}

func topologyOn(hosts []string, port int) string {
	return fmt.Sprintf(`global:
  user: tidb
  deploy_dir: /dm/deploy-%[4]d
  data_dir: /dm/data-%[4]d
master_servers:
  - host: %[1]s
    port: %[4]d
    peer_port: %[5]d
worker_servers:
  - host: %[2]s
    port: %[4]d
monitoring_servers:
  - host: %[3]s
    port: %[4]d
`, hosts[0], hosts[1], hosts[2], port, port+1)
}

func newTeam(t *testing.T) *team {
	s := newStack(t, pkgstore.DefaultLimits())
	tm := &team{stack: s, tokens: map[string]string{}, ops: map[string]string{}}
	for _, g := range []string{"g1", "g2"} {
		if r := s.do("POST", "/api/v1/groups", map[string]string{"name": g}); r.status != http.StatusCreated {
			t.Fatalf("create group %s: %d %s", g, r.status, r.body)
		}
	}
	for u, pw := range teamPasswords {
		if r := s.do("POST", "/api/v1/users", map[string]any{"name": u, "password": pw}); r.status != http.StatusCreated {
			t.Fatalf("create user %s: %d %s", u, r.status, r.body)
		}
	}
	for u, role := range map[string]string{"vic": "viewer", "oper": "operator", "oper2": "operator", "gadm": "admin"} {
		if r := s.do("PUT", "/api/v1/groups/g1/members/"+u, map[string]string{"role": role}); r.status != http.StatusOK {
			t.Fatalf("member %s: %d %s", u, r.status, r.body)
		}
	}
	for u := range teamPasswords {
		tm.tokens[u] = tm.login(u, teamPasswords[u])
	}
	s.mustAccept("POST", "/api/v1/packages?filename=dm-v8.1.0.tar.gz", testenv.DMPackage(t, "v8.1.0"))
	for _, g := range []string{"g1", "g2"} {
		for _, h := range groupMachines(g) {
			s.mustAccept("POST", "/api/v1/machines", map[string]any{"host": h, "user": "tidb", "host_key": testenv.HostKey, "password": "pw-" + h, "group": g})
		}
		c := "c-" + g
		acc := s.mustAccept("POST", "/api/v1/clusters", map[string]any{"name": c, "version": "v8.1.0", "group": g,
			"topology": topologyOn(groupMachines(g), 8261), "labels": map[string]string{"team": g}})
		tm.ops[c] = acc.OperationID
	}
	return tm
}

func (tm *team) login(user, pw string) string {
	tm.t.Helper()
	r := tm.do("POST", "/api/v1/login", map[string]string{"user": user, "password": pw}, noToken())
	if r.status != http.StatusOK {
		tm.t.Fatalf("login %s: %d %s", user, r.status, r.body)
	}
	var ans struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	r.json(tm.t, &ans)
	if !strings.HasPrefix(ans.Token, "dmgr_") || ans.ExpiresAt.Before(time.Now()) {
		tm.t.Fatalf("login %s: answer %s", user, r.body)
	}
	return ans.Token
}

// accessCase is one thing a user may ask of one group's resources, and
// the role it needs there ("super" for super admins only).
type accessCase struct {
	name string
	need string
	send func(tm *team, g, tok string, n int) response
}

var accessCases = []accessCase{
	{"read cluster", "viewer", func(tm *team, g, tok string, _ int) response {
		return tm.do("GET", "/api/v1/clusters/c-"+g, nil, as(tok))
	}},
	{"read machine", "viewer", func(tm *team, g, tok string, _ int) response {
		return tm.do("GET", "/api/v1/machines/"+groupMachines(g)[0], nil, as(tok))
	}},
	{"read operation", "viewer", func(tm *team, g, tok string, _ int) response {
		return tm.do("GET", "/api/v1/operations/"+tm.ops["c-"+g], nil, as(tok))
	}},
	{"follow operation events", "viewer", func(tm *team, g, tok string, _ int) response {
		return tm.do("GET", "/api/v1/operations/"+tm.ops["c-"+g]+"/events?last_event_id=999999999.0", nil, as(tok)) // past the end: 400 once allowed, never an open stream
	}},
	{"follow cluster events", "viewer", func(tm *team, g, tok string, _ int) response {
		return tm.do("GET", "/api/v1/clusters/c-"+g+"/events?since=999999999", nil, as(tok)) // past the end: 400 once allowed
	}},
	{"import cluster", "operator", func(tm *team, g, tok string, n int) response {
		// v9.9.9 has no package: a caller who may import is refused that
		// (409) before any host is contacted; one who may not, 403 first.
		meta := "user: tidb\ndm_version: v9.9.9\ntopology:\n  master_servers:\n    - host: " + groupMachines(g)[0] + "\n"
		return tm.do("POST", "/api/v1/clusters/import", map[string]any{"name": fmt.Sprintf("imp-%s-%d", g, n), "meta": meta,
			"ssh_key": "not used before the permission and the package are checked", "group": g}, as(tok))
	}},
	{"read group", "viewer", func(tm *team, g, tok string, _ int) response {
		return tm.do("GET", "/api/v1/groups/"+g, nil, as(tok))
	}},
	{"deploy", "operator", func(tm *team, g, tok string, n int) response {
		return tm.do("POST", "/api/v1/clusters", map[string]any{"name": fmt.Sprintf("d-%s-%d", g, n), "version": "v8.1.0", "group": g,
			"topology": topologyOn(groupMachines(g), 9000+10*n)}, as(tok))
	}},
	{"register machine", "operator", func(tm *team, g, tok string, n int) response {
		return tm.do("POST", "/api/v1/machines", map[string]any{"host": fmt.Sprintf("198.18.9.%d", n), "user": "tidb",
			"host_key": testenv.HostKey, "password": "pw", "group": g}, as(tok))
	}},
	{"upload package", "operator", func(tm *team, g, tok string, n int) response {
		return tm.do("POST", fmt.Sprintf("/api/v1/packages?filename=dm-v8.2.%d.tar.gz&group=%s", n, g), testenv.DMPackage(tm.t, fmt.Sprintf("v8.2.%d", n)), as(tok))
	}},
	{"stop (dry run)", "operator", func(tm *team, g, tok string, _ int) response {
		return tm.do("POST", "/api/v1/clusters/c-"+g+"/stop?dry_run=true", nil, as(tok))
	}},
	{"destroy", "operator", func(tm *team, g, tok string, _ int) response {
		return tm.do("DELETE", "/api/v1/clusters/c-"+g, nil, as(tok))
	}},
	{"upgrade", "operator", func(tm *team, g, tok string, _ int) response {
		return tm.do("POST", "/api/v1/clusters/c-"+g+"/upgrade", map[string]string{"version": "v8.1.0"}, as(tok))
	}},
	{"cancel operation", "operator", func(tm *team, g, tok string, _ int) response {
		return tm.do("POST", "/api/v1/operations/"+tm.ops["c-"+g]+"/cancel", nil, as(tok))
	}},
	{"manage members", "admin", func(tm *team, g, tok string, _ int) response {
		return tm.do("PUT", "/api/v1/groups/"+g+"/members/oper2", map[string]string{"role": "operator"}, as(tok))
	}},
	{"set approval policy", "admin", func(tm *team, g, tok string, _ int) response {
		return tm.do("PUT", "/api/v1/groups/"+g+"/policy", map[string]any{"commands": []string{"destroy"}, "cluster_labels": map[string]string{"env": "prod"}, "ttl": "24h"}, as(tok))
	}},
	{"label cluster", "admin", func(tm *team, g, tok string, _ int) response {
		return tm.do("PUT", "/api/v1/clusters/c-"+g+"/labels", map[string]any{"labels": map[string]string{"team": g}}, as(tok))
	}},
	{"create user", "super", func(tm *team, g, tok string, n int) response {
		return tm.do("POST", "/api/v1/users", map[string]any{"name": fmt.Sprintf("new-%s-%d", g, n), "password": "new-password-1"}, as(tok))
	}},
	{"create group", "super", func(tm *team, g, tok string, n int) response {
		return tm.do("POST", "/api/v1/groups", map[string]any{"name": fmt.Sprintf("ng-%s-%d", g, n)}, as(tok))
	}},
	{"move cluster", "super", func(tm *team, g, tok string, _ int) response {
		return tm.do("PUT", "/api/v1/clusters/c-"+g+"/group", map[string]any{"group": g}, as(tok))
	}},
}

// rank orders the roles of the table.
var rank = map[string]int{"": 0, "viewer": 1, "operator": 2, "admin": 3, "super": 4}

// Done when 1: viewer, operator, group admin and super admin, against
// every kind of command and query, in their group (g1) and in the other
// (g2): what the role allows succeeds; the rest is 403 with what is
// missing, commits nothing but the record of the refusal.
func TestPermissionTable(t *testing.T) {
	tm := newTeam(t)
	tm.tokens["admin"] = token
	roles := map[string]string{"vic": "viewer", "oper": "operator", "gadm": "admin", "admin": "super"}
	n := 0
	for _, user := range []string{"vic", "oper", "gadm", "admin"} {
		for _, g := range []string{"g1", "g2"} {
			have := roles[user]
			if g == "g2" && user != "admin" {
				have = "" // not a member of g2
			}
			for _, c := range accessCases {
				n++
				t.Run(fmt.Sprintf("%s/%s/%s", user, g, c.name), func(t *testing.T) {
					before := tm.lastSeq()
					r := c.send(tm, g, tm.tokens[user], n)
					allowed := rank[have] >= rank[c.need] && (c.need != "super" || have == "super")
					if allowed {
						if r.status == http.StatusForbidden || r.status == http.StatusUnauthorized || r.status >= 500 {
							t.Fatalf("%s may %s in %s, got %d %s", user, c.name, g, r.status, r.body)
						}
						return
					}
					if r.status != http.StatusForbidden {
						t.Fatalf("%s may not %s in %s, got %d %s", user, c.name, g, r.status, r.body)
					}
					detail := r.problem(t).Detail
					want := "needs " + c.need
					if c.need == "super" {
						want = "needs a super admin"
					}
					if !strings.Contains(detail, want) || !(strings.Contains(detail, "you are") || strings.Contains(detail, "is not one")) {
						t.Fatalf("refusal says %q; want what is missing (%q) and what the user is", detail, want)
					}
					if have != "" && c.need != "super" && !strings.Contains(detail, "you are "+have) {
						t.Fatalf("refusal says %q; want %q", detail, "you are "+have)
					}
					after := tm.rawStreamAfter(before)
					if len(after) != 1 || !strings.Contains(after[0], `"type":"AccessRefused"`) || !strings.Contains(after[0], `"user":"`+user+`"`) ||
						!strings.Contains(after[0], "dmgr.ev.access."+user) {
						t.Fatalf("after a refusal the stream has %d new commits, want only the refusal record:\n%s", len(after), strings.Join(after, "\n"))
					}
				})
			}
		}
	}
}

// rawStreamAfter is every commit after seq, with its headers.
func (s *stack) rawStreamAfter(seq uint64) []string {
	all := s.rawStream()
	if int(seq) >= len(all) {
		return nil
	}
	return all[seq:]
}

// Lists never show another group's clusters or machines.
func TestListsShowOnlyTheCallersGroups(t *testing.T) {
	tm := newTeam(t)
	for _, user := range []string{"vic", "oper", "gadm"} {
		for path, want := range map[string][]string{
			"/api/v1/clusters": {"c-g1"}, "/api/v1/machines": groupMachines("g1"),
		} {
			var page struct {
				Items []struct {
					Name  string `json:"name"`
					Host  string `json:"host"`
					Group string `json:"group"`
				} `json:"items"`
			}
			r := tm.do("GET", path, nil, as(tm.tokens[user]))
			r.json(t, &page)
			var got []string
			for _, it := range page.Items {
				if it.Group != "g1" {
					t.Fatalf("%s sees %s of group %s: %s", user, path, it.Group, r.body)
				}
				got = append(got, it.Name+it.Host)
			}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Fatalf("%s lists %s = %v, want %v", user, path, got, want)
			}
		}
	}
	var page struct {
		Items []json0 `json:"items"`
	}
	tm.do("GET", "/api/v1/clusters", nil).json(t, &page)
	if len(page.Items) != 2 {
		t.Fatalf("the super admin sees %d clusters, want both", len(page.Items))
	}
}

type json0 = map[string]any

// Done when 2 (on the bus): an operator's destroy of an env=prod cluster
// is held; the requester cannot approve it; another operator's approval
// starts it exactly once, even with 20 approvals at once; a rejected and
// an expired request never run.
func TestApprovalFlow(t *testing.T) {
	tm := newTeam(t)
	tm.mustAccept("POST", "/api/v1/operations/"+tm.ops["c-g1"]+"/cancel", nil)
	if r := tm.do("PUT", "/api/v1/clusters/c-g1/labels", map[string]any{"labels": map[string]string{"env": "prod"}}, as(tm.tokens["gadm"])); r.status != http.StatusOK {
		t.Fatalf("label: %d %s", r.status, r.body)
	}
	waitOperationEnds(t, tm, "c-g1")
	before := tm.lastSeq()
	r := tm.do("DELETE", "/api/v1/clusters/c-g1", nil, as(tm.tokens["oper"]))
	if r.status != http.StatusAccepted {
		t.Fatalf("destroy of a prod cluster: %d %s", r.status, r.body)
	}
	var held struct {
		ApprovalID string `json:"approval_id"`
		State      string `json:"state"`
	}
	r.json(t, &held)
	if held.ApprovalID == "" || held.State != "pending" || r.header.Get("Location") != "/api/v1/approvals/"+held.ApprovalID {
		t.Fatalf("held answer %s (Location %q)", r.body, r.header.Get("Location"))
	}
	for _, c := range tm.rawStreamAfter(before) {
		if strings.Contains(c, "ClusterDestroyRequested") || strings.Contains(c, "dmgr.ev.cluster.") {
			t.Fatalf("a held destroy committed to the cluster:\n%s", c)
		}
	}
	// The inbox shows it, with its plan.
	var inbox struct {
		Items []domain.Approval `json:"items"`
	}
	tm.do("GET", "/api/v1/approvals?state=pending", nil, as(tm.tokens["oper2"])).json(t, &inbox)
	if len(inbox.Items) != 1 || inbox.Items[0].ID != held.ApprovalID || inbox.Items[0].Requester != "oper" || inbox.Items[0].Command != "destroy" {
		t.Fatalf("inbox: %+v", inbox.Items)
	}
	var full domain.Approval
	tm.do("GET", "/api/v1/approvals/"+held.ApprovalID, nil, as(tm.tokens["vic"])).json(t, &full)
	if !strings.Contains(string(full.Plan), "steps") {
		t.Fatalf("the request keeps no plan: %s", full.Plan)
	}
	// Not by the requester, not by a viewer.
	if r := tm.do("POST", "/api/v1/approvals/"+held.ApprovalID+"/approve", map[string]string{"comment": "mine"}, as(tm.tokens["oper"])); r.status != http.StatusForbidden {
		t.Fatalf("self-approval: %d %s", r.status, r.body)
	}
	if r := tm.do("POST", "/api/v1/approvals/"+held.ApprovalID+"/approve", map[string]string{}, as(tm.tokens["vic"])); r.status != http.StatusForbidden {
		t.Fatalf("a viewer's approval: %d %s", r.status, r.body)
	}
	// 20 approvals at once: one operation.
	var wg sync.WaitGroup
	var ok, conflict atomic.Int32
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok := tm.tokens["oper2"]
			if i%2 == 1 {
				tok = tm.tokens["gadm"]
			}
			r := tm.do("POST", "/api/v1/approvals/"+held.ApprovalID+"/approve", map[string]string{"comment": "go"}, as(tok))
			switch r.status {
			case http.StatusOK:
				ok.Add(1)
			case http.StatusConflict:
				conflict.Add(1)
			default:
				t.Errorf("approve: %d %s", r.status, r.body)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 1 || conflict.Load() != 19 {
		t.Fatalf("20 approvals: %d accepted, %d conflicts; want 1 and 19", ok.Load(), conflict.Load())
	}
	destroys := 0
	for _, c := range tm.rawStreamAfter(before) {
		destroys += strings.Count(c, `"type":"ClusterDestroyRequested"`)
	}
	if destroys != 1 {
		t.Fatalf("%d destroy commits, want exactly 1", destroys)
	}
	tm.do("GET", "/api/v1/approvals/"+held.ApprovalID, nil).json(t, &full)
	if full.State != domain.ApprovalStateApproved || full.DecidedBy == "oper" || full.DecidedBy == "" {
		t.Fatalf("request after approval: %+v", full)
	}
	var op domain.OperationView
	tm.do("GET", "/api/v1/operations/"+full.OperationID, nil).json(t, &op)
	if op.Kind != domain.OperationDestroy || op.Actor != "oper" {
		t.Fatalf("the approved operation: %+v", op)
	}
}

// A rejected, a withdrawn and an expired request never run.
func TestRejectedWithdrawnAndExpiredRequestsNeverRun(t *testing.T) {
	tm := newTeam(t)
	tm.mustAccept("POST", "/api/v1/operations/"+tm.ops["c-g1"]+"/cancel", nil)
	waitOperationEnds(t, tm, "c-g1")
	if r := tm.do("PUT", "/api/v1/groups/g1/policy", map[string]any{"commands": []string{"destroy", "stop"}, "cluster_labels": map[string]string{}, "ttl": "1m"}, as(tm.tokens["gadm"])); r.status != http.StatusOK {
		t.Fatalf("policy: %d %s", r.status, r.body)
	}
	before := tm.lastSeq()
	ask := func(path, method string) string {
		r := tm.do(method, path, nil, as(tm.tokens["oper"]))
		var held struct {
			ApprovalID string `json:"approval_id"`
		}
		r.json(t, &held)
		if r.status != http.StatusAccepted || held.ApprovalID == "" {
			t.Fatalf("%s %s: %d %s", method, path, r.status, r.body)
		}
		return held.ApprovalID
	}
	rejected := ask("/api/v1/clusters/c-g1", "DELETE")
	if r := tm.do("POST", "/api/v1/approvals/"+rejected+"/reject", map[string]string{"comment": "not today"}, as(tm.tokens["oper2"])); r.status != http.StatusOK {
		t.Fatalf("reject: %d %s", r.status, r.body)
	}
	if r := tm.do("POST", "/api/v1/approvals/"+rejected+"/approve", nil, as(tm.tokens["gadm"])); r.status != http.StatusConflict ||
		!strings.Contains(r.problem(t).Detail, "already rejected by oper2") {
		t.Fatalf("approve a rejected request: %d %s", r.status, r.body)
	}
	withdrawn := ask("/api/v1/clusters/c-g1/stop", "POST")
	if r := tm.do("POST", "/api/v1/approvals/"+withdrawn+"/withdraw", nil, as(tm.tokens["oper2"])); r.status != http.StatusForbidden {
		t.Fatalf("withdraw by another: %d %s", r.status, r.body)
	}
	if r := tm.do("POST", "/api/v1/approvals/"+withdrawn+"/withdraw", nil, as(tm.tokens["oper"])); r.status != http.StatusOK {
		t.Fatalf("withdraw: %d %s", r.status, r.body)
	}
	expired := ask("/api/v1/clusters/c-g1", "DELETE")
	tm.clock.Add(2 * time.Minute)
	var exp domain.Approval
	tm.do("GET", "/api/v1/approvals/"+expired, nil).json(t, &exp)
	if exp.State != domain.ApprovalStateExpired {
		t.Fatalf("a request past its ttl is %q", exp.State)
	}
	if r := tm.do("POST", "/api/v1/approvals/"+expired+"/approve", nil, as(tm.tokens["oper2"])); r.status != http.StatusConflict ||
		!strings.Contains(r.problem(t).Detail, "expired") {
		t.Fatalf("approve an expired request: %d %s", r.status, r.body)
	}
	for _, c := range tm.rawStreamAfter(before) {
		if strings.Contains(c, "Nats-Subject: dmgr.ev.cluster.") {
			t.Fatalf("a request that was not approved ran:\n%s", c)
		}
	}
	var pending struct {
		Items []domain.Approval `json:"items"`
	}
	tm.do("GET", "/api/v1/approvals?state=pending", nil).json(t, &pending)
	if len(pending.Items) != 0 {
		t.Fatalf("inbox after reject, withdraw and expiry: %+v", pending.Items)
	}
}

// waitOperationEnds waits until cluster has no active operation.
func waitOperationEnds(t *testing.T, tm *team, cluster string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var c domain.Cluster
		tm.do("GET", "/api/v1/clusters/"+cluster, nil).json(t, &c)
		busy := false
		for _, o := range c.Operations {
			if o.Status == domain.OperationStatusPending || o.Status == domain.OperationStatusRunning {
				busy = true
			}
		}
		if !busy {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("cluster %s still has an active operation", cluster)
}

// Groups are renamed and deleted by super admins; a group that owns
// something is not deleted; ids and names are never given twice.
func TestGroupRenameAndDelete(t *testing.T) {
	tm := newTeam(t)
	r := tm.do("PUT", "/api/v1/groups/g1", map[string]string{"name": "team-a"})
	var g struct {
		ID, Name string
		Members  map[string]string
	}
	r.json(t, &g)
	if r.status != http.StatusOK || g.ID != "g1" || g.Name != "team-a" || g.Members["oper"] != "operator" {
		t.Fatalf("rename: %d %s", r.status, r.body)
	}
	if r := tm.do("GET", "/api/v1/groups/team-a", nil, as(tm.tokens["vic"])); r.status != http.StatusOK {
		t.Fatalf("the group by its new name: %d %s", r.status, r.body)
	}
	for _, name := range []string{"g1", "team-a"} {
		if r := tm.do("POST", "/api/v1/groups", map[string]string{"name": name}); r.status != http.StatusConflict {
			t.Fatalf("a new group named %s (an id or name in use): %d %s", name, r.status, r.body)
		}
	}
	if r := tm.do("PUT", "/api/v1/groups/g2", map[string]string{"name": "team-a"}); r.status != http.StatusConflict {
		t.Fatalf("g2 renamed to g1's name: %d %s", r.status, r.body)
	}
	if r := tm.do("PUT", "/api/v1/groups/g1", map[string]string{"name": "team-b"}, as(tm.tokens["gadm"])); r.status != http.StatusForbidden {
		t.Fatalf("a group admin renamed the group: %d %s", r.status, r.body)
	}
	if r := tm.do("DELETE", "/api/v1/groups/g2", nil); r.status != http.StatusConflict || !strings.Contains(r.problem(t).Detail, "still owns") {
		t.Fatalf("delete a group that owns a cluster: %d %s", r.status, r.body)
	}
	if r := tm.do("POST", "/api/v1/groups", map[string]string{"name": "g3"}); r.status != http.StatusCreated {
		t.Fatalf("create g3: %d %s", r.status, r.body)
	}
	if r := tm.do("DELETE", "/api/v1/groups/g3", nil); r.status != http.StatusNoContent {
		t.Fatalf("delete an empty group: %d %s", r.status, r.body)
	}
	if r := tm.do("GET", "/api/v1/groups/g3", nil); r.status != http.StatusNotFound {
		t.Fatalf("a deleted group: %d", r.status)
	}
	// Moving a cluster to another group moves who sees it.
	if r := tm.do("PUT", "/api/v1/clusters/c-g2/group", map[string]string{"group": "g1"}); r.status != http.StatusOK {
		t.Fatalf("move: %d %s", r.status, r.body)
	}
	if r := tm.do("GET", "/api/v1/clusters/c-g2", nil, as(tm.tokens["vic"])); r.status != http.StatusOK {
		t.Fatalf("a g1 viewer reads the moved cluster: %d %s", r.status, r.body)
	}
	for _, bad := range []map[string]string{{"name": "Bad Name"}, {"name": ""}} {
		if r := tm.do("POST", "/api/v1/groups", bad); r.status != http.StatusBadRequest {
			t.Fatalf("group %v: %d %s", bad, r.status, r.body)
		}
	}
}
