// Package layout holds the checks that keep the tree shaped like the
// design: the top level names the architecture, and domain stays pure.
package layout

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/dmgr/dmgr"

// topLevel is every folder the top of the tree may hold: the seven the
// design names, internal/ for the rest, and the hidden folders of tools.
var topLevel = []string{"agents", "cmd", "deployments", "domain", "eventstore", "httpapi", "internal", "projections", "testdata", "docs"}

func repoRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// TestTopLevelFoldersAreTheDesigns: no folder at the top beyond the
// design's seven, internal, testdata and docs (git-ignored build output
// and dot-folders aside).
func TestTopLevelFoldersAreTheDesigns(t *testing.T) {
	root := repoRoot(t)
	out, err := exec.Command("git", "-C", root, "ls-files").Output()
	if err != nil {
		t.Skipf("not a git checkout (%v): the tracked folders cannot be listed", err)
	}
	seen := map[string]bool{}
	for _, f := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if dir, _, ok := strings.Cut(f, "/"); ok && !strings.HasPrefix(dir, ".") {
			seen[dir] = true
		}
	}
	for dir := range seen {
		if !slices.Contains(topLevel, dir) {
			t.Errorf("top-level folder %s/ is not one the design names (%s): move it under internal/", dir, strings.Join(topLevel, ", "))
		}
	}
	for _, dir := range []string{"cmd", "domain", "eventstore", "projections", "agents", "httpapi", "deployments"} {
		if !seen[dir] {
			t.Errorf("the design's top-level folder %s/ is missing", dir)
		}
	}
}

// TestDomainImportsNothingOfTheProject: domain (tests included) imports
// only the standard library and outside modules.
func TestDomainImportsNothingOfTheProject(t *testing.T) {
	root := repoRoot(t)
	cmd := exec.Command("go", "list", "-json", "./domain/...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list ./domain/...: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	n := 0
	for {
		var p struct {
			ImportPath                         string
			Imports, TestImports, XTestImports []string
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode go list: %v", err)
		}
		n++
		for _, imp := range slices.Concat(p.Imports, p.TestImports, p.XTestImports) {
			if imp == module || strings.HasPrefix(imp, module+"/") {
				if imp != p.ImportPath {
					t.Errorf("%s imports %s: domain imports nothing of the project", p.ImportPath, imp)
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("go list found no package under ./domain")
	}
	if _, err := os.Stat(filepath.Join(root, "domain", "doc.go")); err != nil {
		t.Errorf("domain/doc.go: %v", err)
	}
}
