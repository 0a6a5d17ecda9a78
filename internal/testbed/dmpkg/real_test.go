package dmpkg

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/dmgr/dmgr/internal/pkgstore"
)

// A package around real binaries (here stand-ins) passes the package
// store's checks, holds them where the plan looks for them and has no
// monitoring.
func TestWriteRealPacksTheBinaries(t *testing.T) {
	dir := t.TempDir()
	for _, b := range RealBinaries {
		if err := os.WriteFile(filepath.Join(dir, b.Name), []byte("#!/bin/sh\necho "+b.Name+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := WriteReal(&buf, dir); err != nil {
		t.Fatal(err)
	}
	m, err := pkgstore.Inspect(bytes.NewReader(buf.Bytes()), "dm-v9.0.0-beta.2.pre-linux-amd64", pkgstore.Limits{})
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	if want := []string{"dm-master", "dm-worker", "dmctl"}; !slices.Equal(m.Components, want) {
		t.Errorf("components %v, want %v", m.Components, want)
	}
	files := map[string]pkgstore.File{}
	for _, f := range m.Files {
		files[f.Path] = f
	}
	for _, p := range []string{"bin/dm-master", "bin/dm-worker", "others/dmctl", "conf/dm-master.toml", "conf/dm-worker.toml",
		"template/run_dm-master.sh.tmpl", "others/task_basic.yml"} {
		if _, ok := files[p]; !ok {
			t.Errorf("package lacks %s", p)
		}
	}
	if f := files["bin/dm-worker"]; f.Mode != 0o755 || f.Size != int64(len("#!/bin/sh\necho dm-worker\n")) {
		t.Errorf("bin/dm-worker: %+v", f)
	}
	if _, err := BuildReal("v9.0.0-beta.2.pre", dir, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	if err := WriteReal(&buf, t.TempDir()); err == nil {
		t.Error("a directory without the binaries made a package")
	}
}
