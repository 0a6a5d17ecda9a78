package httpapi

import (
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
	"gopkg.in/yaml.v3"
)

// TestOpenAPIMatchesTheRouter keeps openapi.yaml true: every registered
// route is documented and every documented operation is registered.
func TestOpenAPIMatchesTheRouter(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(OpenAPI(), &doc); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	documented := map[string]bool{}
	for path, item := range doc.Paths {
		for method := range item {
			if method == "parameters" {
				continue
			}
			documented[strings.ToUpper(method)+" "+path] = true
		}
	}
	registered := map[string]bool{}
	routes := Handler(Config{AdminToken: "x"}).(chi.Routes)
	err := chi.Walk(routes, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		registered[method+" "+route] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(registered) < 10 {
		t.Fatalf("walked only %d routes: %v", len(registered), registered)
	}
	var missing, stale []string
	for r := range registered {
		if !documented[r] {
			missing = append(missing, r)
		}
	}
	for d := range documented {
		if !registered[d] {
			stale = append(stale, d)
		}
	}
	sort.Strings(missing)
	sort.Strings(stale)
	if len(missing) > 0 || len(stale) > 0 {
		t.Fatalf("openapi.yaml is out of date:\n  routes not documented: %v\n  documented but not routed: %v", missing, stale)
	}
}

// TestOpenAPIDocumentsTheInputRules keeps openapi.yaml true to routeSpecs:
// a route that takes a body documents 415, a route with query or path
// parameters documents 400, and every documented query parameter is one
// the route takes (and the other way round).
func TestOpenAPIDocumentsTheInputRules(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]yaml.Node `yaml:"paths"`
	}
	if err := yaml.Unmarshal(OpenAPI(), &doc); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	for rt, spec := range routeSpecs {
		method, path, _ := strings.Cut(rt, " ")
		node, ok := doc.Paths[path][strings.ToLower(method)]
		if !ok {
			continue // TestOpenAPIMatchesTheRouter reports it
		}
		var op struct {
			Parameters []struct {
				Name string `yaml:"name"`
				In   string `yaml:"in"`
			} `yaml:"parameters"`
			Responses map[string]any `yaml:"responses"`
		}
		if err := node.Decode(&op); err != nil {
			t.Fatalf("%s: %v", rt, err)
		}
		if spec.body != bodyNone && op.Responses["415"] == nil {
			t.Errorf("%s takes a body but documents no 415", rt)
		}
		if (len(spec.query) > 0 || strings.Contains(path, "{")) && op.Responses["400"] == nil {
			t.Errorf("%s has parameters but documents no 400", rt)
		}
		var documented []string
		for _, p := range op.Parameters {
			if p.In == "query" {
				documented = append(documented, p.Name)
			}
		}
		var taken []string
		for _, p := range spec.query {
			taken = append(taken, p.name)
		}
		sort.Strings(documented)
		sort.Strings(taken)
		if strings.Join(documented, ",") != strings.Join(taken, ",") {
			t.Errorf("%s: openapi.yaml documents query parameters %v, the route takes %v", rt, documented, taken)
		}
	}
}
