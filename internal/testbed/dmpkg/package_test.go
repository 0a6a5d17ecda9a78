package dmpkg

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"text/template"

	"github.com/dmgr/dmgr/internal/pkgstore"
)

// TestPackageInspects: concurrent callers share one build, and the package
// passes pkgstore.Inspect with default limits, hard links listed with their
// target's content.
func TestPackageInspects(t *testing.T) {
	before := builds.Load()
	var wg sync.WaitGroup
	got := make([][]byte, 3)
	for i := range got {
		wg.Go(func() { got[i] = Package(t, "v8.1.0") })
	}
	wg.Wait()
	if n := builds.Load() - before; n > 1 {
		t.Errorf("%d builds for one version", n)
	}
	b := got[0]
	for _, o := range got[1:] {
		if !bytes.Equal(o, b) {
			t.Fatal("concurrent callers got different packages")
		}
	}
	t.Logf("dm-v8.1.0.tar.gz: %d bytes", len(b))

	if name, v, err := pkgstore.ParseName(FileName("v8.1.0")); err != nil || name != "dm" || v != "v8.1.0" {
		t.Fatalf("ParseName(%s): %s %s %v", FileName("v8.1.0"), name, v, err)
	}
	m, err := pkgstore.Inspect(bytes.NewReader(b), "", pkgstore.Limits{})
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	if want := []string{"alertmanager", "dm-master", "dm-worker", "dmctl", "grafana", "prometheus"}; !slices.Equal(m.Components, want) {
		t.Errorf("components %v, want %v", m.Components, want)
	}
	files := map[string]pkgstore.File{}
	for _, f := range m.Files {
		files[f.Path] = f
	}
	for _, p := range []string{"conf/dm-master.toml", "conf/dm-worker.toml", "conf/alertmanager.yml", "conf/dm_worker.rules.yml",
		"template/systemd.service.tmpl", "template/run_dm-master.sh.tmpl", "template/run_dm-master-scale.sh.tmpl",
		"template/run_dm-worker.sh.tmpl", "template/run_prometheus.sh.tmpl", "template/run_alertmanager.sh.tmpl",
		"template/run_grafana.sh.tmpl", "template/prometheus.yml.tmpl", "template/grafana.ini.tmpl",
		"template/dashboard.yml.tmpl", "template/datasource.yml.tmpl", "grafana.tar.gz",
		"others/task_basic.yml", "others/task_advanced.yml"} {
		if _, ok := files[p]; !ok {
			t.Errorf("package lacks %s", p)
		}
	}
	master := files["bin/dm-master"]
	if master.Size < 1<<20 || master.Mode != 0o755 {
		t.Fatalf("bin/dm-master: %+v", master)
	}
	for _, p := range []string{"bin/dm-worker", "bin/prometheus", "bin/alertmanager", "others/dmctl"} {
		if f := files[p]; f.SHA256 != master.SHA256 || f.Size != master.Size || f.Mode != 0o755 {
			t.Errorf("%s: %+v, want the content of bin/dm-master", p, f)
		}
	}
	names, bodies := readTar(t, b)
	if names[0] != "bin/" {
		t.Errorf("first entry %q: want the layout at the top level", names[0])
	}

	gnames, gbodies := readTar(t, bodies["grafana.tar.gz"])
	want := []string{"bin/", "bin/grafana-server", "bin/grafana-cli", "plugins/", "provisioning/", "provisioning/dashboards/",
		"provisioning/datasources/", "conf/", "conf/defaults.ini", "dashboards/", "dashboards/dm.json", "dashboards/dm_instances.json"}
	if !slices.Equal(gnames, want) {
		t.Errorf("grafana.tar.gz holds %q, want %q", gnames, want)
	}
	if !bytes.Equal(gbodies["bin/grafana-server"], bodies["bin/dm-master"]) {
		t.Error("bin/grafana-server is not the simulator binary")
	}
}

// TestTemplates: every template parses and renders with the fields the
// package documentation names, and no others.
func TestTemplates(t *testing.T) {
	b := Package(t, "v8.1.0")
	n := 0
	forEachTar(t, b, func(h *tar.Header, body []byte) {
		if !strings.HasPrefix(h.Name, "template/") || h.Typeflag != tar.TypeReg {
			return
		}
		n++
		tmpl, err := template.New(h.Name).Option("missingkey=error").Parse(string(body))
		if err != nil {
			t.Errorf("%s: %v", h.Name, err)
			return
		}
		if err := tmpl.Execute(io.Discard, templateData(t.TempDir(), "127.0.0.1", 8261)); err != nil {
			t.Errorf("%s: %v", h.Name, err)
		}
	})
	if n != 11 {
		t.Errorf("%d templates, want 11", n)
	}
}

// templateData is every field the templates use.
func templateData(deploy, ip string, port int) map[string]any {
	return map[string]any{
		"DeployDir": deploy, "DataDir": filepath.Join(deploy, "data"), "LogDir": filepath.Join(deploy, "log"),
		"IP": ip, "ListenHost": ip, "Port": port,
		"Name": "dm-" + ip, "PeerPort": 0, "InitialCluster": "", "Join": "",
		"Retention": "30d", "ClusterPort": 0, "ClusterPeers": []string{},
		"ServiceName": "dm-master-8261", "Role": "dm-master", "User": "tidb",
		"ClusterName": "test-cluster", "PrometheusAddr": "", "MasterAddrs": []string{}, "WorkerAddrs": []string{},
		"AlertmanagerAddrs": []string{}, "GrafanaAddrs": []string{}, "Username": "admin", "Password": "admin",
	}
}

