package pkgstore

import (
	"archive/tar"
	"bufio"
	"compress/flate"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"path"
	"slices"
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
	Mode   uint32 `json:"mode"`   // permission bits only (0o755): an entry with set-uid, set-gid or sticky bits is refused
	SHA256 string `json:"sha256"` // hex SHA-256 of the content
}

// JSONSize is the length of m.Files and m.Components encoded as JSON, as
// the PackageUploaded event carries them (domain.PackageFile encodes as
// File does). Limits.MaxManifestBytes bounds it.
func (m Manifest) JSONSize() int64 {
	n := int64(len("[]"))
	if m.Files == nil {
		n = int64(len("null"))
	}
	for i, f := range m.Files {
		b, _ := json.Marshal(f) // a File always encodes
		n += int64(len(b))
		if i > 0 {
			n++ // the comma
		}
	}
	b, _ := json.Marshal(m.Components)
	return n + int64(len(b))
}

const (
	maxPathLen   = 4096    // bytes in an entry path or link target
	maxLinkHops  = 40      // symlinks followed while resolving one target, as Linux's ELOOP
	maxLinkSteps = 1 << 18 // path components walked resolving all symlinks of one archive
	// maxNameBytes bounds the entry names and link targets Inspect holds
	// in memory, over the package and every archive in it.
	maxNameBytes = 64 << 20
)

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
	raw     string // the name as written in the archive, for messages
	path    string // cleaned; in the package, after the end of the archive, with the top directory stripped
	kind    kind
	link    string // symlink target as written, or hard link target cleaned like path
	size    int64
	mode    uint32
	sum     string
	archive archiveKind // a regular file checked as an archive: how
}

// Inspect reads a gzip-compressed tar package from r to its end and checks
// it (see the package documentation); name (the package id, or "") names
// the package in messages. It reads r once, holds only entry names and
// digests in memory, and stops at the first entry it refuses. Errors about
// the package carry domain.Invalid, or domain.TooLarge for lim; an error
// reading r is returned wrapped, without a domain code.
func Inspect(r io.Reader, name string, lim Limits) (Manifest, error) {
	lim = lim.orDefaults()
	subject := "package"
	if name != "" {
		subject += " " + name
	}
	in := &inspector{lim: lim, subject: subject}
	in.src = &meter{
		r:    r,
		hash: sha256.New(),
		max:  lim.MaxBytes,
		over: domain.Errorf(domain.TooLarge, "%s is larger than the upload limit of %s", subject, fmtSize(lim.MaxBytes)),
	}
	in.top = &archive{in: in, stored: in.src, byPath: make(map[string]*entry)}
	if err := in.top.read(archiveTarGz); err != nil {
		return Manifest{}, err
	}
	return in.manifest()
}

// inspector holds what the checks of the package and of the archives in it
// share: the limits and the budgets they draw on.
type inspector struct {
	lim      Limits
	subject  string // "package" or "package <name>", as messages name the package
	src      *meter // the body as received
	top      *archive
	unpacked int64 // bytes of every tar stream read so far
	nested   int   // entries read of the archives inside the package
	names    int64 // bytes of entry names and link targets held
}

// archive is the check of one tar stream: the package itself, or an
// archive inside it (grafana.tar.gz), or one inside that.
type archive struct {
	in       *inspector
	parent   *archive // nil: the package itself
	name     string   // the archive's entry name in its parent, as written; "" for the package
	depth    int      // 0 for the package, 1 for an archive in it, …
	stored   *meter   // the archive's bytes as stored: the body, or the entry's content in the parent
	stream   *tarStream
	headers  int   // tar headers read
	declared int64 // sum of the sizes that regular file headers declare
	entries  []*entry
	byPath   map[string]*entry // by cleaned path, before stripping
	last     string            // raw name of the last entry read, for messages
}

// where names the archive in messages: "package dm-v8.1.0-linux-amd64",
// "package dm-v8.1.0-linux-amd64: grafana.tar.gz".
func (a *archive) where() string {
	if a.parent == nil {
		return a.in.subject
	}
	return a.parent.where() + ": " + a.name
}

