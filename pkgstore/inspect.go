package pkgstore

import (
	"archive/tar"
	"bufio"
	"compress/flate"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"path"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/dmgr/dmgr/domain"
)

// Manifest describes a package that passed Inspect.
type Manifest struct {
	SHA256     string   `json:"sha256"`     // hex SHA-256 of the body as received (compressed)
	Size       int64    `json:"size"`       // compressed size in bytes
	Files      []File   `json:"files"`      // regular files, sorted by Path
	Components []string `json:"components"` // sorted: bin/ file names, "grafana", "dmctl"
}

// File is one regular file of a package. A hard link is listed as a file
// with the content of its target; symlinks and directories are not listed.
type File struct {
	Path   string `json:"path"`   // slash-separated, relative to the package root
	Size   int64  `json:"size"`   // bytes
	Mode   uint32 `json:"mode"`   // permission bits only (0o755); setuid, setgid and sticky are dropped
	SHA256 string `json:"sha256"` // hex SHA-256 of the content
}

const (
	maxPathLen   = 4096    // bytes in an entry path or link target
	maxLinkHops  = 40      // symlinks followed while resolving one target, as Linux's ELOOP
	maxLinkSteps = 1 << 18 // path components walked resolving all symlinks of a package
)

// onlyKinds ends the message for refused entry types.
const onlyKinds = "a package may hold only regular files, directories and links"

type kind uint8

const (
	kindDir kind = iota + 1
	kindFile
	kindHardlink
	kindSymlink
)

func (k kind) String() string {
	switch k {
	case kindDir:
		return "directory"
	case kindFile:
		return "regular file"
	case kindHardlink:
		return "hard link"
	case kindSymlink:
		return "symlink"
	}
	return "entry"
}

// entry is what Inspect keeps of one tar entry: no content, only its name,
// kind, link target and, for files, size and digest.
type entry struct {
	raw  string // the name as written in the archive, for messages
	path string // cleaned; after the end of the archive, with the top directory stripped
	kind kind
	link string // symlink target as written, or hard link target cleaned like path
	size int64
	mode uint32
	sum  string
}

// Inspect reads a gzip-compressed tar package from r to its end and checks
// it (see the package documentation). It reads r once, holds only entry names
// and digests in memory, and stops at the first entry it refuses. Errors about
// the package carry domain.Invalid, or domain.TooLarge for lim; an error
// reading r is returned wrapped, without a domain code.
func Inspect(r io.Reader, lim Limits) (Manifest, error) {
	lim = lim.orDefaults()
	in := &inspector{
		lim:    lim,
		byPath: make(map[string]*entry),
		src: &meter{
			r:    r,
			hash: sha256.New(),
			max:  lim.MaxBytes,
			over: domain.Errorf(domain.TooLarge, "package is larger than the upload limit of %s", fmtSize(lim.MaxBytes)),
		},
	}
	if err := in.read(); err != nil {
		return Manifest{}, err
	}
	return in.manifest()
}

type inspector struct {
	lim      Limits
	src      *meter // the body as received
	unpacked *meter // the tar stream after gunzip
	headers  int    // tar headers read
	declared int64  // sum of the sizes that regular file headers declare
	entries  []*entry
	byPath   map[string]*entry // by cleaned path, before stripping
	last     string            // raw name of the last entry read, for messages
}

func (in *inspector) read() error {
	br := bufio.NewReader(in.src)
	z, err := gzip.NewReader(br)
	if err != nil {
		return in.fail(err, func(err error) error {
			if in.src.n == 0 {
				return domain.Errorf(domain.Invalid, "package is empty; send a dm-vX.Y.Z.tar.gz file as the request body")
			}
			return domain.Errorf(domain.Invalid, "package is not gzip-compressed: %v", err)
		})
	}
	z.Multistream(false)
	in.unpacked = &meter{
		r:    &members{br: br, z: z},
		max:  in.lim.MaxUnpackedBytes,
		over: in.unpackedTooLarge(),
	}
	tr := tar.NewReader(in.unpacked)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, tar.ErrInsecurePath) && hdr != nil {
			err = nil // with GODEBUG=tarinsecurepath=0; add checks paths itself
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return in.fail(err, in.decodeError)
		}
		in.headers++
		if in.headers > in.lim.MaxEntries {
			return domain.Errorf(domain.Invalid, "package has more than %d entries, the limit", in.lim.MaxEntries)
		}
		in.last = hdr.Name
		if err := in.add(hdr, tr); err != nil {
			return err
		}
	}
	if in.headers == 0 {
		return domain.Errorf(domain.Invalid, "package is not a tar archive: it holds no entries")
	}
	// Read the rest, so that the digest covers the whole body: the tar
	// padding, any further gzip members (each checked against its CRC-32) and
	// whatever follows the gzip stream, which is ignored.
	if _, err := io.Copy(io.Discard, in.unpacked); err != nil {
		return in.fail(err, in.decodeError)
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return in.fail(err, in.decodeError)
	}
	return in.sourceError()
}

