package agents

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/agents/remote"
	"github.com/dmgr/dmgr/internal/testenv"
)

// deployUser is the throwaway account the unpack tests deploy as.
const deployUser = "dmgrunpack"

// hostile is a tar entry of an archive that the package store would have
// refused, built to test the host's own defence.
type hostile struct {
	name, body, link string
	typ              byte
	mode             int64
}

func hostileTGZ(t *testing.T, entries ...hostile) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: e.mode, Size: int64(len(e.body)),
			Uid: 0, Gid: 0, Uname: "root", Gname: "root", ModTime: time.Unix(1700000000, 0), Devmajor: 1, Devminor: 3}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)[:h.Size]); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// unpackHost is a real sshd with a deploy user, and a run that acts on it
// as root, as an agent's steps do.
type unpackHost struct {
	t   *testing.T
	run *run
}

func newUnpackHost(t *testing.T) *unpackHost {
	s := testenv.SSHD(t, testenv.SSHDOptions{Users: []testenv.SSHUser{{Name: deployUser}}})
	p := remote.NewPool(remote.Options{})
	t.Cleanup(func() { p.Close() })
	a := &Agent{cfg: Config{Remote: p, Retries: 0, RetryBackoff: time.Second}}
	r := &run{a: a, log: zerolog.Nop(), out: &outcome{},
		target: remote.Target{Host: s.Host, Port: s.Port, User: "root", PrivateKey: s.ClientKey, HostKey: s.HostKey}}
	return &unpackHost{t: t, run: r}
}

// sh runs script as root on the host and returns its output.
func (h *unpackHost) sh(script string, args ...string) string {
	h.t.Helper()
	h.run.out = &outcome{}
	if err := h.run.sh(testenv.Context(h.t, time.Minute), "test", remote.RunOptions{}, script, args...); err != nil {
		h.t.Fatalf("%s: %v\n%s", script, err, h.run.out.stderr.String())
	}
	return h.run.out.stdout.String()
}

// deployDir makes a directory the deploy user owns, as make_dirs does,
// and uploads archive into it as copy_files does.
func (h *unpackHost) deployDir(archive []byte) (dir, file string) {
	h.t.Helper()
	base := h.t.TempDir()
	if err := os.Chmod(base, 0o755); err != nil {
		h.t.Fatal(err)
	}
	dir = filepath.Join(base, "grafana-3000")
	h.sh(makeDirsScript, deployUser, "", "", "", "dir="+dir)
	file = filepath.Join(dir, "grafana.tar.gz")
	sum := sha256.Sum256(archive)
	_, err := h.run.a.cfg.Remote.Upload(testenv.Context(h.t, time.Minute), h.run.target, remote.File{
		Path: file, Mode: 0o644, Owner: deployUser, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(archive)),
		Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(archive)), nil }})
	if err != nil {
		h.t.Fatal(err)
	}
	return dir, file
}

// TestUnpackKeepsNoOwnerOrSpecialBits: an archive whose entries claim
// root, set-uid, set-gid and sticky bits is unpacked as the deploy user,
// and nothing under the directory is set-uid, set-gid or sticky, or owned
// by anyone else.
func TestUnpackKeepsNoOwnerOrSpecialBits(t *testing.T) {
	h := newUnpackHost(t)
	archive := hostileTGZ(t,
		hostile{name: "bin/", typ: tar.TypeDir, mode: 0o7755},
		hostile{name: "bin/grafana-server", typ: tar.TypeReg, body: "#!/bin/sh\n", mode: 0o4755},
		hostile{name: "bin/grafana-cli", typ: tar.TypeLink, link: "bin/grafana-server", mode: 0o4755},
		hostile{name: "bin/sgid", typ: tar.TypeReg, body: "x", mode: 0o2777},
		hostile{name: "data/", typ: tar.TypeDir, mode: 0o1777},
		hostile{name: "conf/current.ini", typ: tar.TypeSymlink, link: "defaults.ini", mode: 0o777},
		hostile{name: "conf/defaults.ini", typ: tar.TypeReg, body: "[server]\n", mode: 0o6644},
	)
	dir, file := h.deployDir(archive)
	if err := h.run.unpack(testenv.Context(t, time.Minute), file, dir, deployUser); err != nil {
		t.Fatalf("unpack: %v\n%s", err, h.run.out.stderr.String())
	}
	if !strings.Contains(h.run.out.stdout.String(), "unpacked into "+dir+" as "+deployUser) {
		t.Errorf("unpack output %q does not say it ran as %s", h.run.out.stdout.String(), deployUser)
	}
	out := h.sh(`cd "$1" && find . -mindepth 1 ! -name grafana.tar.gz -printf '%M %u %p\n' | sort`, dir)
	want := []string{
		"-rwxr-xr-x " + deployUser + " ./bin/grafana-cli",
		"-rwxr-xr-x " + deployUser + " ./bin/grafana-server",
		"-rwxr-xr-x " + deployUser + " ./bin/sgid",
		"-rw-r--r-- " + deployUser + " ./conf/defaults.ini",
		"drwxr-xr-x " + deployUser + " ./bin",
		"drwxr-xr-x " + deployUser + " ./conf",
		"drwxr-xr-x " + deployUser + " ./data",
		"lrwxrwxrwx " + deployUser + " ./conf/current.ini",
	}
	for _, w := range want {
		if !strings.Contains(out, w+"\n") {
			t.Errorf("want %q in the unpacked tree:\n%s", w, out)
		}
	}
	if got := h.sh(`find "$1" -perm /7000`, dir); got != "" {
		t.Errorf("set-uid, set-gid or sticky files after unpacking:\n%s", got)
	}
	if got := h.sh(`find "$1" ! -user "$2"`, dir, deployUser); got != "" {
		t.Errorf("files not owned by %s after unpacking:\n%s", deployUser, got)
	}
}

