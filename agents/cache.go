package agents

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/pkgstore"
)

// DefaultCacheMaxBytes bounds the agent's package cache when
// Config.CacheMaxBytes is not set: room for a few real packages (about
// 252 MB each) and the binaries taken out of them.
const DefaultCacheMaxBytes int64 = 4 << 30

// The cache keeps, under its directory:
//
//	objects/<sha256>  package objects as the package store holds them
//	files/<sha256>    files taken out of them (bin/dm-master, …)
//
// each named by the SHA-256 of its content: the object's from its name in
// the store ("sha256/<hex>", the digest of the package as uploaded), a
// file's from the package manifest that the step carries. Whatever is
// taken from the cache is hashed again first and must match its name; an
// entry that does not (a disk error, a truncated write before a crash,
// someone's edit) is removed and fetched again. A package is read from
// the object store once per agent (until evicted), however many instances
// its files go to; its files are taken out of the local copy.
const (
	cacheObjects = "objects"
	cacheFiles   = "files"
	// cacheTempPrefix names files being written; a crash can leave them,
	// and the next start removes those older than cacheTempAge.
	cacheTempPrefix = ".tmp-"
	cacheTempAge    = time.Hour
)

// CacheStats counts what the agent's package cache did.
type CacheStats struct {
	Hits      int64 // files served from the cache, their digest checked
	Misses    int64 // files taken out of a package (object) first
	Fetches   int64 // package objects read from the object store
	Corrupt   int64 // entries whose content did not match their digest, removed and fetched again
	Evictions int64 // entries removed to stay within the size bound
	Bytes     int64 // bytes held now
	Entries   int   // entries held now
}

// fileCache is the agent's package cache: content-addressed, checked on
// every use, bounded in size (the least recently used entries not in use
// go first), and filled once per content however many steps ask at once.
type fileCache struct {
	dir      string
	max      int64
	packages *pkgstore.Store
	fetch    pkgstore.FetchOptions // Log is set per step

	mu      sync.Mutex
	entries map[string]*cacheEntry // by "objects/<hex>" or "files/<hex>"
	total   int64
	tick    uint64
	locks   map[string]*keyLock

	hits, misses, fetches, corrupt, evictions atomic.Int64
}

type cacheEntry struct {
	size int64
	used uint64 // tick of the last use: the smallest is evicted first
	pins int    // handles open on it: not evicted while above 0
}

// keyLock serialises the filling of one entry; waiting for it honours
// the step's context.
type keyLock struct {
	ch   chan struct{}
	refs int
}

// cachedFile is an entry open for reading; close releases it.
type cachedFile struct {
	c    *fileCache
	key  string
	f    *os.File
	size int64
	once sync.Once
}

// reader returns a fresh reader of the whole content (one per upload try).
func (h *cachedFile) reader() io.ReadCloser {
	return io.NopCloser(io.NewSectionReader(h.f, 0, h.size))
}

func (h *cachedFile) close() {
	h.once.Do(func() {
		h.f.Close()
		h.c.unpin(h.key)
	})
}

// newFileCache opens the cache in dir, creating it (0700) when missing.
// The directory must be the agent user's and not a symbolic link; it is
// narrowed to 0700 when others could read or write it. Entries left by
// an earlier run are kept (their content is checked when they are used).
func newFileCache(dir string, max int64, packages *pkgstore.Store) (*fileCache, error) {
	if max <= 0 {
		max = DefaultCacheMaxBytes
	}
	c := &fileCache{dir: dir, max: max, packages: packages, entries: map[string]*cacheEntry{}, locks: map[string]*keyLock{}}
	if err := privateDir(dir); err != nil {
		return nil, err
	}
	type found struct {
		key   string
		size  int64
		mtime time.Time
	}
	var all []found
	for _, sub := range []string{cacheObjects, cacheFiles} {
		d := filepath.Join(dir, sub)
		if err := privateDir(d); err != nil {
			return nil, err
		}
		des, err := os.ReadDir(d)
		if err != nil {
			return nil, fmt.Errorf("package cache %s: %w", d, err)
		}
		for _, de := range des {
			info, err := de.Info()
			if err != nil || !info.Mode().IsRegular() {
				continue
			}
			if strings.HasPrefix(de.Name(), cacheTempPrefix) {
				if time.Since(info.ModTime()) > cacheTempAge {
					_ = os.Remove(filepath.Join(d, de.Name()))
				}
				continue
			}
			if isHexSum(de.Name()) {
				all = append(all, found{sub + "/" + de.Name(), info.Size(), info.ModTime()})
			}
		}
	}
	slices.SortFunc(all, func(a, b found) int { return a.mtime.Compare(b.mtime) })
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range all {
		c.tick++
		c.entries[f.key] = &cacheEntry{size: f.size, used: c.tick}
		c.total += f.size
	}
	c.evictLocked()
	return c, nil
}

