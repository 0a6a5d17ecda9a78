package dmpkg

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"runtime"
	"testing"
)

// Extra is an entry a test adds to a package or to its grafana.tar.gz,
// written as given (any name, type, mode, owner, link), to build the
// hostile packages dmgr must refuse. Header.Size is taken from Body.
type Extra struct {
	Header tar.Header
	Body   []byte
}

// Options are what PackageWith adds to a package.
type Options struct {
	Extra        []Extra // appended to the package
	GrafanaExtra []Extra // appended to its grafana.tar.gz
}

// PackageWith is Package with o's entries added: the same simulator
// build, repacked; a package dmgr should refuse for them and accept
// without them.
func PackageWith(t testing.TB, version string, o Options) []byte {
	t.Helper()
	b, err := tarball(context.Background(), version, runtime.GOARCH)
	if err != nil {
		t.Fatalf("dmpkg.PackageWith(%s): %v", version, err)
	}
	out, err := repack(b, o.Extra, func(h *tar.Header, body []byte) ([]byte, error) {
		if h.Name != "grafana.tar.gz" || len(o.GrafanaExtra) == 0 {
			return body, nil
		}
		return repack(body, o.GrafanaExtra, nil)
	})
	if err != nil {
		t.Fatalf("dmpkg.PackageWith(%s): %v", version, err)
	}
	return out
}

// repack copies the .tar.gz pkg entry by entry, passing each regular
// file's content through edit (when not nil), and appends extra.
func repack(pkg []byte, extra []Extra, edit func(*tar.Header, []byte) ([]byte, error)) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(pkg))
	if err != nil {
		return nil, fmt.Errorf("dmpkg: repack: %w", err)
	}
	tr := tar.NewReader(zr)
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(zw)
	write := func(h *tar.Header, body []byte) error {
		h.Size = int64(len(body))
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("dmpkg: repack %s: %w", h.Name, err)
		}
		_, err := tw.Write(body[:h.Size])
		return err
	}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("dmpkg: repack: %w", err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("dmpkg: repack: %w", err)
		}
		if edit != nil && h.Typeflag == tar.TypeReg {
			if body, err = edit(h, body); err != nil {
				return nil, err
			}
		}
		if err := write(h, body); err != nil {
			return nil, err
		}
	}
	for _, e := range extra {
		h := e.Header
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.ModTime.IsZero() {
			h.ModTime = modTime
		}
		if err := write(&h, e.Body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
