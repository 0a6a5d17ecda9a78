package agents

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/pkgstore"
)

// fileCache keeps package files extracted on the agent's disk, named by
// their checksum, so a package is read from the object store once per
// file and agent, not once per host.
type fileCache struct {
	dir      string
	packages *pkgstore.Store
	mu       sync.Mutex
	inflight map[string]*sync.Mutex
}

func newFileCache(dir string, packages *pkgstore.Store) *fileCache {
	return &fileCache{dir: dir, packages: packages, inflight: map[string]*sync.Mutex{}}
}

// get returns the local path of a package file, extracting it first when
// it is not cached. The content is checked against the manifest checksum.
func (c *fileCache) get(ctx context.Context, spec domain.CopySpec) (string, error) {
	if len(spec.SHA256) != 64 || strings.ContainsAny(spec.SHA256, "/.") {
		return "", fmt.Errorf("package file %s: bad checksum %q", spec.Src, spec.SHA256)
	}
	dst := filepath.Join(c.dir, spec.SHA256)
	c.mu.Lock()
	l := c.inflight[spec.SHA256]
	if l == nil {
		l = &sync.Mutex{}
		c.inflight[spec.SHA256] = l
	}
	c.mu.Unlock()
	l.Lock()
	defer l.Unlock()
	if _, err := os.Stat(dst); err == nil {
		return dst, nil
	}
	if err := c.extract(ctx, spec, dst); err != nil {
		return "", fmt.Errorf("package %s: %s: %w", spec.Package, spec.Src, err)
	}
	return dst, nil
}

// extract finds spec.Src in the package (under an optional top directory,
// following a hard link to its target) and writes it to dst.
func (c *fileCache) extract(ctx context.Context, spec domain.CopySpec, dst string) error {
	want := spec.Src
	for hops := 0; hops < 2; hops++ {
		link, err := c.extractOnce(ctx, spec, want, dst)
		if err != nil || link == "" {
			return err
		}
		want = link // a hard link: its content is its target's
	}
	return errors.New("hard link to a hard link")
}

func (c *fileCache) extractOnce(ctx context.Context, spec domain.CopySpec, want, dst string) (link string, err error) {
	obj, err := c.packages.Open(ctx, spec.Object)
	if err != nil {
		return "", err
	}
	defer obj.Close()
	gz, err := gzip.NewReader(obj)
	if err != nil {
		return "", err
	}
	tr := tar.NewReader(gz)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return "", fmt.Errorf("not in the package object %s", spec.Object)
		}
		if err != nil {
			return "", err
		}
		if !insideName(hdr.Name) {
			continue // never a file of the package: the store refuses such names
		}
		name := entryName(hdr.Name)
		if name != want && !underTop(name, want) {
			continue
		}
		if hdr.Typeflag == tar.TypeLink {
			target := entryName(hdr.Linkname)
			if underTop(name, want) {
				_, target, _ = strings.Cut(target, "/")
			}
			return target, nil
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		if hdr.Size != spec.Size {
			return "", fmt.Errorf("is %d bytes in the package object %s, the manifest says %d", hdr.Size, spec.Object, spec.Size)
		}
		return "", writeChecked(tr, dst, spec.SHA256)
	}
}

func entryName(n string) string { return strings.TrimPrefix(path.Clean("/"+n), "/") }

// insideName reports whether the tar entry name n stays inside the
// archive: not absolute, no ".." part.
func insideName(n string) bool {
	if strings.HasPrefix(n, "/") {
		return false
	}
	for _, seg := range strings.Split(n, "/") {
		if seg == ".." {
			return false
		}
	}
	return true
}

// underTop reports whether name is want under one top directory.
func underTop(name, want string) bool {
	_, rest, ok := strings.Cut(name, "/")
	return ok && rest == want
}

// writeChecked writes r to dst through a temp file, refusing content whose
// checksum is not sum.
func writeChecked(r io.Reader, dst, sum string) error {
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".extract-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(tmp, h), r); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		return fmt.Errorf("checksum %s, manifest says %s", got, sum)
	}
	return os.Rename(tmp.Name(), dst)
}
