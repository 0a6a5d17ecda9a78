package httpapi_test

import (
	"archive/tar"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/httpapi"
	"github.com/dmgr/dmgr/internal/pkgstore"
	"github.com/dmgr/dmgr/internal/service"
	"github.com/dmgr/dmgr/internal/testenv"
)

// TestEveryRouteButHealthNeedsTheToken walks the router, so a route added
// later is checked too: every route but the probes answers 401 without the
// admin token or with a wrong one, and /metrics answers 401 without its
// own token (the admin token is not it).
func TestEveryRouteButHealthNeedsTheToken(t *testing.T) {
	const metricsToken = "test-metrics-token-0123456789"
	s := newStackWith(t, pkgstore.DefaultLimits(), func(_ *service.Config, hc *httpapi.Config) { hc.MetricsToken = metricsToken })
	open := map[string]bool{"GET /healthz": true, "GET /readyz": true, "POST /api/v1/login": true}
	for r := range open {
		if r == "POST /api/v1/login" {
			continue // answers 400 without a body; TestLoginAndLogout covers it
		}
		method, path, _ := strings.Cut(r, " ")
		if resp := s.do(method, path, nil, noToken()); resp.status != http.StatusOK {
			t.Errorf("%s without token: %d, want 200", r, resp.status)
		}
	}
	// Path parameters get a value of their kind; the token is checked
	// before anything else, so the value does not change the answer.
	params := strings.NewReplacer("{host}", "198.18.0.11", "{name}", "c1", "{id}", "op-x", "{group}", "g1", "{user}", "u1",
		"{token}", "t-0190b2a4-7c1e-7d2f-9a3b-4c5d6e7f8091", "{package}", "dm-v8.1.0-linux-amd64")
	var routes [][2]string
	err := chi.Walk(s.handler.(chi.Routes), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		if !open[method+" "+route] {
			routes = append(routes, [2]string{method, params.Replace(route)})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// 26 API routes and /metrics today; a walk that finds far fewer is
	// broken, not a smaller API.
	if len(routes) < 20 {
		t.Fatalf("walked only %d routes: %v", len(routes), routes)
	}
	for _, rt := range routes {
		opts := map[string]reqOpt{"no token": noToken(), "wrong token": withHeader("Authorization", "Bearer nope")}
		if rt[1] == "/metrics" {
			opts["the admin token"] = withHeader("Authorization", "Bearer "+token)
		}
		for name, opt := range opts {
			r := s.do(rt[0], rt[1], `{}`, opt)
			if r.status != http.StatusUnauthorized {
				t.Errorf("%s %s with %s: %d, want 401", rt[0], rt[1], name, r.status)
				continue
			}
			if p := r.problem(t); p.Code != domain.Unauthorized || r.header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s %s with %s: problem %+v", rt[0], rt[1], name, p)
			}
		}
	}
	if seq := s.lastSeq(); seq != bootstrapCommits {
		t.Fatalf("unauthorized requests appended %d commits", seq-bootstrapCommits)
	}
}

func TestRegisterMachineThenReadIt(t *testing.T) {
	s := newStack(t, pkgstore.DefaultLimits())
	acc := s.mustAccept("POST", "/api/v1/machines", map[string]any{
		"host": "198.18.0.11", "ssh_port": 2222, "user": "tidb", "private_key": privateKeyPEM(t, ""),
		"host_key": testenv.HostKey + " comment to drop",
		"labels":   map[string]string{"region": "r1", "zone": "z1", "rack": "k1"}})
	var m domain.Machine
	r := s.do("GET", "/api/v1/machines/198.18.0.11", nil)
	r.json(t, &m)
	if m.Host != "198.18.0.11" || m.SSHPort != 2222 || m.User != "tidb" || m.Labels.Zone != "z1" ||
		m.Credential.Kind != domain.CredentialPrivateKey || !strings.HasPrefix(m.Credential.ID, "cred-") || m.Revision != 1 {
		t.Fatalf("machine: %+v", m)
	}
	var op domain.OperationView
	s.do("GET", "/api/v1/operations/"+acc.OperationID, nil).json(t, &op)
	if op.Kind != "register-machine" || op.Status != "succeeded" || op.AggregateID != "198.18.0.11" || op.Actor != "admin" || op.CommitSeq != acc.CommitSeq {
		t.Fatalf("operation: %+v", op)
	}
	if r := s.do("GET", "/api/v1/machines/198.18.0.99", nil); r.status != http.StatusNotFound {
		t.Fatalf("unknown machine: %d", r.status)
	}
}

func TestDeployRecordsTheOperationAndDryRunRecordsNothing(t *testing.T) {
	s := newStack(t, pkgstore.DefaultLimits())
	s.fixtures()
	before := s.lastSeq()
	r := s.do("POST", "/api/v1/clusters?dry_run=true", map[string]string{"name": "prod-a", "version": "v8.1.0", "topology": topology})
	if r.status != http.StatusOK || !strings.Contains(string(r.body), `"dry_run":true`) || !strings.Contains(string(r.body), "/dm/deploy/dm-master-8261") {
		t.Fatalf("dry run: %d %s", r.status, r.body)
	}
	if s.lastSeq() != before {
		t.Fatal("dry run appended a commit")
	}
	acc := s.mustAccept("POST", "/api/v1/clusters", map[string]string{"name": "prod-a", "version": "v8.1.0", "topology": topology})
	var c domain.Cluster
	s.do("GET", "/api/v1/clusters/prod-a", nil).json(t, &c)
	if c.Name != "prod-a" || c.Version != "v8.1.0" || c.Status != domain.ClusterStatusDeploying || len(c.Instances) != 6 ||
		len(c.Operations) != 1 || c.Operations[0].ID != acc.OperationID {
		t.Fatalf("cluster: %+v", c)
	}
	var op domain.OperationView
	s.do("GET", "/api/v1/operations/"+acc.OperationID, nil).json(t, &op)
	if op.Kind != domain.OperationDeploy || op.Status != domain.OperationStatusPending || op.Cluster != "prod-a" {
		t.Fatalf("operation: %+v", op)
	}
	// The machine is now in use.
	r = s.do("DELETE", "/api/v1/machines/198.18.0.11", nil)
	if r.status != http.StatusConflict || !strings.Contains(r.problem(t).Detail, "prod-a") {
		t.Fatalf("remove machine in use: %d %s", r.status, r.body)
	}
	s.mustAccept("POST", "/api/v1/machines", map[string]any{"host": "198.18.0.14", "user": "tidb", "host_key": testenv.HostKey, "password": "x"})
	s.mustAccept("DELETE", "/api/v1/machines/198.18.0.14", nil)
	if r := s.do("GET", "/api/v1/machines/198.18.0.14", nil); r.status != http.StatusNotFound {
		t.Fatalf("removed machine still listed: %d", r.status)
	}
}

// Acceptance 3: 50 concurrent deploys of one new name: one 202, 49 409,
// one commit.
func TestConcurrentDeploysOfOneNameAcceptExactlyOne(t *testing.T) {
	s := newStack(t, pkgstore.DefaultLimits())
	s.fixtures()
	const n = 50
	statuses := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = s.do("POST", "/api/v1/clusters", map[string]string{"name": "race", "version": "v8.1.0", "topology": topology}).status
		}()
	}
	wg.Wait()
	count := map[int]int{}
	for _, st := range statuses {
		count[st]++
	}
	if count[http.StatusAccepted] != 1 || count[http.StatusConflict] != n-1 {
		t.Fatalf("statuses %v, want one 202 and %d 409", count, n-1)
	}
	subjects, err := s.store.Subjects(t.Context(), eventstore.Subject(domain.AggregateCluster, "race"))
	if err != nil {
		t.Fatal(err)
	}
	if got := subjects[eventstore.Subject(domain.AggregateCluster, "race")]; got != 1 {
		t.Fatalf("stream holds %d commits for the cluster, want 1", got)
	}
}