// noun is what an entry climbing out of a leaves: "package" or "archive".
func (a *archive) noun() string {
	if a.parent == nil {
		return "package"
	}
	return "archive"
}

// article is the noun with its article: "a package", "an archive".
func (a *archive) article() string {
	if a.parent == nil {
		return "a package"
	}
	return "an archive"
}

func (a *archive) onlyKinds() string {
	return a.article() + " may hold only regular files, directories and links"
}

// read checks the archive's entries one by one, reading a.stored to its
// end, nested archives included.
func (a *archive) read(ak archiveKind) error {
	var stream io.Reader = a.stored
	var br *bufio.Reader
	if ak == archiveTarGz {
		br = bufio.NewReader(a.stored)
		z, err := gzip.NewReader(br)
		if err != nil {
			return a.fail(err, func(err error) error {
				if a.stored.n == 0 {
					return a.emptyError()
				}
				return domain.Errorf(domain.Invalid, "%s is not gzip-compressed: %v", a.where(), err)
			})
		}
		if a.parent == nil {
			// Bytes after the gzip members are ignored, as gzip -d does.
			z.Multistream(false)
			stream = &members{br: br, z: z}
		} else {
			stream = z // strict: whatever follows must be gzip members too
		}
	}
	a.stream = &tarStream{r: stream, a: a, gz: ak == archiveTarGz}
	tr := tar.NewReader(a.stream)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, tar.ErrInsecurePath) && hdr != nil {
			err = nil // with GODEBUG=tarinsecurepath=0; add checks paths itself
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return a.fail(err, a.decodeError)
		}
		a.headers++
		if err := a.countEntry(); err != nil {
			return err
		}
		a.last = hdr.Name
		if err := a.add(hdr, tr); err != nil {
			return err
		}
	}
	if a.headers == 0 {
		if a.stored.n == 0 {
			return a.emptyError()
		}
		return domain.Errorf(domain.Invalid, "%s is not a tar archive: it holds no entries", a.where())
	}
	// Read the rest, so that the digest covers the whole body: the tar
	// padding, any further gzip members (each checked against its CRC-32)
	// and, for the package, whatever follows the gzip stream, which is
	// ignored.
	if _, err := io.Copy(io.Discard, a.stream); err != nil {
		return a.fail(err, a.decodeError)
	}
	if br != nil && a.parent == nil {
		if _, err := io.Copy(io.Discard, br); err != nil {
			return a.fail(err, a.decodeError)
		}
	}
	return a.upstreamError()
}

func (a *archive) emptyError() error {
	if a.parent == nil {
		return domain.Errorf(domain.Invalid, "%s is empty; send a dm-vX.Y.Z.tar.gz file as the request body", a.where())
	}
	return domain.Errorf(domain.Invalid, "%s is empty, not an archive", a.where())
}

// countEntry draws one entry from the package's or the nested archives'
// budget.
func (a *archive) countEntry() error {
	lim := a.in.lim
	if a.parent == nil {
		if a.headers > lim.MaxEntries {
			return domain.Errorf(domain.TooLarge, "%s has more than %d entries, the limit", a.where(), lim.MaxEntries)
		}
		return nil
	}
	a.in.nested++
	if a.in.nested > lim.MaxNestedEntries {
		return domain.Errorf(domain.TooLarge, "%s: the archives in the package hold more than %d entries together, the limit",
			a.where(), lim.MaxNestedEntries)
	}
	return nil
}

