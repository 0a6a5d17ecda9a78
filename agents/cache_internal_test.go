package agents

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/busauth"
	"github.com/dmgr/dmgr/internal/pkgstore"
	"github.com/dmgr/dmgr/internal/testenv"
)

// cachePkg is a package in a real object store, read through an agent's
// credentials, as an agent reads it.
type cachePkg struct {
	agent  *pkgstore.Store // the agent's view of the store
	object string
	files  map[string]domain.CopySpec // by path
	bodies map[string][]byte
	log    *testenv.Buffer
}

// storeCachePackage uploads a package whose dm-master and dm-worker are
// 3 MB of incompressible data each (many object store chunks), with
// dmctl a hard link to dm-master.
func storeCachePackage(t *testing.T) *cachePkg {
	t.Helper()
	ctx := testenv.Context(t, time.Minute)
	ns := testenv.NATS(t)
	_, js := testenv.JetStream(t, ns)
	server, err := pkgstore.Open(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.NewChaCha8([32]byte{7})
	noise := func() []byte {
		b := make([]byte, 3<<20)
		_, _ = rng.Read(b)
		return b
	}
	master, worker := noise(), noise()
	body := testenv.TarGz(t,
		testenv.Entry{Name: "bin/dm-master", Body: string(master), Mode: 0o755},
		testenv.Entry{Name: "bin/dm-worker", Body: string(worker), Mode: 0o755},
		testenv.Entry{Name: "others/dmctl", Typeflag: tar.TypeLink, Linkname: "bin/dm-master", Mode: 0o755},
		testenv.Entry{Name: "conf/dm-master.toml", Body: "# defaults\n"},
	)
	m, object, err := server.Put(ctx, "dm-v8.1.0-linux-amd64", bytes.NewReader(body), pkgstore.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	_, ajs := testenv.JetStreamAs(t, ns, busauth.Agent, busauth.DefaultPool)
	agent, err := pkgstore.OpenExisting(ctx, ajs)
	if err != nil {
		t.Fatal(err)
	}
	p := &cachePkg{agent: agent, object: object, files: map[string]domain.CopySpec{}, log: &testenv.Buffer{},
		bodies: map[string][]byte{"bin/dm-master": master, "bin/dm-worker": worker, "others/dmctl": master}}
	for _, f := range m.Files {
		p.files[f.Path] = domain.CopySpec{Package: "dm-v8.1.0-linux-amd64", Object: object, Src: f.Path,
			Dst: "/srv/dm/" + f.Path, Mode: f.Mode, SHA256: f.SHA256, Size: f.Size}
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", p.log.String())
		}
	})
	return p
}

func (p *cachePkg) cache(t *testing.T, dir string, max int64) *fileCache {
	t.Helper()
	c, err := newFileCache(dir, max, p.agent)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// read opens path through c, checks the content and closes it.
func (p *cachePkg) read(t *testing.T, c *fileCache, path string) {
	t.Helper()
	h, err := c.open(testenv.Context(t, time.Minute), zerolog.New(p.log), p.files[path])
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer h.close()
	got, err := io.ReadAll(h.reader())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, p.bodies[path]) {
		t.Fatalf("%s: %d bytes that differ from the package's %d", path, len(got), len(p.bodies[path]))
	}
}

// Five instances' copies of two files, three of them at once: the package
// is read from the object store once; each file is taken out of it once
// (dmctl, a hard link to dm-master, has dm-master's content and digest, so
// it is the same entry); the others are served from the cache.
func TestCacheReadsAPackageOncePerAgent(t *testing.T) {
	p := storeCachePackage(t)
	c := p.cache(t, t.TempDir(), 0)
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { p.read(t, c, "bin/dm-master") })
	}
	wg.Wait()
	p.read(t, c, "bin/dm-worker")
	p.read(t, c, "bin/dm-worker")
	p.read(t, c, "others/dmctl")
	if got := p.agent.Stats().Fetches; got != 1 {
		t.Errorf("the package was read %d times from the object store, want once", got)
	}
	st := c.stats()
	if st.Fetches != 1 || st.Misses != 2 || st.Hits != 4 || st.Corrupt != 0 {
		t.Errorf("cache stats %+v: want 1 fetch, 2 misses (dm-master, dm-worker), 4 hits", st)
	}

	// A new agent on the same directory (a restart) reads nothing again.
	c2 := p.cache(t, c.dir, 0)
	p.read(t, c2, "bin/dm-master")
	if got := p.agent.Stats().Fetches; got != 1 {
		t.Errorf("after a restart the package was read again (%d reads)", got)
	}
	if st := c2.stats(); st.Hits != 1 || st.Entries != 3 {
		t.Errorf("restarted cache stats %+v: want the 3 entries kept and a hit", st)
	}
}