// add checks one tar header and, for a regular file, hashes its content.
func (in *inspector) add(hdr *tar.Header, tr *tar.Reader) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil // PAX metadata for the following entries, not an entry
	}
	raw := hdr.Name
	p, why := cleanPath(raw)
	if why != "" {
		return entryError(raw, "%s", why)
	}
	e := &entry{raw: raw, path: p, mode: uint32(hdr.Mode) & 0o777}
	switch hdr.Typeflag {
	case tar.TypeDir:
		e.kind = kindDir
	case tar.TypeReg:
		e.kind = kindFile
	case tar.TypeSymlink:
		e.kind = kindSymlink
	case tar.TypeLink:
		e.kind = kindHardlink
	case tar.TypeChar:
		return entryError(raw, "is a character device; %s", onlyKinds)
	case tar.TypeBlock:
		return entryError(raw, "is a block device; %s", onlyKinds)
	case tar.TypeFifo:
		return entryError(raw, "is a FIFO; %s", onlyKinds)
	case tar.TypeGNUSparse:
		return entryError(raw, "is a sparse file; %s", onlyKinds)
	default:
		return entryError(raw, "has the unsupported tar entry type %q; %s", hdr.Typeflag, onlyKinds)
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return entryError(raw, "is a sparse file; %s", onlyKinds)
		}
	}
	if p == "" { // "./", the package root itself
		if e.kind != kindDir {
			return entryError(raw, "names the package root but is a %s, not a directory", e.kind)
		}
		return nil
	}
	if prev := in.byPath[p]; prev != nil {
		if prev.kind == kindDir && e.kind == kindDir {
			return nil
		}
		return entryError(raw, "appears more than once in the package (also as %q)", prev.raw)
	}

	switch e.kind {
	case kindFile:
		in.declared += hdr.Size
		if in.declared > in.lim.MaxUnpackedBytes {
			return in.unpackedTooLarge()
		}
		h := sha256.New()
		if _, err := io.Copy(h, tr); err != nil {
			return in.fail(err, in.decodeError)
		}
		e.size, e.sum = hdr.Size, hex.EncodeToString(h.Sum(nil))
	case kindSymlink:
		t := hdr.Linkname
		if why := checkLinkTarget(t); why != "" {
			return entryError(raw, "symlink target %q %s", t, why)
		}
		if strings.HasPrefix(t, "/") {
			return entryError(raw, "symlink target %q points outside the package (absolute path)", t)
		}
		// Lexically, in the tree as written; manifest checks again once the
		// top directory is stripped, following the package's other symlinks.
		if j := path.Join(path.Dir(p), t); j == ".." || strings.HasPrefix(j, "../") {
			return entryError(raw, "symlink target %q points outside the package", t)
		}
		e.link = t
	case kindHardlink:
		t := hdr.Linkname
		if why := checkLinkTarget(t); why != "" {
			return entryError(raw, "hard link target %q %s", t, why)
		}
		tp, why := cleanPath(t)
		if why != "" || tp == "" {
			return entryError(raw, "hard link target %q points outside the package", t)
		}
		target := in.byPath[tp]
		if target == nil || (target.kind != kindFile && target.kind != kindHardlink) {
			return entryError(raw, "hard link target %q is not a regular file earlier in the package", t)
		}
		e.link, e.size, e.sum = tp, target.size, target.sum
	}
	in.byPath[p] = e
	in.entries = append(in.entries, e)
	return nil
}

func (in *inspector) unpackedTooLarge() error {
	return domain.Errorf(domain.TooLarge, "package unpacks to more than the limit of %s", fmtSize(in.lim.MaxUnpackedBytes))
}

