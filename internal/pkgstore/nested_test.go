package pkgstore

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dmgr/dmgr/domain"
)

// withGrafana is the root layout whose grafana.tar.gz is body.
func withGrafana(body []byte) []ent {
	es := slices.Clone(layout(""))
	for i := range es {
		if es[i].name == "grafana.tar.gz" {
			es[i].body = string(body)
		}
	}
	return es
}

// grafanaWith is a clean grafana tree with more entries, as a .tar.gz.
func grafanaWith(t testing.TB, more ...ent) []byte {
	t.Helper()
	return tgz(t, with([]ent{dir("bin/"), file("bin/grafana-server", "g"), dir("conf/"), file("conf/defaults.ini", "x")}, more...)...)
}

// zerosTGZ is a .tar.gz holding one file of size zero bytes, written as a
// stream: a compression bomb of about size/1000 bytes.
func zerosTGZ(t testing.TB, name string, size int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	requireNoError(t, err)
	tw := tar.NewWriter(zw)
	requireNoError(t, tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: size, ModTime: time.Unix(1700000000, 0)}))
	zeros := make([]byte, 1<<20)
	for left := size; left > 0; left -= int64(len(zeros)) {
		_, err := tw.Write(zeros[:min(left, int64(len(zeros)))])
		requireNoError(t, err)
	}
	requireNoError(t, tw.Close())
	requireNoError(t, zw.Close())
	return buf.Bytes()
}

func noise(seed uint64, n int) string {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return string(b)
}

