package httpapi_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/internal/pkgstore"
	"github.com/dmgr/dmgr/internal/testenv"
)

// The malicious packages of issue [6]: each is built here, uploaded through
// the HTTP API to a service on a real embedded NATS JetStream, and must be
// refused with 4xx naming the archive and the entry, leaving no event, no
// object and no chunk behind.

// tarGzStream writes entries as a .tar.gz; an entry with zeros > 0 gets that
// many zero bytes as its content, written as a stream (a compression bomb).
type tgzEntry struct {
	testenv.Entry
	zeros int64
}

func tarGzStream(t *testing.T, entries ...tgzEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	level := gzip.BestSpeed
	for _, e := range entries {
		if e.zeros > 0 {
			level = gzip.BestCompression // a bomb as dense as deflate makes them
		}
	}
	zw, err := gzip.NewWriterLevel(&buf, level)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		h := &tar.Header{Name: e.Name, Mode: e.Mode, Typeflag: e.Typeflag, Linkname: e.Linkname, Size: int64(len(e.Body)) + e.zeros,
			ModTime: time.Unix(1700000000, 0)}
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
			t.Fatal(err)
		}
		if h.Size > 0 {
			if _, err := tw.Write([]byte(e.Body)); err != nil {
				t.Fatal(err)
			}
			zeros := make([]byte, 1<<20)
			for left := e.zeros; left > 0; left -= int64(len(zeros)) {
				if _, err := tw.Write(zeros[:min(left, int64(len(zeros)))]); err != nil {
					t.Fatal(err)
				}
			}
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

// grafana is a grafana.tar.gz holding a clean tree and the extra entries.
func grafana(t *testing.T, extra ...tgzEntry) []byte {
	t.Helper()
	es := []tgzEntry{
		{Entry: testenv.Entry{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755}},
		{Entry: testenv.Entry{Name: "bin/grafana-server", Body: "#!/bin/sh\n", Mode: 0o755}},
		{Entry: testenv.Entry{Name: "conf/defaults.ini", Body: "[server]\n"}},
	}
	return tarGzStream(t, append(es, extra...)...)
}

// dmWithGrafana is a DM package whose grafana.tar.gz is g.
func dmWithGrafana(t *testing.T, version string, g []byte) []byte {
	t.Helper()
	return testenv.DMPackage(t, version, testenv.Entry{Name: "grafana.tar.gz", Body: string(g)})
}

// bucketState is what the package bucket's stream holds: messages, and the
// subjects of object chunks and metadata.
func bucketState(t *testing.T, s *stack) (msgs uint64, subjects map[string]uint64) {
	t.Helper()
	ctx := testenv.Context(t, 10*time.Second)
	st, err := s.js.Stream(ctx, "OBJ_"+pkgstore.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter("$O."+pkgstore.Bucket+".>"))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs, info.State.Subjects
}

// requireRefused uploads body as version and checks the answer and that
// nothing was written anywhere.
func requireRefused(t *testing.T, s *stack, version string, body []byte, status int, detail string) {
	t.Helper()
	before := s.lastSeq()
	objects := countObjects(t, s)
	msgs, subjects := bucketState(t, s)
	r := s.do("POST", "/api/v1/packages?version="+version, body)
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	if p := r.problem(t); !strings.Contains(p.Detail, detail) {
		t.Fatalf("detail %q does not say %q", p.Detail, detail)
	}
	if after := s.lastSeq(); after != before {
		t.Fatalf("refused upload appended %d commits", after-before)
	}
	if got := countObjects(t, s); got != objects {
		t.Fatalf("refused upload left %d package objects, had %d", got, objects)
	}
	if m, subj := bucketState(t, s); m != msgs || len(subj) != len(subjects) {
		t.Fatalf("refused upload left messages in the bucket's stream: %d messages on %v, had %d on %v", m, subj, msgs, subjects)
	}
}

func TestMaliciousPackagesAreRefusedAndWriteNothing(t *testing.T) {
	s := newStack(t, pkgstore.DefaultLimits())
	// A good package first, so that "nothing new" is measured against a
	// bucket that holds something.
	s.mustAccept("POST", "/api/v1/packages?version=v8.1.0", dmWithGrafana(t, "v8.1.0", grafana(t)))
	if msgs, _ := bucketState(t, s); msgs == 0 {
		t.Fatal("the good package left nothing in the bucket's stream")
	}

	file := func(name, body string, mode int64) tgzEntry {
		return tgzEntry{Entry: testenv.Entry{Name: name, Body: body, Mode: mode}}
	}
	link := func(name string, typ byte, target string) tgzEntry {
		return tgzEntry{Entry: testenv.Entry{Name: name, Typeflag: typ, Linkname: target}}
	}
	special := func(name string, typ byte) tgzEntry {
		return tgzEntry{Entry: testenv.Entry{Name: name, Typeflag: typ}}
	}
	const pkg = "package dm-v9.0.0-linux-amd64: "
	cases := []struct {
		name    string
		grafana []byte
		status  int
		detail  string
	}{
		{"nested ..", grafana(t, file("../x", "x", 0)), 400,
			pkg + `grafana.tar.gz: entry "../x": path climbs out of the archive ("..")`},
		{"nested absolute path", grafana(t, file("/etc/cron.d/evil", "* * * * * root sh", 0)), 400,
			pkg + `grafana.tar.gz: entry "/etc/cron.d/evil": path is absolute`},
		{"nested symlink out", grafana(t, link("conf/passwd", tar.TypeSymlink, "../../../etc/passwd")), 400,
			pkg + `grafana.tar.gz: entry "conf/passwd": symlink target "../../../etc/passwd" points outside the archive`},
		{"nested hard link out", grafana(t, link("bin/shadow", tar.TypeLink, "../etc/shadow")), 400,
			pkg + `grafana.tar.gz: entry "bin/shadow": hard link target "../etc/shadow" points outside the archive`},
		{"nested set-uid file", grafana(t, file("bin/rootshell", "x", 0o4755)), 400,
			pkg + `grafana.tar.gz: entry "bin/rootshell": has the set-uid bit (mode 4755)`},
		{"nested set-gid file", grafana(t, file("bin/g", "x", 0o2755)), 400,
			pkg + `grafana.tar.gz: entry "bin/g": has the set-gid bit (mode 2755)`},
		{"nested device node", grafana(t, special("dev/sda", tar.TypeBlock)), 400,
			pkg + `grafana.tar.gz: entry "dev/sda": is a block device`},
		{"nested FIFO", grafana(t, special("run/fifo", tar.TypeFifo)), 400,
			pkg + `grafana.tar.gz: entry "run/fifo": is a FIFO`},
		{"nested zip bomb (ratio)", grafana(t, tgzEntry{Entry: testenv.Entry{Name: "public/zeros"}, zeros: 256 << 20}), 413,
			pkg + `grafana.tar.gz unpacks to more than 200 times its compressed size, the limit`},
		{"an archive inside grafana.tar.gz", grafana(t, file("plugins/p.tgz", string(tarGzStream(t, special("null", tar.TypeChar))), 0)), 400,
			pkg + `grafana.tar.gz: plugins/p.tgz: entry "null": is a character device`},
		{"a zip", grafana(t, file("plugins/p.zip", "PK\x03\x04", 0)), 400,
			pkg + `grafana.tar.gz: entry "plugins/p.zip": is a zip archive, which dmgr cannot check`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			requireRefused(t, s, "v9.0.0", dmWithGrafana(t, "v9.0.0", tc.grafana), tc.status, tc.detail)
		})
	}

	t.Run("set-uid binary in the package itself", func(t *testing.T) {
		body := testenv.DMPackage(t, "v9.0.0", testenv.Entry{Name: "bin/dm-suid", Body: "x", Mode: 0o4755})
		requireRefused(t, s, "v9.0.0", body, 400, pkg+`entry "bin/dm-suid": has the set-uid bit`)
	})
	t.Run("zip bomb as the package itself", func(t *testing.T) {
		body := tarGzStream(t, tgzEntry{Entry: testenv.Entry{Name: "bin/dm-master", Mode: 0o755}, zeros: 256 << 20})
		requireRefused(t, s, "v9.0.0", body, 413, "package dm-v9.0.0-linux-amd64 unpacks to more than 200 times its compressed size")
	})
	t.Run("100,000 entries", func(t *testing.T) {
		// The package that failed with 500 (an event past the
		// payload limit): now 413 at the 10,001st entry.
		es := []tgzEntry{{Entry: testenv.Entry{Name: "bin/dm-master", Body: "m", Mode: 0o755}}, {Entry: testenv.Entry{Name: "bin/dm-worker", Body: "w", Mode: 0o755}}}
		for i := range 100000 {
			es = append(es, tgzEntry{Entry: testenv.Entry{Name: fmt.Sprintf("others/f%06d", i)}})
		}
		requireRefused(t, s, "v9.0.0", tarGzStream(t, es...), 413, "package dm-v9.0.0-linux-amd64 has more than 10000 entries, the limit")
	})
}

