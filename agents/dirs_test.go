package agents

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/dmgr/dmgr/domain"
)

// The directory scripts run here with /bin/sh on real files, as root (they
// chown to root and read owners), in a temporary directory.

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("the directory scripts need root (chown), and CI=true")
		}
		t.Skip("the directory scripts need root (chown)")
	}
}

func runScript(t *testing.T, script string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command("/bin/sh", append([]string{"-c", script, "sh"}, args...)...)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestProbeScript(t *testing.T) {
	needRoot(t)
	root := t.TempDir()
	p := func(s string) string { return filepath.Join(root, s) }
	mark := domain.DirMark{Cluster: "prod-a", Operation: "op-1"}
	if err := os.MkdirAll(p("empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, p("full/x"), "data")
	write(t, p("file"), "x")
	write(t, p("ours/"+domain.MarkerFile), mark.MarkerContent("10.0.0.1:8261"))
	write(t, p("forged/"+domain.MarkerFile), mark.MarkerContent("10.0.0.1:8261"))
	if err := os.Chown(p("forged/"+domain.MarkerFile), 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(p("linked-marker"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(p("ours/"+domain.MarkerFile), p("linked-marker/"+domain.MarkerFile)); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc", p("link")); err != nil {
		t.Fatal(err)
	}
	dirs := []string{p("absent"), p("empty"), p("full"), p("file"), p("ours"), p("forged"), p("linked-marker"), p("link"), p("link/ssh")}
	out, stderr, code := runScript(t, probeScript, dirs...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	probes, err := parseProbe(out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	ours := &domain.Marker{Cluster: "prod-a", Instance: "10.0.0.1:8261", Operation: "op-1"}
	for _, want := range []domain.DirProbe{
		{Path: p("absent"), Kind: domain.DirAbsent, Real: p("absent")},
		{Path: p("empty"), Kind: domain.DirEmpty, Real: p("empty")},
		{Path: p("full"), Kind: domain.DirFull, Real: p("full")},
		{Path: p("file"), Kind: domain.DirNotDir, Real: p("file")},
		{Path: p("ours"), Kind: domain.DirFull, Real: p("ours"), Marker: ours, MarkerOwner: "root"},
		{Path: p("forged"), Kind: domain.DirFull, Real: p("forged"), Marker: ours, MarkerOwner: "nobody"},
		{Path: p("linked-marker"), Kind: domain.DirFull, Real: p("linked-marker")}, // a link: no marker
		{Path: p("link"), Kind: domain.DirSymlink, Real: "/etc"},
		{Path: p("link/ssh"), Kind: domain.DirFull, Real: "/etc/ssh"},
	} {
		got := probes[want.Path]
		if got.Kind != want.Kind || got.Real != want.Real || got.MarkerOwner != want.MarkerOwner || (got.Marker == nil) != (want.Marker == nil) ||
			got.Marker != nil && *got.Marker != *want.Marker {
			t.Errorf("%s: got %+v (marker %+v), want %+v", want.Path, got, got.Marker, want)
		}
	}
	// The domain refuses what the probe found: a marker that neither root
	// nor the deploy user owns speaks for nobody.
	if reason := mark.DeployProblem(probes[p("forged")], "tidb"); !strings.Contains(reason, "its marker is owned by nobody") {
		t.Errorf("a marker of another user's: %q", reason)
	}
	if reason := mark.DeployProblem(probes[p("ours")], "tidb"); reason != "" {
		t.Errorf("this operation's own marker: %q", reason)
	}
	if reason := mark.DeployProblem(probes[p("link/ssh")], "tidb"); !strings.Contains(reason, "resolves to /etc/ssh") {
		t.Errorf("a directory below a link into /etc: %q", reason)
	}

	// A cut-off answer is noticed.
	if _, err := parseProbe(strings.TrimSuffix(out, "end\n")); err == nil {
		t.Error("an answer without its end was taken")
	}
	if _, err := parseProbe("kind full\nend\n"); err == nil {
		t.Error("an answer without dir was taken")
	}
}

func owner(t *testing.T, path string) (uid int, mode os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return int(fi.Sys().(*syscall.Stat_t).Uid), fi.Mode()
}

func TestMakeDirsScript(t *testing.T) {
	needRoot(t)
	root := t.TempDir()
	p := func(s string) string { return filepath.Join(root, s) }
	mark := domain.DirMark{Cluster: "prod-a", Operation: "op-1"}
	content := mark.MarkerContent("10.0.0.1:8261")
	args := []string{"nobody", content, "prod-a", "10.0.0.1:8261",
		"dir=" + p("deploy"), "dir=" + p("deploy/bin"), "dir=" + p("data"), "mark=" + p("deploy"), "mark=" + p("data")}
	// data exists, empty and the deploy user's (as a user may prepare it).
	if err := os.Mkdir(p("data"), 0o777); err != nil {
		t.Fatal(err)
	}
	_ = os.Chown(p("data"), 65534, 65534)
	for try := 1; try <= 2; try++ { // the second is a retry
		out, stderr, code := runScript(t, makeDirsScript, args...)
		if code != 0 {
			t.Fatalf("try %d: exit %d: %s", try, code, stderr)
		}
		for _, d := range []string{"deploy", "data"} {
			m := p(d + "/" + domain.MarkerFile)
			got, err := os.ReadFile(m)
			if err != nil || string(got) != content {
				t.Fatalf("try %d: marker of %s: %q %v", try, d, got, err)
			}
			if uid, mode := owner(t, m); uid != 0 || mode.Perm() != 0o644 {
				t.Errorf("marker of %s: uid %d mode %v, want root's 0644", d, uid, mode)
			}
			if uid, mode := owner(t, p(d)); uid != 65534 || mode.Perm()&0o022 != 0 {
				t.Errorf("%s: uid %d mode %v, want the deploy user's, not writable by others", d, uid, mode)
			}
			want := d + ": marked"
			if try == 2 {
				want = d + ": marked already"
			}
			if !strings.Contains(out, want) {
				t.Errorf("try %d: output %q lacks %q", try, out, want)
			}
		}
		if uid, _ := owner(t, p("deploy/bin")); uid != 65534 {
			t.Errorf("deploy/bin is uid %d's", uid)
		}
	}

	// The deploy user's marker (an unpack chowned it) is still this
	// instance's.
	if err := os.Chown(p("deploy/"+domain.MarkerFile), 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if out, stderr, code := runScript(t, makeDirsScript, args...); code != 0 || !strings.Contains(out, "deploy: marked already") {
		t.Errorf("a marker of the deploy user's: exit %d %q %s", code, out, stderr)
	}

	// Another cluster's marker, or a link planted as the marker: refused,
	// nothing written through the link.
	other := domain.DirMark{Cluster: "prod-b"}.MarkerContent("10.0.0.1:8261")
	write(t, p("theirs/"+domain.MarkerFile), other)
	_, stderr, code := runScript(t, makeDirsScript, "nobody", content, "prod-a", "10.0.0.1:8261", "dir="+p("theirs"), "mark="+p("theirs"))
	if code == 0 || !strings.Contains(stderr, "holds a marker that is not this instance's") {
		t.Errorf("another cluster's directory: exit %d %q", code, stderr)
	}
	if got, _ := os.ReadFile(p("theirs/" + domain.MarkerFile)); string(got) != other {
		t.Errorf("another cluster's marker was changed: %q", got)
	}
	write(t, p("target"), "precious")
	if err := os.MkdirAll(p("trap"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(p("target"), p("trap/"+domain.MarkerFile)); err != nil {
		t.Fatal(err)
	}
	_, _, code = runScript(t, makeDirsScript, "nobody", content, "prod-a", "10.0.0.1:8261", "dir="+p("trap"), "mark="+p("trap"))
	if got, _ := os.ReadFile(p("target")); code == 0 || string(got) != "precious" {
		t.Errorf("a link planted as the marker: exit %d, its target now %q", code, got)
	}
}

func TestRemoveDirsScript(t *testing.T) {
	needRoot(t)
	root := t.TempDir()
	p := func(s string) string { return filepath.Join(root, s) }
	ours := domain.DirMark{Cluster: "prod-a"}.MarkerContent("10.0.0.1:8261")
	write(t, p("deploy/"+domain.MarkerFile), ours)
	write(t, p("deploy/bin/dm-master"), "x")
	write(t, p("data/"+domain.MarkerFile), domain.DirMark{Cluster: "prod-b"}.MarkerContent("10.0.0.1:8261"))
	write(t, p("data/keep"), "x")
	write(t, p("byother/"+domain.MarkerFile), ours)
	if err := os.Chown(p("byother/"+domain.MarkerFile), 65534, 65534); err != nil {
		t.Fatal(err)
	}
	write(t, p("byuser/"+domain.MarkerFile), ours)
	if err := os.Chown(p("byuser/"+domain.MarkerFile), 65534, 65534); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := runScript(t, removeDirsScript, "prod-a", "10.0.0.1:8261", "tidb", "0", p("byother"), p("byother"))
	if _, err := os.Stat(p("byother")); code != 0 || err != nil || !strings.Contains(out, "left "+p("byother")) {
		t.Errorf("a marker of another user's: exit %d %v, output %q %s", code, err, out, stderr)
	}
	out, stderr, code = runScript(t, removeDirsScript, "prod-a", "10.0.0.1:8261", "nobody", "0", p("byuser"), p("byuser"))
	if _, err := os.Stat(p("byuser")); code != 0 || !os.IsNotExist(err) {
		t.Errorf("a marker of the deploy user's: exit %d %v, output %q %s", code, err, out, stderr)
	}
	out, stderr, code = runScript(t, removeDirsScript, "prod-a", "10.0.0.1:8261", "tidb", "0", p("deploy/bin"), p("deploy"), p("data"), p("data"), "/tmp", "/tmp")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(p("deploy/bin")); !os.IsNotExist(err) || !strings.Contains(out, "removed "+p("deploy/bin")) {
		t.Errorf("deploy/bin (marked by its holder): %v, output %q", err, out)
	}
	if _, err := os.Stat(p("data/keep")); err != nil || !strings.Contains(out, "left "+p("data")+": its marker changed") {
		t.Errorf("data of another cluster: %v, output %q", err, out)
	}
	if _, err := os.Stat("/tmp"); err != nil || !strings.Contains(out, "left /tmp: not an absolute path two levels deep") {
		t.Errorf("/tmp: %v, output %q", err, out)
	}
}

// TestRemoveDirsScriptImported: for an instance taken over from tiup-dm a
// directory without any marker is removed; one that got a marker since
// (of anyone), or is a link, is left — and without imported=1 an unmarked
// directory is left.
func TestRemoveDirsScriptImported(t *testing.T) {
	needRoot(t)
	root := t.TempDir()
	p := func(s string) string { return filepath.Join(root, s) }
	write(t, p("deploy/bin/dm-master/dm-master"), "x")
	write(t, p("deploy/scripts/run_dm-master.sh"), "x")
	write(t, p("data/started-1"), "x")
	write(t, p("plain/keep"), "x")
	write(t, p("other/keep"), "x")
	write(t, p("other/"+domain.MarkerFile), domain.DirMark{Cluster: "prod-b"}.MarkerContent("10.0.0.1:8261"))
	write(t, p("target/precious"), "x")
	if err := os.Symlink(p("target"), p("link")); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := runScript(t, removeDirsScript, "legacy", "10.0.0.1:8261", "tidb", "1",
		p("deploy"), p("deploy"), p("data"), p("data"), p("other"), p("other"), p("link"), p("link"))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, d := range []string{"deploy", "data"} {
		if _, err := os.Stat(p(d)); !os.IsNotExist(err) || !strings.Contains(out, "removed "+p(d)+" (taken over from tiup-dm: no marker)") {
			t.Errorf("%s of the imported instance: %v, output %q", d, err, out)
		}
	}
	if _, err := os.Stat(p("other/keep")); err != nil || !strings.Contains(out, "left "+p("other")) {
		t.Errorf("a directory of another cluster: %v, output %q", err, out)
	}
	if _, err := os.Stat(p("target/precious")); err != nil || !strings.Contains(out, "left "+p("link")) {
		t.Errorf("a link: %v, output %q", err, out)
	}
	out, _, code = runScript(t, removeDirsScript, "legacy", "10.0.0.1:8261", "tidb", "0", p("plain"), p("plain"))
	if _, err := os.Stat(p("plain/keep")); code != 0 || err != nil || !strings.Contains(out, "left "+p("plain")) {
		t.Errorf("an unmarked directory of an instance dmgr deployed: exit %d %v, output %q", code, err, out)
	}
}
