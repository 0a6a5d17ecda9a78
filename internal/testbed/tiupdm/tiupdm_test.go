package tiupdm_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dmgr/dmgr/internal/testbed/hosts"
	"github.com/dmgr/dmgr/internal/testbed/tiupdm"
	"github.com/dmgr/dmgr/internal/tiupmeta"
)

// TestDeployLaysOutATiupCluster: the storage directory on the control
// machine, tiup's layout on the hosts, every process started once by its
// run script and listed in its pid file, and the deploy user logging in
// with the cluster's key.
func TestDeployLaysOutATiupCluster(t *testing.T) {
	bed := hosts.Start(t, 2)
	home := t.TempDir()
	c := tiupdm.Deploy(t, bed, home, tiupdm.Spec{Name: "legacy", Version: "v8.1.0", Masters: []int{1, 2}, Workers: []int{2}})

	for _, f := range []string{"meta.yaml", "ssh/id_rsa", "ssh/id_rsa.pub"} {
		if _, err := os.Stat(filepath.Join(home, ".tiup/storage/dm/clusters/legacy", f)); err != nil {
			t.Errorf("storage: %v", err)
		}
	}
	m, err := tiupmeta.Parse(c.Meta)
	if err != nil {
		t.Fatalf("meta.yaml does not parse: %v\n%s", err, c.Meta)
	}
	if m.User != "tidb" || m.Version != "v8.1.0" || len(m.Parsed.Instances) != 3 {
		t.Errorf("meta %s", m)
	}
	for i, in := range m.Parsed.Instances {
		if want := c.Instances[i]; in.ID != want.ID() || in.DeployDir != want.DeployDir || in.DataDir != want.DataDir || in.LogDir != want.LogDir || in.Name != want.Name {
			t.Errorf("instance %d: meta.yaml says %+v, laid out %+v", i, in, want)
		}
	}
	if !strings.HasPrefix(c.Meta, "user: tidb\ndm_version: v8.1.0\ntopology:\n    global:\n") {
		t.Errorf("meta.yaml is not as tiup (yaml.v3) writes it:\n%s", c.Meta)
	}

	for _, in := range c.Instances {
		out, err := bed.Exec(t, in.Host, `set -e
cd `+in.DeployDir+`
ls bin/`+in.Role+`/`+in.Role+` conf/`+in.Role+`.toml scripts/run_`+in.Role+`.sh
pid=$(cat scripts/`+in.Service()+`.pid)
ps -o user= -p "$pid"
readlink /proc/$pid/exe
readlink /proc/$pid/cwd`)
		if err != nil {
			t.Fatalf("%s: %v\n%s", in.ID(), err, out)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 6 || strings.TrimSpace(lines[3]) != "tidb" || lines[4] != in.DeployDir+"/bin/"+in.Role+"/"+in.Role || lines[5] != in.DeployDir {
			t.Errorf("%s: the pid file does not name the deploy user's process of tiup's binary:\n%s", in.ID(), out)
		}
	}
	markers := c.StartMarkers(t)
	for id, n := range markers {
		if n != 1 {
			t.Errorf("%s started %d times, want once", id, n)
		}
	}
	files := c.Files(t)
	if len(files) < 20 {
		t.Fatalf("only %d paths listed: %v", len(files), files)
	}
	if d := tiupdm.DiffFiles(files, c.Files(t)); len(d) != 0 {
		t.Errorf("two listings differ with nothing done: %v", d)
	}

	// Stop and start again by the pid file: one more marker, the same files
	// but the pid file.
	w := c.Instances[2]
	c.Stop(t, w)
	c.Start(t, w)
	c.WaitMembers(t)
	if n := c.StartMarkers(t)[w.ID()]; n != 2 {
		t.Errorf("after a restart %s has %d markers, want 2", w.ID(), n)
	}
	d := tiupdm.DiffFiles(files, c.Files(t))
	if len(d) == 0 {
		t.Error("a restart changed nothing in the listing")
	}
	// What a restart writes: the pid file (and its directory), a start
	// marker (in the worker's log directory).
	scripts := w.DeployDir + "/scripts:"
	for _, l := range d {
		if !strings.Contains(l, w.PIDFile()) && !strings.Contains(l, w.LogDir) && !strings.Contains(l, scripts) {
			t.Errorf("a restart changed more than the pid file, the log directory and a start marker: %s", l)
		}
	}
}