// add checks one tar header and, for a regular file, hashes its content
// and, when it is an archive, checks it too.
func (a *archive) add(hdr *tar.Header, tr *tar.Reader) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil // PAX metadata for the following entries, not an entry
	}
	raw := hdr.Name
	p, why := cleanPath(raw, a.noun())
	if why != "" {
		return a.entryError(raw, "%s", why)
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
		return a.entryError(raw, "is a character device; %s", a.onlyKinds())
	case tar.TypeBlock:
		return a.entryError(raw, "is a block device; %s", a.onlyKinds())
	case tar.TypeFifo:
		return a.entryError(raw, "is a FIFO; %s", a.onlyKinds())
	case tar.TypeGNUSparse:
		return a.entryError(raw, "is a sparse file; %s", a.onlyKinds())
	default:
		return a.entryError(raw, "has the unsupported tar entry type %q; %s", hdr.Typeflag, a.onlyKinds())
	}
	if why := specialBits(hdr.Mode); why != "" {
		return a.entryError(raw, "%s (mode %04o); %s may not carry set-uid, set-gid or sticky bits", why, hdr.Mode&0o7777, a.article())
	}
	if why := paxRecords(hdr.PAXRecords); why != "" {
		return a.entryError(raw, "%s", why)
	}
	if p == "" { // "./", the archive root itself
		if e.kind != kindDir {
			return a.entryError(raw, "names the %s root but is a %s, not a directory", a.noun(), e.kind)
		}
		return nil
	}
	if prev := a.byPath[p]; prev != nil {
		if prev.kind == kindDir && e.kind == kindDir {
			return nil
		}
		return a.entryError(raw, "appears more than once in the %s (also as %q)", a.noun(), prev.raw)
	}

	switch e.kind {
	case kindFile:
		a.declared += hdr.Size
		if a.declared > a.in.lim.MaxUnpackedBytes {
			return a.unpackedTooLarge()
		}
		ak, why := archiveKindOf(p)
		if why != "" {
			return a.entryError(raw, "%s", why)
		}
		h := sha256.New()
		content := &meter{r: tr, hash: h, max: math.MaxInt64}
		if ak != notArchive {
			if err := a.nested(raw, p, ak, content); err != nil {
				return err
			}
			e.archive = ak
		}
		if _, err := io.Copy(io.Discard, content); err != nil {
			return a.fail(err, a.decodeError)
		}
		e.size, e.sum = hdr.Size, hex.EncodeToString(h.Sum(nil))
	case kindSymlink:
		t := hdr.Linkname
		if why := checkLinkTarget(t); why != "" {
			return a.entryError(raw, "symlink target %q %s", t, why)
		}
		if strings.HasPrefix(t, "/") {
			return a.entryError(raw, "symlink target %q points outside the %s (absolute path)", t, a.noun())
		}
		// Lexically, in the tree as written; checkTree checks again once
		// the whole archive is read (and, for the package, its top
		// directory stripped), following its other symlinks.
		if j := path.Join(path.Dir(p), t); j == ".." || strings.HasPrefix(j, "../") {
			return a.entryError(raw, "symlink target %q points outside the %s", t, a.noun())
		}
		e.link = t
	case kindHardlink:
		t := hdr.Linkname
		if why := checkLinkTarget(t); why != "" {
			return a.entryError(raw, "hard link target %q %s", t, why)
		}
		tp, why := cleanPath(t, a.noun())
		if why != "" || tp == "" {
			return a.entryError(raw, "hard link target %q points outside the %s", t, a.noun())
		}
		target := a.byPath[tp]
		if target == nil || (target.kind != kindFile && target.kind != kindHardlink) {
			return a.entryError(raw, "hard link target %q is not a regular file earlier in the %s", t, a.noun())
		}
		// Whoever unpacks an archive by its name reads the target's
		// content: it must have been checked as that kind of archive.
		if ak, why := archiveKindOf(p); why != "" {
			return a.entryError(raw, "%s", why)
		} else if ak != target.archive && ak != notArchive {
			return a.entryError(raw, "is named as an archive but is a hard link to %q, which was not checked as one; store the archive itself", t)
		}
		e.link, e.size, e.sum, e.archive = tp, target.size, target.sum, target.archive
	}
	a.in.names += int64(len(raw) + len(p) + len(e.link))
	if a.in.names > maxNameBytes {
		return domain.Errorf(domain.TooLarge, "%s: its entry names and link targets take more than %s together, the limit",
			a.where(), fmtSize(maxNameBytes))
	}
	a.byPath[p] = e
	a.entries = append(a.entries, e)
	return nil
}

