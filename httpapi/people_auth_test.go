package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/httpapi"
	"github.com/dmgr/dmgr/internal/pkgstore"
	"github.com/dmgr/dmgr/internal/secrets"
	"github.com/dmgr/dmgr/internal/service"
	"github.com/dmgr/dmgr/internal/testenv"
)

// secondServer is another dmgr server on the same bus as s: its own
// service, directory and router.
func secondServer(t *testing.T, s *stack) *stack {
	t.Helper()
	ctx := testenv.Context(t, time.Minute)
	store, err := eventstore.Open(ctx, s.js, eventstore.Config{Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	vault, err := secrets.Open(ctx, s.js, vaultKey, 1)
	if err != nil {
		t.Fatal(err)
	}
	pkgs, err := pkgstore.Open(ctx, s.js, 1)
	if err != nil {
		t.Fatal(err)
	}
	passwords, err := secrets.OpenPasswords(ctx, s.js, vaultKey, 1)
	if err != nil {
		t.Fatal(err)
	}
	svc := service.New(service.Config{Store: store, Vault: vault, Packages: pkgs, PackageLimits: pkgstore.DefaultLimits(),
		Log: zerolog.New(s.logs), Passwords: passwords, Now: s.clock.Now})
	svc.StartDirectory()
	t.Cleanup(svc.Close)
	if err := svc.Directory().WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	h := httpapi.Handler(httpapi.Config{Service: svc, AdminToken: token, Log: zerolog.New(s.logs), Now: s.clock.Now})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	two := *s
	two.url, two.client, two.svc, two.handler = srv.URL, srv.Client(), svc, h
	return &two
}

func TestLoginMeAndLogout(t *testing.T) {
	tm := newTeam(t)
	if r := tm.do("POST", "/api/v1/login", map[string]string{"user": "oper", "password": "wrong-password"}, noToken()); r.status != http.StatusUnauthorized ||
		r.problem(t).Detail != "wrong user name or password" {
		t.Fatalf("wrong password: %d %s", r.status, r.body)
	}
	if r := tm.do("POST", "/api/v1/login", map[string]string{"user": "nobody", "password": "wrong-password"}, noToken()); r.status != http.StatusUnauthorized ||
		r.problem(t).Detail != "wrong user name or password" {
		t.Fatalf("unknown user: %d %s (must read as a wrong password)", r.status, r.body)
	}
	if r := tm.do("POST", "/api/v1/login", map[string]string{"user": "oper"}, noToken()); r.status != http.StatusBadRequest {
		t.Fatalf("no password: %d %s", r.status, r.body)
	}
	var me struct {
		User       string `json:"user"`
		SuperAdmin bool   `json:"super_admin"`
		Groups     []struct {
			Group, Role string
		} `json:"groups"`
		TokenID string `json:"token_id"`
	}
	tm.do("GET", "/api/v1/me", nil, as(tm.tokens["oper"])).json(t, &me)
	if me.User != "oper" || me.SuperAdmin || len(me.Groups) != 1 || me.Groups[0].Group != "g1" || me.Groups[0].Role != "operator" || !strings.HasPrefix(me.TokenID, "s-") {
		t.Fatalf("me: %+v", me)
	}
	if r := tm.do("POST", "/api/v1/logout", nil, as(tm.tokens["oper"])); r.status != http.StatusNoContent {
		t.Fatalf("logout: %d %s", r.status, r.body)
	}
	if r := tm.do("GET", "/api/v1/me", nil, as(tm.tokens["oper"])); r.status != http.StatusUnauthorized {
		t.Fatalf("a session after logout: %d %s", r.status, r.body)
	}
	// The admin token still works, as the bootstrap super admin.
	tm.do("GET", "/api/v1/me", nil).json(t, &me)
	if me.User != "admin" || !me.SuperAdmin || me.TokenID != httpapi.AdminTokenID {
		t.Fatalf("the admin token is %+v", me)
	}
	// A disabled user's sessions are refused at once; enabled, they work again.
	vic := tm.tokens["vic"]
	if r := tm.do("POST", "/api/v1/users/vic/disable", nil); r.status != http.StatusOK {
		t.Fatalf("disable: %d %s", r.status, r.body)
	}
	if r := tm.do("GET", "/api/v1/me", nil, as(vic)); r.status != http.StatusUnauthorized {
		t.Fatalf("a disabled user's session: %d", r.status)
	}
	if r := tm.do("POST", "/api/v1/login", map[string]string{"user": "vic", "password": teamPasswords["vic"]}, noToken()); r.status != http.StatusUnauthorized ||
		!strings.Contains(r.problem(t).Detail, "disabled") {
		t.Fatalf("a disabled user's login: %d %s", r.status, r.body)
	}
	tm.do("POST", "/api/v1/users/vic/enable", nil)
	if r := tm.do("GET", "/api/v1/me", nil, as(vic)); r.status != http.StatusOK {
		t.Fatalf("an enabled user's session: %d", r.status)
	}
	// A deleted user's name stays taken; the super admin cannot delete themself.
	if r := tm.do("DELETE", "/api/v1/users/vic", nil); r.status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	if r := tm.do("POST", "/api/v1/users", map[string]any{"name": "vic", "password": "another-password"}); r.status != http.StatusConflict {
		t.Fatalf("reuse of a deleted name: %d %s", r.status, r.body)
	}
	if r := tm.do("DELETE", "/api/v1/users/admin", nil); r.status != http.StatusConflict {
		t.Fatalf("delete yourself: %d %s", r.status, r.body)
	}
	// A reset password ends the user's sessions.
	old := tm.tokens["gadm"]
	if r := tm.do("PUT", "/api/v1/users/gadm/password", map[string]string{"password": "gadm-password-2"}); r.status != http.StatusNoContent {
		t.Fatalf("reset: %d %s", r.status, r.body)
	}
	if r := tm.do("GET", "/api/v1/me", nil, as(old)); r.status != http.StatusUnauthorized {
		t.Fatalf("a session after a password reset: %d", r.status)
	}
	tm.login("gadm", "gadm-password-2")
}

// Done when 4: 1,000 wrong passwords for one user from one client are
// locked out after a few, and another user's right password still works.
func TestLoginBruteForceIsLockedOut(t *testing.T) {
	tm := newTeam(t)
	counts := map[int]int{}
	start := time.Now()
	for i := 0; i < 1000; i++ {
		r := tm.do("POST", "/api/v1/login", map[string]string{"user": "oper", "password": fmt.Sprintf("guess-%04d", i)}, noToken())
		counts[r.status]++
		if r.status == http.StatusTooManyRequests && r.header.Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
	}
	took := time.Since(start)
	if counts[http.StatusUnauthorized] > 10 || counts[http.StatusTooManyRequests] < 990 || counts[http.StatusOK] != 0 {
		t.Fatalf("1,000 guesses answered %v; want at most 10 checked, the rest 429", counts)
	}
	t.Logf("1,000 guesses: %v in %s", counts, took)
	// Another user is not affected; oper's own right password waits.
	tm.login("oper2", teamPasswords["oper2"])
	if r := tm.do("POST", "/api/v1/login", map[string]string{"user": "oper", "password": teamPasswords["oper"]}, noToken()); r.status != http.StatusTooManyRequests {
		t.Fatalf("the locked user's right password: %d, want 429 until the lock ends", r.status)
	}
}

// Tokens: made with a name and an expiry, shown once, listed without
// their secret, narrowed to reading, revoked or expired within a second
// on every server.
func TestAPITokens(t *testing.T) {
	tm := newTeam(t)
	other := secondServer(t, tm.stack)
	r := tm.do("POST", "/api/v1/tokens", map[string]any{"name": "ci", "expires_in": "1h"}, as(tm.tokens["oper"]))
	if r.status != http.StatusCreated {
		t.Fatalf("create token: %d %s", r.status, r.body)
	}
	var made struct {
		ID, Token string
		ExpiresAt time.Time `json:"expires_at"`
	}
	r.json(t, &made)
	if !strings.HasPrefix(made.ID, "t-") || !strings.HasPrefix(made.Token, "dmgr_") || made.ExpiresAt.Sub(time.Now()) > time.Hour+time.Minute {
		t.Fatalf("made: %s", r.body)
	}
	ro := tm.do("POST", "/api/v1/tokens", map[string]any{"name": "dashboards", "expires_in": "1h", "read_only": true}, as(tm.tokens["oper"]))
	var roTok struct{ ID, Token string }
	ro.json(t, &roTok)
	list := tm.do("GET", "/api/v1/tokens?kind=api", nil, as(tm.tokens["oper"]))
	if strings.Contains(string(list.body), made.Token) || strings.Contains(string(list.body), "verifier") || !strings.Contains(string(list.body), made.ID) {
		t.Fatalf("list: %s", list.body)
	}
	for _, srv := range []*stack{tm.stack, other} {
		if r := srv.do("GET", "/api/v1/clusters/c-g1", nil, as(made.Token)); r.status != http.StatusOK {
			t.Fatalf("the token on a server: %d %s", r.status, r.body)
		}
	}
	// Read-only: reads pass, commands are refused.
	if r := tm.do("GET", "/api/v1/clusters/c-g1", nil, as(roTok.Token)); r.status != http.StatusOK {
		t.Fatalf("read-only read: %d", r.status)
	}
	if r := tm.do("POST", "/api/v1/clusters/c-g1/stop", nil, as(roTok.Token)); r.status != http.StatusForbidden ||
		!strings.Contains(r.problem(t).Detail, "read-only") {
		t.Fatalf("read-only command: %d %s", r.status, r.body)
	}
	if r := tm.do("POST", "/api/v1/tokens", map[string]any{"name": "escalate", "expires_in": "1h"}, as(roTok.Token)); r.status != http.StatusForbidden {
		t.Fatalf("a read-only token made a writing one: %d %s", r.status, r.body)
	}
	// Another user cannot revoke it; its owner can, and every server
	// refuses it within a second.
	if r := tm.do("DELETE", "/api/v1/tokens/"+made.ID, nil, as(tm.tokens["vic"])); r.status != http.StatusNotFound {
		t.Fatalf("revoke another's token: %d %s", r.status, r.body)
	}
	if r := tm.do("DELETE", "/api/v1/tokens/"+made.ID, nil, as(tm.tokens["oper"])); r.status != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	refusedWithinASecond(t, other, made.Token)
	refusedWithinASecond(t, tm.stack, made.Token)
	// Expired: refused when its time has come, on every server.
	tm.clock.Add(61 * time.Minute)
	refusedWithinASecond(t, other, roTok.Token)
	refusedWithinASecond(t, tm.stack, roTok.Token)
	for _, bad := range []map[string]any{{"name": "x", "expires_in": "forever"}, {"name": "x", "expires_in": "-1h"},
		{"name": "x", "expires_in": "9000h"}, {"expires_in": "1h"}} {
		if r := tm.do("POST", "/api/v1/tokens", bad, as(tm.tokens["oper2"])); r.status != http.StatusBadRequest {
			t.Fatalf("token %v: %d %s", bad, r.status, r.body)
		}
	}
}

func refusedWithinASecond(t *testing.T, s *stack, tok string) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for {
		r := s.do("GET", "/api/v1/me", nil, as(tok))
		if r.status == http.StatusUnauthorized {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a revoked or expired token still works a second later: %d", r.status)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Done when 3: passwords and token secrets appear in no event, log line,
// ClickHouse row or answer but the one that hands a secret out.
func TestPasswordsAndTokenSecretsNeverLeak(t *testing.T) {
	p := newProjectedStack(t)
	secretsSeen := []string{adminPassword}
	var answers []string
	keep := func(r response) response { answers = append(answers, string(r.body)); return r }
	for _, u := range []string{"alice", "bob"} {
		pw := "pw-of-" + u + "-Xq9!"
		secretsSeen = append(secretsSeen, pw)
		keep(p.do("POST", "/api/v1/users", map[string]any{"name": u, "password": pw}))
		keep(p.do("POST", "/api/v1/login", map[string]any{"user": u, "password": pw + "wrong"}, noToken()))
		var tok struct{ Token string }
		p.do("POST", "/api/v1/login", map[string]any{"user": u, "password": pw}, noToken()).json(t, &tok)
		secretsSeen = append(secretsSeen, tok.Token)
		var api struct{ Token string }
		p.do("POST", "/api/v1/tokens", map[string]any{"name": "t", "expires_in": "1h"}, as(tok.Token)).json(t, &api)
		secretsSeen = append(secretsSeen, api.Token)
		keep(p.do("GET", "/api/v1/tokens", nil, as(tok.Token)))
		keep(p.do("GET", "/api/v1/me", nil, as(api.Token)))
		keep(p.do("PUT", "/api/v1/users/"+u+"/password", map[string]any{"password": pw + "-new"}))
		secretsSeen = append(secretsSeen, pw+"-new")
		keep(p.do("POST", "/api/v1/clusters", map[string]any{"name": "x", "version": "v1", "topology": "x"}, as(api.Token)))
	}
	keep(p.do("GET", "/api/v1/users", nil))
	keep(p.do("GET", "/api/v1/audit?limit=1000", nil))
	rows, err := p.proj.Conn().Query(context.Background(), "SELECT payload FROM "+p.proj.Database()+".events_g1")
	if err != nil {
		t.Fatal(err)
	}
	var payloads []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		payloads = append(payloads, s)
	}
	rows.Close()
	if len(payloads) < 10 {
		t.Fatalf("ClickHouse has %d events: the scan would see nothing", len(payloads))
	}
	haystacks := map[string][]string{"answers": answers, "event stream": p.rawStream(), "logs": {p.logs.String()}, "ClickHouse": payloads}
	for where, texts := range haystacks {
		for _, text := range texts {
			for _, secret := range secretsSeen {
				if strings.Contains(text, secret) {
					t.Fatalf("a secret (%.12s…) appears in the %s: %.300s", secret, where, text)
				}
			}
		}
	}
	if !strings.Contains(p.logs.String(), "logged in") || !strings.Contains(p.logs.String(), "login failed") {
		t.Fatal("the log scan saw no login lines; it would not catch a leak")
	}
	// The audit trail names the credential a command came with, by id.
	var audit struct {
		Items []struct {
			Actor, Type string
			ActorToken  string `json:"actor_token"`
		} `json:"events"`
	}
	p.do("GET", "/api/v1/audit?actor=alice&type=TokenIssued", nil).json(t, &audit)
	if len(audit.Items) != 2 || !strings.HasPrefix(audit.Items[0].ActorToken, "s-") {
		t.Fatalf("alice's token events in the audit: %+v", audit.Items)
	}
}

// Users, groups and moves are the super admins': a group admin is refused
// each, with the refusal on record; a user reads and changes only
// themself.
func TestOnlySuperAdminsManageUsersGroupsAndOwners(t *testing.T) {
	tm := newTeam(t)
	gadm := tm.tokens["gadm"]
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{"GET", "/api/v1/users", nil},
		{"GET", "/api/v1/users/vic", nil},
		{"POST", "/api/v1/users/vic/disable", nil},
		{"POST", "/api/v1/users/vic/enable", nil},
		{"PUT", "/api/v1/users/vic/password", map[string]string{"password": "taken-over-1"}},
		{"DELETE", "/api/v1/users/vic", nil},
		{"DELETE", "/api/v1/groups/g1", nil},
		{"PUT", "/api/v1/machines/" + groupMachines("g1")[0] + "/group", map[string]string{"group": "g2"}},
		{"PUT", "/api/v1/packages/dm-v8.1.0-linux-amd64/group", map[string]string{"group": "g1"}},
	} {
		before := tm.lastSeq()
		r := tm.do(c.method, c.path, c.body, as(gadm))
		if r.status != http.StatusForbidden || !strings.Contains(r.problem(t).Detail, "needs a super admin") {
			t.Fatalf("%s %s by a group admin: %d %s", c.method, c.path, r.status, r.body)
		}
		if after := tm.rawStreamAfter(before); len(after) != 1 || !strings.Contains(after[0], `"type":"AccessRefused"`) {
			t.Fatalf("%s %s: %d commits after the refusal, want only its record", c.method, c.path, len(after))
		}
	}
	if r := tm.do("GET", "/api/v1/users/gadm", nil, as(gadm)); r.status != http.StatusOK {
		t.Fatalf("a user reads themself: %d %s", r.status, r.body)
	}
	if r := tm.do("PUT", "/api/v1/users/gadm/password", map[string]string{"password": "gadm-password-9"}, as(gadm)); r.status != http.StatusNoContent {
		t.Fatalf("a user changes their own password: %d %s", r.status, r.body)
	}
	tm.login("gadm", "gadm-password-9")
}
