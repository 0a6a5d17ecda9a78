package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"gopkg.in/yaml.v3"

	"github.com/dmgr/dmgr/domain"
)

func TestRoles(t *testing.T) {
	for _, r := range []string{"viewer", "operator", "admin"} {
		if err := checkRole(r); err != nil {
			t.Errorf("%s: %v", r, err)
		}
	}
	for _, r := range []string{"", "Admin", "owner", "viewer ", "super-admin", "operator,admin"} {
		err := checkRole(r)
		if err == nil || ExitCode(err) != 2 || !strings.Contains(err.Error(), "use viewer, operator or admin") {
			t.Errorf("%q: %v (exit %d), want a usage error", r, err, ExitCode(err))
		}
	}
}

// peopleRun runs the dmgr command line against a server that does not
// answer: a command refused before any request ends with status 2, one
// that got as far as a request with 1 (cannot reach).
func peopleRun(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	a := &App{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" },
		ConfigDir: t.TempDir(), Now: time.Now}
	code := a.Execute(context.Background(), a.NewRoot(), append(args, "--server", "http://127.0.0.1:1", "--token", "t"))
	return code, out.String(), errb.String()
}

func TestBadUsageIsRefusedBeforeAnyRequest(t *testing.T) {
	cases := []struct {
		args  []string
		stdin string
		want  string
	}{
		{[]string{"group", "member", "set", "g1", "bob", "boss"}, "", `role "boss"`},
		{[]string{"group", "member", "set", "g1", "bob"}, "", "usage: dmgr group member set GROUP USER viewer|operator|admin"},
		{[]string{"group", "policy", "set", "g1"}, "", "--command"},
		{[]string{"group", "policy", "set", "g1", "--off", "--command", "destroy"}, "", "either --off or --command"},
		{[]string{"group", "policy", "set", "g1", "--command", "destroy", "--label", "env"}, "", `--label "env"`},
		{[]string{"group", "policy", "set", "g1", "--command", "destroy", "--ttl", "soon"}, "", `--ttl "soon"`},
		{[]string{"approval", "list", "--state", "open"}, "", `--state "open"`},
		{[]string{"approval", "list", "--limit", "5000"}, "", "--limit 5000"},
		{[]string{"approval", "approve"}, "", "usage: dmgr approval approve ID"},
		{[]string{"token", "create", "ci", "--expires-in", "forever"}, "", `--expires-in "forever"`},
		{[]string{"token", "list", "--kind", "all"}, "", `--kind "all"`},
		{[]string{"token", "revoke", "dmgr_abcdef"}, "", "not its secret"},
		{[]string{"token", "revoke", "t-1"}, "", "pass --yes"}, // stdin is no terminal to ask on
		{[]string{"user", "delete", "bob"}, "", "pass --yes"},
		{[]string{"group", "delete", "g1"}, "", "pass --yes"},
		{[]string{"user", "create", "bob"}, "", "no password on stdin"},
		{[]string{"user", "passwd", "bob", "--password-stdin"}, "\n", "no password on stdin"},
		{[]string{"user", "frobnicate"}, "", `dmgr user has no command "frobnicate"`},
		{[]string{"group", "member", "add", "g1", "bob", "viewer"}, "", `dmgr group member has no command "add"`},
		{[]string{"user", "list", "--output", "xml"}, "", `--output "xml"`},
	}
	for _, c := range cases {
		code, out, errs := peopleRun(t, c.stdin, c.args...)
		if code != 2 || out != "" || !strings.Contains(errs, c.want) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and %q", c.args, code, out, errs, c.want)
		}
	}
	// A good command gets as far as the request.
	if code, _, errs := peopleRun(t, "", "group", "member", "set", "g1", "bob", "operator"); code != 1 || !strings.Contains(errs, "cannot reach") {
		t.Fatalf("a good command: exit %d %s", code, errs)
	}
}

