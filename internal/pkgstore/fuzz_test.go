package pkgstore

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dmgr/dmgr/domain"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seed corpus in testdata/fuzz/FuzzInspect")

// fuzzSeeds are small valid and refused packages.
func fuzzSeeds(t testing.TB) map[string][]byte {
	small := []ent{file("bin/dm-master", "m"), file("bin/dm-worker", "w"), file("others/dmctl", "c"), file("grafana.tar.gz", string(grafanaTGZ))}
	top := []ent{dir("dm-v2.0.1/"), file("dm-v2.0.1/bin/dm-master", "m"), file("dm-v2.0.1/bin/dm-worker", "w"),
		symlink("dm-v2.0.1/conf/x", "../bin/dm-master"), hardlink("dm-v2.0.1/bin/dm-copy", "dm-v2.0.1/bin/dm-master")}
	valid := tgz(t, small...)
	nested := func(es ...ent) []byte {
		return tgz(t, file("bin/dm-master", "m"), file("bin/dm-worker", "w"), file("grafana.tar.gz", string(tgz(t, es...))))
	}
	return map[string][]byte{
		"nested-valid":        nested(file("bin/g", "g"), symlink("conf/x", "../bin/g"), hardlink("bin/h", "bin/g"), file("p/q.tar", string(tarBytes(t, []ent{file("x", "x")})))),
		"nested-dot-dot":      nested(file("../x", "x")),
		"nested-absolute":     nested(file("/x", "x")),
		"nested-symlink-out":  nested(symlink("conf/x", "../../etc")),
		"nested-hardlink-out": nested(hardlink("bin/x", "../etc/passwd")),
		"nested-setuid":       nested(ent{name: "bin/su", typ: '0', body: "x", mode: 0o4755}),
		"nested-device":       nested(ent{name: "dev", typ: '3'}),
		"nested-fifo":         nested(ent{name: "p", typ: '6'}),
		"nested-twice":        nested(file("p.tgz", string(tgz(t, file("../x", "x"))))),
		"valid-root":          valid,
		"valid-top-dir":       tgz(t, top...),
		"dot-dot":             tgz(t, with(small, file("../x", "x"))...),
		"absolute":            tgz(t, with(small, file("/x", "x"))...),
		"symlink-out":         tgz(t, with(small, symlink("conf/x", "../../etc"))...),
		"symlink-chain":       tgz(t, with(small, symlink("a", "."), symlink("b", "a/.."))...),
		"hardlink-out":        tgz(t, with(small, hardlink("bin/x", "../etc/passwd"))...),
		"fifo":                tgz(t, with(small, ent{name: "p", typ: '6'})...),
		"no-dm-worker":        tgz(t, small[0]),
		"plain-text":          []byte("not a package"),
		"gzip-text":           gz(t, []byte("hello, world")),
		"truncated":           valid[:len(valid)-20],
		"trailing-garbage":    append(slices.Clone(valid), "junk"...),
	}
}

var fuzzLimits = Limits{MaxBytes: 1 << 20, MaxUnpackedBytes: 4 << 20, MaxEntries: 1000, MaxNestedEntries: 1000, MaxManifestBytes: 64 << 10}

func FuzzInspect(f *testing.F) {
	for _, b := range fuzzSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Inspect(bytes.NewReader(data), "", fuzzLimits)
		checkInspect(t, data, m, err)
	})
}

// FuzzInspectTar mutates the tar stream under the gzip layer, where
// FuzzInspect's mutations of compressed bytes rarely reach.
func FuzzInspectTar(f *testing.F) {
	small := []ent{file("bin/dm-master", "m"), file("bin/dm-worker", "w")}
	f.Add(tarBytes(f, small))
	f.Add(tarBytes(f, with(small, symlink("conf/x", "../bin"), hardlink("bin/y", "bin/dm-master"), dir("conf/"))))
	f.Add(tarBytes(f, []ent{dir("dm/"), file("dm/bin/dm-master", "m"), file("dm/bin/dm-worker", "w"), symlink("dm/a", "b/..")}))
	f.Fuzz(func(t *testing.T, tb []byte) {
		data := gz(t, tb)
		m, err := Inspect(bytes.NewReader(data), "", fuzzLimits)
		checkInspect(t, data, m, err)
	})
}

// checkInspect checks what must hold for any input.
func checkInspect(t *testing.T, data []byte, m Manifest, err error) {
	t.Helper()
	if err != nil {
		// Reading from memory cannot fail: every refusal is the package's.
		if c := domain.ErrorCode(err); c != domain.Invalid && c != domain.TooLarge {
			t.Fatalf("error with code %q: %v", c, err)
		}
		return
	}
	if m.SHA256 != sha(data) || m.Size != int64(len(data)) {
		t.Fatalf("manifest sha256/size %s/%d, body %s/%d", m.SHA256, m.Size, sha(data), len(data))
	}
	if !slices.IsSortedFunc(m.Files, func(a, b File) int { return strings.Compare(a.Path, b.Path) }) {
		t.Fatal("files not sorted")
	}
	if n := m.JSONSize(); n > fuzzLimits.MaxManifestBytes {
		t.Fatalf("accepted a manifest of %d bytes, over the limit of %d", n, fuzzLimits.MaxManifestBytes)
	}
	have := map[string]bool{}
	for _, f := range m.Files {
		if f.Path == "" || path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path || f.Path == ".." || strings.HasPrefix(f.Path, "../") {
			t.Fatalf("accepted file path %q", f.Path)
		}
		if have[f.Path] {
			t.Fatalf("file %q listed twice", f.Path)
		}
		have[f.Path] = true
	}
	if !have["bin/dm-master"] || !have["bin/dm-worker"] {
		t.Fatalf("accepted a package without bin/dm-master and bin/dm-worker: %+v", m.Files)
	}
}

// TestWriteFuzzCorpus rewrites the committed seed corpus when run with
// -update-corpus: go test ./pkgstore -run TestWriteFuzzCorpus -update-corpus
func TestWriteFuzzCorpus(t *testing.T) {
	if !*updateCorpus {
		t.Skip("run with -update-corpus to rewrite testdata/fuzz/FuzzInspect")
	}
	d := filepath.Join("testdata", "fuzz", "FuzzInspect")
	requireNoError(t, os.MkdirAll(d, 0o755))
	for name, b := range fuzzSeeds(t) {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		requireNoError(t, os.WriteFile(filepath.Join(d, "seed-"+name), []byte(content), 0o644))
	}
}

// TestFuzzSeeds: the seeds named valid-* and nested-valid pass, every
// other one is refused.
func TestFuzzSeeds(t *testing.T) {
	for name, b := range fuzzSeeds(t) {
		_, err := Inspect(bytes.NewReader(b), "", fuzzLimits)
		valid := strings.HasPrefix(name, "valid-") || name == "nested-valid" || name == "trailing-garbage"
		if valid != (err == nil) {
			t.Errorf("seed %s: valid %v, Inspect said %v", name, valid, err)
		}
	}
}