// nested checks the content of the entry raw (cleaned: p) as an archive
// of kind ak, reading it from content.
func (a *archive) nested(raw, p string, ak archiveKind, content *meter) error {
	if a.depth+1 > a.in.lim.MaxDepth {
		return a.entryError(raw, "is an archive nested %d deep; archives in a package may nest at most %d deep",
			a.depth+1, a.in.lim.MaxDepth)
	}
	child := &archive{in: a.in, parent: a, name: raw, depth: a.depth + 1, stored: content, byPath: make(map[string]*entry)}
	if err := child.read(ak); err != nil {
		return err
	}
	// Its entries are checked; only the package's are kept for the manifest.
	return child.checkTree(child.entries)
}

// specialBits says which of set-uid, set-gid and sticky mode has.
func specialBits(mode int64) string {
	var bits []string
	for _, b := range []struct {
		bit  int64
		name string
	}{{0o4000, "set-uid"}, {0o2000, "set-gid"}, {0o1000, "sticky"}} {
		if mode&b.bit != 0 {
			bits = append(bits, b.name)
		}
	}
	switch len(bits) {
	case 0:
		return ""
	case 1:
		return "has the " + bits[0] + " bit"
	}
	return "has the " + strings.Join(bits[:len(bits)-1], ", ") + " and " + bits[len(bits)-1] + " bits"
}

// paxRecords refuses sparse files, access control lists and extended
// attributes that grant rights (security.capability gives a program root
// powers as set-uid does; trusted.* and system.* are the kernel's).
// Harmless user.* attributes (macOS adds some) pass; tar does not restore
// attributes unless told to.
func paxRecords(recs map[string]string) string {
	if len(recs) == 0 {
		return ""
	}
	keys := make([]string, 0, len(recs))
	for k := range recs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		switch {
		case strings.HasPrefix(k, "GNU.sparse."):
			return "is a sparse file; only regular files, directories and links are allowed"
		case strings.HasPrefix(k, "SCHILY.acl."):
			return fmt.Sprintf("carries an access control list (%s); entries may carry only their mode", k)
		}
		attr, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok {
			attr, ok = strings.CutPrefix(k, "LIBARCHIVE.xattr.")
		}
		if ok {
			for _, ns := range []string{"security.", "trusted.", "system."} {
				if strings.HasPrefix(attr, ns) {
					return fmt.Sprintf("carries the extended attribute %q; entries may not carry security, trusted or system attributes (file capabilities, ACLs)", attr)
				}
			}
		}
	}
	return ""
}

func (a *archive) unpackedTooLarge() error {
	lim := fmtSize(a.in.lim.MaxUnpackedBytes)
	if a.parent == nil {
		return domain.Errorf(domain.TooLarge, "%s unpacks to more than the limit of %s", a.where(), lim)
	}
	return domain.Errorf(domain.TooLarge, "%s: unpacking it takes the package past the limit of %s, counting every archive in it", a.where(), lim)
}

func (a *archive) ratioTooHigh() error {
	return domain.Errorf(domain.TooLarge,
		"%s unpacks to more than %d times its compressed size, the limit; a compression bomb is refused", a.where(), a.in.lim.MaxRatio)
}

// fail returns the error that explains err: first a limit that an input
// broke or a failure reading it (which the gzip and tar readers may report
// as something else), else classify(err).
func (a *archive) fail(err error, classify func(error) error) error {
	if uerr := a.upstreamError(); uerr != nil {
		return uerr
	}
	return classify(err)
}

// upstreamError reports a broken limit or a failed read below this
// archive's own decoding: in the body, in the archives that hold this one,
// or in this archive's tar stream.
func (a *archive) upstreamError() error {
	if a.parent == nil {
		switch {
		case a.in.src.limitErr != nil:
			return a.in.src.limitErr
		case a.in.src.readErr != nil:
			return fmt.Errorf("read package: %w", a.in.src.readErr)
		}
	} else {
		if err := a.parent.upstreamError(); err != nil {
			return err
		}
		if err := a.stored.readErr; err != nil {
			return a.parent.decodeError(err) // the parent's tar reader failed inside this entry
		}
	}
	if a.stream != nil && a.stream.limitErr != nil {
		return a.stream.limitErr
	}
	return nil
}

