package httpapi_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
	"golang.org/x/crypto/ssh"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/httpapi"
	"github.com/dmgr/dmgr/internal/pkgstore"
	"github.com/dmgr/dmgr/internal/testenv"
)

// privateKeyPEM is a fresh ed25519 private key in OpenSSH form, encrypted
// with passphrase when it is not empty.
func privateKeyPEM(t testing.TB, passphrase string) string {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var block *pem.Block
	if passphrase == "" {
		block, err = ssh.MarshalPrivateKey(priv, "dmgr test")
	} else {
		block, err = ssh.MarshalPrivateKeyWithPassphrase(priv, "dmgr test", []byte(passphrase))
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(block))
}

// snapshot is what a refused request must leave as it was: the event
// stream, the vault's keys, the package objects and the remembered
// idempotency keys.
type snapshot struct {
	seq     uint64
	vault   []string
	objects int
	idem    []string
}

func (s *stack) snapshot() snapshot {
	s.t.Helper()
	return snapshot{seq: s.lastSeq(), vault: s.vaultKeys(), objects: countObjects(s.t, s), idem: s.kvKeys(httpapi.IdempotencyBucket)}
}

func (s *stack) kvKeys(bucket string) []string {
	s.t.Helper()
	kv, err := s.js.KeyValue(s.t.Context(), bucket)
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
	slices.Sort(keys)
	return keys
}

func (a snapshot) same(b snapshot) bool {
	return a.seq == b.seq && slices.Equal(a.vault, b.vault) && a.objects == b.objects && slices.Equal(a.idem, b.idem)
}

// inputCase is one request that must be refused: its status and a piece of
// its problem detail; it must change nothing.
type inputCase struct {
	name         string
	method, path string
	body         any
	opts         []reqOpt
	status       int
	detail       string
}

func runInputCases(t *testing.T, s *stack, cases []inputCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := s.snapshot()
			r := s.do(tc.method, tc.path, tc.body, tc.opts...)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d; body %s", r.status, tc.status, r.body)
			}
			if p := r.problem(t); !strings.Contains(p.Detail, tc.detail) {
				t.Fatalf("detail %q does not say %q", p.Detail, tc.detail)
			}
			if after := s.snapshot(); !after.same(before) {
				t.Fatalf("a refused request changed something: before %+v, after %+v", before, after)
			}
		})
	}
}

// deployedStack is a stack with three machines, dm v8.1.0 and the cluster
// prod-a (deploy requested), and the id of its deploy operation.
func deployedStack(t *testing.T) (*stack, string) {
	s := newStack(t, pkgstore.DefaultLimits())
	s.fixtures()
	acc := s.mustAccept("POST", "/api/v1/clusters", map[string]string{"name": "prod-a", "version": "v8.1.0", "topology": topology})
	return s, acc.OperationID
}