// TestUnpackRefusesSpecialFiles: an archive with a device node or a FIFO
// is refused before anything is written.
func TestUnpackRefusesSpecialFiles(t *testing.T) {
	h := newUnpackHost(t)
	for _, tc := range []struct {
		name  string
		entry hostile
	}{
		{"character device", hostile{name: "dev/mem", typ: tar.TypeChar, mode: 0o666}},
		{"block device", hostile{name: "dev/sda", typ: tar.TypeBlock, mode: 0o666}},
		{"FIFO", hostile{name: "run/pipe", typ: tar.TypeFifo, mode: 0o666}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			archive := hostileTGZ(t, hostile{name: "bin/", typ: tar.TypeDir, mode: 0o755},
				hostile{name: "bin/grafana-server", typ: tar.TypeReg, body: "x", mode: 0o755}, tc.entry)
			dir, file := h.deployDir(archive)
			err := h.run.unpack(testenv.Context(t, time.Minute), file, dir, deployUser)
			if err == nil || !strings.Contains(err.Error(), "not a regular file, directory or link; nothing unpacked") {
				t.Fatalf("unpack: %v, want it refused", err)
			}
			if got := h.sh(`ls -A "$1"`, dir); got != "grafana.tar.gz\n" {
				t.Errorf("the refused archive wrote into %s:\n%s", dir, got)
			}
		})
	}
}

// TestUnpackCannotWriteThroughALink: a symlink the deploy user planted in
// the directory does not let the archive write where only root may.
func TestUnpackCannotWriteThroughALink(t *testing.T) {
	h := newUnpackHost(t)
	rootOnly := t.TempDir() // root's, 0700
	archive := hostileTGZ(t, hostile{name: "conf/", typ: tar.TypeDir, mode: 0o755},
		hostile{name: "conf/evil", typ: tar.TypeReg, body: "x", mode: 0o644})
	dir, file := h.deployDir(archive)
	h.sh(`ln -s -- "$1" "$2/conf" && chown -h -- "$3:" "$2/conf"`, rootOnly, dir, deployUser)
	err := h.run.unpack(testenv.Context(t, time.Minute), file, dir, deployUser)
	if _, serr := os.Stat(filepath.Join(rootOnly, "evil")); serr == nil {
		t.Fatalf("the archive wrote %s/evil through the planted link (unpack: %v)", rootOnly, err)
	}
	if err == nil {
		// GNU tar may replace the link by a directory instead; then the
		// file is inside dir, where the deploy user may write.
		if got := h.sh(`find "$1/conf" -maxdepth 0 -type d`, dir); got == "" {
			t.Fatalf("unpack succeeded but %s/conf is still the link", dir)
		}
	}
}

// TestUnpackOverAnExistingTree: the deploy directory as make_dirs leaves it
// for grafana (provisioning/ root's, its subdirectories the user's), and a
// second unpack over the first (a redelivered step, an upgrade) replacing
// files and links.
func TestUnpackOverAnExistingTree(t *testing.T) {
	h := newUnpackHost(t)
	v := func(body string) []byte {
		return hostileTGZ(t,
			hostile{name: "bin/", typ: tar.TypeDir, mode: 0o755},
			hostile{name: "bin/grafana-server", typ: tar.TypeReg, body: body, mode: 0o755},
			hostile{name: "bin/grafana-cli", typ: tar.TypeLink, link: "bin/grafana-server", mode: 0o755},
			hostile{name: "conf/", typ: tar.TypeDir, mode: 0o755},
			hostile{name: "conf/defaults.ini", typ: tar.TypeReg, body: body, mode: 0o644},
			hostile{name: "conf/current.ini", typ: tar.TypeSymlink, link: "defaults.ini", mode: 0o777},
			hostile{name: "provisioning/", typ: tar.TypeDir, mode: 0o700},
			hostile{name: "provisioning/dashboards/", typ: tar.TypeDir, mode: 0o700},
			hostile{name: "provisioning/dashboards/dm.yml", typ: tar.TypeReg, body: body, mode: 0o644},
		)
	}
	dir, file := h.deployDir(v("one"))
	h.sh(makeDirsScript, deployUser, "", "", "", "dir="+dir+"/provisioning/dashboards", "dir="+dir+"/conf", "dir="+dir+"/bin")
	ctx := testenv.Context(t, time.Minute)
	if err := h.run.unpack(ctx, file, dir, deployUser); err != nil {
		t.Fatalf("first unpack: %v\n%s", err, h.run.out.stderr.String())
	}
	// The second version, as a switch_files step would leave it.
	_, file2 := h.deployDir(v("two"))
	h.sh(`cp -- "$1" "$2" && chown -- "$3:" "$2"`, file2, file, deployUser)
	if err := h.run.unpack(ctx, file, dir, deployUser); err != nil {
		t.Fatalf("second unpack: %v\n%s", err, h.run.out.stderr.String())
	}
	got := h.sh(`cd "$1" && cat bin/grafana-cli conf/current.ini provisioning/dashboards/dm.yml && echo &&
stat -c '%U %a %n' provisioning && [ bin/grafana-cli -ef bin/grafana-server ] && echo hard-linked &&
readlink conf/current.ini && ls -A`, dir)
	want := "twotwotwo\nroot 755 provisioning\nhard-linked\ndefaults.ini\nbin\nconf\ngrafana.tar.gz\nprovisioning\n"
	if got != want {
		t.Errorf("after two unpacks:\n%s\nwant:\n%s", got, want)
	}
}
