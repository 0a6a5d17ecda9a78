package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/cli"
	"github.com/dmgr/dmgr/internal/testenv"
)

// peopleCLIRun is one run of the dmgr command line.
type peopleCLIRun struct {
	code           int
	stdout, stderr string
}

// peopleCLI runs the dmgr command line in-process, as the binary does,
// against the dev server d with token tok (and stdin), and answers its
// exit status and output.
func peopleCLI(t *testing.T, d *inProcessDev, configDir, tok, stdin string, args ...string) peopleCLIRun {
	t.Helper()
	var out, errb bytes.Buffer
	app := &cli.App{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" },
		ConfigDir: configDir, Now: time.Now}
	code := app.Execute(testenv.Context(t, 2*time.Minute), app.NewRoot(), append(args, "--server", d.url, "--token", tok))
	return peopleCLIRun{code: code, stdout: out.String(), stderr: errb.String()}
}

// peopleLogin logs user in through the API and answers the session token.
func peopleLogin(t *testing.T, d *inProcessDev, user, password string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"user": user, "password": password})
	ans, err := d.do("POST", "/api/v1/login", body, map[string]string{"Authorization": ""}, 30*time.Second)
	var tok struct{ Token string }
	if err != nil || ans.status != http.StatusOK || json.Unmarshal(ans.body, &tok) != nil || tok.Token == "" {
		t.Fatalf("login %s: %v %d %s", user, err, ans.status, ans.body)
	}
	return tok.Token
}

// peopleTopology places a master and a worker of a cluster on two hosts,
// on ports from port.
func peopleTopology(hosts []string, port int) string {
	return fmt.Sprintf(`global:
  user: tidb
  deploy_dir: /dm/deploy-%[3]d
  data_dir: /dm/data-%[3]d
master_servers:
  - host: %[1]s
    port: %[3]d
    peer_port: %[4]d
worker_servers:
  - host: %[2]s
    port: %[3]d
`, hosts[0], hosts[1], port, port+1)
}