// Input rules, JSON bodies: duplicate keys, unknown fields, keys that
// differ from a field only in case, and values of the wrong type are
// refused with 400 naming the key, and change nothing.
func TestStrictJSONIsRefusedAndChangesNothing(t *testing.T) {
	s, _ := deployedStack(t)
	hk := `"host_key":"` + testenv.HostKey + `"`
	machine := func(fields string) string { return `{` + fields + `,"user":"tidb",` + hk + `}` }
	runInputCases(t, s, []inputCase{
		{"duplicate key", "POST", "/api/v1/machines", machine(`"host":"198.18.0.30","host":"198.18.0.31","password":"pw"`), nil, 400, `duplicate field "host"`},
		{"duplicate key, one written with an escape", "POST", "/api/v1/machines", machine(`"host":"198.18.0.30","ho\u0073t":"198.18.0.31","password":"pw"`), nil, 400, `duplicate field "host"`},
		{"duplicate secret", "POST", "/api/v1/machines", machine(`"host":"198.18.0.30","password":"a","password":"b"`), nil, 400, `duplicate field "password"`},
		{"duplicate nested key", "POST", "/api/v1/machines", machine(`"host":"198.18.0.30","password":"pw","labels":{"zone":"a","zone":"b"}`), nil, 400, `duplicate field "labels.zone"`},
		{"duplicate key of a deploy", "POST", "/api/v1/clusters", `{"name":"c9","name":"c10","version":"v8.1.0","topology":"x"}`, nil, 400, `duplicate field "name"`},
		{"duplicate key of a reload's configs", "POST", "/api/v1/clusters/prod-a/reload", `{"server_configs":{"master":{"a":1,"a":2}}}`, nil, 400, `duplicate field "server_configs.master.a"`},
		{"key differing in case", "POST", "/api/v1/machines", machine(`"Host":"198.18.0.30","password":"pw"`), nil, 400, `unknown field "Host": field names are case-sensitive; did you mean "host"?`},
		{"key in upper case", "POST", "/api/v1/machines", machine(`"host":"198.18.0.30","PASSWORD":"pw"`), nil, 400, `unknown field "PASSWORD"`},
		{"nested key differing in case", "POST", "/api/v1/machines", machine(`"host":"198.18.0.30","password":"pw","labels":{"Zone":"a"}`), nil, 400, `unknown field "labels.Zone"`},
		{"deploy key differing in case", "POST", "/api/v1/clusters", `{"Name":"c9","version":"v8.1.0","topology":"x"}`, nil, 400, `unknown field "Name"`},
		{"unknown field of a scale-in", "POST", "/api/v1/clusters/prod-a/scale-in", `{"nodes":["198.18.0.11:8262"],"forcee":true}`, nil, 400, `unknown field "forcee"`},
		{"unknown field of a stop", "POST", "/api/v1/clusters/prod-a/stop", `{"role":["dm-master"]}`, nil, 400, `unknown field "role"`},
		{"password of the wrong type", "POST", "/api/v1/machines", machine(`"host":"198.18.0.30","password":12345`), nil, 400, `field "password": want a string, got JSON number`},
		{"password as an object", "POST", "/api/v1/machines", machine(`"host":"198.18.0.30","password":{"value":"pw"}`), nil, 400, `field "password": want a string, got JSON object`},
		{"private key as an array", "POST", "/api/v1/machines", machine(`"host":"198.18.0.30","private_key":["k"]`), nil, 400, `field "private_key": want a string`},
		{"a body that is an array", "POST", "/api/v1/machines", `[` + machine(`"host":"198.18.0.30","password":"pw"`) + `]`, nil, 400, "not a JSON object"},
		{"a body that is null", "POST", "/api/v1/clusters", `null`, nil, 400, "not a JSON object"},
		{"invalid UTF-8", "POST", "/api/v1/machines", machine(`"host":"198.18.0.30","password":"p` + "\xff" + `w"`), nil, 400, "malformed JSON at byte"},
		{"a second object", "POST", "/api/v1/machines", machine(`"host":"198.18.0.30","password":"pw"`) + ` {}`, nil, 400, "data after the JSON object"},
	})
}

