package httpapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
)

var pathParamRE = regexp.MustCompile(`\{([^}]+)\}`)

// routes walks the router: "METHOD pattern" of every route.
func routes(t *testing.T) []string {
	t.Helper()
	var out []string
	err := chi.Walk(Handler(Config{AdminToken: "x"}).(chi.Routes), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		out = append(out, method+" "+route)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) < 20 {
		t.Fatalf("walked only %d routes: %v", len(out), out)
	}
	sort.Strings(out)
	return out
}

// TestEveryRouteHasAnInputSpec: a new route must say which query
// parameters and body it takes, and have a check for each path parameter;
// and no spec is left for a route that is gone.
func TestEveryRouteHasAnInputSpec(t *testing.T) {
	seen := map[string]bool{}
	for _, rt := range routes(t) {
		seen[rt] = true
		if _, ok := routeSpecs[rt]; !ok {
			t.Errorf("route %s has no entry in routeSpecs (input.go): list its query parameters and body", rt)
		}
		for _, m := range pathParamRE.FindAllStringSubmatch(rt, -1) {
			if pathParams[m[1]] == nil {
				t.Errorf("route %s: path parameter {%s} has no check in pathParams (input.go)", rt, m[1])
			}
		}
	}
	for rt := range routeSpecs {
		if !seen[rt] {
			t.Errorf("routeSpecs has %s, which is not routed", rt)
		}
	}
}

// concrete fills a route pattern's parameters with valid values.
func concrete(pattern string) string {
	return pathParamRE.ReplaceAllStringFunc(pattern, func(p string) string {
		switch p {
		case "{name}":
			return "prod-a"
		case "{host}":
			return "198.18.0.11"
		case "{id}":
			return "0190b2a4-7c1e-7d2f-9a3b-4c5d6e7f8091"
		case "{token}":
			return "t-0190b2a4-7c1e-7d2f-9a3b-4c5d6e7f8091"
		}
		return "x"
	})
}

// TestEveryRouteRefusesUnknownAndRepeatedParameters sends, to every route
// of the real router, an unknown parameter and each parameter it takes
// twice: each is 400 before a handler runs (the API has no service here;
// a request that reached a handler would fail otherwise).
func TestEveryRouteRefusesUnknownAndRepeatedParameters(t *testing.T) {
	h := Handler(Config{AdminToken: "x"})
	send := func(method, target string) (int, Problem) {
		req := httptest.NewRequest(method, target, nil)
		req.Header.Set("Authorization", "Bearer x")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var p Problem
		_ = json.Unmarshal(rec.Body.Bytes(), &p)
		return rec.Code, p
	}
	for _, rt := range routes(t) {
		method, pattern, _ := strings.Cut(rt, " ")
		path := concrete(pattern)
		for _, q := range []string{"unknown_parameter=1", "unknown_parameter=1&unknown_parameter=2", "Dry_Run=true"} {
			if st, p := send(method, path+"?"+q); st != http.StatusBadRequest || !strings.Contains(p.Detail, "unknown query parameter") {
				t.Errorf("%s %s?%s: %d %q, want 400 naming the unknown parameter", method, path, q, st, p.Detail)
			}
		}
		for _, prm := range routeSpecs[rt].query {
			q := prm.name + "=true&" + prm.name + "=true"
			if st, p := send(method, path+"?"+q); st != http.StatusBadRequest || !strings.Contains(p.Detail, prm.name+" is given 2 times") {
				t.Errorf("%s %s?%s: %d %q, want 400 for the repeated parameter", method, path, q, st, p.Detail)
			}
		}
	}
}

func TestAcceptRequestID(t *testing.T) {
	for _, tc := range []struct {
		in      []string
		want    string
		refused bool
	}{
		{nil, "", false},
		{[]string{"abc"}, "abc", false},
		{[]string{"a.b_c-D9"}, "a.b_c-D9", false},
		{[]string{strings.Repeat("a", 64)}, strings.Repeat("a", 64), false},
		{[]string{strings.Repeat("a", 65)}, "", true},
		{[]string{"urn:uuid:0190B2A4-7C1E-7D2F-9A3B-4C5D6E7F8091"}, "0190b2a4-7c1e-7d2f-9a3b-4c5d6e7f8091", false},
		{[]string{"0190b2a47c1e7d2f9a3b4c5d6e7f8091"}, "0190b2a47c1e7d2f9a3b4c5d6e7f8091", false},
		{[]string{""}, "", true},
		{[]string{"a/b"}, "", true},
		{[]string{"a\nb"}, "", true},
		{[]string{"a", "b"}, "", true},
	} {
		got, refused := acceptRequestID(tc.in)
		if got != tc.want || refused != tc.refused {
			t.Errorf("acceptRequestID(%q) = %q, %v; want %q, %v", tc.in, got, refused, tc.want, tc.refused)
		}
	}
}

func TestMediaTypeMatching(t *testing.T) {
	for ct, want := range map[string]bool{
		"application/json": true, "application/json; charset=utf-8": true, "application/json;charset=UTF-8": true,
		"Application/JSON": true, "application/json ; charset=\"utf-8\"": true,
		"application/jsonx": false, "application/json-foo": false, "application/json+x": false, "application/json; charset=utf-16": false,
		"application/json; charset=utf-8; x=1": false, "application/json; charset=utf-8; charset=utf-8": false,
		"text/json": false, "application/json,text/plain": false, "": false, "application/": false,
	} {
		if got := isJSON(ct); got != want {
			t.Errorf("isJSON(%q) = %v, want %v", ct, got, want)
		}
	}
	for ct, want := range map[string]bool{
		"application/gzip": true, "APPLICATION/GZIP": true, "application/gzip; x=1": false, "application/x-gzip": false,
		"application/gzip2": false, "application/octet-stream": false,
	} {
		if got := isGzip(ct); got != want {
			t.Errorf("isGzip(%q) = %v, want %v", ct, got, want)
		}
	}
}