// Acceptance 4: the same POST with the same Idempotency-Key twice gives
// the same answer and one commit.
func TestIdempotencyKeyReplaysTheFirstAnswer(t *testing.T) {
	s := newStack(t, pkgstore.DefaultLimits())
	s.fixtures()
	body := map[string]string{"name": "idem", "version": "v8.1.0", "topology": topology}
	key := withHeader("Idempotency-Key", "deploy-idem-1")
	first := s.do("POST", "/api/v1/clusters", body, key)
	seq := s.lastSeq()
	second := s.do("POST", "/api/v1/clusters", body, key)
	if first.status != http.StatusAccepted || second.status != first.status || string(second.body) != string(first.body) ||
		second.header.Get("Location") != first.header.Get("Location") || second.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("first %d %s, second %d %s (%v)", first.status, first.body, second.status, second.body, second.header)
	}
	if s.lastSeq() != seq {
		t.Fatal("the replayed request appended a commit")
	}
	// A refused command is replayed as refused, too.
	bad := map[string]string{"name": "-bad", "version": "v8.1.0", "topology": topology}
	k2 := withHeader("Idempotency-Key", "k2")
	if a, b := s.do("POST", "/api/v1/clusters", bad, k2), s.do("POST", "/api/v1/clusters", bad, k2); a.status != 400 || b.status != 400 || string(a.body) != string(b.body) {
		t.Fatalf("refused command replay: %d %s / %d %s", a.status, a.body, b.status, b.body)
	}
	// The same key with another body is refused and changes nothing.
	other := map[string]string{"name": "idem-2", "version": "v8.1.0", "topology": topology}
	if r := s.do("POST", "/api/v1/clusters", other, key); r.status != http.StatusUnprocessableEntity {
		t.Fatalf("key reuse with another body: %d %s", r.status, r.body)
	}
	// Keys are scoped to the route: the same key on another route is a new request.
	s.mustAccept("POST", "/api/v1/machines", map[string]any{"host": "198.18.0.20", "user": "tidb", "host_key": testenv.HostKey, "password": "x"}, key)
	// One registration: the machine's commit and its two identity claims.
	if s.lastSeq() != seq+3 {
		t.Fatalf("stream moved from %d to %d, want exactly one registration (3 commits)", seq, s.lastSeq())
	}
}

