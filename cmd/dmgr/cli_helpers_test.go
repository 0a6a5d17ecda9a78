package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/dmgr/dmgr/internal/testbed/dmpkg"
	"github.com/dmgr/dmgr/internal/testbed/hosts"
)

// buildCLI builds dmgr (`go build`) into t's temporary directory: the
// tests run the command line as a user does, as a program of its own.
func buildCLI(t testing.TB) string {
	t.Helper()
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		gobin = "go"
	}
	out := filepath.Join(t.TempDir(), "dmgr")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, gobin, "build", "-o", out, ".")
	cmd.Env = childEnv(os.Environ())
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

// cliUser is a user of the command line: the dmgr binary with a home and
// a config directory of its own, talking to one server.
type cliUser struct {
	bin    string
	home   string
	server string
	env    []string
}

func newCLIUser(t testing.TB, bin, server string) *cliUser {
	t.Helper()
	home := t.TempDir()
	u := &cliUser{bin: bin, home: home, server: server}
	u.env = childEnv(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"), "TERM=xterm", "NO_COLOR=1")
	return u
}

// cliResult is what one run of the command line gave.
type cliResult struct {
	args           []string
	stdout, stderr string
	code           int
	took           time.Duration
}

func (r cliResult) String() string {
	return fmt.Sprintf("dmgr %s: exit %d\n--- stdout:\n%s--- stderr:\n%s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// run runs dmgr with args, stdin as its standard input (a pipe), and
// answers its output and exit status. It fails t when the program does
// not end within 4 minutes.
func (u *cliUser) run(t testing.TB, stdin string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, u.bin, args...)
	cmd.Env = u.env
	cmd.Dir = u.home
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	res := cliResult{args: args, stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		res.code = exit.ExitCode()
	default:
		t.Fatalf("dmgr %s: %v\n%s", strings.Join(args, " "), err, res)
	}
	if ctx.Err() != nil {
		t.Fatalf("dmgr %s did not end within 4 minutes\n%s", strings.Join(args, " "), res)
	}
	return res
}

// ok runs dmgr and fails t unless it exits 0.
func (u *cliUser) ok(t testing.TB, stdin string, args ...string) cliResult {
	t.Helper()
	r := u.run(t, stdin, args...)
	if r.code != 0 {
		t.Fatalf("want exit 0: %s", r)
	}
	return r
}

// fails runs dmgr and fails t unless it exits with code and its stderr
// says each of says.
func (u *cliUser) fails(t testing.TB, code int, stdin string, args []string, says ...string) cliResult {
	t.Helper()
	r := u.run(t, stdin, args...)
	if r.code != code {
		t.Fatalf("want exit %d: %s", code, r)
	}
	for _, s := range says {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("stderr lacks %q: %s", s, r)
		}
	}
	return r
}

// cliOperator makes user name (password pw) an operator of the default
// group through the admin API, as an administrator would.
func (cp *controlPlane) cliOperator(t testing.TB, name, pw string) {
	t.Helper()
	if st := cp.api(t, "POST", "/api/v1/users", map[string]any{"name": name, "password": pw}, nil); st != http.StatusCreated {
		t.Fatalf("create user %s: %d", name, st)
	}
	if st := cp.api(t, "PUT", "/api/v1/groups/default/members/"+name, map[string]any{"role": "operator"}, nil); st != http.StatusOK {
		t.Fatalf("make %s an operator: %d", name, st)
	}
}

// cliLoggedIn is a logged-in user with the bed's machines registered and
// the package of each version uploaded, all through the command line.
func cliLoggedIn(t testing.TB, bin string, cp *controlPlane, bed *hosts.Bed, versions ...string) *cliUser {
	t.Helper()
	cp.cliOperator(t, "alice", "alice-password-1")
	u := newCLIUser(t, bin, cp.baseURL())
	u.ok(t, "alice-password-1\n", "login", "--server", cp.baseURL(), "--user", "alice")
	for _, h := range bed.Hosts {
		u.ok(t, "", "machine", "add", h.Addr, "--user", "root", "-i", h.RootKeyFile, "--port", fmt.Sprint(h.SSHPort))
	}
	for _, v := range versions {
		u.uploadTestPackage(t, v)
	}
	return u
}

// uploadTestPackage writes the test DM package of version (the DM
// simulator in the seed layout) to a file and uploads it.
func (u *cliUser) uploadTestPackage(t testing.TB, version string) cliResult {
	t.Helper()
	file := filepath.Join(u.home, "dm-"+version+".tar.gz")
	if err := os.WriteFile(file, dmpkg.Package(t, version), 0o644); err != nil {
		t.Fatal(err)
	}
	return u.ok(t, "", "package", "upload", file)
}

// writeFile writes a file in the user's home and answers its path.
func (u *cliUser) writeFile(t testing.TB, name, body string) string {
	t.Helper()
	p := filepath.Join(u.home, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// tableRows parses a tiup-style table that starts at the line with
// header: the rows up to the first line that is not one (blank, or
// "Total nodes"), each split into its cells (cells hold no spaces).
func tableRows(out, header string) [][]string {
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if !strings.HasPrefix(l, header) {
			continue
		}
		var rows [][]string
		for _, r := range lines[i+2:] {
			if strings.TrimSpace(r) == "" || strings.HasPrefix(r, "Total nodes") || strings.HasPrefix(r, "Plan:") || strings.HasPrefix(r, "More: ") {
				break
			}
			rows = append(rows, strings.Fields(r))
		}
		return rows
	}
	return nil
}