// An entry whose content no longer matches its digest is found when it is
// used, removed and made again: a file from the cached package, and the
// package from the object store when it is bad too. Nothing bad is ever
// handed out.
func TestCacheRefetchesACorruptEntry(t *testing.T) {
	p := storeCachePackage(t)
	c := p.cache(t, t.TempDir(), 0)
	p.read(t, c, "bin/dm-master")
	spec := p.files["bin/dm-master"]
	file := filepath.Join(c.dir, cacheFiles, spec.SHA256)
	object := filepath.Join(c.dir, cacheObjects, strings.TrimPrefix(p.object, "sha256/"))

	flip := func(path string, at int64) {
		t.Helper()
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b := make([]byte, 1)
		if _, err := f.ReadAt(b, at); err != nil {
			t.Fatal(err)
		}
		b[0] ^= 0xff
		if _, err := f.WriteAt(b, at); err != nil {
			t.Fatal(err)
		}
	}

	flip(file, 1<<20) // same size, one byte changed
	p.read(t, c, "bin/dm-master")
	if st := c.stats(); st.Corrupt != 1 || st.Fetches != 1 {
		t.Errorf("after a corrupt file: %+v, want 1 corrupt entry and the package still read once", st)
	}

	// Truncated file and a corrupt package: both made again.
	if err := os.Truncate(file, 100); err != nil {
		t.Fatal(err)
	}
	flip(object, 4096)
	p.read(t, c, "bin/dm-master")
	if st := c.stats(); st.Corrupt != 3 || st.Fetches != 2 {
		t.Errorf("after a truncated file and a corrupt package: %+v, want 3 corrupt entries and the package read twice", st)
	}
	if got := p.agent.Stats().Fetches; got != 2 {
		t.Errorf("object store reads: %d, want 2", got)
	}
	if !strings.Contains(p.log.String(), "does not match its digest") {
		t.Errorf("no warning about the corrupt entries in the log:\n%s", p.log.String())
	}
}

// Past its bound the cache removes the least recently used entries, but
// never one that is open.
func TestCacheEvictsTheLeastRecentlyUsed(t *testing.T) {
	p := storeCachePackage(t)
	// The package (about 6 MB) and one 3 MB file fit; more do not.
	c := p.cache(t, t.TempDir(), 10<<20)
	p.read(t, c, "bin/dm-master") // object, then dm-master
	h, err := c.open(testenv.Context(t, time.Minute), zerolog.Nop(), p.files["bin/dm-master"])
	if err != nil {
		t.Fatal(err)
	}
	// dm-worker is taken out of the package, which takes the cache past
	// its bound: dm-master is open and dm-worker new, so the package goes,
	// once the extraction has released it.
	p.read(t, c, "bin/dm-worker")
	if _, err := os.Stat(filepath.Join(c.dir, cacheFiles, p.files["bin/dm-master"].SHA256)); err != nil {
		t.Errorf("an open entry was evicted: %v", err)
	}
	st := c.stats()
	if st.Evictions == 0 || st.Bytes > 10<<20 {
		t.Errorf("stats %+v: want evictions down to the 10 MiB bound", st)
	}
	got, _ := io.ReadAll(h.reader())
	if !bytes.Equal(got, p.bodies["bin/dm-master"]) {
		t.Error("the open entry's content changed")
	}
	h.close()
	// Released and over the bound: the least recently used entries go.
	p.read(t, c, "bin/dm-worker")
	p.read(t, c, "bin/dm-master")
	if st := c.stats(); st.Bytes > 10<<20 {
		t.Errorf("stats %+v: over the bound with nothing open", st)
	}
}

// The cache directory is the agent user's alone: made 0700, narrowed to it
// when others could write, refused when it is a link or someone else's.
func TestCacheDirIsTheAgentsOwn(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "made")
	if _, err := newFileCache(dir, 0, nil); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dir, filepath.Join(dir, cacheObjects), filepath.Join(dir, cacheFiles)} {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v %v, want a 0700 directory", d, fi.Mode(), err)
		}
	}
	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := newFileCache(open, 0, nil); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(open); fi.Mode().Perm() != 0o700 {
		t.Errorf("a world-writable cache dir was left %v", fi.Mode().Perm())
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	if _, err := newFileCache(link, 0, nil); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("a link as the cache dir: %v, want a refusal", err)
	}
	if os.Geteuid() == 0 {
		other := filepath.Join(base, "other")
		if err := os.Mkdir(other, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(other, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if _, err := newFileCache(other, 0, nil); err == nil || !strings.Contains(err.Error(), "belongs to uid 65534") {
			t.Errorf("someone else's cache dir: %v, want a refusal", err)
		}
	}
	// A temporary file left by a crash long ago is removed; an entry kept.
	stale := filepath.Join(dir, cacheFiles, cacheTempPrefix+"123")
	sum := sha256.Sum256([]byte("x"))
	entry := filepath.Join(dir, cacheFiles, hex.EncodeToString(sum[:]))
	for _, f := range []string{stale, entry} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * cacheTempAge)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	c, err := newFileCache(dir, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); err == nil {
		t.Error("a stale temporary file was kept")
	}
	if st := c.stats(); st.Entries != 1 || st.Bytes != 1 {
		t.Errorf("stats %+v: want the one entry found", st)
	}
}

// A step whose context ends while it waits for another step filling the
// same entry gives up with the context's error.
func TestCacheWaitHonoursTheContext(t *testing.T) {
	c, err := newFileCache(t.TempDir(), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := c.lock(context.Background(), "files/x")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.lock(ctx, "files/x"); err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Errorf("lock with a cancelled context: %v", err)
	}
	unlock()
	unlock2, err := c.lock(context.Background(), "files/x")
	if err != nil {
		t.Fatal(err)
	}
	unlock2()
	if len(c.locks) != 0 {
		t.Errorf("%d locks left", len(c.locks))
	}
}