func TestPolicyBody(t *testing.T) {
	b, err := admPolicyBody([]string{"destroy", "upgrade", "destroy", " "}, []string{"env=prod", "tier=a=b", "empty="}, "24h", false)
	if err != nil {
		t.Fatal(err)
	}
	j, _ := json.Marshal(b)
	if string(j) != `{"cluster_labels":{"empty":"","env":"prod","tier":"a=b"},"commands":["destroy","upgrade"],"ttl":"24h"}` {
		t.Fatalf("body %s", j)
	}
	// --off sends an empty list and no labels: approvals off, never null.
	b, err = admPolicyBody(nil, nil, "", true)
	j, _ = json.Marshal(b)
	if err != nil || string(j) != `{"cluster_labels":{},"commands":[]}` {
		t.Fatalf("--off: %s %v", j, err)
	}
	if _, err := admPolicyBody([]string{"destroy"}, []string{"env=prod", "env=dev"}, "", false); err == nil || ExitCode(err) != 2 {
		t.Fatalf("a label given twice: %v", err)
	}
	if _, err := admPolicyBody([]string{"destroy"}, []string{"=prod"}, "", false); err == nil || ExitCode(err) != 2 {
		t.Fatalf("a label without key: %v", err)
	}
	if _, err := admPolicyBody([]string{"destroy"}, nil, "-1h", false); err == nil || ExitCode(err) != 2 {
		t.Fatalf("a negative ttl: %v", err)
	}
	if _, err := admPolicyBody(nil, []string{"env=prod"}, "", true); err == nil || ExitCode(err) != 2 {
		t.Fatalf("--off with labels: %v", err)
	}
}

// approvalsAnswer is a page of GET /api/v1/approvals as the server writes
// it: a pending, an approved and a rejected request.
const approvalsAnswer = `{"items":[
 {"id":"0190a-pending","group":"g1","cluster":"c1","command":"deploy","params":{"kind":"deploy","cluster":"","deploy":{"Name":"c1"}},"plan":{"steps":[]},
  "requester":"bob","requester_token":"t-1","requested_at":"2025-05-10T10:00:00Z","expires_at":"2025-05-11T10:00:00Z","operation_id":"0190-op1","state":"pending"},
 {"id":"0190b-approved","group":"g1","cluster":"c2","command":"destroy","params":{},"requester":"bob","requested_at":"2025-05-10T10:01:00Z",
  "expires_at":"2025-05-11T10:01:00Z","operation_id":"0190-op2","state":"approved","decided_by":"carol","comment":"ok","decided_at":"2025-05-10T10:05:00Z"},
 {"id":"0190c-rejected","group":"g2","cluster":"c3","command":"stop","params":{},"requester":"dave","requested_at":"2025-05-10T10:02:00Z",
  "expires_at":"2025-05-11T10:02:00Z","operation_id":"0190-op3","state":"rejected","decided_by":"erin","decided_at":"2025-05-10T10:06:00Z"}
],"next_cursor":"bDEuMDE5MGM"}`