// fail returns the error that explains err: first a limit that the body
// broke or a failure reading it (which the gzip and tar readers may report
// as something else), else classify(err).
func (in *inspector) fail(err error, classify func(error) error) error {
	if serr := in.sourceError(); serr != nil {
		return serr
	}
	return classify(err)
}

// sourceError reports a broken limit or a failure reading the body.
func (in *inspector) sourceError() error {
	switch {
	case in.src.limitErr != nil:
		return in.src.limitErr
	case in.src.readErr != nil:
		return fmt.Errorf("read package: %w", in.src.readErr)
	case in.unpacked != nil && in.unpacked.limitErr != nil:
		return in.unpacked.limitErr
	}
	return nil
}

// decodeError explains an error of the gzip or tar reader.
func (in *inspector) decodeError(err error) error {
	var corrupt flate.CorruptInputError
	switch {
	case errors.As(err, &corrupt), errors.Is(err, gzip.ErrChecksum), errors.Is(err, gzip.ErrHeader):
		return domain.Errorf(domain.Invalid, "package is damaged: its gzip data is corrupt (%v)", err)
	case in.headers == 0:
		return domain.Errorf(domain.Invalid, "package is not a tar archive: %v", err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return domain.Errorf(domain.Invalid, "package is truncated: it ends inside or after entry %q", in.last)
	}
	return domain.Errorf(domain.Invalid, "package is damaged after entry %q: %v", in.last, err)
}

func entryError(raw, format string, args ...any) error {
	return domain.Errorf(domain.Invalid, "package entry %q: %s", raw, fmt.Sprintf(format, args...))
}

// cleanPath checks an entry path and returns it cleaned ("./bin//x" →
// "bin/x"; "./" → ""), or why it is refused.
func cleanPath(p string) (clean, why string) {
	if p == "" {
		return "", "path is empty"
	}
	if why := checkText(p); why != "" {
		return "", "path " + why
	}
	if strings.HasPrefix(p, "/") {
		return "", "path is absolute"
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == ".." {
			return "", `path climbs out of the package ("..")`
		}
	}
	c := path.Clean(p)
	if c == "." {
		c = ""
	}
	return c, ""
}

// checkLinkTarget checks the text of a link target, not where it points.
func checkLinkTarget(t string) string {
	if t == "" {
		return "is empty"
	}
	return checkText(t)
}

// checkText refuses text that has no business in a path that later reaches
// a remote shell, even quoted.
func checkText(s string) string {
	if len(s) > maxPathLen {
		return fmt.Sprintf("is longer than %d bytes", maxPathLen)
	}
	if !utf8.ValidString(s) {
		return "is not valid UTF-8"
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return fmt.Sprintf("contains the control character %U", r)
		}
	}
	return ""
}

// meter counts, and optionally hashes, what passes through it, and fails
// once more than max bytes have. Its errors stick so that Inspect can tell a
// broken limit or a failed read from what the decoders make of them.
type meter struct {
	r        io.Reader
	hash     hash.Hash // nil: no hashing
	n        int64
	max      int64
	over     error
	limitErr error // over, once n > max
	readErr  error // the first error of r other than io.EOF
}

func (m *meter) Read(p []byte) (int, error) {
	if m.limitErr != nil {
		return 0, m.limitErr
	}
	n, err := m.r.Read(p)
	if n > 0 {
		if m.hash != nil {
			m.hash.Write(p[:n])
		}
		m.n += int64(n)
		if m.n > m.max {
			m.limitErr = m.over
			return 0, m.limitErr
		}
	}
	if err != nil && err != io.EOF && m.readErr == nil {
		m.readErr = err
	}
	return n, err
}

// members reads the gzip members of br one after another, as gzip.Reader in
// multistream mode does, except that bytes after the last member that do not
// start another one end the stream instead of failing it.
type members struct {
	br   *bufio.Reader
	z    *gzip.Reader
	done bool
}

func (m *members) Read(p []byte) (int, error) {
	for !m.done {
		n, err := m.z.Read(p)
		if err != io.EOF {
			return n, err
		}
		// The member is complete and matched its CRC-32 and length.
		if err := m.z.Reset(m.br); err != nil {
			m.done = true // io.EOF, or trailing bytes that are not a gzip member
		} else {
			m.z.Multistream(false)
		}
		if n > 0 {
			return n, nil
		}
	}
	return 0, io.EOF
}
