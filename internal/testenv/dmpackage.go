package testenv

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"testing"
)

// Entry is one member of a test archive.
type Entry struct {
	Name     string
	Body     string
	Mode     int64
	Typeflag byte // tar.TypeReg when zero
	Linkname string
}

// TarGz writes entries as a gzip-compressed tar archive.
func TarGz(t testing.TB, entries ...Entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		h := &tar.Header{Name: e.Name, Mode: e.Mode, Typeflag: e.Typeflag, Linkname: e.Linkname, Size: int64(len(e.Body))}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("tar header %s: %v", e.Name, err)
		}
		if h.Size > 0 {
			if _, err := tw.Write([]byte(e.Body)); err != nil {
				t.Fatalf("tar body %s: %v", e.Name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// DMPackage is a small offline package in the seed-000 layout whose
// binaries are placeholders; extra entries are appended.
func DMPackage(t testing.TB, version string, extra ...Entry) []byte {
	t.Helper()
	script := "#!/bin/sh\necho " + version + "\n"
	entries := []Entry{
		{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "bin/dm-master", Body: script, Mode: 0o755},
		{Name: "bin/dm-worker", Body: script, Mode: 0o755},
		{Name: "bin/prometheus", Body: script, Mode: 0o755},
		{Name: "bin/alertmanager", Body: script, Mode: 0o755},
		{Name: "conf/dm-master.toml", Body: "# dm-master defaults\n"},
		{Name: "conf/dm-worker.toml", Body: "# dm-worker defaults\n"},
		{Name: "conf/alertmanager.yml", Body: "route: {}\n"},
		{Name: "conf/dm_worker.rules.yml", Body: "groups: []\n"},
		{Name: "template/systemd.service.tmpl", Body: "[Service]\n"},
		{Name: "others/dmctl", Body: script, Mode: 0o755},
	}
	return TarGz(t, append(entries, extra...)...)
}