// TestInspectNestedArchives is the table of the rules for archives inside
// a package: each is checked as the package is, and a refusal names the
// archive and the entry.
func TestInspectNestedArchives(t *testing.T) {
	small := Limits{MaxBytes: 64 << 20, MaxUnpackedBytes: 256 << 20, MaxEntries: 1000, MaxNestedEntries: 1000}
	pkg := func(grafana []byte) []byte { return tgz(t, withGrafana(grafana)...) }
	inner := func(es ...ent) []byte { return tgz(t, es...) }
	fullBomb := pkg(zerosTGZ(t, "public/zeros", 64<<20))
	nestedGrafana := tgz(t, layout("")...)
	truncatedInner := grafanaWith(t, file("public/a.js", noise(1, 64<<10)))
	truncatedInner = truncatedInner[:len(truncatedInner)/2]
	// The package's tar stream cut inside grafana.tar.gz's content.
	outerTar := tarBytes(t, withGrafana(grafanaWith(t, file("public/a.js", noise(2, 256<<10)))))
	outerTruncated := gz(t, outerTar[:len(outerTar)/3])

	tests := []struct {
		name string
		body []byte
		lim  Limits
		code string
		msg  string
	}{
		{"dot-dot path", pkg(grafanaWith(t, file("../x", "x"))), small,
			domain.Invalid, `package: grafana.tar.gz: entry "../x": path climbs out of the archive ("..")`},
		{"absolute path", pkg(grafanaWith(t, file("/etc/cron.d/x", "x"))), small,
			domain.Invalid, `package: grafana.tar.gz: entry "/etc/cron.d/x": path is absolute`},
		{"symlink out", pkg(grafanaWith(t, symlink("conf/etc", "../../etc"))), small,
			domain.Invalid, `package: grafana.tar.gz: entry "conf/etc": symlink target "../../etc" points outside the archive`},
		{"symlink to an absolute path", pkg(grafanaWith(t, symlink("conf/shadow", "/etc/shadow"))), small,
			domain.Invalid, `package: grafana.tar.gz: entry "conf/shadow": symlink target "/etc/shadow" points outside the archive (absolute path)`},
		{"symlink chain out", pkg(grafanaWith(t, symlink("conf/up", ".."), symlink("conf/out", "up/.."))), small,
			domain.Invalid, `package: grafana.tar.gz: entry "conf/out": symlink target "up/.." points outside the archive`},
		{"file through a symlink", pkg(grafanaWith(t, symlink("c2", "conf"), file("c2/x", "x"))), small,
			domain.Invalid, `package: grafana.tar.gz: entry "c2/x": lies under the symlink "c2"`},
		{"hard link out", pkg(grafanaWith(t, hardlink("bin/passwd", "../../etc/passwd"))), small,
			domain.Invalid, `package: grafana.tar.gz: entry "bin/passwd": hard link target "../../etc/passwd" points outside the archive`},
		{"hard link to an absolute path", pkg(grafanaWith(t, hardlink("bin/shadow", "/etc/shadow"))), small,
			domain.Invalid, `package: grafana.tar.gz: entry "bin/shadow": hard link target "/etc/shadow" points outside the archive`},
		{"set-uid file", pkg(grafanaWith(t, ent{name: "bin/su", typ: tar.TypeReg, body: "x", mode: 0o4755})), small,
			domain.Invalid, `package: grafana.tar.gz: entry "bin/su": has the set-uid bit (mode 4755); an archive may not carry set-uid, set-gid or sticky bits`},
		{"set-gid directory", pkg(grafanaWith(t, ent{name: "data/", typ: tar.TypeDir, mode: 0o2775})), small,
			domain.Invalid, `package: grafana.tar.gz: entry "data/": has the set-gid bit (mode 2775)`},
		{"set-uid and set-gid", pkg(grafanaWith(t, ent{name: "bin/x", typ: tar.TypeReg, mode: 0o6755})), small,
			domain.Invalid, `has the set-uid and set-gid bits (mode 6755)`},
		{"sticky directory", pkg(grafanaWith(t, ent{name: "tmp/", typ: tar.TypeDir, mode: 0o1777})), small,
			domain.Invalid, `package: grafana.tar.gz: entry "tmp/": has the sticky bit (mode 1777)`},
		{"character device", pkg(grafanaWith(t, ent{name: "dev/mem", typ: tar.TypeChar})), small,
			domain.Invalid, `package: grafana.tar.gz: entry "dev/mem": is a character device; an archive may hold only regular files, directories and links`},
		{"block device", pkg(grafanaWith(t, ent{name: "dev/sda", typ: tar.TypeBlock})), small,
			domain.Invalid, `package: grafana.tar.gz: entry "dev/sda": is a block device`},
		{"FIFO", pkg(grafanaWith(t, ent{name: "run/pipe", typ: tar.TypeFifo})), small,
			domain.Invalid, `package: grafana.tar.gz: entry "run/pipe": is a FIFO`},
		{"duplicate entry", pkg(grafanaWith(t, file("./conf/defaults.ini", "evil"))), small,
			domain.Invalid, `package: grafana.tar.gz: entry "./conf/defaults.ini": appears more than once in the archive`},
		{"file capability", pkg(grafanaWith(t, ent{name: "bin/cap", typ: tar.TypeReg, body: "x", pax: map[string]string{"SCHILY.xattr.security.capability": "\x01"}})), small,
			domain.Invalid, `package: grafana.tar.gz: entry "bin/cap": carries the extended attribute "security.capability"`},
		{"access control list", pkg(grafanaWith(t, ent{name: "conf/acl", typ: tar.TypeReg, pax: map[string]string{"SCHILY.acl.access": "user::rwx"}})), small,
			domain.Invalid, `package: grafana.tar.gz: entry "conf/acl": carries an access control list`},
		{"compression bomb (ratio)", fullBomb, small,
			domain.TooLarge, "package: grafana.tar.gz unpacks to more than 200 times its compressed size, the limit"},
		{"past the unpacked limit", pkg(grafanaWith(t, file("public/a.js", noise(3, 300<<10)))), Limits{MaxUnpackedBytes: 512 << 10},
			domain.TooLarge, "package: grafana.tar.gz: unpacking it takes the package past the limit of 512 KiB"},
		{"too many entries", pkg(grafanaWith(t, file("a", ""), file("b", ""), file("c", ""))), Limits{MaxNestedEntries: 5},
			domain.TooLarge, "package: grafana.tar.gz: the archives in the package hold more than 5 entries together, the limit"},
		{"too many entries in two archives together", tgz(t, with(withGrafana(grafanaWith(t)), file("others/extra.tgz", string(grafanaWith(t))))...), Limits{MaxNestedEntries: 6},
			domain.TooLarge, `package: others/extra.tgz: the archives in the package hold more than 6 entries`},
		{"nested two deep with a dot-dot path", pkg(grafanaWith(t, file("plugins/p.tgz", string(inner(file("../../x", "x")))))), small,
			domain.Invalid, `package: grafana.tar.gz: plugins/p.tgz: entry "../../x": path climbs out of the archive`},
		{"plain tar inside", pkg(grafanaWith(t, file("plugins/p.tar", string(tarBytes(t, []ent{file("/abs", "x")}))))), small,
			domain.Invalid, `package: grafana.tar.gz: plugins/p.tar: entry "/abs": path is absolute`},
		{"upper-case suffix is an archive too", pkg(grafanaWith(t, file("plugins/P.TGZ", string(inner(ent{name: "x", typ: tar.TypeFifo}))))), small,
			domain.Invalid, `package: grafana.tar.gz: plugins/P.TGZ: entry "x": is a FIFO`},
		{"nested deeper than the limit", pkg(grafanaWith(t, file("plugins/p.tgz", string(inner(file("x", "x")))))), Limits{MaxDepth: 1},
			domain.Invalid, `package: grafana.tar.gz: entry "plugins/p.tgz": is an archive nested 2 deep; archives in a package may nest at most 1 deep`},
		{"a whole package inside", pkg(grafanaWith(t, file("old/dm.tar.gz", string(nestedGrafana)))), Limits{MaxDepth: 2},
			domain.Invalid, `package: grafana.tar.gz: old/dm.tar.gz: entry "grafana.tar.gz": is an archive nested 3 deep`},
		{"zip", tgz(t, with(layout(""), file("others/plugin.zip", "PK\x03\x04"))...), small,
			domain.Invalid, `package: entry "others/plugin.zip": is a zip archive, which dmgr cannot check; repack it as .tar.gz`},
		{"zip in grafana", pkg(grafanaWith(t, file("plugins/x.zip", "PK"))), small,
			domain.Invalid, `package: grafana.tar.gz: entry "plugins/x.zip": is a zip archive`},
		{"xz tarball", tgz(t, with(layout(""), file("others/x.tar.xz", "x"))...), small,
			domain.Invalid, `package: entry "others/x.tar.xz": is a xz archive, which dmgr cannot check`},
		{"hard link named as an archive to an unchecked file", tgz(t, with(without(layout(""), "grafana.tar.gz"),
			file("others/blob", string(inner(file("../x", "x")))), hardlink("grafana.tar.gz", "others/blob"))...), small,
			domain.Invalid, `package: entry "grafana.tar.gz": is named as an archive but is a hard link to "others/blob", which was not checked as one`},
		{"not gzip", pkg([]byte("not really a grafana tarball")), small,
			domain.Invalid, "package: grafana.tar.gz is not gzip-compressed"},
		{"empty", pkg(nil), small,
			domain.Invalid, "package: grafana.tar.gz is empty, not an archive"},
		{"gzip of nothing", pkg(gz(t, nil)), small,
			domain.Invalid, "package: grafana.tar.gz is not a tar archive: it holds no entries"},
		{"trailing garbage", pkg(append(grafanaWith(t), "garbage after the gzip stream"...)), small,
			domain.Invalid, "package: grafana.tar.gz is damaged: its gzip data is corrupt"},
		{"truncated", pkg(truncatedInner), small,
			domain.Invalid, "package: grafana.tar.gz is truncated"},
		{"the package truncated inside it", outerTruncated, small,
			domain.Invalid, `package is truncated: it ends inside or after entry "grafana.tar.gz"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Inspect(bytes.NewReader(tc.body), "", tc.lim)
			requireCode(t, err, tc.code, tc.msg)
			if m.SHA256 != "" || m.Files != nil {
				t.Errorf("manifest of a refused package is not empty: %+v", m)
			}
		})
	}
}

// TestInspectNestedAccepts: clean archives inside a package pass, links
// inside them included, and the manifest lists the archive as one file.
func TestInspectNestedAccepts(t *testing.T) {
	deep := grafanaWith(t,
		symlink("conf/current.ini", "defaults.ini"),
		symlink("public", "conf/../bin"),
		hardlink("bin/grafana-cli", "bin/grafana-server"),
		file("plugins/p.tgz", string(tgz(t, file("p/module.js", "x"), symlink("p/m.js", "module.js")))),
		file("plugins/q.tar", string(tarBytes(t, []ent{dir("q/"), file("q/x", "x")}))),
		file("conf/x.json.gz", "not unpacked by anyone, not an archive"),
	)
	body := tgz(t, withGrafana(deep)...)
	m, err := Inspect(bytes.NewReader(body), "dm-v8.1.0-linux-amd64", Limits{})
	requireNoError(t, err)
	i := slices.IndexFunc(m.Files, func(f File) bool { return f.Path == "grafana.tar.gz" })
	if i < 0 || m.Files[i].SHA256 != sha(deep) || m.Files[i].Size != int64(len(deep)) {
		t.Fatalf("grafana.tar.gz in the manifest: %+v, want size %d sha256 %s", m.Files, len(deep), sha(deep))
	}
	for _, f := range m.Files {
		if strings.HasPrefix(f.Path, "bin/grafana") || strings.HasPrefix(f.Path, "plugins/") {
			t.Errorf("an entry of grafana.tar.gz is listed in the package manifest: %s", f.Path)
		}
	}
	if m.SHA256 != sha(body) {
		t.Errorf("sha256 %s, want the body's %s", m.SHA256, sha(body))
	}
}

// TestInspectNamesThePackage: with a name, every message says which
// package it is about.
func TestInspectNamesThePackage(t *testing.T) {
	for _, tc := range []struct {
		body []byte
		msg  string
	}{
		{tgz(t, withGrafana(grafanaWith(t, file("../x", "x")))...), `package dm-v8.1.0-linux-amd64: grafana.tar.gz: entry "../x": path climbs out of the archive ("..")`},
		{tgz(t, with(layout(""), file("/x", "x"))...), `package dm-v8.1.0-linux-amd64: entry "/x": path is absolute`},
		{tgz(t, without(layout(""), "bin/dm-master")...), `package dm-v8.1.0-linux-amd64 lacks bin/dm-master`},
		{nil, `package dm-v8.1.0-linux-amd64 is empty`},
	} {
		_, err := Inspect(bytes.NewReader(tc.body), "dm-v8.1.0-linux-amd64", Limits{})
		if err == nil || domain.ErrorMessage(err) != err.Error() || !strings.HasPrefix(err.Error(), tc.msg) {
			t.Errorf("got %v, want a message starting %q", err, tc.msg)
		}
	}
}

// TestInspectPackageRules: the rules that are new for the package itself.
func TestInspectPackageRules(t *testing.T) {
	root := layout("")
	for _, tc := range []struct {
		name string
		body []byte
		lim  Limits
		code string
		msg  string
	}{
		{"set-uid binary", tgz(t, with(without(root, "bin/dm-master"), ent{name: "bin/dm-master", typ: tar.TypeReg, body: "m", mode: 0o4755})...), Limits{},
			domain.Invalid, `package: entry "bin/dm-master": has the set-uid bit (mode 4755); a package may not carry set-uid, set-gid or sticky bits`},
		{"sticky directory", tgz(t, with(root, ent{name: "tmp/", typ: tar.TypeDir, mode: 0o1777})...), Limits{},
			domain.Invalid, `package: entry "tmp/": has the sticky bit`},
		{"file capability", tgz(t, with(root, ent{name: "bin/x", typ: tar.TypeReg, pax: map[string]string{"LIBARCHIVE.xattr.security.capability": "AQ=="}})...), Limits{},
			domain.Invalid, `package: entry "bin/x": carries the extended attribute "security.capability"`},
		{"compression bomb", tgz(t, with(root, ent{name: "others/zeros", typ: tar.TypeReg, body: strings.Repeat("\x00", 48<<20)})...), Limits{},
			domain.TooLarge, "package unpacks to more than 200 times its compressed size, the limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Inspect(bytes.NewReader(tc.body), "", tc.lim)
			requireCode(t, err, tc.code, tc.msg)
		})
	}
	// A user.* attribute, as macOS's tar adds, passes.
	body := tgz(t, with(root, ent{name: "others/mac", typ: tar.TypeReg, body: "x", pax: map[string]string{"LIBARCHIVE.xattr.user.com.apple.quarantine": "MA=="}})...)
	_, err := Inspect(bytes.NewReader(body), "", Limits{})
	requireNoError(t, err)
}

// TestInspectManifestBytes: MaxManifestBytes is exact: a package whose
// manifest is as large as the limit passes, one byte more is refused.
func TestInspectManifestBytes(t *testing.T) {
	var es []ent
	for i := range 200 {
		es = append(es, file("others/"+strings.Repeat("p", 100)+"-"+string(rune('a'+i%26))+strings.Repeat("q", i), "x"))
	}
	body := tgz(t, with(layout(""), es...)...)
	m, err := Inspect(bytes.NewReader(body), "", Limits{MaxManifestBytes: 1 << 30})
	requireNoError(t, err)
	size := m.JSONSize()
	if size < 50<<10 {
		t.Fatalf("manifest JSON is %d bytes; the test wants a large one", size)
	}
	if _, err := Inspect(bytes.NewReader(body), "", Limits{MaxManifestBytes: size}); err != nil {
		t.Fatalf("manifest of exactly the limit refused: %v", err)
	}
	_, err = Inspect(bytes.NewReader(body), "", Limits{MaxManifestBytes: size - 1})
	requireCode(t, err, domain.TooLarge, "package: its manifest (213 files) takes")
}

// TestManifestJSONSize: JSONSize is the length of the JSON that the event
// carries.
func TestManifestJSONSize(t *testing.T) {
	for _, m := range []Manifest{
		{Files: []File{}, Components: []string{"dm-master"}},
		{Files: []File{{Path: `a<b>&"c\d` + "\u2028é", Size: 1 << 40, Mode: 0o755, SHA256: strings.Repeat("a", 64)}, {Path: "x"}}},
		{},
	} {
		want := len(mustJSON(t, m.Files)) + len(mustJSON(t, m.Components))
		if got := m.JSONSize(); got != int64(want) {
			t.Errorf("JSONSize = %d, want %d for %+v", got, want, m)
		}
	}
}

// TestInspectStopsEarlyInANestedArchive: a refused first entry of
// grafana.tar.gz ends the read long before the end of the package.
func TestInspectStopsEarlyInANestedArchive(t *testing.T) {
	grafana := tgz(t, file("../evil", "x"), file("bin/grafana-server", noise(9, 4<<20)))
	body := tgz(t, with(withGrafana(grafana), file("others/tail", noise(10, 4<<20)))...)
	cr := &countingReader{r: bytes.NewReader(body)}
	_, err := Inspect(cr, "", DefaultLimits())
	requireCode(t, err, domain.Invalid, `grafana.tar.gz: entry "../evil"`)
	if cr.n > 1<<20 {
		t.Errorf("read %d of %d bytes before refusing the first entry of grafana.tar.gz", cr.n, len(body))
	}
}

// BenchmarkInspectWithGrafana: a 32 MiB package whose grafana.tar.gz holds
// 16 MiB in 2,000 files, inspected as a stream with the nested check.
func BenchmarkInspectWithGrafana(b *testing.B) {
	var ges []ent
	for i := range 2000 {
		ges = append(ges, file(fmt.Sprintf("public/build/f%04d.js", i), noise(uint64(i), 8<<10)))
	}
	grafana := tgz(b, ges...)
	body := tgz(b, with(withGrafana(grafana), file("bin/big", noise(99, 16<<20)))...)
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for range b.N {
		if _, err := Inspect(bytes.NewReader(body), "", Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}