// Input rules, media types: exactly application/json (optionally with
// charset=utf-8) for JSON bodies, application/gzip for packages; anything
// else is 415 and changes nothing.
func TestMediaTypesAreMatchedExactly(t *testing.T) {
	s, opID := deployedStack(t)
	machine := `{"host":"198.18.0.30","user":"tidb","password":"pw","host_key":"` + testenv.HostKey + `"}`
	pkg := testenv.DMPackage(t, "v9.0.0")
	ct := func(v string) []reqOpt { return []reqOpt{withHeader("Content-Type", v)} }
	runInputCases(t, s, []inputCase{
		{"application/jsonx", "POST", "/api/v1/machines", machine, ct("application/jsonx"), 415, `Content-Type "application/jsonx" is not supported: send Content-Type: application/json`},
		{"application/json-foo", "POST", "/api/v1/machines", machine, ct("application/json-foo"), 415, `"application/json-foo" is not supported`},
		{"a JSON prefix with a suffix", "POST", "/api/v1/machines", machine, ct("application/json+evil"), 415, "is not supported"},
		{"another charset", "POST", "/api/v1/machines", machine, ct("application/json; charset=latin1"), 415, "is not supported"},
		{"another parameter", "POST", "/api/v1/machines", machine, ct("application/json; v=2"), 415, "is not supported"},
		{"a malformed media type", "POST", "/api/v1/machines", machine, ct("application/json; charset"), 415, "is not supported"},
		{"text/plain", "POST", "/api/v1/clusters", `{"name":"c9","version":"v8.1.0","topology":"x"}`, ct("text/plain"), 415, "is not supported"},
		{"a form", "POST", "/api/v1/machines", machine, ct("application/x-www-form-urlencoded"), 415, "is not supported"},
		{"no Content-Type", "POST", "/api/v1/machines", machine, []reqOpt{noContentType()}, 415, "Content-Type (none) is not supported"},
		{"two Content-Types", "POST", "/api/v1/machines", machine, []reqOpt{addHeader("Content-Type", "application/json")}, 415, "is not supported"},
		{"JSON on a body-less command", "POST", "/api/v1/clusters/prod-a/start", `{}`, ct("application/jsonx"), 415, "is not supported"},
		{"JSON to the package route", "POST", "/api/v1/packages?version=v9.0.0", pkg, ct("application/json"), 415, "send the package as Content-Type: application/gzip"},
		{"application/x-gzip", "POST", "/api/v1/packages?version=v9.0.0", pkg, ct("application/x-gzip"), 415, `"application/x-gzip" is not supported`},
		{"application/gzip with a parameter", "POST", "/api/v1/packages?version=v9.0.0", pkg, ct("application/gzip; q=1"), 415, "is not supported"},
		{"application/gzipped", "POST", "/api/v1/packages?version=v9.0.0", pkg, ct("application/gzipped"), 415, "is not supported"},
		{"a package without Content-Type", "POST", "/api/v1/packages?version=v9.0.0", pkg, []reqOpt{noContentType()}, 415, "(none)"},
		{"a body on a route that takes none", "DELETE", "/api/v1/machines/198.18.0.11", `{}`, nil, 400, "DELETE /api/v1/machines/198.18.0.11 takes no request body"},
		{"a body on a retry", "POST", "/api/v1/operations/" + opID + "/retry", `{"force":true}`, nil, 400, "takes no request body"},
	})
}

