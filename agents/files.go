package agents

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/dmgr/dmgr/domain"
)

// extract finds spec.Src in the cached package obj (under an optional top
// directory, following a hard link to its target) and writes it to dst,
// checking its size and SHA-256 against the manifest's.
func extract(obj *cachedFile, spec domain.CopySpec, dst io.Writer) error {
	want := spec.Src
	for hops := 0; hops < 2; hops++ {
		link, err := extractOnce(obj, spec, want, dst)
		if err != nil || link == "" {
			return err
		}
		want = link // a hard link: its content is its target's
	}
	return errors.New("hard link to a hard link")
}

func extractOnce(obj *cachedFile, spec domain.CopySpec, want string, dst io.Writer) (link string, err error) {
	gz, err := gzip.NewReader(obj.reader())
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
		return "", copyChecked(dst, tr, spec.SHA256)
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

// copyChecked copies r to dst, refusing content whose checksum is not sum.
func copyChecked(dst io.Writer, r io.Reader, sum string) error {
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(dst, h), r); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		return fmt.Errorf("checksum %s, manifest says %s", got, sum)
	}
	return nil
}