// decodeError explains an error of the gzip or tar reader.
func (a *archive) decodeError(err error) error {
	var corrupt flate.CorruptInputError
	w := a.where()
	switch {
	case errors.As(err, &corrupt), errors.Is(err, gzip.ErrChecksum), errors.Is(err, gzip.ErrHeader):
		return domain.Errorf(domain.Invalid, "%s is damaged: its gzip data is corrupt (%v)", w, err)
	case a.headers == 0:
		return domain.Errorf(domain.Invalid, "%s is not a tar archive: %v", w, err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return domain.Errorf(domain.Invalid, "%s is truncated: it ends inside or after entry %q", w, a.last)
	}
	return domain.Errorf(domain.Invalid, "%s is damaged after entry %q: %v", w, a.last, err)
}

func (a *archive) entryError(raw, format string, args ...any) error {
	return domain.Errorf(domain.Invalid, "%s: entry %q: %s", a.where(), raw, fmt.Sprintf(format, args...))
}

// archiveKind is how a file of a package is unpacked, if it is.
type archiveKind uint8

const (
	notArchive   archiveKind = iota
	archiveTar               // .tar
	archiveTarGz             // .tar.gz, .tgz
)

// uncheckable are archive formats dmgr does not read: a package holding
// one is refused rather than carry something unchecked that a person or a
// later version might unpack. (A zip cannot be checked as a stream: its
// directory is at its end, and its entries' types are in that directory.)
var uncheckable = []struct{ suffix, format string }{
	{".zip", "zip"}, {".7z", "7-Zip"}, {".rar", "RAR"},
	{".tar.bz2", "bzip2"}, {".tbz2", "bzip2"}, {".tbz", "bzip2"},
	{".tar.xz", "xz"}, {".txz", "xz"}, {".tar.zst", "zstd"}, {".tzst", "zstd"},
	{".tar.lz", "lzip"}, {".tar.lzma", "lzma"}, {".tlz", "lzma"}, {".tar.z", "compress"},
}

// archiveKindOf tells an archive by its name, as whoever unpacks it does
// (the host unpacks grafana.tar.gz): ".tar.gz" and ".tgz" are checked as
// gzip-compressed tar archives, ".tar" as a plain one; formats dmgr cannot
// check give why they are refused.
func archiveKindOf(p string) (archiveKind, string) {
	base := strings.ToLower(path.Base(p))
	switch {
	case strings.HasSuffix(base, ".tar.gz"), strings.HasSuffix(base, ".tgz"):
		return archiveTarGz, ""
	case strings.HasSuffix(base, ".tar"):
		return archiveTar, ""
	}
	for _, u := range uncheckable {
		if strings.HasSuffix(base, u.suffix) {
			return notArchive, fmt.Sprintf("is a %s archive, which dmgr cannot check; repack it as .tar.gz", u.format)
		}
	}
	return notArchive, ""
}

// cleanPath checks an entry path and returns it cleaned ("./bin//x" →
// "bin/x"; "./" → ""), or why it is refused; noun is what a ".." climbs
// out of.
func cleanPath(p, noun string) (clean, why string) {
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
			return "", `path climbs out of the ` + noun + ` ("..")`
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

// tarStream is an archive's tar stream (after gunzip, for a compressed
// one). It counts its bytes against the package's unpacked budget and,
// when compressed, against the ratio limit; its limit error sticks.
type tarStream struct {
	r        io.Reader
	a        *archive
	gz       bool
	n        int64
	limitErr error
}

func (s *tarStream) Read(p []byte) (int, error) {
	if s.limitErr != nil {
		return 0, s.limitErr
	}
	n, err := s.r.Read(p)
	if n > 0 {
		in := s.a.in
		s.n += int64(n)
		in.unpacked += int64(n)
		switch {
		case in.unpacked > in.lim.MaxUnpackedBytes:
			s.limitErr = s.a.unpackedTooLarge()
		case s.gz && s.n > ratioFloor && s.n/in.lim.MaxRatio > s.a.stored.n:
			s.limitErr = s.a.ratioTooHigh()
		}
		if s.limitErr != nil {
			return 0, s.limitErr
		}
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