// Input rules, query parameters: unknown or repeated ones, and bad values
// of checked ones, are 400 (a command is not run as if they were absent).
func TestQueryParametersAreAllowListed(t *testing.T) {
	s, opID := deployedStack(t)
	deploy := map[string]string{"name": "c9", "version": "v8.1.0", "topology": topology}
	pkg := testenv.DMPackage(t, "v9.0.0")
	key := withHeader("Idempotency-Key", "query-case")
	runInputCases(t, s, []inputCase{
		{"a misspelt dry_run", "POST", "/api/v1/clusters?dryrun=true", deploy, nil, 400, `unknown query parameter "dryrun": this route takes dry_run`},
		{"a misspelt dry_run with an Idempotency-Key", "POST", "/api/v1/clusters?dryrun=true", deploy, []reqOpt{key}, 400, `unknown query parameter "dryrun"`},
		{"dry_run twice", "POST", "/api/v1/clusters?dry_run=true&dry_run=false", deploy, nil, 400, "query parameter dry_run is given 2 times: give it once"},
		{"dry_run not a boolean", "POST", "/api/v1/clusters?dry_run=yes", deploy, nil, 400, `query parameter dry_run="yes": want true or false`},
		{"dry_run without a value", "POST", "/api/v1/clusters/prod-a/stop?dry_run", nil, nil, 400, `dry_run=""`},
		{"retain_data twice", "DELETE", "/api/v1/clusters/prod-a?retain_data=true&retain_data=false", nil, nil, 400, "retain_data is given 2 times"},
		{"a misspelt parameter of a destroy", "DELETE", "/api/v1/clusters/prod-a?retian_data=true", nil, nil, 400, `unknown query parameter "retian_data": this route takes retain_data, force, dry_run`},
		{"version twice on a package", "POST", "/api/v1/packages?version=v9.0.0&version=v9.0.1", pkg, nil, 400, "version is given 2 times"},
		{"an unknown parameter of a package", "POST", "/api/v1/packages?version=v9.0.0&os=linux", pkg, nil, 400, `unknown query parameter "os"`},
		{"a parameter on a route that takes none", "GET", "/api/v1/machines/198.18.0.11?host=198.18.0.11", nil, nil, 400, `unknown query parameter "host": this route takes no query parameters`},
		{"a parameter no list takes", "GET", "/api/v1/agents?host=198.18.0.11", nil, nil, 400, `unknown query parameter "host": this route takes limit, cursor`},
		{"a limit past the largest page", "GET", "/api/v1/agents?limit=1001", nil, nil, 400, `query parameter limit="1001": want a whole number from 1 to 1000`},
		{"a cursor that is not one", "GET", "/api/v1/agents?cursor=not-a-cursor", nil, nil, 400, `cursor is invalid`},
		{"a filter a list does not take", "GET", "/api/v1/machines?host=198.18.0.11", nil, nil, 400, `unknown query parameter "host": this route takes limit, cursor, label`},
		{"a list's limit twice", "GET", "/api/v1/operations?limit=1&limit=2", nil, nil, 400, "limit is given 2 times"},
		{"a limit past the maximum", "GET", "/api/v1/clusters?limit=1001", nil, nil, 400, "limit=\"1001\": want a whole number from 1 to 1000"},
		{"status twice", "GET", "/api/v1/clusters/prod-a?status=live&status=live", nil, nil, 400, "status is given 2 times"},
		{"status other than live", "GET", "/api/v1/clusters/prod-a?status=dead", nil, nil, 400, `status="dead": use live`},
		{"audit type twice", "GET", "/api/v1/audit?type=MachineRegistered&type=PackageUploaded", nil, nil, 400, "type is given 2 times"},
		{"a parameter on a retry", "POST", "/api/v1/operations/" + opID + "/retry?force=true", nil, nil, 400, `unknown query parameter "force"`},
		{"a parameter of another route", "POST", "/api/v1/operations/" + opID + "/cancel?dry_run=true", nil, nil, 400, `unknown query parameter "dry_run"`},
		{"a malformed escape", "GET", "/api/v1/machines?a=%zz", nil, nil, 400, "malformed query string"},
		{"a semicolon separator", "GET", "/api/v1/clusters/prod-a?status=live;x=1", nil, nil, 400, "malformed query string"},
		{"an empty parameter name", "GET", "/api/v1/clusters?=1", nil, nil, 400, `unknown query parameter ""`},
		{"a parameter on /healthz", "GET", "/healthz?verbose=1", nil, []reqOpt{noToken()}, 400, `unknown query parameter "verbose"`},
		{"a parameter on /readyz", "GET", "/readyz?deep=true", nil, []reqOpt{noToken()}, 400, `unknown query parameter "deep"`},
		{"a parameter on /metrics", "GET", "/metrics?name=x", nil, []reqOpt{noToken()}, 400, `unknown query parameter "name"`},
	})
	// The refused requests ran nothing: prod-a is still deploying, c9 does
	// not exist.
	var c domain.Cluster
	s.do("GET", "/api/v1/clusters/prod-a", nil).json(t, &c)
	if c.Status != domain.ClusterStatusDeploying || len(c.Operations) != 1 {
		t.Fatalf("prod-a: %+v", c)
	}
	if r := s.do("GET", "/api/v1/clusters/c9", nil); r.status != http.StatusNotFound {
		t.Fatalf("c9: %d %s", r.status, r.body)
	}
}