// privateDir makes dir (0700) or checks the one there: a directory, not
// a link, owned by this process's user; group and other bits are removed.
func privateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("package cache: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("package cache: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("package cache %s is not a directory (a link or a file): give --cache-dir a directory of the agent's own", dir)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("package cache %s belongs to uid %d, not to the agent's user (uid %d): files from it run on the hosts, so the agent uses only a directory of its own; give --cache-dir another one", dir, st.Uid, os.Geteuid())
	}
	if fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("package cache %s: narrow to 0700: %w", dir, err)
		}
	}
	return nil
}

func isHexSum(s string) bool {
	return len(s) == 64 && strings.Trim(s, "0123456789abcdef") == ""
}

// stats returns the counts so far.
func (c *fileCache) stats() CacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return CacheStats{Hits: c.hits.Load(), Misses: c.misses.Load(), Fetches: c.fetches.Load(), Corrupt: c.corrupt.Load(),
		Evictions: c.evictions.Load(), Bytes: c.total, Entries: len(c.entries)}
}

// open returns the package file of spec, open for reading: from the cache
// when it holds it with the right digest, else taken out of the package,
// which is itself read from the object store only when the cache does not
// hold it. The caller closes the handle.
func (c *fileCache) open(ctx context.Context, log zerolog.Logger, spec domain.CopySpec) (*cachedFile, error) {
	if !isHexSum(spec.SHA256) {
		return nil, fmt.Errorf("package file %s: bad checksum %q", spec.Src, spec.SHA256)
	}
	key := cacheFiles + "/" + spec.SHA256
	unlock, err := c.lock(ctx, key)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if h := c.openChecked(log, key, spec.SHA256, spec.Size); h != nil {
		c.hits.Add(1)
		return h, nil
	}
	c.misses.Add(1)
	obj, err := c.object(ctx, log, spec.Object, spec.Package)
	if err != nil {
		return nil, fmt.Errorf("package %s: %s: %w", spec.Package, spec.Src, err)
	}
	defer obj.close()
	if err := c.fill(key, func(tmp *os.File) error { return extract(obj, spec, tmp) }); err != nil {
		return nil, fmt.Errorf("package %s: %s: %w", spec.Package, spec.Src, err)
	}
	log.Debug().Str("package", spec.Package).Str("file", spec.Src).Int64("size", spec.Size).Msg("package file taken out of the cached package")
	return c.openPinned(key)
}

