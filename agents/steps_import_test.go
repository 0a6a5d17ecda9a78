package agents

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestVerifyInstanceScript runs the import's check on real files and
// processes here: it passes for an instance as tiup lays it out and
// names every problem otherwise, writing nothing.
func TestVerifyInstanceScript(t *testing.T) {
	root := t.TempDir()
	deploy := filepath.Join(root, "deploy", "dm-master-8261")
	data := filepath.Join(root, "data", "dm-master-8261")
	bin := filepath.Join(deploy, "bin", "dm-master", "dm-master")
	conf := filepath.Join(deploy, "conf", "dm-master.toml")
	runScriptPath := filepath.Join(deploy, "scripts", "run_dm-master.sh")
	pidfile := filepath.Join(deploy, "scripts", "dm-master-8261.pid")
	for _, f := range []struct {
		path string
		mode os.FileMode
	}{{bin, 0o755}, {conf, 0o644}, {runScriptPath, 0o755}} {
		write(t, f.path, "x")
		if err := os.Chmod(f.path, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	start := func(dir string) int {
		cmd := exec.Command("sleep", "60")
		cmd.Dir = dir
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd.Process.Pid
	}
	ours := start(deploy)
	other := start(root)
	write(t, pidfile, strconv.Itoa(ours)+"\n")
	args := func(manager string) []string {
		return []string{deploy, bin, conf, runScriptPath, manager, pidfile, "dm-master-8261.service", deploy, data}
	}
	snapshot := func() map[string]string {
		out := map[string]string{}
		_ = filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
			if err == nil {
				out[p] = fi.Mode().String() + fi.ModTime().String()
			}
			return nil
		})
		return out
	}
	// The script writes nothing: every file and directory is as it was
	// after each run.
	check := func(t *testing.T, run func() (string, string, int)) (string, string, int) {
		t.Helper()
		before := snapshot()
		out, stderr, code := run()
		after := snapshot()
		for p, v := range before {
			if after[p] != v {
				t.Errorf("%s changed: %s → %s", p, v, after[p])
			}
		}
		if len(after) != len(before) {
			t.Errorf("%d paths before the check, %d after", len(before), len(after))
		}
		return out, stderr, code
	}
	plain := func(a []string) func() (string, string, int) {
		return func() (string, string, int) { return runScript(t, verifyInstanceScript, a...) }
	}

	out, stderr, code := check(t, plain(args("none")))
	if code != 0 || !strings.Contains(out, "running as pid "+strconv.Itoa(ours)) {
		t.Fatalf("a running instance: exit %d, %q %q", code, out, stderr)
	}

	tests := []struct {
		name   string
		break_ func()
		undo   func()
		want   []string
	}{
		{"binary missing", func() { os.Rename(bin, bin+".x") }, func() { os.Rename(bin+".x", bin) }, []string{"its binary " + bin + " is missing"}},
		{"binary not executable", func() { os.Chmod(bin, 0o644) }, func() { os.Chmod(bin, 0o755) }, []string{"its binary " + bin + " is not executable"}},
		{"config and data missing", func() { os.Rename(conf, conf+".x"); os.Rename(data, data+".x") }, func() { os.Rename(conf+".x", conf); os.Rename(data+".x", data) },
			[]string{"its config " + conf + " is missing", "directory " + data + " is missing"}},
		{"no pid file", func() { os.Rename(pidfile, pidfile+".x") }, func() { os.Rename(pidfile+".x", pidfile) },
			[]string{pidfile + " is missing", "import with service_manager systemd"}},
		{"a dead process", func() { os.WriteFile(pidfile, []byte("999999\n"), 0o644) }, func() { os.WriteFile(pidfile, []byte(strconv.Itoa(ours)), 0o644) },
			[]string{"it does not run: pid 999999 (from " + pidfile + ") is not a live process"}},
		{"another process", func() { os.WriteFile(pidfile, []byte(strconv.Itoa(other)), 0o644) }, func() { os.WriteFile(pidfile, []byte(strconv.Itoa(ours)), 0o644) },
			[]string{"works in " + root + ", not in its deploy directory"}},
		{"garbage in the pid file", func() { os.WriteFile(pidfile, []byte("12; rm -rf /\n"), 0o644) }, func() { os.WriteFile(pidfile, []byte(strconv.Itoa(ours)), 0o644) },
			[]string{"holds no process id"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.break_()
			defer tt.undo()
			out, stderr, code := check(t, plain(args("none")))
			if code == 0 {
				t.Fatalf("passed: %q", out)
			}
			if strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Errorf("problems on more than one line: %q", stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q does not say %q", stderr, w)
				}
			}
		})
	}
	out, stderr, code = runScript(t, verifyInstanceScript, append([]string{filepath.Join(root, "gone")}, args("none")[1:]...)...)
	if code == 0 || !strings.Contains(stderr, "its deploy directory "+filepath.Join(root, "gone")+" is missing") {
		t.Errorf("a missing deploy directory: exit %d %q %q", code, out, stderr)
	}

	// Under systemd the unit is asked (a stand-in systemctl here).
	fake := t.TempDir()
	write(t, filepath.Join(fake, "systemctl"), "#!/bin/sh\n[ \"$1 $3\" = \"is-active dm-master-8261.service\" ] || exit 3\nif [ -e "+fake+"/up ]; then echo active; else echo inactive; exit 3; fi\n")
	os.Chmod(filepath.Join(fake, "systemctl"), 0o755)
	runWithPath := func() (string, string, int) {
		cmd := exec.Command("/bin/sh", append([]string{"-c", verifyInstanceScript, "sh"}, args("systemd")...)...)
		cmd.Env = []string{"PATH=" + fake + ":/usr/bin:/bin"}
		var o, e strings.Builder
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		return o.String(), e.String(), code
	}
	if _, stderr, code := check(t, runWithPath); code == 0 || !strings.Contains(stderr, "its systemd unit dm-master-8261.service is not active (inactive)") {
		t.Errorf("an inactive unit: exit %d %q", code, stderr)
	}
	write(t, filepath.Join(fake, "up"), "")
	if out, stderr, code := check(t, runWithPath); code != 0 || !strings.Contains(out, "dm-master-8261.service is active") {
		t.Errorf("an active unit: exit %d %q %q", code, out, stderr)
	}
}

func TestReleaseVersion(t *testing.T) {
	for body, want := range map[string]string{
		"Release Version: v8.1.0\nGit Commit Hash: x\n":   "v8.1.0",
		"Git Commit Hash: x\nRelease Version:  v7.5.1 \n": "v7.5.1",
		"nothing": "",
	} {
		if got := releaseVersion([]byte(body)); got != want {
			t.Errorf("releaseVersion(%q) = %q, want %q", body, got, want)
		}
	}
}