func TestApprovalTableOfAPage(t *testing.T) {
	var page struct {
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal([]byte(approvalsAnswer), &page); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := admWriteApprovals(&b, page.Items); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if len(lines) != 5 {
		t.Fatalf("%d lines:\n%s", len(lines), b.String())
	}
	if got := strings.Join(strings.Fields(lines[0]), " "); got != "ID Group Cluster Command Requester State Requested Expires Decided by" {
		t.Fatalf("header %q", got)
	}
	want := []string{
		"0190a-pending g1 c1 deploy bob pending 2025-05-10T10:00:00Z 2025-05-11T10:00:00Z -",
		"0190b-approved g1 c2 destroy bob approved 2025-05-10T10:01:00Z - carol",
		"0190c-rejected g2 c3 stop dave rejected 2025-05-10T10:02:00Z - erin",
	}
	for i, w := range want {
		if got := strings.Join(strings.Fields(lines[i+2]), " "); got != w {
			t.Errorf("row %d: %q, want %q", i, got, w)
		}
	}
	// Columns line up: every row's State starts where the header's does.
	col := strings.Index(lines[0], "State")
	for _, l := range lines[2:] {
		if !strings.HasPrefix(l[col:], "pending") && !strings.HasPrefix(l[col:], "approved") && !strings.HasPrefix(l[col:], "rejected") {
			t.Errorf("misaligned row %q", l)
		}
	}
	var none strings.Builder
	if err := admWriteApprovals(&none, nil); err != nil || none.String() != "No approval requests match.\n" {
		t.Fatalf("empty page: %q %v", none.String(), err)
	}
}

// approvalAnswer is GET /api/v1/approvals/{id} of a held deploy.
const approvalAnswer = `{"id":"0190a","group":"g1","cluster":"c1","command":"deploy",
 "params":{"kind":"deploy","cluster":"","deploy":{"Name":"c1","Version":"v8.1.0","Topology":"global:\n  user: tidb\nmaster_servers:\n  - host: 10.0.0.1\n","Group":"g1","Labels":{"env":"prod"}}},
 "plan":{"cluster":{"name":"c1"},"steps":[
   {"id":"check-10.0.0.1","kind":"check_host","host":"10.0.0.1"},
   {"id":"start-dm-master-10.0.0.1-8261","kind":"start","host":"10.0.0.1","instance":"dm-master-10.0.0.1-8261","needs":["check-10.0.0.1","copy-x"]}]},
 "requester":"bob","requester_token":"t-1","requested_at":"2025-05-10T10:00:00Z","expires_at":"2025-05-11T10:00:00Z",
 "operation_id":"0190-op1","state":"pending"}`

func TestApprovalShowIsReadable(t *testing.T) {
	var b strings.Builder
	if err := admWriteApproval(&b, json.RawMessage(approvalAnswer)); err != nil {
		t.Fatal(err)
	}
	s := b.String()
	for _, want := range []string{
		"ID:         0190a\n",
		"State:      pending\n",
		"Requested:  2025-05-10T10:00:00Z by bob\n",
		"Expires:    2025-05-11T10:00:00Z\n",
		"Operation:  0190-op1 (when approved)\n",
		"The command, as requested:\n  kind: deploy\n  deploy:\n    Name: c1\n    Version: v8.1.0\n    Topology: |\n      global:\n        user: tidb\n      master_servers:\n        - host: 10.0.0.1\n    Group: g1\n    Labels:\n      env: prod\n",
		"Plan (2 steps, each after the ones it needs):\n",
		"check_host",
		"check-10.0.0.1,copy-x",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("no %q in\n%s", want, s)
		}
	}
	if strings.Contains(s, "cluster: \"\"") || strings.Contains(s, "requester_token") || strings.Contains(s, "Decided") {
		t.Errorf("empty or internal fields shown:\n%s", s)
	}
	// A large plan is kept as a summary.
	var sum strings.Builder
	if err := admWriteApproval(&sum, json.RawMessage(`{"id":"x","state":"rejected","command":"scale-out","cluster":"c1","requester":"bob",
		"plan":{"summary":"the plan is 300000 bytes; ask the dry run for it"},"decided_by":"carol","comment":"too big","decided_at":"2025-05-10T11:00:00Z","operation_id":"op"}`)); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Decided:    2025-05-10T11:00:00Z by carol\n", "Comment:    too big\n", "Operation:  -\n", "Plan: the plan is 300000 bytes; ask the dry run for it\n"} {
		if !strings.Contains(sum.String(), want) {
			t.Errorf("no %q in\n%s", want, sum.String())
		}
	}
}

