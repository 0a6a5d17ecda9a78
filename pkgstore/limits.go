package pkgstore

import "fmt"

// Limits bound what Inspect and Store.Put accept. A zero or negative field
// means the value of DefaultLimits for that field, never "unlimited".
type Limits struct {
	MaxBytes         int64 // compressed bytes, as uploaded
	MaxUnpackedBytes int64 // bytes after gunzip: tar headers and file contents
	MaxEntries       int   // tar entries (files, directories, links)
}

// DefaultLimits returns 1 GiB compressed, 4 GiB unpacked and 100000 entries.
func DefaultLimits() Limits {
	return Limits{MaxBytes: 1 << 30, MaxUnpackedBytes: 4 << 30, MaxEntries: 100000}
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