// TestPackageLimitsAreConfigurable: the size and entry bounds are the
// service's limits.
func TestPackageLimitsAreConfigurable(t *testing.T) {
	s := newStack(t, pkgstore.Limits{MaxEntries: 20, MaxNestedEntries: 10, MaxUnpackedBytes: 2 << 20})
	const pkg = "package dm-v9.0.0-linux-amd64"
	t.Run("entries", func(t *testing.T) {
		var extra []testenv.Entry
		for i := range 10 {
			extra = append(extra, testenv.Entry{Name: fmt.Sprintf("others/f%d", i), Body: "x"})
		}
		requireRefused(t, s, "v9.0.0", testenv.DMPackage(t, "v9.0.0", extra...), 413, pkg+" has more than 20 entries, the limit")
	})
	t.Run("nested entries", func(t *testing.T) {
		var extra []tgzEntry
		for i := range 10 {
			extra = append(extra, tgzEntry{Entry: testenv.Entry{Name: fmt.Sprintf("public/f%d", i), Body: "x"}})
		}
		requireRefused(t, s, "v9.0.0", dmWithGrafana(t, "v9.0.0", grafana(t, extra...)), 413,
			pkg+": grafana.tar.gz: the archives in the package hold more than 10 entries together, the limit")
	})
	t.Run("huge size within the ratio", func(t *testing.T) {
		g := grafana(t, tgzEntry{Entry: testenv.Entry{Name: "public/app.js", Body: randomText(3 << 20)}})
		requireRefused(t, s, "v9.0.0", dmWithGrafana(t, "v9.0.0", g), 413,
			pkg+": grafana.tar.gz: unpacking it takes the package past the limit of 2 MiB")
	})
}