// Input rules, path parameters: unescaped exactly once and validated.
func TestPathParametersAreUnescapedOnceAndValidated(t *testing.T) {
	s, opID := deployedStack(t)
	s.mustAccept("POST", "/api/v1/machines", map[string]any{"host": "fd00::11", "user": "tidb", "host_key": testenv.HostKey, "password": "pw"})
	runInputCases(t, s, []inputCase{
		{"an escaped ';' in a host", "DELETE", "/api/v1/machines/198.18.0.11%3Breboot", nil, nil, 400, `path parameter host: host "198.18.0.11;reboot" is invalid`},
		{"an escaped NUL in a host", "GET", "/api/v1/machines/198.18.0.11%00", nil, nil, 400, "path parameter host: host \"198.18.0.11\\x00\" is invalid"},
		{"an escaped space in a host", "DELETE", "/api/v1/machines/fd00%3A%3A11%20", nil, nil, 400, `host "fd00::11 " is invalid`},
		{"a host too long", "GET", "/api/v1/machines/" + strings.Repeat("a", 254), nil, nil, 400, "longer than 253 characters"},
		{"an escaped '/' in a cluster name", "GET", "/api/v1/clusters/prod%2Fa", nil, nil, 400, `path parameter name: cluster name "prod/a" is invalid`},
		{"a doubly escaped '/' is unescaped once", "DELETE", "/api/v1/clusters/prod-a%252F", nil, nil, 400, `cluster name "prod-a%2F" is invalid`},
		{"an escaped space in a cluster name", "POST", "/api/v1/clusters/prod%20a/stop", nil, nil, 400, `cluster name "prod a" is invalid`},
		{"a cluster name starting with '-'", "POST", "/api/v1/clusters/-prod/restart", nil, nil, 400, `cluster name "-prod" is invalid`},
		{"a cluster name too long", "GET", "/api/v1/clusters/" + strings.Repeat("c", 65), nil, nil, 400, "is invalid"},
		{"an operation id that is no UUID", "GET", "/api/v1/operations/nope", nil, nil, 400, `path parameter id: operation id "nope" is invalid`},
		{"an operation id in upper case", "POST", "/api/v1/operations/" + strings.ToUpper(opID) + "/cancel", nil, nil, 400, "operation id"},
		{"an escaped '..' as an operation id", "POST", "/api/v1/operations/%2e%2e/retry", nil, nil, 400, `operation id ".." is invalid`},
		{"an operation id with a query in escapes", "GET", "/api/v1/operations/" + opID + "%3Fx=1", nil, nil, 400, "operation id"},
	})
	// Escaped, valid parameters are the values they spell.
	var m domain.Machine
	r := s.do("GET", "/api/v1/machines/fd00%3A%3A11", nil)
	if r.status != 200 {
		t.Fatalf("escaped IPv6 host: %d %s", r.status, r.body)
	}
	r.json(t, &m)
	var c domain.Cluster
	if r := s.do("GET", "/api/v1/clusters/prod-%61", nil); r.status != 200 {
		t.Fatalf("escaped cluster name: %d %s", r.status, r.body)
	} else if r.json(t, &c); c.Name != "prod-a" || m.Host != "fd00::11" || m.Address != "fd00::11" {
		t.Fatalf("machine %+v, cluster %s", m, c.Name)
	}
	s.mustAccept("DELETE", "/api/v1/machines/fd00%3a%3A11", nil)
}

