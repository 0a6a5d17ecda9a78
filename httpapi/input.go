package httpapi

import (
	"context"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/domain"
)

// This file holds the checks every request passes before a handler sees
// it: its request id, its query parameters (a per-route allow-list, each
// given once), its path parameters (unescaped once and validated) and the
// media type of its body.

// HeaderRequestID carries a request's id: the client's when it is safe
// (see requestID), one the server generates otherwise. Every answer says
// which id was used, and commands record it as their correlation id.
const HeaderRequestID = "X-Request-Id"

// maxRequestIDLen bounds a client's request id.
const maxRequestIDLen = 64

var requestIDRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// requestID gives every request an id: the client's X-Request-Id when it is
// a UUID or at most 64 letters, digits, '.', '_' and '-', a new UUID
// otherwise. The id is in the answer's X-Request-Id and in the context
// (middleware.GetReqID).
func requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, replaced := acceptRequestID(r.Header.Values(HeaderRequestID))
		if id == "" {
			id = newRequestID()
		}
		w.Header().Set(HeaderRequestID, id)
		ctx := context.WithValue(r.Context(), middleware.RequestIDKey, id)
		if replaced {
			// The refused value is not logged: it is whatever a client sent.
			zerolog.Ctx(ctx).Debug().Str("request_id", id).Msg("client request id refused; a new one was generated")
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// acceptRequestID returns the client's request id when it may be used
// (canonicalised when it is a UUID), and whether one was given but refused.
func acceptRequestID(values []string) (id string, refused bool) {
	if len(values) == 0 {
		return "", false
	}
	if len(values) > 1 {
		return "", true
	}
	v := values[0]
	if requestIDRE.MatchString(v) {
		if u, err := uuid.Parse(v); err == nil && len(v) == 36 {
			return u.String(), false
		}
		return v, false
	}
	if len(v) <= 2*maxRequestIDLen { // "{uuid}" and "urn:uuid:…" forms
		if u, err := uuid.Parse(v); err == nil {
			return u.String(), false
		}
	}
	return "", true
}

func newRequestID() string {
	if u, err := uuid.NewV7(); err == nil {
		return u.String()
	}
	return uuid.NewString()
}

// bodyKind is the request body a route takes.
type bodyKind int

const (
	bodyNone bodyKind = iota // no body
	bodyJSON                 // application/json (optionally with charset=utf-8); may be empty where the handler allows
	bodyGzip                 // application/gzip: a package archive
)

// param is a query parameter a route takes, with the check of its value
// (nil: the handler checks it).
type param struct {
	name  string
	check func(string) error
}

// routeSpec is what a route accepts besides its path: its query
// parameters and its body.
type routeSpec struct {
	query []param
	body  bodyKind
}

func boolParam(name string) param {
	return param{name, func(v string) error {
		if _, err := strconv.ParseBool(v); err != nil {
			return domain.Errorf(domain.Invalid, "query parameter %s=%q: want true or false", name, v)
		}
		return nil
	}}
}

var dryRunParam = boolParam("dry_run")

// auditQuery are the parameters of GET /api/v1/audit (checked by
// parseAuditQuery).
func auditQuery() []param {
	names := make([]string, 0, len(auditParams))
	for n := range auditParams {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]param, len(names))
	for i, n := range names {
		out[i] = param{name: n}
	}
	return out
}

