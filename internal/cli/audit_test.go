package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// auditNow is the clock of the audit tests.
var auditNow = time.Date(2025, 5, 10, 12, 0, 0, 0, time.UTC)

func TestAuditFlagsBecomeTheAPIQuery(t *testing.T) {
	cases := []struct {
		name string
		f    auditFlags
		want url.Values
	}{
		{"nothing", auditFlags{}, url.Values{}},
		{"filters", auditFlags{cluster: "prod-a", machine: "10.0.0.1", actor: "bob", operation: "0190-op", group: "g1", pageFlags: pageFlags{cursor: "djEuMTIuMA"}},
			url.Values{"cluster": {"prod-a"}, "machine": {"10.0.0.1"}, "actor": {"bob"}, "operation": {"0190-op"}, "group": {"g1"}, "cursor": {"djEuMTIuMA"}}},
		{"types repeated and comma-separated", auditFlags{types: []string{"StepFailed", " AccessRefused ", ""}},
			url.Values{"type": {"StepFailed,AccessRefused"}}},
		{"relative hours", auditFlags{since: "1h"}, url.Values{"since": {"2025-05-10T11:00:00Z"}}},
		{"relative days and minutes", auditFlags{since: "7d", until: "90m"},
			url.Values{"since": {"2025-05-03T12:00:00Z"}, "until": {"2025-05-10T10:30:00Z"}}},
		{"RFC 3339 with an offset is sent in UTC", auditFlags{since: "2025-05-01T10:00:00+02:00", until: "2025-05-02T00:00:00.5Z"},
			url.Values{"since": {"2025-05-01T08:00:00Z"}, "until": {"2025-05-02T00:00:00.5Z"}}},
		{"a date is its midnight UTC", auditFlags{since: "2025-05-01"}, url.Values{"since": {"2025-05-01T00:00:00Z"}}},
		{"limit", auditFlags{pageFlags: pageFlags{limit: 1000}}, url.Values{"limit": {"1000"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := c.f.query(auditNow)
			if err != nil {
				t.Fatal(err)
			}
			if got.Encode() != c.want.Encode() {
				t.Fatalf("query %s, want %s", got.Encode(), c.want.Encode())
			}
		})
	}
}

func TestAuditBadFlagsAreUsageErrors(t *testing.T) {
	cases := []struct {
		f    auditFlags
		want string // in the message
	}{
		{auditFlags{since: "yesterday"}, `--since "yesterday"`},
		{auditFlags{until: "1 hour"}, `--until "1 hour"`},
		{auditFlags{since: "-1h"}, "must be positive"},
		{auditFlags{since: "0s"}, "must be positive"},
		{auditFlags{since: "xd"}, `--since "xd"`},
		{auditFlags{since: "2025-13-01"}, `--since "2025-13-01"`},
		{auditFlags{since: "1h", until: "2h"}, "--until (2025-05-10T10:00:00Z) must be after --since (2025-05-10T11:00:00Z)"},
		{auditFlags{since: "2025-05-01T00:00:00Z", until: "2025-05-01T00:00:00Z"}, "must be after"},
		{auditFlags{pageFlags: pageFlags{limit: 1001}}, "--limit 1001: use a number from 1 to 1000"},
		{auditFlags{pageFlags: pageFlags{limit: -3}}, "--limit -3"},
	}
	for _, c := range cases {
		_, err := c.f.query(auditNow)
		if err == nil || ExitCode(err) != 2 || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v (exit %d), want a usage error with %q", c.f, err, ExitCode(err), c.want)
		}
	}
}