// Input rules, the bearer scheme: any case; anything else is 401.
func TestBearerSchemeIsCaseInsensitive(t *testing.T) {
	s := newStack(t, pkgstore.DefaultLimits())
	for _, scheme := range []string{"Bearer", "bearer", "BEARER", "bEaReR"} {
		if r := s.do("GET", "/api/v1/machines", nil, withHeader("Authorization", scheme+" "+token)); r.status != 200 {
			t.Errorf("%s <token>: %d %s", scheme, r.status, r.body)
		}
	}
	machine := map[string]any{"host": "198.18.0.30", "user": "tidb", "password": "pw", "host_key": testenv.HostKey}
	auth := func(v string) []reqOpt { return []reqOpt{withHeader("Authorization", v)} }
	runInputCases(t, s, []inputCase{
		{"Basic", "POST", "/api/v1/machines", machine, auth("Basic " + token), 401, "missing bearer token"},
		{"the scheme alone", "POST", "/api/v1/machines", machine, auth("Bearer"), 401, "missing bearer token"},
		{"the token alone", "POST", "/api/v1/machines", machine, auth(token), 401, "missing bearer token"},
		{"another scheme", "POST", "/api/v1/machines", machine, auth("Token " + token), 401, "missing bearer token"},
		{"a scheme with the bearer prefix", "POST", "/api/v1/machines", machine, auth("Bearerx " + token), 401, "missing bearer token"},
		{"a wrong token in lower case", "POST", "/api/v1/machines", machine, auth("bearer not-the-token"), 401, "invalid bearer token"},
		{"two Authorization headers", "POST", "/api/v1/machines", machine, []reqOpt{addHeader("Authorization", "Bearer "+token)}, 401, "missing bearer token"},
	})
}

// Input rules, request ids: a client's X-Request-Id is kept only when it
// is a UUID or at most 64 safe characters; the answer names the id used,
// and a command records it.
func TestRequestIDsAreBounded(t *testing.T) {
	s := newStack(t, pkgstore.DefaultLimits())
	u := uuid.NewString()
	cases := []struct {
		name, sent string
		twice      bool
		want       string // "" : a generated UUID
	}{
		{"none", "", false, ""},
		{"safe characters", "req-42.a_B", false, "req-42.a_B"},
		{"a UUID", u, false, u},
		{"a UUID in upper case", strings.ToUpper(u), false, u},
		{"a UUID in braces", "{" + u + "}", false, u},
		{"64 characters", strings.Repeat("r", 64), false, strings.Repeat("r", 64)},
		{"65 characters", strings.Repeat("r", 65), false, ""},
		{"900 KB", strings.Repeat("x", 900<<10), false, ""},
		{"a space", "a b", false, ""},
		{"markup", "<script>alert(1)</script>", false, ""},
		{"non-ASCII", "caf\u00e9", false, ""},
		{"sent twice", "req-1", true, ""},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var opts []reqOpt
			if tc.sent != "" {
				opts = append(opts, withHeader("X-Request-Id", tc.sent))
			}
			if tc.twice {
				opts = append(opts, addHeader("X-Request-Id", tc.sent))
			}
			before := s.lastSeq()
			host := fmt.Sprintf("198.18.1.%d", i+1)
			r := s.do("POST", "/api/v1/machines", map[string]any{"host": host, "user": "tidb", "password": "pw", "host_key": testenv.HostKey}, opts...)
			if r.status != http.StatusAccepted {
				t.Fatalf("register: %d %s", r.status, r.body)
			}
			got := r.header.Get("X-Request-Id")
			if tc.want != "" && got != tc.want {
				t.Fatalf("X-Request-Id %q, want %q", got, tc.want)
			}
			if tc.want == "" {
				if id, err := uuid.Parse(got); err != nil || id.String() != got || got == tc.sent {
					t.Fatalf("X-Request-Id %q, want a new UUID", got)
				}
			}
			st, err := s.store.Load(t.Context(), domain.AggregateMachine, host)
			if err != nil {
				t.Fatal(err)
			}
			if len(st.Events) != 1 || st.Events[0].Seq <= before || st.Events[0].CorrelationID != got {
				t.Fatalf("the commit's correlation id is not %q: %+v", got, st.Events)
			}
		})
	}
	if raw := strings.Join(s.rawStream(), ""); strings.Contains(raw, strings.Repeat("x", 65)) || strings.Contains(raw, "<script>") {
		t.Fatal("a refused request id reached the event stream")
	}
}

