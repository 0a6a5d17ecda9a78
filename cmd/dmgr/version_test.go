package main

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/dmgr/dmgr/internal/testenv"
)

func TestBuildVersion(t *testing.T) {
	vcs := func(rev, modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	const rev = "8a156a1c0ffee0123456789abcdef0123456789a"
	tests := []struct {
		name     string
		override string
		info     *debug.BuildInfo
		ok       bool
		want     string
	}{
		{"the -X override wins", "v1.2.3", &debug.BuildInfo{Main: debug.Module{Version: "v0.9.0"}, Settings: vcs(rev, "false")}, true, "v1.2.3"},
		{"a tagged module version", "", &debug.BuildInfo{Main: debug.Module{Version: "v0.9.0"}}, true, "v0.9.0"},
		{"a pseudo-version from the checkout", "", &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261205182334-8a156a1c0ffe+dirty"}}, true, "v0.0.0-20261205182334-8a156a1c0ffe+dirty"},
		{"(devel) with a clean revision", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs(rev, "false")}, true, "devel-8a156a1c0ffe"},
		{"(devel) with a modified tree", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs(rev, "true")}, true, "devel-8a156a1c0ffe+dirty"},
		{"no version, no VCS", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, true, "dev"},
		{"no build information", "", nil, false, "dev"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := buildVersion(tt.override, tt.info, tt.ok); got != tt.want {
				t.Errorf("buildVersion = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestVersionIsSetAtBuild builds dmgr as a user does. From a git checkout
// it prints the commit it was built from, never "dev"; with -ldflags -X it
// prints the version given. It builds the working tree, copied into a
// fresh repository with one commit (the Go toolchain stamps no VCS
// information in a git worktree, whose .git is a file).
func TestVersionIsSetAtBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds dmgr twice")
	}
	ctx := testenv.Context(t, 8*time.Minute)
	git := func(dir string, args ...string) string {
		t.Helper()
		gctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		out, err := exec.CommandContext(gctx, "git", append([]string{"-C", dir, "-c", "user.name=dmgr test", "-c", "user.email=test@dmgr.invalid"}, args...)...).Output()
		if err != nil {
			testenv.SkipOrFail(t, "SKIP: git %v in %s: %v (the test builds dmgr from a git checkout)", args, dir, err)
		}
		return strings.TrimSpace(string(out))
	}
	top := git(".", "rev-parse", "--show-toplevel")
	clone := filepath.Join(t.TempDir(), "src")
	for _, f := range strings.Split(git(top, "ls-files", "--cached", "--others", "--exclude-standard"), "\n") {
		b, err := os.ReadFile(filepath.Join(top, f))
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted in the working tree
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(clone, f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(clone, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	git(clone, "init", "--quiet")
	git(clone, "add", "--all")
	git(clone, "commit", "--quiet", "-m", "the working tree")
	head := git(clone, "rev-parse", "HEAD")[:12]
	bin := t.TempDir()
	for _, tt := range []struct {
		name, ldflags, want string
	}{
		// -buildvcs=true is go build's default in a checkout ("auto");
		// explicit here since GOFLAGS may turn it off.
		{"from a checkout", "", head},
		{"with -X", "-X main.versionOverride=v9.9.9-test", "dmgr v9.9.9-test ("},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(bin, strings.ReplaceAll(tt.name, " ", "-"))
			args := []string{"build", "-buildvcs=true", "-o", out}
			if tt.ldflags != "" {
				args = append(args, "-ldflags", tt.ldflags)
			}
			build := exec.CommandContext(ctx, "go", append(args, "./cmd/dmgr")...)
			build.Dir = clone
			var stderr bytes.Buffer
			build.Stderr = &stderr
			if err := build.Run(); err != nil {
				t.Fatalf("go %v: %v\n%s", args, err, stderr.String())
			}
			printed, err := exec.CommandContext(ctx, out, "version").Output()
			if err != nil {
				t.Fatalf("dmgr version: %v", err)
			}
			got := strings.TrimSpace(string(printed))
			if !strings.HasPrefix(got, "dmgr ") || strings.HasPrefix(got, "dmgr dev") || !strings.Contains(got, tt.want) {
				t.Fatalf("dmgr version printed %q, want it to hold %q", got, tt.want)
			}
			t.Logf("%s", got)
		})
	}
}