// A bad flag ends the command with status 2 before any request: the
// server's address does not even answer.
func TestAuditCommandRefusesBadTimesBeforeAnyRequest(t *testing.T) {
	for _, args := range [][]string{{"audit", "--since", "last week"}, {"audit", "--limit", "ten"}, {"audit", "--until", "3d", "--since", "1d"}, {"audit", "extra"}} {
		var out, errb bytes.Buffer
		a := &App{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" },
			ConfigDir: t.TempDir(), Now: func() time.Time { return auditNow }}
		code := a.Execute(context.Background(), a.NewRoot(), append(args, "--server", "http://127.0.0.1:1", "--token", "t"))
		if code != 2 || out.Len() != 0 || !strings.HasPrefix(errb.String(), "dmgr: ") || strings.Contains(errb.String(), "cannot reach") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out.String(), errb.String())
		}
	}
}

// auditAnswer is a page of GET /api/v1/audit as the server writes it.
var auditAnswer = `{"events":[
 {"seq":42,"index":0,"commit_id":"c-1","event_id":"e-1","type":"AccessRefused","schema_version":1,"aggregate_type":"access","aggregate_id":"vic","aggregate_version":3,
  "group":"g1","time":"2025-05-10T11:59:58.123Z","actor":"vic","actor_token":"s-1",
  "payload":{"user":"vic","what":"approve request 0190","group":"g1","need":"operator","reason":"approve request 0190 in group g1 needs operator; you are viewer"}},
 {"seq":41,"index":2,"commit_id":"c-2","event_id":"e-2","type":"StepFailed","schema_version":1,"aggregate_type":"cluster","aggregate_id":"prod-a","aggregate_version":9,
  "group":"g1","time":"2025-05-10T11:00:00Z","actor":"bob","operation_id":"0190-op","cluster":"prod-a","machines":["10.0.0.1"],"step":"start-dm-master-1","outcome":"failed",
  "payload":{"step":"start-dm-master-1","error":"ssh: handshake failed: ` + strings.Repeat("x", 100) + `"}},
 {"seq":40,"index":0,"commit_id":"c-3","event_id":"e-3","type":"MachineRegistered","schema_version":1,"aggregate_type":"machine","aggregate_id":"10.0.0.2","aggregate_version":1,
  "time":"2025-05-10T10:00:00Z","actor":"admin","machines":["10.0.0.2"],"payload":{"host":"10.0.0.2","ssh_port":22,"sudo":true,"zone":""}},
 {"seq":39,"index":0,"commit_id":"c-4","event_id":"e-4","type":"UserCreated","schema_version":1,"aggregate_type":"user","aggregate_id":"bob","aggregate_version":1,
  "time":"2025-05-10T09:00:00Z","actor":"admin","payload":{"name":"bob"}}
],"next_cursor":"djEuMzkuMA"}`