func TestDecisionTells(t *testing.T) {
	ap := domain.Approval{ID: "0190a", Command: "destroy", Cluster: "c1", Requester: "bob", OperationID: "0190-op"}
	var b strings.Builder
	if err := admWriteDecision(&b, "approve", ap); err != nil {
		t.Fatal(err)
	}
	want := "Approved 0190a: destroy of cluster c1, requested by bob, runs now as bob.\nOperation: 0190-op\nFollow it: dmgr operation watch 0190-op\n"
	if b.String() != want {
		t.Fatalf("%q, want %q", b.String(), want)
	}
	ap.OperationID = ""
	if err := admWriteDecision(&strings.Builder{}, "approve", ap); err == nil {
		t.Fatal("an approval without an operation is reported as started")
	}
	b.Reset()
	if err := admWriteDecision(&b, "reject", ap); err != nil || b.String() != "Rejected 0190a: destroy of cluster c1, requested by bob, will not run.\n" {
		t.Fatalf("%q %v", b.String(), err)
	}
}

func TestGroupRendering(t *testing.T) {
	raw := json.RawMessage(`{"id":"g1","name":"payments","members":{"vic":"viewer","bob":"operator"},
		"approval_policy":{"commands":["destroy","upgrade"],"cluster_labels":{"env":"prod","tier":"db"},"ttl":"24h0m0s"}}`)
	var b strings.Builder
	if err := admWriteGroup(&b, raw, ""); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ID:               g1\n", "Name:             payments\n", "Approval policy:  destroy,upgrade on env=prod,tier=db, 24h0m0s\n", "Members:          2\n"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("no %q in\n%s", want, b.String())
		}
	}
	if i, j := strings.Index(b.String(), "bob"), strings.Index(b.String(), "vic"); i < 0 || j < i {
		t.Errorf("members not by name:\n%s", b.String())
	}
	if got := admPolicyText(admPolicy{TTL: "24h0m0s"}); got != "off" {
		t.Errorf("no commands: %q", got)
	}
	if got := admPolicyText(admPolicy{Commands: []string{"stop"}, TTL: "1h0m0s"}); got != "stop on every cluster, 1h0m0s" {
		t.Errorf("no labels: %q", got)
	}
}

func TestPasswordFromStdin(t *testing.T) {
	for in, want := range map[string]string{"s3cret-pass\n": "s3cret-pass", "s3cret-pass\r\nrest\n": "s3cret-pass", "no-newline": "no-newline", " spaced pw \n": " spaced pw "} {
		a := &App{Stdin: strings.NewReader(in), Stderr: &bytes.Buffer{}}
		got, err := a.admNewPassword(false, "bob")
		if err != nil || got != want {
			t.Errorf("%q: %q %v, want %q", in, got, err, want)
		}
	}
	a := &App{Stdin: strings.NewReader(""), Stderr: &bytes.Buffer{}}
	if _, err := a.admNewPassword(true, "bob"); err == nil || ExitCode(err) != 2 {
		t.Fatalf("empty stdin: %v", err)
	}
}

// On a terminal the password is asked twice, without echo.
func TestPasswordFromTerminal(t *testing.T) {
	ask := func(first, second string) (string, error, string) {
		ptmx, tty, err := pty.Open()
		if err != nil {
			t.Skipf("no pty: %v", err)
		}
		defer ptmx.Close()
		defer tty.Close()
		echoed := make(chan string)
		go func() {
			var all bytes.Buffer
			buf := make([]byte, 256)
			for {
				n, err := ptmx.Read(buf)
				all.Write(buf[:n])
				if err != nil {
					break
				}
			}
			echoed <- all.String()
		}()
		stderr := &peopleSyncBuffer{}
		a := &App{Stdin: tty, Stderr: stderr}
		type result struct {
			pw  string
			err error
		}
		done := make(chan result)
		go func() {
			pw, err := a.admNewPassword(false, "bob")
			done <- result{pw, err}
		}()
		for i, line := range []string{first, second} {
			if i == 1 {
				waitPrompt(t, stderr, "Repeat it: ") // the first read is over
			}
			waitNoEcho(t, tty)
			if _, err := ptmx.Write([]byte(line + "\n")); err != nil {
				t.Fatal(err)
			}
		}
		r := <-done
		tty.Close()
		ptmx.Close()
		return r.pw, r.err, <-echoed
	}
	pw, err, echo := ask("correct horse 1", "correct horse 1")
	if err != nil || pw != "correct horse 1" {
		t.Fatalf("%q %v", pw, err)
	}
	if strings.Contains(echo, "correct horse") {
		t.Fatalf("the password was echoed: %q", echo)
	}
	_, err, _ = ask("correct horse 1", "correct horse 2")
	if err == nil || ExitCode(err) != 1 || !strings.Contains(err.Error(), "differ") {
		t.Fatalf("two different passwords: %v", err)
	}
}

