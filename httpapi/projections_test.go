package httpapi_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/httpapi"
	"github.com/dmgr/dmgr/internal/chserver"
	"github.com/dmgr/dmgr/internal/pkgstore"
	"github.com/dmgr/dmgr/internal/secrets"
	"github.com/dmgr/dmgr/internal/service"
	"github.com/dmgr/dmgr/internal/testenv"
	"github.com/dmgr/dmgr/projections"
)

// projected is the API with its queries served from ClickHouse, a real
// projector feeding it, and, for comparison, the same API serving the
// queries from the event store.
type projected struct {
	*stack
	ch       *chserver.Server
	proj     *projections.Store
	plainURL string // the API without projections, on the same service
	svc      *service.Service
}

func newProjectedStack(t *testing.T) *projected {
	t.Helper()
	testenv.RequireClickHouse(t)
	ctx := testenv.Context(t, 5*time.Minute)
	ch, err := chserver.Start(ctx, chserver.Options{Dir: t.TempDir(), Log: zerolog.Nop()})
	if err != nil {
		t.Fatalf("start clickhouse: %v", err)
	}
	t.Cleanup(func() { _ = ch.Stop() })
	n := testenv.NATS(t)
	_, js := testenv.JetStream(t, n)
	store, err := eventstore.Open(ctx, js, eventstore.Config{Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	vault, err := secrets.Open(ctx, js, bytes.Repeat([]byte{7}, secrets.KeySize), 1)
	if err != nil {
		t.Fatal(err)
	}
	pkgs, err := pkgstore.Open(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	idem, err := httpapi.OpenIdempotency(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log := zerolog.New(logs).Level(zerolog.InfoLevel)
	passwords, err := secrets.OpenPasswords(ctx, js, bytes.Repeat([]byte{7}, secrets.KeySize), 1)
	if err != nil {
		t.Fatal(err)
	}
	svc := service.New(service.Config{Store: store, Vault: vault, Packages: pkgs, PackageLimits: pkgstore.DefaultLimits(), Log: log, Passwords: passwords})
	svc.StartDirectory()
	t.Cleanup(svc.Close)
	if err := svc.Bootstrap(ctx, httpapi.DefaultAdminUser, adminPassword); err != nil {
		t.Fatal(err)
	}
	conn, err := projections.Dial(ch.Addr(), ch.Credentials())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	proj, err := projections.New(conn, projections.Options{JS: js, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = projections.NewProjector(projections.ProjectorConfig{Store: proj, JS: js, Events: store, MaxBackoff: time.Second, Log: log}).Run(pctx)
	}()
	t.Cleanup(func() { cancel(); <-done })

	h := httpapi.Handler(httpapi.Config{Service: svc, Idempotency: idem, AdminToken: token, MaxJSONBody: 64 << 10, Log: log,
		Projections: proj, ProjectionWait: 5 * time.Second})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	plain := httptest.NewServer(httpapi.Handler(httpapi.Config{Service: svc, AdminToken: token, Log: log}))
	t.Cleanup(plain.Close)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", tail(logs.String(), 6000))
		}
	})
	return &projected{stack: &stack{t: t, url: srv.URL, js: js, store: store, logs: logs, client: srv.Client()},
		ch: ch, proj: proj, plainURL: plain.URL, svc: svc}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func minSeq(seq uint64) reqOpt { return withHeader(httpapi.HeaderMinSeq, strconv.FormatUint(seq, 10)) }

// fromEventStore sends the same GET to the API that serves queries from
// the event store.
func (p *projected) fromEventStore(path string) response {
	p.t.Helper()
	s := *p.stack
	s.url = p.plainURL
	return s.do("GET", path, nil)
}

// countsMatch checks that ClickHouse has as many events as the stream
// and the audit trail shows each once.
func (p *projected) countsMatch() int {
	p.t.Helper()
	if r := p.do("GET", "/api/v1/audit?limit=1", nil); r.status != 200 { // waits for every commit so far
		p.t.Fatalf("audit: %d %s", r.status, r.body)
	}
	st, err := p.store.LoadFilter(context.Background(), eventstore.AllSubjects)
	if err != nil {
		p.t.Fatal(err)
	}
	got, err := p.proj.EventCount(context.Background())
	if err != nil {
		p.t.Fatal(err)
	}
	if got != uint64(len(st.Events)) {
		p.t.Fatalf("ClickHouse has %d events, the stream %d", got, len(st.Events))
	}
	seen := map[string]bool{}
	path := "/api/v1/audit?limit=37"
	for {
		var page projections.AuditPage
		r := p.do("GET", path, nil)
		if r.status != 200 {
			p.t.Fatalf("GET %s: %d %s", path, r.status, r.body)
		}
		r.json(p.t, &page)
		for _, e := range page.Events {
			k := fmt.Sprintf("%d.%d", e.Seq, e.Index)
			if seen[k] {
				p.t.Fatalf("the audit trail shows event %s twice", k)
			}
			seen[k] = true
		}
		if page.NextCursor == "" {
			break
		}
		path = "/api/v1/audit?limit=37&cursor=" + url.QueryEscape(page.NextCursor)
	}
	if len(seen) != len(st.Events) {
		p.t.Fatalf("the audit trail shows %d events, the stream has %d", len(seen), len(st.Events))
	}
	return len(st.Events)
}

// The queries served from ClickHouse answer byte for byte as the ones
// served from the event store.
func TestQueriesFromProjectionsAnswerAsFromTheEventStore(t *testing.T) {
	p := newProjectedStack(t)
	p.fixtures()
	acc := p.mustAccept("POST", "/api/v1/clusters", map[string]string{"name": "prod-a", "version": "v8.1.0", "topology": topology})
	var op domain.OperationView
	p.do("GET", "/api/v1/operations/"+acc.OperationID, nil, minSeq(acc.CommitSeq)).json(t, &op)
	for i, st := range op.Steps {
		if i == 5 {
			break
		}
		if _, _, err := p.svc.ReportStep(context.Background(), "prod-a", domain.StepReport{Operation: op.ID, Step: st.ID, Attempt: 1, Agent: "a1"}, 0); err != nil {
			t.Fatal(err)
		}
		if _, _, err := p.svc.ReportStep(context.Background(), "prod-a", domain.StepReport{Operation: op.ID, Step: st.ID, Attempt: 1, Agent: "a1",
			Finished: true, OK: i%2 == 0, ExitCode: 2, Error: map[bool]string{true: "", false: "boom"}[i%2 == 0], DurationMS: 42}, 0); err != nil {
			t.Fatal(err)
		}
	}
	p.mustAccept("POST", "/api/v1/machines", map[string]any{"host": "198.18.0.14", "user": "tidb", "host_key": testenv.HostKey, "password": "x"})
	p.mustAccept("DELETE", "/api/v1/machines/198.18.0.14", nil)
	paths := []string{"/api/v1/machines", "/api/v1/machines/198.18.0.11", "/api/v1/machines/198.18.0.14", "/api/v1/packages",
		"/api/v1/clusters", "/api/v1/clusters/prod-a", "/api/v1/clusters/nope", "/api/v1/operations",
		"/api/v1/operations/" + acc.OperationID, "/api/v1/operations/nope"}
	for _, path := range paths {
		got := p.do("GET", path, nil) // no header: waits for everything committed before
		want := p.fromEventStore(path)
		if got.status != want.status || (got.status == 200 && string(got.body) != string(want.body)) {
			t.Fatalf("GET %s from ClickHouse: %d\n%s\nfrom the event store: %d\n%s", path, got.status, got.body, want.status, want.body)
		}
		if got.status == 404 && got.problem(t).Code != domain.NotFound {
			t.Fatalf("GET %s: %s", path, got.body)
		}
		if got.status == 200 && got.header.Get(httpapi.HeaderSeq) == "" {
			t.Fatalf("GET %s: no %s", path, httpapi.HeaderSeq)
		}
	}
	p.countsMatch()
}

// Acceptance 3: a command followed by a GET with its commit_seq sees its
// effect, 100 times.
func TestReadYourWritesHundredTimes(t *testing.T) {
	p := newProjectedStack(t)
	p.fixtures()
	for i := 0; i < 100; i++ {
		host := fmt.Sprintf("198.18.1.%d", i+1)
		acc := p.mustAccept("POST", "/api/v1/machines", map[string]any{"host": host, "user": "tidb", "host_key": testenv.HostKey, "password": "pw"})
		r := p.do("GET", "/api/v1/machines/"+host, nil, minSeq(acc.CommitSeq))
		var m domain.Machine
		if r.status != 200 {
			t.Fatalf("iteration %d: GET machine %s with %s %d: %d %s", i, host, httpapi.HeaderMinSeq, acc.CommitSeq, r.status, r.body)
		}
		r.json(t, &m)
		if m.Host != host || m.Status != domain.MachineStatusRegistered {
			t.Fatalf("iteration %d: machine %+v", i, m)
		}
		if seq, _ := strconv.ParseUint(r.header.Get(httpapi.HeaderSeq), 10, 64); seq < acc.CommitSeq {
			t.Fatalf("iteration %d: answered at seq %d, before the command's %d", i, seq, acc.CommitSeq)
		}
		var op domain.OperationView
		p.do("GET", "/api/v1/operations/"+acc.OperationID, nil, minSeq(acc.CommitSeq)).json(t, &op)
		if op.Kind != "register-machine" || op.Status != "succeeded" || op.CommitSeq != acc.CommitSeq {
			t.Fatalf("iteration %d: operation %+v", i, op)
		}
		var page projections.AuditPage
		p.do("GET", "/api/v1/audit?limit=1&machine="+host, nil, minSeq(acc.CommitSeq)).json(t, &page)
		if len(page.Events) != 1 || page.Events[0].Seq != acc.CommitSeq {
			t.Fatalf("iteration %d: audit %+v", i, page)
		}
		if i%10 == 9 {
			// A removal, then the list without the header: a query waits for
			// everything committed before it.
			p.mustAccept("DELETE", "/api/v1/machines/"+host, nil)
			if r := p.do("GET", "/api/v1/machines", nil); strings.Contains(string(r.body), `"`+host+`"`) {
				t.Fatalf("iteration %d: removed machine %s still listed", i, host)
			}
		}
	}
	// X-Dmgr-Min-Seq: 0 reads without waiting; a value from the future
	// waits for the bound and answers 503 with what to do.
	if r := p.do("GET", "/api/v1/machines", nil, minSeq(0)); r.status != 200 {
		t.Fatalf("min seq 0: %d %s", r.status, r.body)
	}
	began := time.Now()
	r := p.do("GET", "/api/v1/clusters", nil, minSeq(p.lastSeq()+1000))
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" || !strings.Contains(r.problem(t).Detail, "have not reached commit_seq") {
		t.Fatalf("min seq in the future: %d %s", r.status, r.body)
	}
	if d := time.Since(began); d < 4*time.Second {
		t.Fatalf("answered after %s, before the 5 s bound", d)
	}
	for _, bad := range []string{"-1", "x", "1e3", "1.0", "18446744073709551616"} {
		if r := p.do("GET", "/api/v1/machines", nil, withHeader(httpapi.HeaderMinSeq, bad)); r.status != 400 {
			t.Fatalf("%s %q: %d %.300s", httpapi.HeaderMinSeq, bad, r.status, r.body)
		}
	}
	p.countsMatch()
}

// Acceptance 4 over HTTP: hostile values in every parameter are data or a
// 400 that says what is wrong; nothing else happens.
func TestAuditParametersOverHTTP(t *testing.T) {
	p := newProjectedStack(t)
	p.fixtures()
	n := p.countsMatch()
	hostile := []string{`x' OR '1'='1`, `'; DROP TABLE dmgr.events_g1; --`, `x') OR ('1'='1`, `\'`, "a\x00b", `%27`, `1 OR 1=1`,
		`) UNION ALL SELECT * FROM system.tables --`, "x\n'", strings.Repeat("A", 1000)}
	for _, v := range hostile {
		for _, param := range []string{"cluster", "machine", "actor", "operation", "type"} {
			path := "/api/v1/audit?" + param + "=" + url.QueryEscape(v)
			r := p.do("GET", path, nil)
			var page projections.AuditPage
			if r.status != 200 {
				t.Fatalf("GET %s: %d %s", path, r.status, r.body)
			}
			r.json(t, &page)
			if len(page.Events) != 0 {
				t.Fatalf("GET %s matched %d events", path, len(page.Events))
			}
		}
		for _, param := range []string{"since", "until", "limit", "cursor"} {
			path := "/api/v1/audit?" + param + "=" + url.QueryEscape(v)
			if r := p.do("GET", path, nil); r.status != 400 || r.problem(t).Code != domain.Invalid || !strings.Contains(r.problem(t).Detail, param) {
				t.Fatalf("GET %s: %d %s", path, r.status, r.body)
			}
		}
	}
	for _, path := range []string{"/api/v1/audit?clsuter=prod", "/api/v1/audit?limit=0", "/api/v1/audit?limit=1001",
		"/api/v1/audit?since=2030-01-01T00:00:00Z&until=2020-01-01T00:00:00Z", "/api/v1/audit?actor=a&actor=b",
		"/api/v1/audit?cluster=" + strings.Repeat("x", 1025)} {
		if r := p.do("GET", path, nil); r.status != 400 {
			t.Fatalf("GET %s: %d %s", path, r.status, r.body)
		}
	}
	// Real filters work over HTTP.
	var page projections.AuditPage
	p.do("GET", "/api/v1/audit?type=MachineRegistered,PackageUploaded&actor=admin&since=2000-01-01T00:00:00Z&limit=2", nil).json(t, &page)
	if len(page.Events) != 2 || page.NextCursor == "" || page.Events[0].Type != domain.TypePackageUploaded {
		t.Fatalf("filtered audit: %+v", page)
	}
	if r := p.do("GET", "/api/v1/audit", nil, noToken()); r.status != 401 {
		t.Fatalf("audit without a token: %d", r.status)
	}
	if got := p.countsMatch(); got != n {
		t.Fatalf("events changed from %d to %d", n, got)
	}
}

// GET /metrics needs no token and has the projection metrics.
func TestMetricsOfTheProjections(t *testing.T) {
	p := newProjectedStack(t)
	p.fixtures()
	p.countsMatch()
	r := p.do("GET", "/metrics", nil, noToken())
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("metrics: %d %s", r.status, r.header)
	}
	for _, want := range []string{"dmgr_projection_up 1\n", "dmgr_projection_lag_events 0\n", "dmgr_projection_lag_seconds 0\n",
		"dmgr_projection_batch_size_bucket{le=\"+Inf\"} ", "dmgr_projection_insert_errors_total 0\n", "# TYPE dmgr_projection_events_total counter\n",
		"dmgr_projection_leader 1\n", "dmgr_projection_delay_seconds_count "} {
		if !strings.Contains(string(r.body), want) {
			t.Fatalf("metrics have no %q:\n%s", want, r.body)
		}
	}
}

// Acceptance 2: ClickHouse stopped for 30 s while commands keep arriving:
// no command fails, queries answer 503 meanwhile, and once it is back the
// projections catch up and the counts match.
func TestClickHouseDownThirtySecondsWhileCommandsArrive(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 30 s")
	}
	p := newProjectedStack(t)
	p.fixtures()
	p.countsMatch()

	var mu sync.Mutex
	var failed []string
	accepted := 0
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			r := p.do("POST", "/api/v1/machines", map[string]any{"host": fmt.Sprintf("198.18.%d.%d", 2+i/250, i%250+1),
				"user": "tidb", "host_key": testenv.HostKey, "password": "pw"})
			mu.Lock()
			if r.status != http.StatusAccepted {
				failed = append(failed, fmt.Sprintf("%d %s", r.status, r.body))
			} else {
				accepted++
			}
			mu.Unlock()
		}
	}()
	time.Sleep(500 * time.Millisecond)
	if err := p.ch.Stop(); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	time.Sleep(2 * time.Second)
	if r := p.do("GET", "/api/v1/machines", nil); r.status != http.StatusServiceUnavailable || r.problem(t).Code != domain.Unavailable {
		t.Fatalf("GET with ClickHouse down: %d %s", r.status, r.body)
	}
	if r := p.do("GET", "/metrics", nil, noToken()); !strings.Contains(string(r.body), "dmgr_projection_up 0\n") {
		t.Fatalf("metrics with ClickHouse down:\n%s", r.body)
	}
	// Commands sent while ClickHouse is certainly down (the query above
	// answered 503) are accepted and committed: they never wait on the
	// projections.
	for i := range 10 {
		host := fmt.Sprintf("198.18.200.%d", i+1)
		r := p.do("POST", "/api/v1/machines", map[string]any{"host": host, "user": "tidb", "host_key": testenv.HostKey, "password": "pw"})
		if r.status != http.StatusAccepted {
			t.Fatalf("register %s with ClickHouse down: %d %s", host, r.status, r.body)
		}
		if _, err := p.svc.Machine(testenv.Context(t, 10*time.Second), host); err != nil {
			t.Fatalf("machine %s accepted with ClickHouse down is not in the event store: %v", host, err)
		}
	}
	time.Sleep(30*time.Second - time.Since(down))
	if err := p.ch.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Logf("ClickHouse was down for %s", time.Since(down).Round(time.Millisecond))
	time.Sleep(time.Second)
	close(stop)
	<-done
	mu.Lock()
	if len(failed) > 0 {
		t.Fatalf("%d commands failed while ClickHouse was down: %v", len(failed), failed[0])
	}
	// How many arrived depends on the machine's speed, not on the
	// behaviour under test; command latency is measured by benchmarks.
	t.Logf("%d commands accepted during the test", accepted)
	mu.Unlock()
	// Back: the projections catch up; a query waits for them.
	r := p.do("GET", "/api/v1/machines", nil)
	if r.status != 200 {
		t.Fatalf("GET after ClickHouse came back: %d %s", r.status, r.body)
	}
	p.countsMatch()
	if got, want := p.do("GET", "/api/v1/machines", nil), p.fromEventStore("/api/v1/machines"); string(got.body) != string(want.body) {
		t.Fatalf("machines after the outage differ from the event store's")
	}
	m := p.do("GET", "/metrics", nil, noToken())
	if strings.Contains(string(m.body), "dmgr_projection_insert_errors_total 0\n") || !strings.Contains(string(m.body), "dmgr_projection_lag_events 0\n") {
		t.Fatalf("metrics after the outage:\n%s", m.body)
	}
}