// Acceptance 7: bad input gets a 4xx that says what is wrong, and no commit.
func TestBadInputIsRefusedAndChangesNothing(t *testing.T) {
	s := newStack(t, pkgstore.Limits{MaxBytes: 4 << 10, MaxUnpackedBytes: 1 << 20, MaxEntries: 100})
	s.fixtures()
	s.mustAccept("POST", "/api/v1/clusters", map[string]string{"name": "prod-a", "version": "v8.1.0", "topology": topology})

	deploy := func(name, topo string) map[string]string {
		return map[string]string{"name": name, "version": "v8.1.0", "topology": topo}
	}
	pkg := func(extra ...testenv.Entry) []byte { return testenv.DMPackage(t, "v9.0.0", extra...) }
	cases := []struct {
		name         string
		method, path string
		body         any
		opts         []reqOpt
		status       int
		detail       string
	}{
		{"malformed JSON", "POST", "/api/v1/machines", `{"host": "198.18.0.30", "user":`, nil, 400, "malformed JSON"},
		{"JSON syntax error", "POST", "/api/v1/machines", `{"host" "x"}`, nil, 400, "malformed JSON at byte"},
		{"unknown JSON field", "POST", "/api/v1/machines", `{"host":"198.18.0.30","user":"tidb","password":"x","hots":1}`, nil, 400, `unknown field "hots"`},
		{"wrong JSON type", "POST", "/api/v1/machines", `{"host":"198.18.0.30","user":"tidb","password":"x","ssh_port":"22"}`, nil, 400, `field "ssh_port"`},
		{"two JSON objects", "POST", "/api/v1/machines", `{"host":"198.18.0.30","user":"tidb","password":"x"}{}`, nil, 400, "data after the JSON object"},
		{"empty body", "POST", "/api/v1/clusters", ``, nil, 400, "request body is empty"},
		{"missing fields", "POST", "/api/v1/clusters", `{"name":"x"}`, nil, 400, "missing required fields: version, topology"},
		{"no credential", "POST", "/api/v1/machines", `{"host":"198.18.0.30","user":"tidb"}`, nil, 400, "credential is required"},
		{"bad host", "POST", "/api/v1/machines", `{"host":"198.18.0.30; reboot","user":"tidb","password":"x"}`, nil, 400, "198.18.0.30; reboot"},
		{"machine twice", "POST", "/api/v1/machines", `{"host":"198.18.0.11","user":"tidb","password":"x"}`, nil, 409, "already registered"},
		{"invalid cluster name", "POST", "/api/v1/clusters", deploy("-bad name", topology), nil, 400, `cluster name "-bad name" is invalid`},
		{"cluster name too long", "POST", "/api/v1/clusters", deploy(strings.Repeat("a", 65), topology), nil, 400, "is invalid"},
		{"topology YAML error", "POST", "/api/v1/clusters", deploy("c2", "master_servers:\n  - host: 198.18.0.11\n   port: 1\n"), nil, 400, "topology line 2: did not find expected"},
		{"topology wrong type", "POST", "/api/v1/clusters", deploy("c2", "master_servers:\n  - host: 198.18.0.11\n    port: abc\n"), nil, 400, "line 3"},
		{"topology unknown host", "POST", "/api/v1/clusters", deploy("c2", "master_servers:\n  - host: 198.18.0.99\n"), nil, 400, "topology line 2: host 198.18.0.99 is not a registered machine"},
		{"topology port clash", "POST", "/api/v1/clusters", deploy("c2", "master_servers:\n  - host: 198.18.0.11\n    deploy_dir: /other/m\n    data_dir: /other/d\n    log_dir: /other/l\n"), nil, 409, "port 8261 on 198.18.0.11 is already used by cluster prod-a"},
		{"topology shell metacharacters", "POST", "/api/v1/clusters", deploy("c2", "global:\n  deploy_dir: \"/x; rm -rf /\"\nmaster_servers:\n  - host: 198.18.0.11\n    port: 9261\n"), nil, 400, "line 2"},
		{"cluster exists", "POST", "/api/v1/clusters", deploy("prod-a", topology), nil, 409, "cluster prod-a already exists"},
		{"package without version", "POST", "/api/v1/packages", pkg(), nil, 400, "name the package"},
		{"package bad file name", "POST", "/api/v1/packages?filename=dm.tar.gz", pkg(), nil, 400, "dm.tar.gz"},
		{"package with ../", "POST", "/api/v1/packages?version=v9.0.0", pkg(testenv.Entry{Name: "../evil", Body: "x"}), nil, 400, `"../evil"`},
		{"package with absolute path", "POST", "/api/v1/packages?version=v9.0.0", pkg(testenv.Entry{Name: "/etc/passwd", Body: "x"}), nil, 400, `"/etc/passwd"`},
		{"package with link out of the tree", "POST", "/api/v1/packages?version=v9.0.0", pkg(testenv.Entry{Name: "conf/evil", Typeflag: tar.TypeSymlink, Linkname: "../../etc/shadow"}), nil, 400, `"conf/evil"`},
		{"package with device", "POST", "/api/v1/packages?version=v9.0.0", pkg(testenv.Entry{Name: "bin/null", Typeflag: tar.TypeChar}), nil, 400, `"bin/null"`},
		{"package not gzip", "POST", "/api/v1/packages?version=v9.0.0", []byte("just some text, not an archive"), nil, 400, "not gzip"},
		{"package oversize", "POST", "/api/v1/packages?version=v9.0.0", pkg(testenv.Entry{Name: "others/big", Body: randomText(64 << 10)}), nil, 413, "limit"},
		{"package without dm-worker", "POST", "/api/v1/packages?version=v9.0.0", testenv.TarGz(t, testenv.Entry{Name: "bin/dm-master", Body: "x"}), nil, 400, "bin/dm-worker"},
		{"package uploaded twice", "POST", "/api/v1/packages?version=v8.1.0", testenv.DMPackage(t, "v8.1.0"), nil, 409, "already uploaded"},
		{"oversize JSON body", "POST", "/api/v1/machines", `{"host":"198.18.0.30","user":"tidb","password":"` + strings.Repeat("x", 70<<10) + `"}`, nil, 413, "limit"},
		{"no token", "POST", "/api/v1/machines", `{"host":"198.18.0.30","user":"tidb","password":"x"}`, []reqOpt{noToken()}, 401, "missing bearer token"},
		{"unknown route", "POST", "/api/v1/nothing", `{}`, nil, 404, "no route"},
		{"remove unknown machine", "DELETE", "/api/v1/machines/198.18.0.99", nil, nil, 404, "not registered"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := s.lastSeq()
			objects := countObjects(t, s)
			r := s.do(tc.method, tc.path, tc.body, tc.opts...)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d; body %s", r.status, tc.status, r.body)
			}
			if p := r.problem(t); !strings.Contains(p.Detail, tc.detail) {
				t.Fatalf("detail %q does not say %q", p.Detail, tc.detail)
			}
			if after := s.lastSeq(); after != before {
				t.Fatalf("refused request appended %d commits", after-before)
			}
			if got := countObjects(t, s); got != objects {
				t.Fatalf("refused request left %d package objects, had %d", got, objects)
			}
		})
	}
}

