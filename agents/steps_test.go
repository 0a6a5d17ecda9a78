package agents

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// runEnsureUser runs ensureUserScript with stand-ins for id and useradd:
// id finds the user once the file "created" exists (at once when exists);
// useradd runs the given shell body.
func runEnsureUser(t *testing.T, exists bool, useradd string) (string, int) {
	t.Helper()
	dir := t.TempDir()
	if exists {
		if err := os.WriteFile(filepath.Join(dir, "created"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write("id", `test -e "`+dir+`/created"`)
	write("useradd", useradd)
	write("sleep", "exit 0") // no real waits in the test
	cmd := exec.Command("/bin/sh", "-c", ensureUserScript, "sh", "tidb")
	cmd.Env = []string{"PATH=" + dir + ":/usr/bin:/bin", "DIR=" + dir}
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out)), code
}

func TestEnsureUserScript(t *testing.T) {
	tests := []struct {
		name     string
		useradd  string
		wantOut  string
		wantCode int
	}{
		{"creates the user", `touch "$DIR/created"`, "user tidb created", 0},
		{"another deploy created it first", `touch "$DIR/created"; echo "useradd: user 'tidb' already exists" >&2; exit 9`,
			"user tidb exists", 0},
		{"the passwd file was locked once", `if [ -e "$DIR/locked" ]; then touch "$DIR/created"; exit 0; fi; touch "$DIR/locked"; exit 10`,
			"user tidb created", 0},
		{"useradd fails for good", `echo "useradd: cannot open /etc/passwd" >&2; exit 10`, "useradd: cannot open /etc/passwd", 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, code := runEnsureUser(t, false, tt.useradd)
			if code != tt.wantCode || !strings.HasSuffix(out, tt.wantOut) {
				t.Errorf("exit %d, output %q; want exit %d ending in %q", code, out, tt.wantCode, tt.wantOut)
			}
		})
	}
	// An existing user: useradd never runs.
	t.Run("exists already", func(t *testing.T) {
		out, code := runEnsureUser(t, true, `echo useradd ran >&2; exit 1`)
		if code != 0 || out != "user tidb exists" {
			t.Errorf("exit %d, output %q; want exit 0 and only \"user tidb exists\"", code, out)
		}
	})
}