// object returns the package object name ("sha256/<hex>"), open: from the
// cache when it holds it with the right digest, else read from the
// object store into the cache first.
func (c *fileCache) object(ctx context.Context, log zerolog.Logger, name, pkg string) (*cachedFile, error) {
	sum, ok := strings.CutPrefix(name, "sha256/")
	if !ok || !isHexSum(sum) {
		return nil, fmt.Errorf("package object %q is not named sha256/<hex>", name)
	}
	key := cacheObjects + "/" + sum
	unlock, err := c.lock(ctx, key)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if h := c.openChecked(log, key, sum, -1); h != nil {
		return h, nil
	}
	begin := time.Now()
	o := c.fetch
	o.Log = log
	var info pkgstore.ObjectInfo
	err = c.fill(key, func(tmp *os.File) error {
		h := sha256.New()
		var ferr error
		if info, ferr = c.packages.Fetch(ctx, name, io.MultiWriter(tmp, h), o); ferr != nil {
			return ferr
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != sum {
			return fmt.Errorf("package object %s holds content with SHA-256 %s", name, got)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	c.fetches.Add(1)
	log.Info().Str("package", pkg).Str("object", name).Int64("size", info.Size).Dur("took", time.Since(begin)).
		Msg("package read from the package store into the agent's cache")
	return c.openPinned(key)
}

// openChecked opens the entry key and checks its size (unless size < 0)
// and SHA-256; a good entry is returned pinned and marked used. A missing
// entry gives nil; so does a bad one, which is removed.
func (c *fileCache) openChecked(log zerolog.Logger, key, sum string, size int64) *cachedFile {
	path := filepath.Join(c.dir, key)
	f, err := os.Open(path)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			log.Warn().Err(err).Str("entry", path).Msg("package cache entry cannot be read; fetching it again")
			c.drop(key)
		}
		c.forget(key)
		return nil
	}
	fi, err := f.Stat()
	bad := ""
	switch {
	case err != nil:
		bad = err.Error()
	case !fi.Mode().IsRegular():
		bad = "not a regular file"
	case size >= 0 && fi.Size() != size:
		bad = fmt.Sprintf("%d bytes, want %d", fi.Size(), size)
	default:
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			bad = err.Error()
		} else if got := hex.EncodeToString(h.Sum(nil)); got != sum {
			bad = "content has SHA-256 " + got
		}
	}
	if bad != "" {
		f.Close()
		c.corrupt.Add(1)
		log.Warn().Str("entry", path).Str("problem", bad).Msg("package cache entry does not match its digest; removed, fetching it again")
		c.drop(key)
		return nil
	}
	now := time.Now()
	_ = os.Chtimes(path, now, now) // the LRU order survives a restart
	c.mu.Lock()
	e := c.entries[key]
	if e == nil { // put there by another agent sharing the directory
		e = &cacheEntry{size: fi.Size()}
		c.entries[key] = e
		c.total += e.size
	}
	c.tick++
	e.used = c.tick
	e.pins++
	c.mu.Unlock()
	return &cachedFile{c: c, key: key, f: f, size: fi.Size()}
}

// fill writes entry key through write into a temporary file, then renames
// it into place and accounts for it (evicting others when over the bound).
func (c *fileCache) fill(key string, write func(*os.File) error) error {
	path := filepath.Join(c.dir, key)
	tmp, err := os.CreateTemp(filepath.Dir(path), cacheTempPrefix+"*")
	if err != nil {
		return fmt.Errorf("package cache: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := write(tmp); err != nil {
		tmp.Close()
		return err
	}
	fi, err := tmp.Stat()
	if err == nil {
		err = tmp.Close()
	} else {
		tmp.Close()
	}
	if err != nil {
		return fmt.Errorf("package cache: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("package cache: %w", err)
	}
	c.mu.Lock()
	if old := c.entries[key]; old != nil {
		c.total -= old.size
	}
	c.tick++
	c.entries[key] = &cacheEntry{size: fi.Size(), used: c.tick, pins: 1} // pinned until openPinned takes over
	c.total += fi.Size()
	c.mu.Unlock()
	return nil
}

// openPinned opens the entry fill just wrote (still pinned by fill).
func (c *fileCache) openPinned(key string) (*cachedFile, error) {
	f, err := os.Open(filepath.Join(c.dir, key))
	if err != nil {
		c.unpin(key)
		return nil, fmt.Errorf("package cache: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		c.unpin(key)
		return nil, fmt.Errorf("package cache: %w", err)
	}
	c.mu.Lock()
	c.evictLocked()
	c.mu.Unlock()
	return &cachedFile{c: c, key: key, f: f, size: fi.Size()}, nil
}

func (c *fileCache) unpin(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[key]; e != nil && e.pins > 0 {
		e.pins--
	}
	c.evictLocked()
}

// drop removes the entry's file and forgets it.
func (c *fileCache) drop(key string) {
	_ = os.Remove(filepath.Join(c.dir, key))
	c.forget(key)
}

func (c *fileCache) forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[key]; e != nil {
		c.total -= e.size
		delete(c.entries, key)
	}
}

// evictLocked removes the least recently used entries that are not open
// until the cache is within its bound (or nothing more can go).
func (c *fileCache) evictLocked() {
	for c.total > c.max {
		var victim string
		var oldest uint64
		for k, e := range c.entries {
			if e.pins == 0 && (victim == "" || e.used < oldest) {
				victim, oldest = k, e.used
			}
		}
		if victim == "" {
			return // everything left is in use; over the bound until released
		}
		_ = os.Remove(filepath.Join(c.dir, victim))
		c.total -= c.entries[victim].size
		delete(c.entries, victim)
		c.evictions.Add(1)
	}
}

// lock takes the fill lock of key, or gives up when ctx ends.
func (c *fileCache) lock(ctx context.Context, key string) (unlock func(), err error) {
	c.mu.Lock()
	l := c.locks[key]
	if l == nil {
		l = &keyLock{ch: make(chan struct{}, 1)}
		c.locks[key] = l
	}
	l.refs++
	c.mu.Unlock()
	release := func() {
		c.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(c.locks, key)
		}
		c.mu.Unlock()
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, fmt.Errorf("wait for the package cache: %w", ctx.Err())
	}
}
