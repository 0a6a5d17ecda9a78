package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// clusterPages is a list of three clusters in pages: the first page
// (no cursor) holds a and b, the page after cursor "c2" holds c.
var clusterPages = map[string]string{
	"":   `{"items":[{"name":"a","version":"v8.1.0","status":"running","group":"default","instances":[{"id":"i1"}]},{"name":"b","version":"v8.1.1","status":"running","group":"g1"}],"next_cursor":"c2"}`,
	"c2": `{"items":[{"name":"c","version":"v8.1.1","status":"running","group":"g1","labels":{"env":"prod"}}]}`,
}

// pagingServer answers GET path with pages[cursor] and keeps the queries
// it was asked.
type pagingServer struct {
	*httptest.Server
	mu      sync.Mutex
	queries []url.Values
}

func newPagingServer(t *testing.T, path string, pages map[string]string) *pagingServer {
	s := &pagingServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.queries = append(s.queries, r.URL.Query())
		s.mu.Unlock()
		page, ok := pages[r.URL.Query().Get("cursor")]
		if r.Method != http.MethodGet || r.URL.Path != path || !ok {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"title":"Bad Request","status":400,"detail":"cursor is invalid"}`))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(page))
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *pagingServer) asked() []url.Values {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.queries
	s.queries = nil
	return out
}

func (s *pagingServer) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	a := &App{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" },
		ConfigDir: t.TempDir(), Now: time.Now}
	code := a.Execute(context.Background(), a.NewRoot(), append(args, "--server", s.URL, "--token", "secret-token"))
	return code, out.String(), errb.String()
}

// A list command prints one page; when more exist its last line is the
// command of the next page, with the filters given and the cursor, never
// the server or the token. That command prints the next page.
func TestCLIListPrintsOnePageAndTheNextPageCommand(t *testing.T) {
	s := newPagingServer(t, "/api/v1/clusters", clusterPages)
	code, out, errs := s.run(t, "cluster", "list", "--status", "running", "--limit", "2")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	q := s.asked()
	if len(q) != 1 || q[0].Get("limit") != "2" || q[0].Get("status") != "running" || q[0].Has("cursor") {
		t.Fatalf("asked %v, want one page of 2 running clusters", q)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	want := "More: dmgr cluster list --limit 2 --status running --cursor c2 (or --all for every page)"
	if len(lines) != 5 || !strings.HasPrefix(lines[2], "a ") || !strings.HasPrefix(lines[3], "b ") || lines[4] != want {
		t.Fatalf("stdout:\n%s\nwant the table of a and b, then %q", out, want)
	}
	if strings.Contains(out+errs, "secret-token") || strings.Contains(out, "--server") || errs != "" {
		t.Fatalf("stdout %q stderr %q", out, errs)
	}

	// The command it printed prints the last page, and no More line.
	code, out, errs = s.run(t, "cluster", "list", "--status", "running", "--limit", "2", "--cursor", "c2")
	if q := s.asked(); code != 0 || len(q) != 1 || q[0].Get("cursor") != "c2" || q[0].Get("status") != "running" {
		t.Fatalf("exit %d %s, asked %v", code, errs, q)
	}
	if !strings.Contains(out, "env=prod") || strings.Contains(out, "More:") || strings.Contains(out, "b ") {
		t.Fatalf("the last page:\n%s", out)
	}
}

// --all follows next_cursor to the end: the table has every item and no
// More line; -o json is {items} of every page. One page with -o json is
// the API's answer as sent, its next_cursor included.
func TestCLIListAllFollowsEveryPage(t *testing.T) {
	s := newPagingServer(t, "/api/v1/clusters", clusterPages)
	code, out, errs := s.run(t, "cluster", "list", "--all", "--limit", "2")
	q := s.asked()
	if code != 0 || len(q) != 2 || q[0].Has("cursor") || q[1].Get("cursor") != "c2" || q[1].Get("limit") != "2" {
		t.Fatalf("exit %d %s, asked %v", code, errs, q)
	}
	if rows := strings.Split(strings.TrimRight(out, "\n"), "\n"); len(rows) != 5 || strings.Contains(out, "More:") {
		t.Fatalf("--all table:\n%s", out)
	}

	code, out, errs = s.run(t, "cluster", "list", "--all", "-o", "json")
	var all map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &all); code != 0 || err != nil {
		t.Fatalf("exit %d %v: %s %s", code, err, out, errs)
	}
	var items []struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(all["items"], &items); err != nil || len(items) != 3 || items[0].Name != "a" || items[2].Name != "c" || len(all) != 1 {
		t.Fatalf("--all -o json: %s", out)
	}
	s.asked()

	code, out, _ = s.run(t, "cluster", "list", "-o", "json")
	var page struct {
		Items      []json.RawMessage `json:"items"`
		NextCursor string            `json:"next_cursor"`
	}
	if err := json.Unmarshal([]byte(out), &page); code != 0 || err != nil || len(page.Items) != 2 || page.NextCursor != "c2" {
		t.Fatalf("one page -o json: %s", out)
	}
	if q := s.asked(); len(q) != 1 || q[0].Has("limit") {
		t.Fatalf("without --limit the API's default page is asked: %v", q)
	}
}

// Every list command pages the same way: machine, package and operation
// list too print the next page's command and follow every page with --all.
func TestCLIEveryListCommandPages(t *testing.T) {
	for _, tc := range []struct {
		path  string
		args  []string
		first string
		last  string
	}{
		{"/api/v1/machines", []string{"machine", "list", "--label", "zone=z1"}, `{"items":[{"host":"10.0.0.1","user":"root"}],"next_cursor":"m2"}`, `{"items":[{"host":"10.0.0.2","user":"root"}]}`},
		{"/api/v1/packages", []string{"package", "list"}, `{"items":[{"id":"dm-v8.1.0-linux-amd64"}],"next_cursor":"m2"}`, `{"items":[{"id":"dm-v8.1.1-linux-amd64"}]}`},
		{"/api/v1/operations", []string{"operation", "list", "--cluster", "prod a"}, `{"items":[{"id":"op1","kind":"deploy"}],"next_cursor":"m2"}`, `{"items":[{"id":"op2","kind":"upgrade"}]}`},
		{"/api/v1/users", []string{"user", "list"}, `{"items":[{"name":"alice"}],"next_cursor":"m2"}`, `{"items":[{"name":"bob"}]}`},
	} {
		s := newPagingServer(t, tc.path, map[string]string{"": tc.first, "m2": tc.last})
		code, out, errs := s.run(t, tc.args...)
		lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
		want := "More: dmgr " + strings.Join(tc.args, " ") + " --cursor m2 (or --all for every page)"
		if strings.Contains(want, "prod a") {
			want = strings.Replace(want, "prod a", "'prod a'", 1)
		}
		if code != 0 || lines[len(lines)-1] != want {
			t.Errorf("%v: exit %d %s, last line %q, want %q", tc.args, code, errs, lines[len(lines)-1], want)
		}
		if q := s.asked(); len(q) != 1 {
			t.Errorf("%v: %d requests for one page", tc.args, len(q))
		}
		code, out, errs = s.run(t, append(tc.args, "--all")...)
		if q := s.asked(); code != 0 || len(q) != 2 || q[1].Get("cursor") != "m2" || strings.Contains(out, "More:") || len(strings.Split(strings.TrimRight(out, "\n"), "\n")) != 4 {
			t.Errorf("%v --all: exit %d %s, asked %v:\n%s", tc.args, code, errs, q, out)
		}
	}
}

// A hostile or broken server: a cursor that is shell syntax is quoted in
// the More line; a cursor answered twice stops --all; an answer with no
// items list is an error, not an empty table.
func TestCLIListBadServerAnswers(t *testing.T) {
	s := newPagingServer(t, "/api/v1/clusters", map[string]string{
		"": `{"items":[{"name":"a"}],"next_cursor":"x; rm -rf ~ #'"}`,
	})
	_, out, _ := s.run(t, "cluster", "list")
	if want := `More: dmgr cluster list --cursor 'x; rm -rf ~ #'\''' (or --all for every page)`; !strings.Contains(out, want) {
		t.Fatalf("stdout:\n%s\nwant %q", out, want)
	}

	loop := newPagingServer(t, "/api/v1/clusters", map[string]string{
		"": `{"items":[{"name":"a"}],"next_cursor":"same"}`, "same": `{"items":[{"name":"b"}],"next_cursor":"same"}`,
	})
	if code, out, errs := loop.run(t, "cluster", "list", "--all"); code != 1 || out != "" || !strings.Contains(errs, "cursor same twice") {
		t.Fatalf("a looping server: exit %d, stdout %q, stderr %q", code, out, errs)
	}

	odd := newPagingServer(t, "/api/v1/machines", map[string]string{"": `{"clusters":[]}`})
	if code, out, errs := odd.run(t, "machine", "list"); code != 1 || out != "" || !strings.Contains(errs, "has no items list") {
		t.Fatalf("an answer with no items: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	wrong := newPagingServer(t, "/api/v1/machines", map[string]string{"": `{"items":[{"host":7}]}`})
	if code, _, errs := wrong.run(t, "machine", "list"); code != 1 || !strings.Contains(errs, "not what this dmgr expects") {
		t.Fatalf("an item of another shape: exit %d, stderr %q", code, errs)
	}

	bad := newPagingServer(t, "/api/v1/clusters", clusterPages)
	if code, _, errs := bad.run(t, "cluster", "list", "--cursor", "nope"); code != 1 || !strings.Contains(errs, "cursor is invalid") {
		t.Fatalf("a cursor the server refuses: exit %d, stderr %q", code, errs)
	}
}

// A --limit out of 1..1000 is bad usage, refused before any request.
func TestCLIListLimitOutOfRangeIsUsage(t *testing.T) {
	s := newPagingServer(t, "/api/v1/clusters", clusterPages)
	for _, args := range [][]string{
		{"cluster", "list", "--limit", "1001"}, {"machine", "list", "--limit", "-1"}, {"operation", "list", "--limit", "5000"},
		{"package", "list", "--limit", "ten"}, {"group", "list", "--limit", "1.5"}, {"audit", "--limit", "0"}, {"user", "list", "--limit", "0"},
	} {
		code, out, errs := s.run(t, args...)
		if code != 2 || out != "" || !strings.Contains(errs, "--limit") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 about --limit", args, code, out, errs)
		}
	}
	if q := s.asked(); len(q) != 0 {
		t.Fatalf("bad usage sent %d requests", len(q))
	}
}

// Every list command's help says how it pages.
func TestCLIListCommandsSayHowTheyPage(t *testing.T) {
	for _, path := range [][]string{{"cluster", "list"}, {"machine", "list"}, {"package", "list"}, {"operation", "list"},
		{"user", "list"}, {"group", "list"}, {"token", "list"}, {"approval", "list"}, {"audit"}} {
		var out bytes.Buffer
		a := &App{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &out, Getenv: func(string) string { return "" }, ConfigDir: t.TempDir(), Now: time.Now}
		root := a.NewRoot()
		root.SetOut(&out)
		if code := a.Execute(context.Background(), root, append(path, "--help")); code != 0 {
			t.Fatalf("%v --help: exit %d", path, code)
		}
		h := out.String()
		for _, want := range []string{"One page is printed", "--all follows every page", "--cursor string", "--limit int", "with --all, {"} {
			if !strings.Contains(h, want) {
				t.Errorf("%v --help lacks %q:\n%s", path, want, h)
			}
		}
	}
}