func TestAuditTableOfAPage(t *testing.T) {
	var page struct {
		Events []json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal([]byte(auditAnswer), &page); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := writeAuditTable(&b, page.Events); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if len(lines) != 6 {
		t.Fatalf("%d lines, want a header, its dashes and 4 rows:\n%s", len(lines), b.String())
	}
	header := strings.Fields(lines[0])
	if strings.Join(header, " ") != "Time Actor Group Type Cluster/Host Operation Detail" {
		t.Fatalf("header %q", lines[0])
	}
	want := [][]string{
		{"2025-05-10T11:59:58Z", "vic", "g1", "AccessRefused", "-", "-", "approve request 0190 in group g1 needs operator; you are viewer"},
		{"2025-05-10T11:00:00Z", "bob", "g1", "StepFailed", "prod-a", "0190-op", "start-dm-master-1: ssh: handshake failed: x"},
		{"2025-05-10T10:00:00Z", "admin", "-", "MachineRegistered", "10.0.0.2", "-", "host=10.0.0.2 ssh_port=22 sudo"},
		{"2025-05-10T09:00:00Z", "admin", "-", "UserCreated", "user bob", "-", "name=bob"},
	}
	for i, w := range want {
		row := lines[i+2]
		at := 0
		for _, cell := range w {
			j := strings.Index(row[at:], cell)
			if j < 0 {
				t.Fatalf("row %d %q: no %q after column %d", i, row, cell, at)
			}
			at += j + len(cell)
		}
	}
	// The long error is cut to the column's width, on one line.
	failed := lines[3]
	if !strings.HasSuffix(failed, "…") || strings.Contains(failed, strings.Repeat("x", 80)) {
		t.Fatalf("the detail of a long error is not shortened: %q", failed)
	}
	// Empty fields say nothing.
	if strings.Contains(lines[4], "zone") {
		t.Fatalf("an empty field is shown: %q", lines[4])
	}
	var empty strings.Builder
	if err := writeAuditTable(&empty, nil); err != nil || empty.String() != "No events match.\n" {
		t.Fatalf("no events: %q, %v", empty.String(), err)
	}
}

func TestAuditShortenKeepsRunes(t *testing.T) {
	if got := admShorten("héllo\n  wörld", 20); got != "héllo wörld" {
		t.Fatalf("%q", got)
	}
	if got := admShorten(strings.Repeat("é", 10), 5); got != "éééé…" {
		t.Fatalf("%q", got)
	}
}

// The next page's command repeats the filters given, quoted for a shell,
// never the server or the token.
func TestAuditNextPageCommand(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(auditAnswer))
	}))
	defer srv.Close()
	var out, errb bytes.Buffer
	a := &App{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" },
		ConfigDir: t.TempDir(), Now: func() time.Time { return auditNow }}
	code := a.Execute(context.Background(), a.NewRoot(), []string{"audit", "--actor", "vic o'neil", "--type", "A,B", "--limit", "4",
		"--server", srv.URL, "--token", "secret-token"})
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	last := lines[len(lines)-1]
	want := `More: dmgr audit --actor 'vic o'\''neil' --limit 4 --type A --type B --cursor djEuMzkuMA (or --all for every page)`
	if last != want {
		t.Fatalf("last line\n%q, want\n%q", last, want)
	}
	if strings.Contains(out.String(), "secret-token") {
		t.Fatal("the token is printed")
	}
}

// --all follows next_cursor to the end; a server that answers a cursor
// twice stops it instead of looping.
func TestAuditAllFollowsPages(t *testing.T) {
	var seen []string
	loop := false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := r.URL.Query().Get("cursor")
		seen = append(seen, c)
		w.Header().Set("Content-Type", "application/json")
		switch {
		case loop:
			_, _ = w.Write([]byte(`{"events":[{"type":"X","time":"2025-05-10T09:00:00Z"}],"next_cursor":"same"}`))
		case c == "":
			_, _ = w.Write([]byte(`{"events":[{"type":"A","time":"2025-05-10T09:00:00Z"},{"type":"B","time":"2025-05-10T09:00:00Z"}],"next_cursor":"p2"}`))
		case c == "p2":
			_, _ = w.Write([]byte(`{"events":[{"type":"C","time":"2025-05-10T09:00:00Z"}]}`))
		default:
			w.WriteHeader(400)
		}
	}))
	defer srv.Close()
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		a := &App{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" },
			ConfigDir: t.TempDir(), Now: func() time.Time { return auditNow }}
		code := a.Execute(context.Background(), a.NewRoot(), append(args, "--server", srv.URL, "--token", "t"))
		return code, out.String(), errb.String()
	}
	code, out, errs := run("audit", "--all", "-o", "json")
	var all struct {
		Events []struct {
			Type string `json:"type"`
		} `json:"events"`
		NextCursor *string `json:"next_cursor"`
	}
	if err := json.Unmarshal([]byte(out), &all); code != 0 || err != nil {
		t.Fatalf("exit %d %v: %s %s", code, err, out, errs)
	}
	if len(all.Events) != 3 || all.Events[0].Type != "A" || all.Events[2].Type != "C" || all.NextCursor != nil || strings.Join(seen, "|") != "|p2" {
		t.Fatalf("--all: %s (cursors asked %q)", out, seen)
	}
	loop = true
	code, _, errs = run("audit", "--all")
	if code != 1 || !strings.Contains(errs, "cursor same twice") {
		t.Fatalf("a looping server: exit %d, %s", code, errs)
	}
}