// Idempotency keys identify a request by the digest of its whole body: a
// package that differs from the first only after its first MiB is another
// request (422, nothing stored); the same bytes replay the answer.
func TestIdempotencyDigestsTheWholeBody(t *testing.T) {
	s := newStack(t, pkgstore.DefaultLimits())
	big := randomText(6 << 20)
	first := testenv.DMPackage(t, "v9.0.0", testenv.Entry{Name: "others/big", Body: big + "A"})
	second := testenv.DMPackage(t, "v9.0.0", testenv.Entry{Name: "others/big", Body: big + "B"})
	const mib = 1 << 20
	// Same length, same first MiB: only a digest of every byte tells them apart.
	if len(first) <= 2*mib || len(first) != len(second) || string(first[:mib+1]) != string(second[:mib+1]) || string(first) == string(second) {
		t.Fatalf("the packages must have one size, share their first MiB and differ after it (sizes %d, %d)", len(first), len(second))
	}
	key := withHeader("Idempotency-Key", "upload-v9")
	a := s.do("POST", "/api/v1/packages?version=v9.0.0", first, key)
	if a.status != http.StatusAccepted {
		t.Fatalf("first upload: %d %s", a.status, a.body)
	}
	before := s.snapshot()
	r := s.do("POST", "/api/v1/packages?version=v9.0.0", second, key)
	if r.status != http.StatusUnprocessableEntity || !strings.Contains(r.problem(t).Detail, "Idempotency-Key was already used with a different request") {
		t.Fatalf("same key, other body: %d %s", r.status, r.body)
	}
	// A longer body with the same start is another request too.
	r = s.do("POST", "/api/v1/packages?version=v9.0.0", append(append([]byte{}, first...), 0), key)
	if r.status != http.StatusUnprocessableEntity {
		t.Fatalf("same key, body with one more byte: %d %s", r.status, r.body)
	}
	if after := s.snapshot(); !after.same(before) {
		t.Fatalf("refused requests changed something: %+v → %+v", before, after)
	}
	again := s.do("POST", "/api/v1/packages?version=v9.0.0", first, key)
	if again.status != http.StatusAccepted || string(again.body) != string(a.body) || again.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("same key, same body: %d %s %v", again.status, again.body, again.header)
	}
	if after := s.snapshot(); !after.same(before) {
		t.Fatalf("the replay changed something: %+v → %+v", before, after)
	}
}

// A command without a body (its handler reads none) is remembered by its
// key too: sent again, its answer is replayed, not run again.
func TestIdempotencyOfBodilessCommands(t *testing.T) {
	s := newStack(t, pkgstore.DefaultLimits())
	s.mustAccept("POST", "/api/v1/machines", map[string]any{"host": "198.18.0.40", "user": "tidb", "host_key": testenv.HostKey, "password": "pw"})
	key := withHeader("Idempotency-Key", "remove-40")
	first := s.do("DELETE", "/api/v1/machines/198.18.0.40", nil, key)
	before := s.snapshot()
	again := s.do("DELETE", "/api/v1/machines/198.18.0.40", nil, key)
	if first.status != http.StatusAccepted || again.status != http.StatusAccepted || string(again.body) != string(first.body) ||
		again.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("first %d %s, again %d %s %v", first.status, first.body, again.status, again.body, again.header)
	}
	if after := s.snapshot(); !after.same(before) {
		t.Fatalf("the replay changed something: %+v → %+v", before, after)
	}
}