// The people commands of the dmgr command line against a real dmgr (dev,
// in-process): the admin makes users and groups, bob's own API token sees
// only his groups, a group policy holds bob's deploys, a viewer is refused
// with the server's detail, another operator approves (the operation
// starts, as bob) and rejects, and the audit trail shows the refusal.
func TestCLIPeopleGroupsTokensApprovalsAndAudit(t *testing.T) {
	d := startInProcessDev(t)
	dir := t.TempDir()
	run := func(tok, stdin string, args ...string) peopleCLIRun {
		t.Helper()
		return peopleCLI(t, d, dir, tok, stdin, args...)
	}
	ok := func(tok, stdin string, args ...string) peopleCLIRun {
		t.Helper()
		r := run(tok, stdin, args...)
		if r.code != 0 {
			t.Fatalf("dmgr %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
		}
		return r
	}
	jsonOf := func(r peopleCLIRun, v any) {
		t.Helper()
		if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
			t.Fatalf("not JSON (%v): %s", err, r.stdout)
		}
	}
	admin := d.token

	// Users, with their passwords on stdin (no terminal here).
	passwords := map[string]string{"bob": "bob-password-1", "carol": "carol-password-1", "vic": "vic-password-1", "dave": "dave-password-1"}
	for _, u := range []string{"bob", "carol", "vic", "dave"} {
		r := ok(admin, passwords[u]+"\n", "user", "create", u)
		if !strings.Contains(r.stdout, "Created user "+u+".") || strings.Contains(r.stdout, passwords[u]) {
			t.Fatalf("user create %s: %s", u, r.stdout)
		}
	}
	if r := run(admin, "short\n", "user", "create", "erin"); r.code != 1 || !strings.Contains(r.stderr, "8") || r.stdout != "" {
		t.Fatalf("a short password: exit %d %s", r.code, r.stderr)
	}
	if r := run(admin, "", "user", "create", "erin"); r.code != 2 || !strings.Contains(r.stderr, "no password on stdin") {
		t.Fatalf("no password: exit %d %s", r.code, r.stderr)
	}
	if r := run(admin, "erin-password-1\n", "user", "create", "Erin!"); r.code != 1 || !strings.HasPrefix(r.stderr, "dmgr: ") {
		t.Fatalf("a bad name: exit %d %s", r.code, r.stderr)
	}
	var users struct {
		Items []struct {
			Name string `json:"name"`
		} `json:"items"`
	}
	jsonOf(ok(admin, "", "user", "list", "-o", "json"), &users)
	var names []string
	for _, u := range users.Items {
		names = append(names, u.Name)
	}
	for _, u := range []string{"bob", "carol", "dave", "vic"} {
		if !slices.Contains(names, u) || slices.Contains(names, "erin") {
			t.Fatalf("user list: %v", names)
		}
	}

	// Groups and members.
	for _, g := range []string{"g1", "g2"} {
		if r := ok(admin, "", "group", "create", g); !strings.Contains(r.stdout, "Created group "+g+".") {
			t.Fatalf("group create: %s", r.stdout)
		}
	}
	for u, role := range map[string]string{"bob": "operator", "carol": "operator", "vic": "viewer"} {
		if r := ok(admin, "", "group", "member", "set", "g1", u, role); r.stdout != u+" is "+role+" in group g1.\n" {
			t.Fatalf("member set: %q", r.stdout)
		}
	}
	if r := run(admin, "", "group", "member", "set", "g1", "dave", "owner"); r.code != 2 || !strings.Contains(r.stderr, `role "owner": use viewer, operator or admin`) {
		t.Fatalf("a bad role: exit %d %s", r.code, r.stderr)
	}
	if r := run(admin, "", "group", "member", "set", "g1", "nobody", "viewer"); r.code != 1 || !strings.Contains(r.stderr, "user nobody does not exist") {
		t.Fatalf("an unknown user: exit %d %s", r.code, r.stderr)
	}

	// What the groups own: loopback machines whose SSH port has no
	// listener (an operation on them fails fast), and a package.
	hosts := map[string][]string{"g1": {"127.0.3.1", "127.0.3.2"}, "g2": {"127.0.4.1", "127.0.4.2"}}
	for g, hs := range hosts {
		for _, h := range hs {
			d.mustDo(t, "POST", "/api/v1/machines", map[string]any{"host": h, "ssh_port": 9, "user": "tidb", "password": "pw",
				"host_key": testenv.HostKey, "group": g}, http.StatusAccepted)
		}
	}
	if a, err := d.do("POST", "/api/v1/packages?filename=dm-v8.1.0.tar.gz", testenv.DMPackage(t, "v8.1.0"),
		map[string]string{"Content-Type": "application/gzip"}, time.Minute); err != nil || a.status != http.StatusAccepted {
		t.Fatalf("upload: %v %d %s", err, a.status, a.body)
	}

	// Policies: g1 holds deploys of env=prod clusters for an hour, g2 every deploy.
	r := ok(admin, "", "group", "policy", "set", "g1", "--command", "deploy", "--label", "env=prod", "--ttl", "1h")
	if !strings.Contains(r.stdout, "Commands held:          deploy\n") || !strings.Contains(r.stdout, "env=prod") || !strings.Contains(r.stdout, "1h0m0s") {
		t.Fatalf("policy set: %s", r.stdout)
	}
	ok(admin, "", "group", "policy", "set", "g2", "--command", "deploy")
	var pol map[string]any
	jsonOf(ok(admin, "", "group", "policy", "show", "g1", "-o", "json"), &pol)
	if fmt.Sprint(pol["commands"]) != "[deploy]" || fmt.Sprint(pol["cluster_labels"]) != "map[env:prod]" || pol["ttl"] != "1h0m0s" {
		t.Fatalf("policy show: %v", pol)
	}
	if r := run(admin, "", "group", "policy", "set", "g1", "--command", "explode"); r.code != 1 || !strings.Contains(r.stderr, `"explode"`) {
		t.Fatalf("a bad command in a policy: exit %d %s", r.code, r.stderr)
	}

	// Bob makes his own API token with his session; it is printed once.
	bobSession := peopleLogin(t, d, "bob", passwords["bob"])
	r = ok(bobSession, "", "token", "create", "ci", "--expires-in", "30d")
	m := regexp.MustCompile(`(?m)^Token:\s+(dmgr_\S+)$`).FindStringSubmatch(r.stdout)
	if m == nil || !strings.Contains(r.stderr, "only time the token is shown") || !strings.Contains(r.stdout, "User:       bob") {
		t.Fatalf("token create: %s / %s", r.stdout, r.stderr)
	}
	bob := m[1]
	if r := run(bob, "", "token", "create", "x", "--expires-in", "400d"); r.code != 1 || !strings.HasPrefix(r.stderr, "dmgr: ") {
		t.Fatalf("a token of 400 days: exit %d %s", r.code, r.stderr)
	}

	// Bob asks for three env=prod deploys in g1: held. The admin asks
	// for one in g2: held too.
	ask := func(tok, name, group string, port int) string {
		t.Helper()
		body, _ := json.Marshal(map[string]any{"name": name, "version": "v8.1.0", "group": group, "labels": map[string]string{"env": "prod"},
			"topology": peopleTopology(hosts[group], port)})
		a, err := d.do("POST", "/api/v1/clusters", body, map[string]string{"Authorization": "Bearer " + tok}, time.Minute)
		var held struct {
			ApprovalID string `json:"approval_id"`
			State      string `json:"state"`
		}
		if err != nil || a.status != http.StatusAccepted || json.Unmarshal(a.body, &held) != nil || held.State != "pending" {
			t.Fatalf("deploy %s: %v %d %s", name, err, a.status, a.body)
		}
		return held.ApprovalID
	}
	toApprove, toReject, toWithdraw := ask(bob, "c1", "g1", 8261), ask(bob, "c2", "g1", 8361), ask(bob, "c3", "g1", 8461)
	inG2 := ask(admin, "c9", "g2", 8261)

	// Bob's token sees only his group's things.
	type approvals struct {
		Items []struct {
			ID        string `json:"id"`
			Group     string `json:"group"`
			Requester string `json:"requester"`
			Command   string `json:"command"`
			State     string `json:"state"`
		} `json:"items"`
	}
	var inbox approvals
	jsonOf(ok(bob, "", "approval", "list", "--state", "pending", "-o", "json"), &inbox)
	var ids []string
	for _, a := range inbox.Items {
		ids = append(ids, a.ID)
		if a.Group != "g1" || a.Requester != "bob" || a.Command != "deploy" || a.State != "pending" {
			t.Fatalf("bob's inbox: %+v", inbox.Items)
		}
	}
	slices.Sort(ids)
	want := []string{toApprove, toReject, toWithdraw}
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Fatalf("bob's inbox %v, want %v (not g2's %s)", ids, want, inG2)
	}
	var all approvals
	jsonOf(ok(admin, "", "approval", "list", "--state", "pending", "-o", "json"), &all)
	if len(all.Items) != 4 {
		t.Fatalf("the admin's inbox has %d requests, want 4", len(all.Items))
	}
	jsonOf(ok(admin, "", "approval", "list", "--group", "g2", "-o", "json"), &all)
	if len(all.Items) != 1 || all.Items[0].ID != inG2 {
		t.Fatalf("--group g2: %+v", all.Items)
	}
	var groups struct {
		Items []struct {
			ID string `json:"id"`
		} `json:"items"`
	}
	jsonOf(ok(bob, "", "group", "list", "-o", "json"), &groups)
	if len(groups.Items) != 1 || groups.Items[0].ID != "g1" {
		t.Fatalf("bob's groups: %+v", groups.Items)
	}
	if r := run(bob, "", "group", "show", "g2"); r.code != 1 || r.stdout != "" {
		t.Fatalf("bob reads g2: exit %d %s %s", r.code, r.stdout, r.stderr)
	}
	// Paging: one request a page, the next page's command on the last line.
	r = ok(bob, "", "approval", "list", "--limit", "2")
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	next := regexp.MustCompile(`^More: dmgr approval list --limit 2 --cursor (\S+) \(or --all for every page\)$`).FindStringSubmatch(lines[len(lines)-1])
	if len(lines) != 5 || next == nil {
		t.Fatalf("a page of 2:\n%s", r.stdout)
	}
	r = ok(bob, "", "approval", "list", "--limit", "2", "--cursor", next[1])
	if strings.Count(r.stdout, "pending") != 1 || strings.Contains(r.stdout, "More:") {
		t.Fatalf("the second page:\n%s", r.stdout)
	}
	jsonOf(ok(bob, "", "approval", "list", "--limit", "1", "--all", "-o", "json"), &inbox)
	if len(inbox.Items) != 3 {
		t.Fatalf("--all pages of 1: %d requests", len(inbox.Items))
	}

	// The request, readable: its command and plan.
	carol := peopleLogin(t, d, "carol", passwords["carol"])
	r = ok(carol, "", "approval", "show", toApprove)
	for _, s := range []string{"State:      pending", "Requested:  ", " by bob", "The command, as requested:", "Topology: |", "Plan (", "check_host", "127.0.3.1"} {
		if !strings.Contains(r.stdout, s) {
			t.Fatalf("approval show: no %q in\n%s", s, r.stdout)
		}
	}

	// A viewer is refused with the server's detail.
	vic := peopleLogin(t, d, "vic", passwords["vic"])
	r = run(vic, "", "approval", "approve", toApprove, "--comment", "me too")
	if r.code != 1 || r.stdout != "" || !strings.HasPrefix(r.stderr, "dmgr: ") || !strings.Contains(r.stderr, "viewer") {
		t.Fatalf("a viewer approves: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	refusal := strings.TrimSpace(strings.TrimPrefix(r.stderr, "dmgr: "))
	// The requester cannot approve their own request.
	if r := run(bob, "", "approval", "approve", toApprove); r.code != 1 || r.stdout != "" {
		t.Fatalf("bob approves his own: exit %d %s", r.code, r.stderr)
	}

	// Another operator approves: the deploy starts, as bob.
	r = ok(carol, "", "approval", "approve", toApprove, "--comment", "ticket OPS-42")
	m = regexp.MustCompile(`(?m)^Operation: (\S+)\nFollow it: dmgr operation watch (\S+)$`).FindStringSubmatch(r.stdout)
	if m == nil || m[1] != m[2] || !strings.Contains(r.stdout, "runs now as bob") {
		t.Fatalf("approve: %s", r.stdout)
	}
	var op domain.OperationView
	if err := json.Unmarshal(d.mustDo(t, "GET", "/api/v1/operations/"+m[1], nil, http.StatusOK), &op); err != nil {
		t.Fatal(err)
	}
	if op.Kind != domain.OperationDeploy || op.Actor != "bob" || op.Cluster != "c1" {
		t.Fatalf("the approved operation: %s of %s by %s", op.Kind, op.Cluster, op.Actor)
	}
	if r := run(carol, "", "approval", "approve", toApprove); r.code != 1 || !strings.Contains(r.stderr, "approved") {
		t.Fatalf("a second approval: exit %d %s", r.code, r.stderr)
	}

	// Reject with a comment; withdraw. Neither runs.
	if r := ok(carol, "", "approval", "reject", toReject, "--comment", "not today"); !strings.Contains(r.stdout, "will not run") {
		t.Fatalf("reject: %s", r.stdout)
	}
	var rejected map[string]any
	jsonOf(ok(bob, "", "approval", "show", toReject, "-o", "json"), &rejected)
	if rejected["state"] != "rejected" || rejected["comment"] != "not today" || rejected["decided_by"] != "carol" {
		t.Fatalf("the rejected request: %v", rejected)
	}
	if r := run(carol, "", "approval", "withdraw", toWithdraw); r.code != 1 {
		t.Fatalf("carol withdraws bob's request: exit %d", r.code)
	}
	ok(bob, "", "approval", "withdraw", toWithdraw)
	for _, c := range []string{"c2", "c3"} {
		if a, err := d.do("GET", "/api/v1/clusters/"+c, nil, nil, 30*time.Second); err != nil || a.status != http.StatusNotFound {
			t.Fatalf("cluster %s of a request not approved: %v %d %s", c, err, a.status, a.body)
		}
	}
	jsonOf(ok(bob, "", "approval", "list", "--state", "pending", "-o", "json"), &inbox)
	if len(inbox.Items) != 0 {
		t.Fatalf("pending after the decisions: %+v", inbox.Items)
	}

	// The audit trail shows the refusal, by actor.
	r = ok(admin, "", "audit", "--actor", "vic", "--type", "AccessRefused")
	lines = strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) != 3 || !strings.Contains(lines[2], "vic") || !strings.Contains(lines[2], "AccessRefused") || !strings.Contains(lines[2], "g1") ||
		!strings.Contains(lines[2], refusal[:min(len(refusal), 40)]) {
		t.Fatalf("audit of vic's refusals (%q):\n%s", refusal, r.stdout)
	}
	r = ok(admin, "", "audit", "--actor", "vic", "--since", "1h", "-o", "yaml")
	var trail struct {
		Events []map[string]any `yaml:"events"`
	}
	if err := yaml.Unmarshal([]byte(r.stdout), &trail); err != nil {
		t.Fatalf("audit -o yaml: %v\n%s", err, r.stdout)
	}
	if len(trail.Events) == 0 {
		t.Fatal("no events of vic in the last hour")
	}
	said := false // the refusal the CLI printed is the server's own words
	for _, e := range trail.Events {
		if p, _ := e["payload"].(map[string]any); e["type"] == "AccessRefused" && p["reason"] == refusal {
			said = true
		}
		for _, k := range []string{"seq", "type", "aggregate_type", "time", "actor", "payload"} {
			if _, has := e[k]; !has {
				t.Fatalf("audit -o yaml: an event without %s: %v", k, e)
			}
		}
		if e["actor"] != "vic" {
			t.Fatalf("--actor vic shows %v", e["actor"])
		}
	}
	if !said {
		t.Fatalf("no AccessRefused event of vic says %q:\n%s", refusal, r.stdout)
	}
	if r := ok(admin, "", "audit", "--actor", "vic", "--since", "2025-01-01T00:00:00Z", "--until", "2025-01-02T00:00:00Z"); r.stdout != "No events match.\n" {
		t.Fatalf("an empty window: %q", r.stdout)
	}
	if r := run(admin, "", "audit", "--since", "yesterday"); r.code != 2 || !strings.Contains(r.stderr, `--since "yesterday"`) {
		t.Fatalf("a bad --since: exit %d %s", r.code, r.stderr)
	}
	// Pages of the trail: --limit and the cursor it prints; --all gets
	// every event once.
	r = ok(admin, "", "audit", "--limit", "3")
	lines = strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	next = regexp.MustCompile(`^More: dmgr audit --limit 3 --cursor (\S+) `).FindStringSubmatch(lines[len(lines)-1])
	if len(lines) != 6 || next == nil {
		t.Fatalf("audit --limit 3:\n%s", r.stdout)
	}
	r2 := ok(admin, "", "audit", "--limit", "3", "--cursor", next[1])
	if r2.stdout == r.stdout {
		t.Fatal("the next page is the first one")
	}
	var whole, paged struct {
		Events []struct {
			Seq   uint64 `json:"seq"`
			Index int    `json:"index"`
		} `json:"events"`
	}
	until := time.Now().UTC().Format(time.RFC3339Nano) // the same events for both
	jsonOf(ok(admin, "", "audit", "--limit", "1000", "--until", until, "-o", "json"), &whole)
	jsonOf(ok(admin, "", "audit", "--limit", "7", "--all", "--until", until, "-o", "json"), &paged)
	if len(paged.Events) != len(whole.Events) || len(whole.Events) < 20 {
		t.Fatalf("--all in pages of 7: %d events, one page of 1000: %d", len(paged.Events), len(whole.Events))
	}
	seen := map[[2]uint64]bool{}
	for _, e := range paged.Events {
		k := [2]uint64{e.Seq, uint64(e.Index)}
		if seen[k] {
			t.Fatalf("--all shows event %v twice", k)
		}
		seen[k] = true
	}
	// Bob's trail holds only his group's events.
	jsonOf(ok(bob, "", "audit", "--all", "-o", "json"), &trail)
	for _, e := range trail.Events {
		if e["group"] != "g1" {
			t.Fatalf("bob sees an event of group %v: %v", e["group"], e)
		}
	}

	// -o yaml keeps the API's field names.
	r = ok(admin, "", "user", "show", "bob", "-o", "yaml")
	var u map[string]any
	if err := yaml.Unmarshal([]byte(r.stdout), &u); err != nil || u["name"] != "bob" || u["super_admin"] != false || u["disabled"] != false || u["created_at"] == nil {
		t.Fatalf("user show -o yaml: %v\n%s", err, r.stdout)
	}
	r = ok(admin, "", "group", "show", "g1", "-o", "yaml")
	var g map[string]any
	if err := yaml.Unmarshal([]byte(r.stdout), &g); err != nil || g["id"] != "g1" || fmt.Sprint(g["members"]) != "map[bob:operator carol:operator vic:viewer]" || g["approval_policy"] == nil {
		t.Fatalf("group show -o yaml: %v\n%s", err, r.stdout)
	}

	// Users: disable stops a session at once; enable; passwd.
	ok(admin, "", "user", "disable", "vic")
	if r := run(vic, "", "group", "list"); r.code != 1 {
		t.Fatalf("a disabled user's session: exit %d", r.code)
	}
	ok(admin, "", "user", "enable", "vic")
	if r := ok(admin, "new-bob-password-2\n", "user", "passwd", "bob", "--password-stdin"); !strings.Contains(r.stdout, "Password of bob set") {
		t.Fatalf("passwd: %s", r.stdout)
	}
	peopleLogin(t, d, "bob", "new-bob-password-2")
	if r := run(bobSession, "", "group", "list"); r.code != 1 {
		t.Fatalf("bob's session after passwd: exit %d", r.code)
	}

	// Destructive commands ask first: without a terminal, --yes.
	if r := run(admin, "", "user", "delete", "dave"); r.code != 2 || !strings.Contains(r.stderr, "--yes") {
		t.Fatalf("delete without --yes: exit %d %s", r.code, r.stderr)
	}
	ok(admin, "", "user", "show", "dave")
	ok(admin, "", "user", "delete", "dave", "--yes")
	if r := run(admin, "", "user", "show", "dave"); r.code != 1 {
		t.Fatalf("a deleted user: exit %d", r.code)
	}
	if r := run(admin, "", "group", "delete", "g2", "--yes"); r.code != 1 || !strings.Contains(r.stderr, "g2") {
		t.Fatalf("deleting a group that owns machines: exit %d %s", r.code, r.stderr)
	}
	ok(admin, "", "group", "create", "g3")
	if r := ok(admin, "", "group", "rename", "g3", "team-3"); !strings.Contains(r.stdout, "Name:             team-3") || !strings.Contains(r.stdout, "ID:               g3") {
		t.Fatalf("rename: %s", r.stdout)
	}
	ok(admin, "", "group", "delete", "team-3", "--yes")
	if r := ok(admin, "", "group", "member", "rm", "g1", "vic"); !strings.Contains(r.stdout, "vic is no longer a member of group g1") {
		t.Fatalf("member rm: %s", r.stdout)
	}
	jsonOf(ok(admin, "", "group", "show", "g1", "-o", "json"), &g)
	if fmt.Sprint(g["members"]) != "map[bob:operator carol:operator]" {
		t.Fatalf("members after rm: %v", g["members"])
	}

	// Tokens: bob lists his, revokes the API token; it stops working.
	var toks struct {
		Items []struct {
			ID   string `json:"id"`
			Name string `json:"name"`
			Kind string `json:"kind"`
		} `json:"items"`
	}
	jsonOf(ok(bob, "", "token", "list", "--kind", "api", "-o", "json"), &toks)
	if len(toks.Items) != 1 || toks.Items[0].Name != "ci" || toks.Items[0].Kind != "api" {
		t.Fatalf("bob's API tokens: %+v", toks.Items)
	}
	if r := ok(bob, "", "token", "list"); strings.Contains(r.stdout, bob) || !strings.Contains(r.stdout, toks.Items[0].ID) {
		t.Fatalf("token list shows a secret, or not the token:\n%s", r.stdout)
	}
	if r := run(bob, "", "token", "revoke", toks.Items[0].ID); r.code != 2 {
		t.Fatalf("revoke without --yes: exit %d", r.code)
	}
	ok(bob, "", "token", "revoke", toks.Items[0].ID, "--yes")
	if r := run(bob, "", "token", "list"); r.code != 1 || !strings.HasPrefix(r.stderr, "dmgr: ") {
		t.Fatalf("a revoked token: exit %d %s", r.code, r.stderr)
	}
}
