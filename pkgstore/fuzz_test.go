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
	small := []ent{file("bin/dm-master", "m"), file("bin/dm-worker", "w"), file("others/dmctl", "c"), file("grafana.tar.gz", "g")}
	top := []ent{dir("dm-v2.0.1/"), file("dm-v2.0.1/bin/dm-master", "m"), file("dm-v2.0.1/bin/dm-worker", "w"),
		symlink("dm-v2.0.1/conf/x", "../bin/dm-master"), hardlink("dm-v2.0.1/bin/dm-copy", "dm-v2.0.1/bin/dm-master")}
	valid := tgz(t, small...)
	return map[string][]byte{
		"valid-root":       valid,
		"valid-top-dir":    tgz(t, top...),
		"dot-dot":          tgz(t, with(small, file("../x", "x"))...),
		"absolute":         tgz(t, with(small, file("/x", "x"))...),
		"symlink-out":      tgz(t, with(small, symlink("conf/x", "../../etc"))...),
		"symlink-chain":    tgz(t, with(small, symlink("a", "."), symlink("b", "a/.."))...),
		"hardlink-out":     tgz(t, with(small, hardlink("bin/x", "../etc/passwd"))...),
		"fifo":             tgz(t, with(small, ent{name: "p", typ: '6'})...),
		"no-dm-worker":     tgz(t, small[0]),
		"plain-text":       []byte("not a package"),
		"gzip-text":        gz(t, []byte("hello, world")),
		"truncated":        valid[:len(valid)-20],
		"trailing-garbage": append(slices.Clone(valid), "junk"...),
	}
}

var fuzzLimits = Limits{MaxBytes: 1 << 20, MaxUnpackedBytes: 4 << 20, MaxEntries: 1000}

func FuzzInspect(f *testing.F) {
	for _, b := range fuzzSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Inspect(bytes.NewReader(data), fuzzLimits)
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
		m, err := Inspect(bytes.NewReader(data), fuzzLimits)
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
