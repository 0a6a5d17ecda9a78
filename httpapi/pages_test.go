package httpapi_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/testenv"
)

// listPage is one page of a list as the API answers it.
type listPage[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor"`
}

// walk follows a list from its first page to its last, with the query
// given (limit, filters), asking get for each page; it checks each page's
// size and returns the items in order with the raw pages.
func walk[T any](t *testing.T, get func(path string) response, path string, q url.Values, limit int) ([]T, []string) {
	t.Helper()
	var items []T
	var bodies []string
	cursor := ""
	for i := 0; ; i++ {
		v := url.Values{}
		for k, vs := range q {
			v[k] = vs
		}
		v.Set("limit", fmt.Sprint(limit))
		if cursor != "" {
			v.Set("cursor", cursor)
		}
		r := get(path + "?" + v.Encode())
		if r.status != 200 {
			t.Fatalf("GET %s?%s: %d %s", path, v.Encode(), r.status, r.body)
		}
		var p listPage[T]
		r.json(t, &p)
		if len(p.Items) > limit || (p.NextCursor != "" && len(p.Items) != limit) {
			t.Fatalf("page %d of %s: %d items with limit %d, next_cursor %q", i, path, len(p.Items), limit, p.NextCursor)
		}
		items = append(items, p.Items...)
		bodies = append(bodies, string(r.body))
		if p.NextCursor == "" {
			return items, bodies
		}
		if i > 1000 {
			t.Fatalf("%s never ends", path)
		}
		cursor = p.NextCursor
	}
}

func hosts(ms []domain.Machine) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Host
	}
	return out
}