// routeSpecs holds every route's spec, keyed by "METHOD pattern". A route
// missing here takes no query parameter and no body;
// TestEveryRouteHasAnInputSpec fails for it.
var routeSpecs = map[string]routeSpec{
	"GET /healthz":                                 {},
	"GET /readyz":                                  {},
	"GET /metrics":                                 {},
	"GET /api/v1/openapi.yaml":                     {},
	"GET /api/v1/machines":                         {query: listParams(labelParam())},
	"GET /api/v1/machines/{host}":                  {},
	"GET /api/v1/packages":                         {query: listParams()},
	"GET /api/v1/clusters":                         {query: listParams(param{name: "status"})},
	"GET /api/v1/clusters/{name}":                  {query: []param{{"status", oneOf("status", "live")}}},
	"GET /api/v1/operations":                       {query: listParams(param{name: "status"}, param{name: "cluster"}, param{name: "kind"})},
	"GET /api/v1/operations/{id}":                  {},
	"GET /api/v1/operations/{id}/events":           {query: []param{{name: "last_event_id"}}},
	"GET /api/v1/clusters/{name}/events":           {query: []param{{name: "last_event_id"}, {name: "since"}}},
	"GET /api/v1/audit":                            {query: auditQuery()},
	"GET /api/v1/agents":                           {query: listParams()},
	"POST /api/v1/machines":                        {body: bodyJSON},
	"DELETE /api/v1/machines/{host}":               {},
	"POST /api/v1/packages":                        {body: bodyGzip, query: []param{{name: "name"}, {name: "version"}, {name: "filename"}, {name: "arch"}, {name: "group"}}},
	"POST /api/v1/clusters":                        {body: bodyJSON, query: []param{dryRunParam}},
	"POST /api/v1/clusters/import":                 {body: bodyJSON, query: []param{dryRunParam}},
	"POST /api/v1/clusters/{name}/start":           {body: bodyJSON, query: []param{dryRunParam}},
	"POST /api/v1/clusters/{name}/stop":            {body: bodyJSON, query: []param{dryRunParam}},
	"POST /api/v1/clusters/{name}/restart":         {body: bodyJSON, query: []param{dryRunParam}},
	"DELETE /api/v1/clusters/{name}":               {body: bodyJSON, query: []param{boolParam("retain_data"), boolParam("force"), dryRunParam}},
	"POST /api/v1/clusters/{name}/scale-out":       {body: bodyJSON, query: []param{dryRunParam}},
	"POST /api/v1/clusters/{name}/scale-in":        {body: bodyJSON, query: []param{dryRunParam}},
	"POST /api/v1/clusters/{name}/reload":          {body: bodyJSON, query: []param{dryRunParam}},
	"POST /api/v1/clusters/{name}/upgrade":         {body: bodyJSON, query: []param{dryRunParam}},
	"POST /api/v1/clusters/{name}/patch":           {body: bodyJSON, query: []param{dryRunParam}},
	"POST /api/v1/operations/{id}/retry":           {},
	"POST /api/v1/operations/{id}/cancel":          {},
	"POST /api/v1/operations/{id}/rollback":        {query: []param{dryRunParam}},
	"POST /api/v1/login":                           {body: bodyJSON},
	"POST /api/v1/logout":                          {},
	"GET /api/v1/me":                               {},
	"GET /api/v1/users":                            {query: listParams()},
	"GET /api/v1/users/{name}":                     {},
	"POST /api/v1/users":                           {body: bodyJSON},
	"DELETE /api/v1/users/{name}":                  {},
	"POST /api/v1/users/{name}/disable":            {},
	"POST /api/v1/users/{name}/enable":             {},
	"PUT /api/v1/users/{name}/password":            {body: bodyJSON},
	"GET /api/v1/groups":                           {query: listParams()},
	"GET /api/v1/groups/{group}":                   {},
	"POST /api/v1/groups":                          {body: bodyJSON},
	"PUT /api/v1/groups/{group}":                   {body: bodyJSON},
	"DELETE /api/v1/groups/{group}":                {},
	"PUT /api/v1/groups/{group}/members/{user}":    {body: bodyJSON},
	"DELETE /api/v1/groups/{group}/members/{user}": {},
	"PUT /api/v1/groups/{group}/policy":            {body: bodyJSON},
	"PUT /api/v1/clusters/{name}/group":            {body: bodyJSON},
	"PUT /api/v1/clusters/{name}/labels":           {body: bodyJSON},
	"PUT /api/v1/machines/{host}/group":            {body: bodyJSON},
	"PUT /api/v1/packages/{package}/group":         {body: bodyJSON},
	"GET /api/v1/tokens":                           {query: listParams(param{name: "kind", check: oneOf("kind", domain.TokenAPI, domain.TokenSession)})},
	"POST /api/v1/tokens":                          {body: bodyJSON},
	"DELETE /api/v1/tokens/{token}":                {},
	"GET /api/v1/approvals":                        {query: listParams(param{name: "state", check: oneOf("state", domain.ApprovalStates...)}, param{name: "group"})},
	"GET /api/v1/approvals/{id}":                   {},
	"POST /api/v1/approvals/{id}/approve":          {body: bodyJSON},
	"POST /api/v1/approvals/{id}/reject":           {body: bodyJSON},
	"POST /api/v1/approvals/{id}/withdraw":         {body: bodyJSON},
}