// TestPackageManifestBoundIsExact: with the limits derived from the bus
// (8 MiB messages on the embedded NATS), a package whose manifest is as
// large as MaxManifestBytes is recorded in one event, and one byte more is
// 413 before anything is written.
func TestPackageManifestBoundIsExact(t *testing.T) {
	n := testenv.NATS(t)
	nc, _ := testenv.JetStream(t, n)
	lim := pkgstore.DefaultLimits().ForPayload(nc.MaxPayload())
	if lim.MaxManifestBytes != 8<<20-pkgstore.EventReserve {
		t.Fatalf("MaxManifestBytes %d for a bus with max payload %d", lim.MaxManifestBytes, nc.MaxPayload())
	}
	s := newStack(t, lim)

	// Files with long names until the manifest is just below the limit,
	// then one or two more to meet it exactly (sizes computed as JSONSize
	// does, then checked against a real Inspect).
	build := func(version string, extra int64) []byte {
		target := lim.MaxManifestBytes + extra
		sum := sha256.Sum256([]byte("x"))
		fileJSON := func(name string) int64 {
			b, err := json.Marshal(pkgstore.File{Path: name, Size: 1, Mode: 0o644, SHA256: hex.EncodeToString(sum[:])})
			if err != nil {
				t.Fatal(err)
			}
			return int64(len(b)) + 1 // and its comma
		}
		name := func(i, n int) string { return fmt.Sprintf("others/%05d-%s", i, strings.Repeat("n", n-13)) }
		bin := pkgstore.File{Size: int64(len(version)), Mode: 0o755}
		binSum := sha256.Sum256([]byte(version))
		bin.SHA256 = hex.EncodeToString(binSum[:])
		master, worker := bin, bin
		master.Path, worker.Path = "bin/dm-master", "bin/dm-worker"
		total := pkgstore.Manifest{Files: []pkgstore.File{master, worker}, Components: []string{"dm-master", "dm-worker"}}.JSONSize()
		var names []string
		for total+fileJSON(name(0, 4000)) <= target-200 {
			names = append(names, name(len(names), 4000))
			total += fileJSON(names[len(names)-1])
		}
		empty := fileJSON("")
		left := int(target - total - 2*empty) // two more files share the rest
		names = append(names, name(len(names), left/2), name(len(names)+1, left-left/2))
		body := packageWith(t, version, names)
		m, err := pkgstore.Inspect(bytes.NewReader(body), "", pkgstore.Limits{MaxManifestBytes: 1 << 40})
		if err != nil {
			t.Fatal(err)
		}
		if m.JSONSize() != target {
			t.Fatalf("built a manifest of %d bytes, want %d", m.JSONSize(), target)
		}
		return body
	}

	requireRefused(t, s, "v9.0.1", build("v9.0.1", 1), 413, "package dm-v9.0.1-linux-amd64: its manifest (")
	acc := s.mustAccept("POST", "/api/v1/packages?version=v9.0.0", build("v9.0.0", 0))
	st, err := s.js.Stream(context.Background(), eventstore.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetMsg(context.Background(), acc.CommitSeq)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("manifest %d bytes (the limit); its commit %d bytes of data and %d of headers, bus max payload %d",
		lim.MaxManifestBytes, len(m.Data), len(formatHeader(m.Header)), nc.MaxPayload())
	var list struct{ Items []domain.Package }
	s.do("GET", "/api/v1/packages", nil).json(t, &list)
	if len(list.Items) != 1 || len(list.Items[0].Files) < 2000 {
		t.Fatalf("the package at the limit is not listed whole: %d packages", len(list.Items))
	}
}

// packageWith is a minimal DM package holding the files names besides
// bin/dm-master and bin/dm-worker, each of content "x".
func packageWith(t *testing.T, version string, names []string) []byte {
	t.Helper()
	es := []testenv.Entry{{Name: "bin/dm-master", Body: version, Mode: 0o755}, {Name: "bin/dm-worker", Body: version, Mode: 0o755}}
	for _, n := range names {
		es = append(es, testenv.Entry{Name: n, Body: "x"})
	}
	return testenv.TarGz(t, es...)
}
