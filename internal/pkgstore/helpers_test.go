package pkgstore

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/testenv"
)

// runJetStream starts an in-process NATS server with JetStream on a random
// port and a t.TempDir() store, and returns a JetStream client for it.
func runJetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	n := testenv.NATS(t)
	_, js := testenv.JetStream(t, n)
	return js
}

// ent is one entry of a test archive. The zero typ is a regular file.
type ent struct {
	name string
	typ  byte
	body string
	link string
	mode int64
	pax  map[string]string // PAX records, such as extended attributes
}

func file(name, body string) ent      { return ent{name: name, typ: tar.TypeReg, body: body} }
func dir(name string) ent             { return ent{name: name, typ: tar.TypeDir} }
func symlink(name, target string) ent { return ent{name: name, typ: tar.TypeSymlink, link: target} }
func hardlink(name, target string) ent {
	return ent{name: name, typ: tar.TypeLink, link: target}
}

// tarBytes writes the entries as an uncompressed tar archive.
func tarBytes(t testing.TB, entries []ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
			if typ == tar.TypeDir || strings.Contains(e.name, "bin/") {
				mode = 0o755
			}
		}
		hdr := &tar.Header{
			Name:       e.name,
			Typeflag:   typ,
			Linkname:   e.link,
			Mode:       mode,
			ModTime:    time.Unix(1700000000, 0),
			Format:     tar.FormatPAX,
			PAXRecords: e.pax,
		}
		if typ == tar.TypeReg {
			hdr.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("tar header %q: %v", e.name, err)
		}
		if typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatalf("tar body %q: %v", e.name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatalf("tar close: %v", err)
	}
	return buf.Bytes()
}

func gz(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// tgz builds a .tar.gz holding the entries.
func tgz(t testing.TB, entries ...ent) []byte {
	t.Helper()
	return gz(t, tarBytes(t, entries))
}

// layout is a complete package as seed 000 describes it, under prefix ("" for
// the archive root, "dm-v2.0.1/" for a top directory).
func layout(prefix string) []ent {
	es := []ent{
		dir("bin/"),
		file("bin/dm-master", "#!/bin/sh\necho dm-master\n"),
		file("bin/dm-worker", "#!/bin/sh\necho dm-worker\n"),
		file("bin/prometheus", "prometheus"),
		file("bin/alertmanager", "alertmanager"),
		dir("conf/"),
		file("conf/dm-master.toml", "name = \"master\"\n"),
		file("conf/dm-worker.toml", "name = \"worker\"\n"),
		file("conf/dm_worker.rules.yml", "groups: []\n"),
		file("conf/alertmanager.yml", "route: {}\n"),
		dir("template/"),
		file("template/systemd.service.tmpl", "[Unit]\n"),
		file("template/run_dm-master.sh.tmpl", "#!/bin/sh\n"),
		file("grafana.tar.gz", string(grafanaTGZ)),
		dir("others/"),
		file("others/dmctl", "dmctl"),
		file("others/task_basic.yml", "name: basic\n"),
	}
	if prefix != "" {
		es = append([]ent{dir(prefix)}, es...)
		for i := 1; i < len(es); i++ {
			es[i].name = prefix + es[i].name
		}
	}
	return es
}

// grafanaTGZ is a small, clean grafana.tar.gz: what the host unpacks into
// grafana's deploy directory.
var grafanaTGZ = func() []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range []struct {
		name, body, link string
		typ              byte
		mode             int64
	}{
		{name: "bin/", typ: tar.TypeDir, mode: 0o755},
		{name: "bin/grafana-server", body: "#!/bin/sh\necho grafana\n", typ: tar.TypeReg, mode: 0o755},
		{name: "bin/grafana-cli", link: "bin/grafana-server", typ: tar.TypeLink, mode: 0o755},
		{name: "conf/", typ: tar.TypeDir, mode: 0o755},
		{name: "conf/defaults.ini", body: "[server]\n", typ: tar.TypeReg, mode: 0o644},
		{name: "conf/current.ini", link: "defaults.ini", typ: tar.TypeSymlink, mode: 0o777},
		{name: "dashboards/dm.json", body: "{}", typ: tar.TypeReg, mode: 0o644},
	} {
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: e.mode, Size: int64(len(e.body)),
			ModTime: time.Unix(1700000000, 0), Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			panic(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			panic(err)
		}
	}
	if err := tw.Close(); err != nil {
		panic(err)
	}
	if err := zw.Close(); err != nil {
		panic(err)
	}
	return buf.Bytes()
}()

func with(base []ent, more ...ent) []ent {
	return append(append([]ent{}, base...), more...)
}

func without(base []ent, name string) []ent {
	var out []ent
	for _, e := range base {
		if e.name != name {
			out = append(out, e)
		}
	}
	return out
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	requireNoError(t, err)
	return b
}

func requireNoError(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
}

// requireCode checks err's domain code and that its message contains want.
func requireCode(t testing.TB, err error, code, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s error containing %q", code, want)
	}
	if got := domain.ErrorCode(err); got != code {
		t.Fatalf("error code = %q, want %q (error: %v)", got, code, err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not contain %q", err, want)
	}
}