func oneOf(name string, values ...string) func(string) error {
	return func(v string) error {
		for _, ok := range values {
			if v == ok {
				return nil
			}
		}
		return domain.Errorf(domain.Invalid, "query parameter %s=%q: use %s", name, v, strings.Join(values, " or "))
	}
}

// pathParams validates each path parameter (after it is unescaped).
var pathParams = map[string]func(string) error{
	"name":    domain.ValidateClusterName,
	"host":    domain.ValidateHost,
	"id":      validateOperationID, // operations and approval requests
	"group":   domain.ValidateGroupName,
	"user":    domain.ValidateUserName,
	"token":   validateTokenID,
	"package": validatePackageID,
}

var (
	tokenIDRE   = regexp.MustCompile(`^[st]-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	packageIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{0,127}$`)
)

// validateTokenID accepts the ids of sessions (s-<uuid>) and API tokens
// (t-<uuid>).
func validateTokenID(s string) error {
	if !tokenIDRE.MatchString(s) {
		return domain.Errorf(domain.Invalid, "token id %q is invalid: a token id is t-<uuid> as POST /api/v1/tokens answered it", s)
	}
	return nil
}

// validatePackageID accepts package ids (dm-v8.1.0-linux-amd64).
func validatePackageID(s string) error {
	if !packageIDRE.MatchString(s) {
		return domain.Errorf(domain.Invalid, "package id %q is invalid: see GET /api/v1/packages", s)
	}
	return nil
}

// validateOperationID accepts the ids dmgr gives operations: UUIDs in
// canonical form.
func validateOperationID(s string) error {
	if u, err := uuid.Parse(s); err != nil || u.String() != s {
		return domain.Errorf(domain.Invalid, "operation id %q is invalid: an operation id is a UUID as a command answered it (operation_id)", s)
	}
	return nil
}

