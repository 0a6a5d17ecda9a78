package pkgstore

import "fmt"

// Limits bound what Inspect and Store.Put accept. A zero or negative field
// means the value of DefaultLimits for that field, never "unlimited".
type Limits struct {
	// MaxBytes bounds the package as uploaded (compressed).
	MaxBytes int64
	// MaxUnpackedBytes bounds the tar streams read, together: the package's
	// after gunzip, and that of every archive inside it (headers and file
	// contents), which unpacking them would write again.
	MaxUnpackedBytes int64
	// MaxEntries bounds the entries (files, directories, links) of the
	// package itself; each regular file is a line of the manifest.
	MaxEntries int
	// MaxNestedEntries bounds the entries of the archives inside the
	// package (grafana.tar.gz and what it holds), together.
	MaxNestedEntries int
	// MaxManifestBytes bounds the manifest's files and components encoded
	// as JSON, which the PackageUploaded event carries: see
	// [Manifest.JSONSize] and [Limits.ForPayload].
	MaxManifestBytes int64
	// MaxRatio bounds how many bytes any gzip stream (the package's, or an
	// archive's inside it) unpacks to per compressed byte, once it has
	// unpacked ratioFloor bytes: a compression bomb is refused early.
	MaxRatio int64
	// MaxDepth bounds how deep archives nest: 1 allows grafana.tar.gz in
	// the package but no archive inside it.
	MaxDepth int
}

const (
	// EventReserve is what a commit holding a PackageUploaded event needs
	// besides the manifest's files and components: the event's other
	// fields (id, name, version, checksum, object: under 1 KiB, bounded by
	// the domain's name rules), the commit and event envelopes (ids, actor,
	// time, correlation id) and the NATS headers of the message.
	EventReserve = 16 << 10
	// natsDefaultMaxPayload is a NATS server's max_payload unless its
	// configuration says otherwise.
	natsDefaultMaxPayload = 1 << 20
	// ratioFloor is how much a gzip stream may unpack before MaxRatio
	// applies: small, highly compressible files (dashboards, configs, runs
	// of tar padding) pass.
	ratioFloor = 8 << 20
)

// DefaultLimits returns 1 GiB compressed, 4 GiB unpacked, 10,000 entries in
// the package and 100,000 in the archives inside it, a manifest that fits
// in an event of a NATS server with the default max_payload of 1 MiB
// (1 MiB - EventReserve; see ForPayload), a compression ratio of 200 and
// archives nested 3 deep.
func DefaultLimits() Limits {
	return Limits{
		MaxBytes:         1 << 30,
		MaxUnpackedBytes: 4 << 30,
		MaxEntries:       10000,
		MaxNestedEntries: 100000,
		MaxManifestBytes: natsDefaultMaxPayload - EventReserve,
		MaxRatio:         200,
		MaxDepth:         3,
	}
}

// ForPayload returns l with MaxManifestBytes set so that the commit that
// records a package fits in one message of a bus whose max payload is
// maxPayload bytes (nats.Conn.MaxPayload). A maxPayload too small to hold
// EventReserve leaves l unchanged.
func (l Limits) ForPayload(maxPayload int64) Limits {
	if maxPayload > EventReserve {
		l.MaxManifestBytes = maxPayload - EventReserve
	}
	return l
}

func (l Limits) orDefaults() Limits {
	d := DefaultLimits()
	if l.MaxBytes <= 0 {
		l.MaxBytes = d.MaxBytes
	}
	if l.MaxUnpackedBytes <= 0 {
		l.MaxUnpackedBytes = d.MaxUnpackedBytes
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = d.MaxEntries
	}
	if l.MaxNestedEntries <= 0 {
		l.MaxNestedEntries = d.MaxNestedEntries
	}
	if l.MaxManifestBytes <= 0 {
		l.MaxManifestBytes = d.MaxManifestBytes
	}
	if l.MaxRatio <= 0 {
		l.MaxRatio = d.MaxRatio
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = d.MaxDepth
	}
	return l
}

// fmtSize renders a byte limit for people: "1 GiB (1073741824 bytes)", or
// "100 bytes" when it is not a whole number of KiB, MiB or GiB.
func fmtSize(n int64) string {
	for _, u := range []struct {
		size int64
		name string
	}{{1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}} {
		if n >= u.size && n%u.size == 0 {
			return fmt.Sprintf("%d %s (%d bytes)", n/u.size, u.name, n)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}