func echoOn(t *testing.T, tty *os.File) bool {
	tios, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	return tios.Lflag&unix.ECHO != 0
}

func waitNoEcho(t *testing.T, tty *os.File) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); echoOn(t, tty); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the password prompt never turned echo off")
		}
	}
}

func waitPrompt(t *testing.T, b *peopleSyncBuffer, prompt string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(b.String(), prompt); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no prompt %q, only %q", prompt, b.String())
		}
	}
}

// peopleSyncBuffer is a bytes.Buffer safe for a writer and a reader.
type peopleSyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *peopleSyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *peopleSyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// -o yaml prints the API's answer with the API's field names.
func TestYAMLKeepsTheAPIFieldNames(t *testing.T) {
	var out bytes.Buffer
	a := &App{Stdout: &out, output: OutputYAML}
	if err := a.print(json.RawMessage(approvalsAnswer), func(io.Writer) error { t.Fatal("a table for -o yaml"); return nil }); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	items, _ := doc["items"].([]any)
	first, _ := items[0].(map[string]any)
	if len(items) != 3 || first["requested_at"] == nil || first["operation_id"] != "0190-op1" || doc["next_cursor"] != "bDEuMDE5MGM" {
		t.Fatalf("yaml %v", doc)
	}
}

// Shell completion offers the roles, the policy's commands and the
// approval states.
func TestCompletions(t *testing.T) {
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"__complete", "group", "member", "set", "g1", "bob", ""}, roleNames()},
		{[]string{"__complete", "group", "policy", "set", "g1", "--command", ""}, domain.ApprovableCommands},
		{[]string{"__complete", "approval", "list", "--state", ""}, domain.ApprovalStates},
	} {
		var out, errb bytes.Buffer
		a := &App{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }, ConfigDir: t.TempDir(), Now: time.Now}
		if code := a.Execute(context.Background(), a.NewRoot(), c.args); code != 0 {
			t.Fatalf("%v: exit %d %s", c.args, code, errb.String())
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if len(lines) != len(c.want)+1 || strings.Join(lines[:len(c.want)], ",") != strings.Join(c.want, ",") || lines[len(c.want)] != ":4" {
			t.Errorf("%v: %q, want %v and :4 (no file completion)", c.args, out.String(), c.want)
		}
	}
}

// Every people and audit command says what it does and shows an example.
func TestPeopleCommandsHaveHelp(t *testing.T) {
	a := &App{Stdin: strings.NewReader(""), Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}, Getenv: func(string) string { return "" }, Now: time.Now}
	root := a.NewRoot()
	var check func(c *cobra.Command)
	n := 0
	check = func(c *cobra.Command) {
		n++
		if c.Short == "" || c.Example == "" || !strings.Contains(c.Example, "dmgr "+strings.TrimPrefix(c.CommandPath(), "dmgr ")) {
			t.Errorf("%s: short %q, example %q", c.CommandPath(), c.Short, c.Example)
		}
		for _, s := range c.Commands() {
			check(s)
		}
	}
	for _, name := range []string{"audit", "user", "group", "token", "approval"} {
		c, _, err := root.Find([]string{name})
		if err != nil || c.Name() != name {
			t.Fatalf("no command %s: %v", name, err)
		}
		check(c)
	}
	if n != 31 {
		t.Errorf("%d commands, want 31", n)
	}
}