// strictInput refuses, before the handler runs, what the route does not
// take: unknown or repeated query parameters, bad values of checked ones,
// invalid path parameters, and a body of the wrong media type. It unescapes
// each path parameter once, in place, so handlers read it with
// chi.URLParam. It runs after routing (inside a chi group).
func strictInput(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rctx := chi.RouteContext(r.Context())
		spec := routeSpecs[r.Method+" "+rctx.RoutePattern()]
		if err := checkQuery(r.URL.RawQuery, spec.query); err != nil {
			writeError(w, r, err)
			return
		}
		if err := checkPathParams(r, rctx); err != nil {
			writeError(w, r, err)
			return
		}
		if status, err := checkBody(r, spec.body); err != nil {
			writeProblem(w, r, status, domain.ErrorCode(err), domain.ErrorMessage(err))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func checkQuery(raw string, allowed []param) error {
	if raw == "" {
		return nil
	}
	values, err := url.ParseQuery(raw)
	if err != nil {
		return domain.Errorf(domain.Invalid, "malformed query string: %v", err)
	}
	names := make([]string, 0, len(values))
	for k := range values {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		p, ok := findParam(allowed, k)
		if !ok {
			return domain.Errorf(domain.Invalid, "unknown query parameter %q: %s", k, takes(allowed))
		}
		if n := len(values[k]); n > 1 {
			return domain.Errorf(domain.Invalid, "query parameter %s is given %d times: give it once", k, n)
		}
		if p.check != nil {
			if err := p.check(values[k][0]); err != nil {
				return err
			}
		}
	}
	return nil
}

func findParam(allowed []param, name string) (param, bool) {
	for _, p := range allowed {
		if p.name == name {
			return p, true
		}
	}
	return param{}, false
}

func takes(allowed []param) string {
	if len(allowed) == 0 {
		return "this route takes no query parameters"
	}
	names := make([]string, len(allowed))
	for i, p := range allowed {
		names[i] = p.name
	}
	return "this route takes " + strings.Join(names, ", ")
}

// checkPathParams unescapes each path parameter once (chi hands them over
// raw when the path had percent-escapes, i.e. when RawPath is set) and
// validates it.
func checkPathParams(r *http.Request, rctx *chi.Context) error {
	for i, key := range rctx.URLParams.Keys {
		v := rctx.URLParams.Values[i]
		if r.URL.RawPath != "" {
			u, err := url.PathUnescape(v)
			if err != nil {
				return domain.Errorf(domain.Invalid, "path parameter %s: malformed percent-escape", key)
			}
			v = u
		}
		check, ok := pathParams[key]
		if !ok {
			return domain.Errorf(domain.Internal, "path parameter %s has no check", key)
		}
		if err := check(v); err != nil {
			return domain.Errorf(domain.Invalid, "path parameter %s: %s", key, domain.ErrorMessage(err))
		}
		rctx.URLParams.Values[i] = v
	}
	return nil
}

// checkBody checks the media type of the body against what the route
// takes; it answers 415 for a wrong media type and 400 for a body where
// none is taken.
func checkBody(r *http.Request, kind bodyKind) (int, error) {
	hasBody := r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody
	cts := r.Header.Values("Content-Type")
	switch kind {
	case bodyNone:
		if hasBody {
			return http.StatusBadRequest, domain.Errorf(domain.Invalid, "%s %s takes no request body", r.Method, r.URL.Path)
		}
		return 0, nil
	case bodyJSON:
		if !hasBody && len(cts) == 0 {
			return 0, nil // the handler says whether it needs a body
		}
		if len(cts) != 1 || !isJSON(cts[0]) {
			return http.StatusUnsupportedMediaType, domain.Errorf(domain.Invalid,
				"Content-Type %s is not supported: send Content-Type: application/json (optionally ; charset=utf-8)", quoteAll(cts))
		}
	case bodyGzip:
		if len(cts) != 1 || !isGzip(cts[0]) {
			return http.StatusUnsupportedMediaType, domain.Errorf(domain.Invalid,
				"Content-Type %s is not supported: send the package as Content-Type: application/gzip", quoteAll(cts))
		}
	}
	return 0, nil
}

func quoteAll(vs []string) string {
	if len(vs) == 0 {
		return "(none)"
	}
	q := make([]string, len(vs))
	for i, v := range vs {
		if len(v) > 100 {
			v = v[:100] + "…"
		}
		q[i] = strconv.Quote(v)
	}
	return strings.Join(q, ", ")
}

// isJSON accepts application/json, with at most the parameter
// charset=utf-8 (media type and charset compared case-insensitively, as
// RFC 9110 has them).
func isJSON(ct string) bool {
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" || strings.Count(ct, ";") > 1 {
		return false
	}
	for k, v := range params {
		if k != "charset" || !strings.EqualFold(v, "utf-8") {
			return false
		}
	}
	return true
}

// isGzip accepts application/gzip without parameters.
func isGzip(ct string) bool {
	mt, params, err := mime.ParseMediaType(ct)
	return err == nil && mt == "application/gzip" && len(params) == 0
}
