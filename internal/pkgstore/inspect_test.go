package pkgstore

import (
	"archive/tar"
	"bytes"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/dmgr/dmgr/domain"
)

func TestInspectRefuses(t *testing.T) {
	root := layout("")
	top := layout("dm-v2.0.1/")
	small := Limits{MaxBytes: 1 << 20, MaxUnpackedBytes: 1 << 20, MaxEntries: 1000}

	rng := rand.New(rand.NewPCG(1, 2))
	randomText := make([]byte, 2000)
	for i := range randomText {
		randomText[i] = "abcdefghijklmnopqrstuvwxyz \n"[rng.IntN(28)]
	}
	valid := tgz(t, root...)
	badCRC := slices.Clone(valid)
	badCRC[len(badCRC)-8] ^= 0xff // the CRC-32 in the gzip trailer

	tests := []struct {
		name string
		body []byte
		lim  Limits
		code string
		msg  string
	}{
		{"dot-dot path", tgz(t, with(root, file("../etc/passwd", "x"))...), small,
			domain.Invalid, `package: entry "../etc/passwd": path climbs out of the package ("..")`},
		{"dot-dot inside path", tgz(t, with(root, file("conf/../../x", "x"))...), small,
			domain.Invalid, `package: entry "conf/../../x": path climbs out of the package ("..")`},
		{"absolute path", tgz(t, with(root, file("/etc/passwd", "x"))...), small,
			domain.Invalid, `package: entry "/etc/passwd": path is absolute`},
		{"control character in path", tgz(t, with(root, file("conf/a\nb", "x"))...), small,
			domain.Invalid, `package: entry "conf/a\nb": path contains the control character U+000A`},
		{"symlink to absolute path", tgz(t, with(root, symlink("conf/passwd", "/etc/passwd"))...), small,
			domain.Invalid, `package: entry "conf/passwd": symlink target "/etc/passwd" points outside the package (absolute path)`},
		{"symlink climbing out", tgz(t, with(root, symlink("conf/etc", "../../etc"))...), small,
			domain.Invalid, `package: entry "conf/etc": symlink target "../../etc" points outside the package`},
		{"symlink out after top directory is stripped", tgz(t, with(top, symlink("dm-v2.0.1/conf/etc", "../../etc"))...), small,
			domain.Invalid, `package: entry "dm-v2.0.1/conf/etc": symlink target "../../etc" points outside the package`},
		{"symlink chain climbing out", tgz(t, with(root, symlink("conf/up", ".."), symlink("conf/out", "up/.."))...), small,
			domain.Invalid, `package: entry "conf/out": symlink target "up/.." points outside the package`},
		{"symlink loop", tgz(t, with(root, symlink("conf/a", "b"), symlink("conf/b", "a"))...), small,
			domain.Invalid, `symlink target "b" leads through too many symlinks`},
		{"file through a symlink", tgz(t, with(root, symlink("conf2", "conf"), file("conf2/x", "x"))...), small,
			domain.Invalid, `package: entry "conf2/x": lies under the symlink "conf2"`},
		{"file under a file", tgz(t, with(root, file("others/dmctl/x", "x"))...), small,
			domain.Invalid, `package: entry "others/dmctl/x": lies under "others/dmctl", which is a regular file`},
		{"hard link climbing out", tgz(t, with(root, hardlink("bin/passwd", "../../etc/passwd"))...), small,
			domain.Invalid, `package: entry "bin/passwd": hard link target "../../etc/passwd" points outside the package`},
		{"hard link to absolute path", tgz(t, with(root, hardlink("bin/passwd", "/etc/passwd"))...), small,
			domain.Invalid, `package: entry "bin/passwd": hard link target "/etc/passwd" points outside the package`},
		{"hard link to nothing in the package", tgz(t, with(root, hardlink("bin/x", "bin/nope"))...), small,
			domain.Invalid, `hard link target "bin/nope" is not a regular file earlier in the package`},
		{"character device", tgz(t, with(root, ent{name: "conf/tty", typ: tar.TypeChar})...), small,
			domain.Invalid, `package: entry "conf/tty": is a character device`},
		{"block device", tgz(t, with(root, ent{name: "conf/sda", typ: tar.TypeBlock})...), small,
			domain.Invalid, `package: entry "conf/sda": is a block device`},
		{"fifo", tgz(t, with(root, ent{name: "conf/pipe", typ: tar.TypeFifo})...), small,
			domain.Invalid, `package: entry "conf/pipe": is a FIFO`},
		{"duplicate file", tgz(t, with(root, file("./bin/dm-master", "evil"))...), small,
			domain.Invalid, `package: entry "./bin/dm-master": appears more than once`},
		{"over compressed limit", valid, Limits{MaxBytes: 100},
			domain.TooLarge, "package is larger than the upload limit of 100 bytes"},
		{"over unpacked limit (declared sizes)", tgz(t, with(root, file("big", strings.Repeat("x", 64<<10)))...), Limits{MaxUnpackedBytes: 32 << 10},
			domain.TooLarge, "package unpacks to more than the limit of 32 KiB (32768 bytes)"},
		{"over unpacked limit (tar stream)", valid, Limits{MaxUnpackedBytes: 4 << 10},
			domain.TooLarge, "package unpacks to more than the limit of 4 KiB"},
		{"too many entries", valid, Limits{MaxEntries: 3},
			domain.TooLarge, "package has more than 3 entries, the limit"},
		{"empty body", nil, small,
			domain.Invalid, "package is empty"},
		{"not gzip", []byte("hello, this is a plain text request body\n"), small,
			domain.Invalid, "package is not gzip-compressed: "},
		{"gzip of short text", gz(t, []byte("hello")), small,
			domain.Invalid, "package is not a tar archive: "},
		{"gzip of random text", gz(t, randomText), small,
			domain.Invalid, "package is not a tar archive: "},
		{"gzip of nothing", gz(t, nil), small,
			domain.Invalid, "package is not a tar archive: it holds no entries"},
		{"truncated", valid[:len(valid)/2], small,
			domain.Invalid, "package is truncated"},
		{"gzip checksum mismatch", badCRC, small,
			domain.Invalid, "package is damaged: its gzip data is corrupt"},
		{"missing bin/dm-worker", tgz(t, without(root, "bin/dm-worker")...), small,
			domain.Invalid, "package lacks bin/dm-worker; a DM package needs bin/dm-master and bin/dm-worker"},
		{"missing bin/dm-master", tgz(t, without(root, "bin/dm-master")...), small,
			domain.Invalid, "package lacks bin/dm-master; a DM package needs bin/dm-master and bin/dm-worker"},
		{"bin/dm-master is a symlink", tgz(t, with(without(root, "bin/dm-master"), symlink("bin/dm-master", "dm-worker"))...), small,
			domain.Invalid, `package: entry "bin/dm-master": must be a regular file, not a symlink`},
		{"two top directories, so nothing is stripped", tgz(t, with(top, file("other/x", "x"))...), small,
			domain.Invalid, "package lacks bin/dm-master"},
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

func TestInspectRootLayout(t *testing.T) {
	body := tgz(t, layout("")...)
	m, err := Inspect(bytes.NewReader(body), "", DefaultLimits())
	requireNoError(t, err)

	if m.SHA256 != sha(body) || m.Size != int64(len(body)) {
		t.Errorf("manifest sha256/size = %s/%d, want %s/%d", m.SHA256, m.Size, sha(body), len(body))
	}
	wantComponents := []string{"alertmanager", "dm-master", "dm-worker", "dmctl", "grafana", "prometheus"}
	if !slices.Equal(m.Components, wantComponents) {
		t.Errorf("components = %v, want %v", m.Components, wantComponents)
	}
	var paths []string
	for _, f := range m.Files {
		paths = append(paths, f.Path)
	}
	if !slices.IsSorted(paths) {
		t.Errorf("files not sorted: %v", paths)
	}
	if len(paths) != 13 {
		t.Errorf("got %d files, want the 13 regular files: %v", len(paths), paths)
	}
	i := slices.IndexFunc(m.Files, func(f File) bool { return f.Path == "bin/dm-master" })
	if i < 0 {
		t.Fatalf("bin/dm-master not in files %v", paths)
	}
	want := File{Path: "bin/dm-master", Size: 25, Mode: 0o755, SHA256: sha([]byte("#!/bin/sh\necho dm-master\n"))}
	if m.Files[i] != want {
		t.Errorf("bin/dm-master = %+v, want %+v", m.Files[i], want)
	}
}

func TestInspectTopDirLayoutsMatchRoot(t *testing.T) {
	rootM, err := Inspect(bytes.NewReader(tgz(t, layout("")...)), "", DefaultLimits())
	requireNoError(t, err)

	dotSlash := layout("")
	for i := range dotSlash {
		dotSlash[i].name = "./" + dotSlash[i].name
	}
	dotSlash = append([]ent{dir("./")}, dotSlash...)

	noDirEntries := layout("dm-v2.0.1/")
	noDirEntries = slices.DeleteFunc(noDirEntries, func(e ent) bool { return e.typ == tar.TypeDir })

	for name, entries := range map[string][]ent{
		"top directory":                   layout("dm-v2.0.1/"),
		"top directory without dir entry": noDirEntries,
		"./ prefix":                       dotSlash,
		"top directory with ./ prefix":    layout("./dm-v2.0.1/"),
	} {
		t.Run(name, func(t *testing.T) {
			m, err := Inspect(bytes.NewReader(tgz(t, entries...)), "", DefaultLimits())
			requireNoError(t, err)
			if !slices.Equal(m.Files, rootM.Files) {
				t.Errorf("files = %+v\nwant   %+v", m.Files, rootM.Files)
			}
			if !slices.Equal(m.Components, rootM.Components) {
				t.Errorf("components = %v, want %v", m.Components, rootM.Components)
			}
		})
	}
}

func TestInspectAccepts(t *testing.T) {
	minimal := []ent{file("bin/dm-master", "m"), file("bin/dm-worker", "w")}
	valid := tgz(t, layout("")...)

	// A multi-member gzip stream, as parallel compressors write.
	tb := tarBytes(t, layout(""))
	multi := append(gz(t, tb[:5000]), gz(t, tb[5000:])...)

	tests := []struct {
		name       string
		body       []byte
		components []string
		check      func(t *testing.T, m Manifest)
	}{
		{"links inside the package", tgz(t, with(layout(""),
			symlink("bin/dmctl", "../others/dmctl"),
			symlink("conf/current.toml", "dm-master.toml"),
			symlink("conf/self", "."),
			symlink("conf/via", "self/../template"),
			hardlink("others/dmctl-copy", "others/dmctl"),
		)...), []string{"alertmanager", "dm-master", "dm-worker", "dmctl", "grafana", "prometheus"},
			func(t *testing.T, m Manifest) {
				for _, f := range m.Files {
					if f.Path == "bin/dmctl" || f.Path == "conf/current.toml" {
						t.Errorf("symlink %s listed as a file", f.Path)
					}
					if f.Path == "others/dmctl-copy" && f.SHA256 != sha([]byte("dmctl")) {
						t.Errorf("hard link listed with sha256 %s, want its target's", f.SHA256)
					}
				}
			}},
		{"hard-linked dm-worker in a top directory", tgz(t,
			file("dm/bin/dm-master", "same"), hardlink("dm/bin/dm-worker", "dm/bin/dm-master"),
		), []string{"dm-master", "dm-worker"}, nil},
		{"only bin/: not taken for a top directory", tgz(t, minimal...), []string{"dm-master", "dm-worker"}, nil},
		{"trailing garbage after the gzip stream", append(slices.Clone(valid), "garbage\x00\x1f\x8b"...),
			[]string{"alertmanager", "dm-master", "dm-worker", "dmctl", "grafana", "prometheus"}, nil},
		{"multi-member gzip", multi,
			[]string{"alertmanager", "dm-master", "dm-worker", "dmctl", "grafana", "prometheus"}, nil},
		{"zero limits mean defaults", valid,
			[]string{"alertmanager", "dm-master", "dm-worker", "dmctl", "grafana", "prometheus"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Inspect(bytes.NewReader(tc.body), "", Limits{})
			requireNoError(t, err)
			if m.SHA256 != sha(tc.body) || m.Size != int64(len(tc.body)) {
				t.Errorf("manifest sha256/size = %s/%d, want the whole body's %s/%d", m.SHA256, m.Size, sha(tc.body), len(tc.body))
			}
			if !slices.Equal(m.Components, tc.components) {
				t.Errorf("components = %v, want %v", m.Components, tc.components)
			}
			if tc.check != nil {
				tc.check(t, m)
			}
		})
	}
}

// countingReader counts the bytes read from it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// TestInspectStopsEarly checks that Inspect streams: a refused first entry
// ends the read long before the end of a large body.
func TestInspectStopsEarly(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	noise := make([]byte, 8<<20)
	for i := range noise {
		noise[i] = byte(rng.Uint32())
	}
	body := tgz(t, file("../evil", "x"), file("bin/dm-master", string(noise)), file("bin/dm-worker", "w"))
	cr := &countingReader{r: bytes.NewReader(body)}
	_, err := Inspect(cr, "", DefaultLimits())
	requireCode(t, err, domain.Invalid, `package: entry "../evil"`)
	if cr.n > 1<<20 {
		t.Errorf("read %d of %d bytes before refusing the first entry", cr.n, len(body))
	}
}

func TestInspectReadError(t *testing.T) {
	body := tgz(t, layout("")...)
	r := io.MultiReader(bytes.NewReader(body[:100]), errReader{io.ErrClosedPipe})
	_, err := Inspect(r, "", DefaultLimits())
	if err == nil || domain.ErrorCode(err) != domain.Internal || !strings.Contains(err.Error(), "read package") {
		t.Fatalf("got %v, want an internal read error", err)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