func randomText(n int) string {
	var b strings.Builder
	x := uint32(1)
	for b.Len() < n {
		x = x*1664525 + 1013904223
		fmt.Fprintf(&b, "%08x", x)
	}
	return b.String()
}

func countObjects(t testing.TB, s *stack) int {
	t.Helper()
	os, err := s.js.ObjectStore(t.Context(), pkgstore.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	list, err := os.List(t.Context())
	if err != nil && !strings.Contains(err.Error(), "no objects found") {
		t.Fatal(err)
	}
	return len(list)
}

// Acceptance 8: no password or private key in any event, log line or answer.
func TestSecretsNeverLeaveTheVault(t *testing.T) {
	s := newStack(t, pkgstore.DefaultLimits())
	password := "pw-Sup3r-S3cret-!x"
	privateKey := privateKeyPEM(t, "")
	var answers []string
	keep := func(r response) response { answers = append(answers, string(r.body)); return r }
	keep(s.do("POST", "/api/v1/machines", map[string]any{"host": "198.18.0.11", "user": "tidb", "host_key": testenv.HostKey, "password": password}))
	keep(s.do("POST", "/api/v1/machines", map[string]any{"host": "198.18.0.12", "user": "root", "host_key": testenv.HostKey, "private_key": privateKey}))
	// Refused registrations must not echo the secret either.
	keep(s.do("POST", "/api/v1/machines", map[string]any{"host": "198.18.0.11", "user": "tidb", "host_key": testenv.HostKey, "password": password}))
	keep(s.do("POST", "/api/v1/machines", map[string]any{"host": "bad host", "user": "tidb", "host_key": testenv.HostKey, "password": password}))
	keep(s.do("POST", "/api/v1/machines", map[string]any{"host": "198.18.0.13", "user": "tidb", "host_key": testenv.HostKey, "password": password, "private_key": privateKey}))
	for _, p := range []string{"/api/v1/machines", "/api/v1/machines/198.18.0.11", "/api/v1/machines/198.18.0.12", "/api/v1/operations"} {
		keep(s.do("GET", p, nil))
	}
	haystacks := map[string][]string{"API answers": answers, "event stream": s.rawStream(), "logs": {s.logs.String()}}
	if len(haystacks["event stream"]) != bootstrapCommits+6 { // two registrations: each a machine and its two claims
		t.Fatalf("expected %d commits, got %d", bootstrapCommits+6, len(haystacks["event stream"]))
	}
	lines := strings.Split(strings.TrimSpace(privateKey), "\n")
	var keyLines []string // the body of the key but its first line, the same in every OpenSSH key
	for _, l := range lines[2 : len(lines)-1] {
		if len(l) >= 20 {
			keyLines = append(keyLines, l)
		}
	}
	for where, texts := range haystacks {
		for _, text := range texts {
			for _, secret := range append([]string{password}, keyLines...) {
				if strings.Contains(text, secret) {
					t.Fatalf("a secret appears in the %s: %s", where, text)
				}
			}
		}
	}
	if !strings.Contains(s.logs.String(), "command committed") {
		t.Fatal("the log scan saw no command log lines; it would not catch a leak")
	}
}

func TestPackageUploadIsListed(t *testing.T) {
	s := newStack(t, pkgstore.DefaultLimits())
	body := testenv.DMPackage(t, "v8.1.0")
	s.mustAccept("POST", "/api/v1/packages", body, withHeader("Content-Disposition", `attachment; filename="dm-v8.1.0.tar.gz"`))
	var list struct{ Items []domain.Package }
	s.do("GET", "/api/v1/packages", nil).json(t, &list)
	if len(list.Items) != 1 {
		t.Fatalf("packages: %+v", list)
	}
	p := list.Items[0]
	if p.ID != "dm-v8.1.0-linux-amd64" || p.Version != "v8.1.0" || p.Size != int64(len(body)) || len(p.SHA256) != 64 ||
		!strings.Contains(strings.Join(p.Components, ","), "dm-master") {
		t.Fatalf("package: %+v", p)
	}
	if countObjects(t, s) != 1 {
		t.Fatal("package bytes not in the object store")
	}
}