func TestBuild(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "out")
	p, err := Build(ctx, "v8.1.0", dir)
	if err != nil {
		t.Fatal(err)
	}
	if p != filepath.Join(dir, "dm-v8.1.0.tar.gz") {
		t.Errorf("path %s", p)
	}
	b, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(b, Package(t, "v8.1.0")) {
		t.Errorf("Build wrote other bytes than Package returns (%v)", err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".dm-*")); len(left) != 0 {
		t.Errorf("temp files left: %v", left)
	}
	for _, tt := range []struct{ version, arch, want string }{
		{"8.1.0", "amd64", "want v<major>"},
		{"v8.1", "amd64", "want v<major>"},
		{"v8.1.0 -X main.x=y", "amd64", "want v<major>"},
		{"v8.1.0", "386", "amd64 or arm64"},
	} {
		if _, err := BuildFor(ctx, tt.version, tt.arch, dir); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("BuildFor(%q, %q): %v, want %q", tt.version, tt.arch, err, tt.want)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Build(cctx, "v0.0.1-canceled", dir); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled build: %v", err)
	}
}

// TestVersionsDiffer: each version's binary reports its own version.
func TestVersionsDiffer(t *testing.T) {
	dir := t.TempDir()
	for _, v := range []string{"v8.1.0", "v7.5.0"} {
		d := filepath.Join(dir, v)
		extract(t, Package(t, v), d)
		for _, prog := range []string{"bin/dm-master", "bin/dm-worker", "others/dmctl"} {
			cmd := exec.Command(filepath.Join(d, prog), "-V")
			cmd.Env = cleanEnv()
			out, err := cmd.Output()
			if err != nil || !strings.HasPrefix(string(out), "Release Version: "+v+"\n") {
				t.Errorf("%s %s -V: %q %v", v, prog, out, err)
			}
		}
		cmd := exec.Command(filepath.Join(d, "bin/prometheus"), "--version")
		cmd.Env = cleanEnv()
		if out, err := cmd.Output(); err != nil || !strings.HasPrefix(string(out), "prometheus, version "+v+" ") {
			t.Errorf("%s prometheus --version: %q %v", v, out, err)
		}
	}
}

// cleanEnv is the environment without the simulator's overrides.
func cleanEnv() []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "DMSIM_")
	})
}

func forEachTar(t *testing.T, tgz []byte, f func(h *tar.Header, body []byte)) {
	t.Helper()
	z, err := gzip.NewReader(bytes.NewReader(tgz))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(z)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		f(h, body)
	}
}

// readTar returns the entry names of tgz in order and the regular files' content.
func readTar(t *testing.T, tgz []byte) ([]string, map[string][]byte) {
	t.Helper()
	var names []string
	bodies := map[string][]byte{}
	forEachTar(t, tgz, func(h *tar.Header, body []byte) {
		names = append(names, h.Name)
		if h.Typeflag == tar.TypeReg {
			bodies[h.Name] = body
		}
	})
	return names, bodies
}

// extract unpacks tgz into dir as tar would, hard links as hard links.
func extract(t *testing.T, tgz []byte, dir string) {
	t.Helper()
	forEachTar(t, tgz, func(h *tar.Header, body []byte) {
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		var err error
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeLink:
			if err = os.MkdirAll(filepath.Dir(p), 0o755); err == nil {
				err = os.Link(filepath.Join(dir, filepath.FromSlash(h.Linkname)), p)
			}
		case tar.TypeReg:
			if err = os.MkdirAll(filepath.Dir(p), 0o755); err == nil {
				err = os.WriteFile(p, body, os.FileMode(h.Mode)&0o777)
			}
		default:
			t.Fatalf("%s: unexpected entry type %c", h.Name, h.Typeflag)
		}
		if err != nil {
			t.Fatal(err)
		}
	})
}

// TestPackageWith: the options add entries as given, to the package or to
// its grafana.tar.gz, and dmgr's check sees them; without options the
// repacked package has the same files as Package's.
func TestPackageWith(t *testing.T) {
	plain, err := pkgstore.Inspect(bytes.NewReader(Package(t, "v8.1.0")), "", pkgstore.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	same, err := pkgstore.Inspect(bytes.NewReader(PackageWith(t, "v8.1.0", Options{})), "", pkgstore.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(plain.Files, same.Files) {
		t.Errorf("repacked without options: files differ")
	}
	suid := PackageWith(t, "v8.1.0", Options{GrafanaExtra: []Extra{{Header: tar.Header{Name: "bin/su", Mode: 0o4755}, Body: []byte("x")}}})
	_, err = pkgstore.Inspect(bytes.NewReader(suid), "", pkgstore.Limits{})
	if err == nil || !strings.Contains(err.Error(), `grafana.tar.gz: entry "bin/su": has the set-uid bit`) {
		t.Errorf("set-uid file in grafana.tar.gz: %v", err)
	}
	fifo := PackageWith(t, "v8.1.0", Options{Extra: []Extra{{Header: tar.Header{Name: "others/p", Typeflag: tar.TypeFifo}}}})
	_, err = pkgstore.Inspect(bytes.NewReader(fifo), "", pkgstore.Limits{})
	if err == nil || !strings.Contains(err.Error(), `entry "others/p": is a FIFO`) {
		t.Errorf("FIFO in the package: %v", err)
	}
}
