package dmpkg

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// RealBinaries are the programs of a real DM build that WriteReal packs,
// as `go build ./cmd/dm-master ./cmd/dm-worker ./cmd/dm-ctl` in
// pingcap/tiflow names them, and where they go in the package.
var RealBinaries = []struct{ Name, Dst string }{
	{"dm-master", "bin/dm-master"},
	{"dm-worker", "bin/dm-worker"},
	{"dm-ctl", "others/dmctl"},
}

// realTemplates are the templates of the simulator package that concern
// DM itself; real DM ships no prometheus, alertmanager or grafana.
var realTemplates = []string{"run_dm-master.sh.tmpl", "run_dm-master-scale.sh.tmpl", "run_dm-worker.sh.tmpl", "systemd.service.tmpl"}

// realConf are the default configs of the real package: only keys real DM
// takes (it refuses unknown ones).
var realConf = map[string]string{
	"conf/dm-master.toml": "# Default configuration of dm-master.\n# Instance values (name, addresses, initial cluster, directories) are\n# rendered per instance; the keys here are the defaults every master shares.\nlog-level = \"info\"\nrpc-timeout = \"30s\"\n",
	"conf/dm-worker.toml": "# Default configuration of dm-worker.\n# Instance values (name, addresses, join, directories) are rendered per\n# instance; the keys here are the defaults every worker shares.\nlog-level = \"info\"\nkeepalive-ttl = 60\n",
}

// WriteReal writes to w a package in the seed-000 layout around the real
// DM binaries in dir (see RealBinaries): bin/dm-master, bin/dm-worker,
// others/dmctl, default configs in conf/, the DM templates and the task
// examples. Real DM has no monitoring: the package holds no prometheus,
// alertmanager or grafana.tar.gz, so a topology deployed from it names no
// monitoring_servers, grafana_servers or alertmanager_servers (dmgr
// refuses such a topology with the file it lacks). The binaries stream
// from disk; nothing is held in memory.
func WriteReal(w io.Writer, dir string) error {
	gz, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(gz)
	hdr := func(name string, mode, size int64, typ byte) error {
		return tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: size, Typeflag: typ, ModTime: modTime,
			Uname: "root", Gname: "root", Format: tar.FormatPAX})
	}
	small := func(name, body string, mode int64) error {
		if err := hdr(name, mode, int64(len(body)), tar.TypeReg); err != nil {
			return err
		}
		_, err := io.WriteString(tw, body)
		return err
	}
	for _, d := range []string{"bin/", "conf/", "template/", "others/"} {
		if err := hdr(d, 0o755, 0, tar.TypeDir); err != nil {
			return fmt.Errorf("dmpkg: real package: %w", err)
		}
	}
	for _, b := range RealBinaries {
		if err := packFile(tw, filepath.Join(dir, b.Name), b.Dst); err != nil {
			return err
		}
	}
	for _, name := range []string{"conf/dm-master.toml", "conf/dm-worker.toml"} {
		if err := small(name, realConf[name], 0o644); err != nil {
			return fmt.Errorf("dmpkg: real package: %w", err)
		}
	}
	for _, name := range realTemplates {
		b, err := skel.ReadFile("skel/template/" + name)
		if err != nil {
			return fmt.Errorf("dmpkg: real package: %w", err)
		}
		if err := small("template/"+name, string(b), 0o644); err != nil {
			return fmt.Errorf("dmpkg: real package: %w", err)
		}
	}
	for _, name := range []string{"task_basic.yml", "task_advanced.yml"} {
		b, err := skel.ReadFile("skel/others/" + name)
		if err != nil {
			return fmt.Errorf("dmpkg: real package: %w", err)
		}
		if err := small("others/"+name, string(b), 0o644); err != nil {
			return fmt.Errorf("dmpkg: real package: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("dmpkg: real package: %w", err)
	}
	if err := gz.Close(); err != nil {
		return fmt.Errorf("dmpkg: real package: %w", err)
	}
	return nil
}

// packFile adds the executable src as dst.
func packFile(tw *tar.Writer, src, dst string) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("dmpkg: real package: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("dmpkg: real package: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("dmpkg: real package: %s is not a regular file", src)
	}
	if err := tw.WriteHeader(&tar.Header{Name: dst, Mode: 0o755, Size: fi.Size(), Typeflag: tar.TypeReg, ModTime: modTime,
		Uname: "root", Gname: "root", Format: tar.FormatPAX}); err != nil {
		return fmt.Errorf("dmpkg: real package %s: %w", dst, err)
	}
	if _, err := io.Copy(tw, bufio.NewReaderSize(f, 1<<20)); err != nil {
		return fmt.Errorf("dmpkg: real package %s: %w", dst, err)
	}
	return nil
}

// BuildReal writes dm-<version>.tar.gz from the real binaries in binDir
// into dir (see WriteReal) and returns its path.
func BuildReal(version, binDir, dir string) (string, error) {
	if err := checkVersion(version); err != nil {
		return "", err
	}
	return writeFile(dir, FileName(version), func(w io.Writer) error { return WriteReal(w, binDir) })
}

// RealVersion asks the dm-master in binDir for its version (`dm-master
// -V`: "Release Version: v9.0.0-beta.2.pre", which the build set with
// -ldflags -X github.com/pingcap/tiflow/pkg/version.ReleaseVersion=…).
func RealVersion(ctx context.Context, binDir string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	bin := filepath.Join(binDir, "dm-master")
	out, err := exec.CommandContext(ctx, bin, "-V").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("dmpkg: %s -V: %w\n%s", bin, err, out)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "Release Version: "); ok {
			if err := checkVersion(v); err != nil {
				return "", fmt.Errorf("dmpkg: %s reports version %q, which is no package version (v<major>.<minor>.<patch>[-suffix]); build it with -ldflags \"-X github.com/pingcap/tiflow/pkg/version.ReleaseVersion=v9.0.0-beta.2.pre\"", bin, v)
			}
			return v, nil
		}
	}
	return "", fmt.Errorf("dmpkg: %s -V printed no Release Version:\n%s", bin, out)
}
