package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/httpapi"
	"github.com/dmgr/dmgr/internal/pkgstore"
	"github.com/dmgr/dmgr/internal/secrets"
	"github.com/dmgr/dmgr/internal/service"
	"github.com/dmgr/dmgr/internal/testenv"
)

const token = "test-admin-token-0123456789"

// bootstrapCommits is what a new stack's bootstrap commits: the default
// group with the claim of its name, and the super admin.
const bootstrapCommits = 3

// adminPassword is the bootstrap super admin's password in the tests.
const adminPassword = "admin-password-0123"

// stack is the API on a real embedded NATS JetStream server.
type stack struct {
	t      testing.TB
	url    string
	js     jetstream.JetStream
	store  *eventstore.Store
	svc    *service.Service
	vault  *secrets.Vault
	logs   *syncBuffer
	client *http.Client
	// handler is the router the server serves, to walk its routes.
	handler http.Handler
	// clock is the servers' clock: real time, moved on by Add.
	clock *testClock
}

// testClock is time.Now moved on by what Add added.
type testClock struct{ off atomic.Int64 }

func (c *testClock) Now() time.Time      { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *testClock) Add(d time.Duration) { c.off.Add(int64(d)) }

// syncBuffer is the log buffer the stack tests share with their logger.
type syncBuffer = testenv.Buffer

func newStack(t testing.TB, lim pkgstore.Limits) *stack {
	t.Helper()
	return newStackWith(t, lim, nil)
}

// vaultKey is the master key of the stacks' vaults.
var vaultKey = bytes.Repeat([]byte{7}, secrets.KeySize)

