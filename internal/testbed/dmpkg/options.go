package dmpkg

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
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
	// PadBinaries, when above 0, makes bin/dm-master and bin/dm-worker
	// each a file of its own: the simulator followed by PadBinaries bytes
	// of incompressible data (a program runs with data after its ELF
	// image). Real dm-master and dm-worker binaries are about 200 MB each,
	// so PadBinaries 125 << 20 gives a package as big as a real one
	// (about 252 MB). The pad is pseudo-random from a fixed seed per file:
	// the same options always give the same bytes.
	PadBinaries int64
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
	var sim []byte // bin/dm-master as built, which precedes its hard links
	out, err := repack(b, o.Extra, func(h *tar.Header, body []byte) ([]byte, error) {
		if o.PadBinaries > 0 {
			switch {
			case h.Name == "bin/dm-master" && h.Typeflag == tar.TypeReg:
				sim = body
				return padded(sim, h.Name, o.PadBinaries), nil
			case h.Name == "bin/dm-worker" && h.Typeflag == tar.TypeLink && sim != nil:
				h.Typeflag, h.Linkname = tar.TypeReg, ""
				return padded(sim, h.Name, o.PadBinaries), nil
			}
		}
		if h.Name != "grafana.tar.gz" || len(o.GrafanaExtra) == 0 || h.Typeflag != tar.TypeReg {
			return body, nil
		}
		return repack(body, o.GrafanaExtra, nil)
	})
	if err != nil {
		t.Fatalf("dmpkg.PackageWith(%s): %v", version, err)
	}
	return out
}

// padded returns sim followed by n pseudo-random bytes seeded by name.
func padded(sim []byte, name string, n int64) []byte {
	var seed [32]byte
	copy(seed[:], "dmpkg pad "+name)
	out := make([]byte, len(sim)+int(n))
	copy(out, sim)
	_, _ = rand.NewChaCha8(seed).Read(out[len(sim):])
	return out
}

// repack copies the .tar.gz pkg entry by entry, passing each entry's header
// and content (nil but for regular files) through edit (when not nil),
// which may change both, and appends extra.
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
		if edit != nil {
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