// Every list pages by key, from ClickHouse and from the event store
// alike: the pages together are the whole list in its order, each item
// once; filters select; a machine registered while a client pages shows
// up only if it sorts after the page it has; bad paging input is 400.
func TestListsPage(t *testing.T) {
	p := newProjectedStack(t)
	p.fixtures()
	var want []string
	for i := 1; i <= 9; i++ {
		h := fmt.Sprintf("198.18.1.%d", i)
		zone := map[bool]string{true: "z1", false: "z2"}[i%2 == 1]
		p.mustAccept("POST", "/api/v1/machines", map[string]any{"host": h, "user": "tidb", "host_key": testenv.HostKey,
			"password": "x", "labels": map[string]string{"zone": zone}})
		want = append(want, h)
	}
	p.mustAccept("POST", "/api/v1/machines", map[string]any{"host": "198.18.2.1", "user": "tidb", "host_key": testenv.HostKey, "password": "x"})
	p.mustAccept("DELETE", "/api/v1/machines/198.18.2.1", nil) // removed: never listed
	want = append(want, "198.18.0.11", "198.18.0.12", "198.18.0.13")
	sort.Strings(want)
	acc := p.mustAccept("POST", "/api/v1/clusters", map[string]string{"name": "prod-a", "version": "v8.1.0", "topology": topology})
	p.do("GET", "/api/v1/operations/"+acc.OperationID, nil, minSeq(acc.CommitSeq)) // the projections have everything

	fromCH := func(path string) response { return p.do("GET", path, nil) }
	fromES := func(path string) response { return p.fromEventStore(path) }

	for _, limit := range []int{1, 4, 12, 100} {
		got, chPages := walk[domain.Machine](t, fromCH, "/api/v1/machines", nil, limit)
		if !slices.Equal(hosts(got), want) {
			t.Fatalf("machines by %d: %v, want %v", limit, hosts(got), want)
		}
		_, esPages := walk[domain.Machine](t, fromES, "/api/v1/machines", nil, limit)
		if !slices.Equal(chPages, esPages) {
			t.Fatalf("machines by %d: pages from ClickHouse\n%v\nfrom the event store\n%v", limit, chPages, esPages)
		}
	}
	// Filters.
	for _, get := range []func(string) response{fromCH, fromES} {
		z1, _ := walk[domain.Machine](t, get, "/api/v1/machines", url.Values{"label": {"zone=z1"}}, 2)
		if !slices.Equal(hosts(z1), []string{"198.18.1.1", "198.18.1.3", "198.18.1.5", "198.18.1.7", "198.18.1.9"}) {
			t.Fatalf("zone=z1: %v", hosts(z1))
		}
		cs, _ := walk[domain.Cluster](t, get, "/api/v1/clusters", url.Values{"status": {domain.ClusterStatusDeploying}}, 1)
		if len(cs) != 1 || cs[0].Name != "prod-a" || len(cs[0].Instances) == 0 {
			t.Fatalf("clusters deploying: %+v", cs)
		}
		if none, _ := walk[domain.Cluster](t, get, "/api/v1/clusters", url.Values{"status": {"running"}}, 5); len(none) != 0 {
			t.Fatalf("clusters running: %+v", none)
		}
		deploys, _ := walk[domain.OperationView](t, get, "/api/v1/operations", url.Values{"cluster": {"prod-a"}, "kind": {"deploy"}}, 1)
		if len(deploys) != 1 || deploys[0].ID != acc.OperationID {
			t.Fatalf("deploys of prod-a: %+v", deploys)
		}
	}
	// Operations: newest first, each once, the same pages from both.
	all, _ := walk[domain.OperationView](t, fromCH, "/api/v1/operations", nil, 1000)
	if len(all) < 12 {
		t.Fatalf("%d operations", len(all))
	}
	for i := 1; i < len(all); i++ {
		if all[i].CommitSeq > all[i-1].CommitSeq {
			t.Fatalf("operations not newest first at %d: %d after %d", i, all[i].CommitSeq, all[i-1].CommitSeq)
		}
	}
	byThree, chPages := walk[domain.OperationView](t, fromCH, "/api/v1/operations", nil, 3)
	_, esPages := walk[domain.OperationView](t, fromES, "/api/v1/operations", nil, 3)
	if !slices.EqualFunc(byThree, all, func(a, b domain.OperationView) bool { return a.ID == b.ID }) || !slices.Equal(chPages, esPages) {
		t.Fatalf("operations by 3 differ from the whole list, or between ClickHouse and the event store")
	}

	// Stable while commands arrive: the first page, then a machine that
	// sorts before its end and one after it.
	var first listPage[domain.Machine]
	p.do("GET", "/api/v1/machines?limit=4", nil).json(t, &first)
	p.mustAccept("POST", "/api/v1/machines", map[string]any{"host": "198.18.0.1", "user": "tidb", "host_key": testenv.HostKey, "password": "x"})
	p.mustAccept("POST", "/api/v1/machines", map[string]any{"host": "198.18.9.9", "user": "tidb", "host_key": testenv.HostKey, "password": "x"})
	rest := []domain.Machine{}
	for cursor := first.NextCursor; cursor != ""; {
		var next listPage[domain.Machine]
		p.do("GET", "/api/v1/machines?limit=4&cursor="+url.QueryEscape(cursor), nil).json(t, &next)
		rest = append(rest, next.Items...)
		cursor = next.NextCursor
	}
	seen := append(hosts(first.Items), hosts(rest)...)
	if slices.Contains(seen, "198.18.0.1") || !slices.Contains(seen, "198.18.9.9") || len(seen) != len(want)+1 {
		t.Fatalf("paging while machines arrive: %v", seen)
	}

	// Bad paging input: 400 with what is wrong, on both.
	for _, tc := range []struct{ path, want string }{
		{"/api/v1/machines?limit=0", "limit"},
		{"/api/v1/machines?limit=1001", "limit"},
		{"/api/v1/machines?limit=ten", "limit"},
		{"/api/v1/machines?limit=1&limit=2", "limit"},
		{"/api/v1/machines?cursor=not-a-cursor", "cursor"},
		{"/api/v1/operations?cursor=bDEuMTk4LjE4LjEuMQ", "operations list"}, // a machines cursor
		{"/api/v1/machines?label=zone", "label"},
		{"/api/v1/machines?label=color=blue", "label"},
		{"/api/v1/packages?status=x", "status"},
		{"/api/v1/clusters?kind=deploy", "kind"},
	} {
		for name, get := range map[string]func(string) response{"ClickHouse": fromCH, "event store": fromES} {
			r := get(tc.path)
			if r.status != 400 || !strings.Contains(strings.ToLower(r.problem(t).Detail), tc.want) {
				t.Errorf("GET %s (%s): %d %s; want 400 naming %s", tc.path, name, r.status, r.body, tc.want)
			}
		}
	}
	// A cursor is opaque but not trusted: one that decodes to a key is
	// just a position.
	var empty listPage[domain.Machine]
	p.do("GET", "/api/v1/machines?cursor=bDEuenp6", nil).json(t, &empty) // "l1.zzz": after every host
	if len(empty.Items) != 0 || empty.NextCursor != "" {
		t.Fatalf("after the last host: %+v", empty)
	}
	var raw map[string]json.RawMessage
	p.do("GET", "/api/v1/packages", nil).json(t, &raw)
	if _, ok := raw["items"]; !ok || len(raw) != 1 {
		t.Fatalf("the last page of packages: %v; want items and no next_cursor", raw)
	}
}
