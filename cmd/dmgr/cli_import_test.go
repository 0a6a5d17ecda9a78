package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dmgr/dmgr/internal/testbed/hosts"
	"github.com/dmgr/dmgr/internal/testbed/tiupdm"
)

// dmgr cluster import takes over a cluster that tiup dm laid out, from
// tiup's cluster directory as the user has it: the plan, then the import,
// then the cluster as dmgr displays it.
func TestCLIImportTiupCluster(t *testing.T) {
	bed := hosts.Start(t, 2)
	cp := startControlPlane(t)
	cp.startAgent(t, "agent-1")
	cp.cliOperator(t, "alice", "alice-password-1")
	u := newCLIUser(t, buildCLI(t), cp.baseURL())
	u.ok(t, "alice-password-1\n", "login", "--server", cp.baseURL(), "--user", "alice")
	u.uploadTestPackage(t, "v8.1.0")
	legacy := tiupdm.Deploy(t, bed, u.home, tiupdm.Spec{Name: "legacy", Version: "v8.1.0", Masters: []int{1}, Workers: []int{2}})
	dir := filepath.Join(u.home, ".tiup", "storage", "dm", "clusters", "legacy")
	if legacy.Dir != dir {
		t.Fatalf("tiup's directory is %s, not %s", legacy.Dir, dir)
	}
	started := legacy.StartMarkers(t)

	// What is wrong with the directory is said before anything is sent.
	u.fails(t, 2, "", []string{"cluster", "import", u.home, "--yes"}, "meta.yaml", "is it a tiup dm cluster directory?")
	// The plan: the instances, the machines the import registers, checks only.
	r := u.ok(t, "", "cluster", "import", dir, "--dry-run")
	for _, want := range []string{"Cluster name:     legacy", "Cluster version:  v8.1.0", "by this import", "they only read the hosts"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("import --dry-run lacks %q: %s", want, r)
		}
	}
	if rows := tableRows(r.stdout, "Role "); len(rows) != 2 || !hasRow(rows, "dm-master", bed.Hosts[0].Addr) || !hasRow(rows, "dm-worker", bed.Hosts[1].Addr) {
		t.Errorf("import plan instances %v", rows)
	}
	if rows := tableRows(r.stdout, "Machine "); len(rows) != 2 {
		t.Errorf("import plan machines %v", rows)
	}

	// The import itself, under the directory's name.
	r = u.ok(t, "", "cluster", "import", dir, "--yes")
	if !strings.Contains(r.stdout, "import of legacy succeeded") {
		t.Errorf("import: %s", r)
	}
	checkDisplay(t, u, cp, "legacy", 2)
	if rows := tableRows(u.ok(t, "", "machine", "list").stdout, "Host "); len(rows) != 2 {
		t.Errorf("machines after the import: %v", rows)
	}
	// Nothing of the cluster was restarted.
	for id, n := range legacy.StartMarkers(t) {
		if n != started[id] {
			t.Errorf("%s was started %d times, %d before the import", id, n, started[id])
		}
	}
	// A second import of the same directory is refused with the reason.
	if err := os.WriteFile(filepath.Join(u.home, "k"), legacy.Key, 0o600); err != nil {
		t.Fatal(err)
	}
	u.fails(t, 1, "", []string{"cluster", "import", dir, "--yes", "-i", filepath.Join(u.home, "k")}, "legacy")
}