// newStackWith is newStack with the service's and the API's configuration
// edited by edit (nil: none).
func newStackWith(t testing.TB, lim pkgstore.Limits, edit func(*service.Config, *httpapi.Config)) *stack {
	t.Helper()
	n := testenv.NATS(t)
	_, js := testenv.JetStream(t, n)
	ctx := testenv.Context(t, time.Minute)
	store, err := eventstore.Open(ctx, js, eventstore.Config{Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	vault, err := secrets.Open(ctx, js, vaultKey, 1)
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
	passwords, err := secrets.OpenPasswords(ctx, js, vaultKey, 1)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log := zerolog.New(logs).Level(zerolog.DebugLevel)
	clock := &testClock{}
	sc := service.Config{Store: store, Vault: vault, Packages: pkgs, PackageLimits: lim, Log: log, Passwords: passwords, Now: clock.Now}
	hc := httpapi.Config{Idempotency: idem, AdminToken: token, MaxJSONBody: 64 << 10, Log: log, Now: clock.Now}
	if edit != nil {
		edit(&sc, &hc)
	}
	svc := service.New(sc)
	svc.StartDirectory()
	t.Cleanup(svc.Close)
	if err := svc.Bootstrap(ctx, httpapi.DefaultAdminUser, adminPassword); err != nil {
		t.Fatal(err)
	}
	hc.Service = svc
	h := httpapi.Handler(hc)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &stack{t: t, url: srv.URL, js: js, store: store, svc: svc, vault: vault, logs: logs, client: srv.Client(), handler: h, clock: clock}
}

// response is an answer with its body read.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

func (r response) problem(t testing.TB) httpapi.Problem {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("content type %q, want application/problem+json (status %d, body %s)", ct, r.status, r.body)
	}
	var p httpapi.Problem
	r.json(t, &p)
	return p
}

type reqOpt func(*http.Request)

func withHeader(k, v string) reqOpt { return func(r *http.Request) { r.Header.Set(k, v) } }

// addHeader adds a value to a header (to send it more than once).
func addHeader(k, v string) reqOpt { return func(r *http.Request) { r.Header.Add(k, v) } }

// noContentType sends the body without a Content-Type.
func noContentType() reqOpt { return func(r *http.Request) { r.Header.Del("Content-Type") } }

func noToken() reqOpt { return func(r *http.Request) { r.Header.Del("Authorization") } }

// as sends the request with bearer token tok instead of the admin token.
func as(tok string) reqOpt {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
}

func (s *stack) do(method, path string, body any, opts ...reqOpt) response {
	s.t.Helper()
	var rd io.Reader
	ct := ""
	switch b := body.(type) {
	case nil:
	case []byte:
		rd, ct = bytes.NewReader(b), "application/gzip"
	case string:
		rd, ct = strings.NewReader(b), "application/json"
	default:
		j, err := json.Marshal(b)
		if err != nil {
			s.t.Fatal(err)
		}
		rd, ct = bytes.NewReader(j), "application/json"
	}
	req, err := http.NewRequestWithContext(context.Background(), method, s.url+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	for _, o := range opts {
		o(req)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// mustAccept sends a command and fails unless it is accepted.
func (s *stack) mustAccept(method, path string, body any, opts ...reqOpt) service.Accepted {
	s.t.Helper()
	r := s.do(method, path, body, opts...)
	if r.status != http.StatusAccepted {
		s.t.Fatalf("%s %s: status %d, body %s", method, path, r.status, r.body)
	}
	var acc service.Accepted
	r.json(s.t, &acc)
	if acc.OperationID == "" || acc.CommitSeq == 0 {
		s.t.Fatalf("%s %s: incomplete answer %s", method, path, r.body)
	}
	if loc := r.header.Get("Location"); loc != "/api/v1/operations/"+acc.OperationID {
		s.t.Fatalf("%s %s: Location %q", method, path, loc)
	}
	return acc
}

// lastSeq is the stream's last sequence.
func (s *stack) lastSeq() uint64 {
	s.t.Helper()
	seq, err := s.store.LastSeq(context.Background())
	if err != nil {
		s.t.Fatal(err)
	}
	return seq
}

// rawStream returns every commit message body and header in the stream.
func (s *stack) rawStream() []string {
	s.t.Helper()
	ctx := context.Background()
	st, err := s.js.Stream(ctx, eventstore.StreamName)
	if err != nil {
		s.t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	var out []string
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.LastSeq > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			s.t.Fatal(err)
		}
		out = append(out, string(m.Data)+"\n"+formatHeader(m.Header))
	}
	return out
}

func formatHeader(h map[string][]string) string {
	var b strings.Builder
	for k, vs := range h {
		b.WriteString(k + ": " + strings.Join(vs, ",") + "\n")
	}
	return b.String()
}

// fixtures registers three machines and uploads dm v8.1.0.
func (s *stack) fixtures() {
	s.t.Helper()
	for _, h := range []string{"198.18.0.11", "198.18.0.12", "198.18.0.13"} {
		s.mustAccept("POST", "/api/v1/machines", map[string]any{"host": h, "user": "tidb", "host_key": testenv.HostKey, "password": "pw-" + h})
	}
	s.mustAccept("POST", "/api/v1/packages?filename=dm-v8.1.0.tar.gz", testenv.DMPackage(s.t, "v8.1.0"))
}

const topology = `global:
  user: tidb
  deploy_dir: /dm/deploy
  data_dir: /dm/data
master_servers:
  - host: 198.18.0.11
  - host: 198.18.0.12
  - host: 198.18.0.13
worker_servers:
  - host: 198.18.0.11
  - host: 198.18.0.12
monitoring_servers:
  - host: 198.18.0.13
`

// vaultKeys lists the keys of the vault's KV bucket, read from JetStream
// itself (not through the vault).
func (s *stack) vaultKeys() []string {
	s.t.Helper()
	kv, err := s.js.KeyValue(s.t.Context(), secrets.Bucket)
	if err != nil {
		s.t.Fatal(err)
	}
	lister, err := kv.ListKeys(s.t.Context())
	if err != nil {
		s.t.Fatal(err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
