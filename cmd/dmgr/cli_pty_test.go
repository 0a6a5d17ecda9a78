package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/dmgr/dmgr/internal/testbed/hosts"
)

// cursorUp is the escape mpb moves the cursor up with to redraw its bars.
var cursorUp = regexp.MustCompile(`\x1b\[(\d+)A`)

// plainStepLine is one line of progress without a terminal.
var plainStepLine = regexp.MustCompile(`^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)  (\S+)  (\S+)  (\S+)  (started|succeeded|failed)(  .*)?$`)

// runInPTY runs dmgr with its stdin, stdout and stderr on a pseudo
// terminal of 160 columns and answers all it wrote and its exit status.
func (u *cliUser) runInPTY(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, u.bin, args...)
	cmd.Env, cmd.Dir = u.env, u.home
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 50, Cols: 160})
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	var out bytes.Buffer
	copied := make(chan error, 1)
	go func() {
		_, err := io.Copy(&out, ptmx)
		copied <- err
	}()
	werr := cmd.Wait()
	// The program is gone: what it wrote is in the terminal; reading ends
	// with EIO once it is drained.
	select {
	case err := <-copied:
		if err != nil && !errors.Is(err, syscall.EIO) {
			t.Fatalf("read the terminal: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the terminal did not drain")
	}
	code := 0
	var exit *exec.ExitError
	if errors.As(werr, &exit) {
		code = exit.ExitCode()
	} else if werr != nil {
		t.Fatal(werr)
	}
	return out.String(), code
}

// Done when 2: a deploy on a terminal draws a line per host, redrawn in
// place, that ends complete; the same deploy into a pipe prints exactly
// one line per step event, the events the API has.
func TestCLIProgressOnTerminalAndInPipe(t *testing.T) {
	bed := hosts.Start(t, 2)
	cp := startControlPlane(t)
	cp.startAgent(t, "agent-1")
	cp.startAgent(t, "agent-2")
	u := cliLoggedIn(t, buildCLI(t), cp, bed, "v8.1.0")

	topo := u.writeFile(t, "tty.yaml", cliTopology(bed, "/srv/tty", 0))
	out, code := u.runInPTY(t, "cluster", "deploy", "tty", "v8.1.0", topo, "--yes")
	if code != 0 {
		t.Fatalf("deploy on a terminal: exit %d\n%q", code, out)
	}
	ups := cursorUp.FindAllStringIndex(out, -1)
	if len(ups) < 3 {
		t.Fatalf("the bars were not redrawn in place (%d cursor-up escapes):\n%q", len(ups), out)
	}
	// The last frame: after the last cursor movement, each host's line
	// complete (its steps done out of its steps) and succeeded.
	last := out[ups[len(ups)-1][1]:]
	last = strings.TrimPrefix(last, "\x1b[J")
	lines := strings.Split(strings.ReplaceAll(last, "\r", ""), "\n")
	complete := regexp.MustCompile(`^(\S+)\s.*\s(\d+)/(\d+)\s+succeeded\s*$`)
	seen := map[string]bool{}
	for _, l := range lines {
		if m := complete.FindStringSubmatch(l); m != nil && m[2] == m[3] && m[2] != "0" {
			seen[m[1]] = true
		}
	}
	for _, h := range bed.Hosts {
		if !seen[h.Addr] {
			t.Errorf("the last frame has no complete line for %s:\n%s", h.Addr, last)
		}
	}
	if !strings.Contains(last, "deploy of tty succeeded") {
		t.Errorf("the output does not end with the outcome:\n%s", last)
	}

	// Into a pipe: one plain line per step event, no escapes.
	topo2 := u.writeFile(t, "pipe.yaml", cliTopology(bed, "/srv/pipe", 100))
	r := u.ok(t, "", "cluster", "deploy", "pipe", "v8.1.0", topo2, "--yes")
	if strings.Contains(r.stdout, "\x1b[") {
		t.Errorf("escapes in a pipe: %q", r.stdout)
	}
	m := operationIDRe.FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("no operation id: %s", r)
	}
	var got []string
	for l := range strings.SplitSeq(r.stdout, "\n") {
		if s := plainStepLine.FindStringSubmatch(l); s != nil {
			got = append(got, s[1]+" "+s[2]+" "+s[5])
		}
	}
	want := stepEventsOf(t, cp, m[1])
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("plain lines (time, step, what) differ from the operation's step events:\ngot  %d %v\nwant %d %v\n%s", len(got), got, len(want), want, r)
	}

	// Ctrl-C detaches: exit 130, how to follow again; the operation goes on.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, u.bin, "cluster", "restart", "pipe", "--yes")
	cmd.Env, cmd.Dir = u.env, u.home
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var printed strings.Builder
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		printed.WriteString(sc.Text() + "\n")
		if plainStepLine.MatchString(sc.Text()) {
			break // following: interrupt it
		}
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(&printed, stdout)
	var exit *exec.ExitError
	if err := cmd.Wait(); !errors.As(err, &exit) || exit.ExitCode() != 130 {
		t.Fatalf("after Ctrl-C: %v, want exit 130\n%s%s", err, printed.String(), stderr.String())
	}
	m = operationIDRe.FindStringSubmatch(printed.String())
	if m == nil || !strings.Contains(stderr.String(), "detached: the operation goes on; re-attach with: dmgr operation watch "+m[1]) {
		t.Fatalf("after Ctrl-C: %s\n%s", printed.String(), stderr.String())
	}
	if op := cp.waitOperation(t, m[1], 2*time.Minute); op.Status != "succeeded" {
		t.Errorf("the detached restart %s: %s", op.Status, op.Error)
	}
	// Re-attached, it ends as it ended: exit 0.
	if r := u.ok(t, "", "operation", "watch", m[1]); !strings.Contains(r.stdout, "restart of pipe succeeded") {
		t.Errorf("watch after the end: %s", r)
	}
}

// stepEventsOf answers the step events of an operation from the audit
// trail, as "time step started|succeeded|failed".
func stepEventsOf(t *testing.T, cp *controlPlane, op string) []string {
	t.Helper()
	var page struct {
		Events []struct {
			Type string    `json:"type"`
			Step string    `json:"step"`
			Time time.Time `json:"time"`
		} `json:"events"`
		NextCursor string `json:"next_cursor"`
	}
	if st := cp.api(t, "GET", "/api/v1/audit?operation="+op+"&type=StepStarted,StepSucceeded,StepFailed&limit=1000", nil, &page); st != 200 {
		t.Fatalf("audit: %d", st)
	}
	if page.NextCursor != "" {
		t.Fatal("more than 1000 step events")
	}
	what := map[string]string{"StepStarted": "started", "StepSucceeded": "succeeded", "StepFailed": "failed"}
	var out []string
	for _, e := range page.Events {
		out = append(out, fmt.Sprintf("%s %s %s", e.Time.UTC().Format(time.RFC3339), e.Step, what[e.Type]))
	}
	if len(out) == 0 {
		b, _ := json.Marshal(page)
		t.Fatalf("no step events for %s: %s", op, b)
	}
	return out
}
