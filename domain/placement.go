package domain

import (
	"fmt"
	"strings"
)

// Allocation is an instance already placed on a machine by some cluster.
type Allocation struct {
	Cluster  string
	Instance Instance
}

// CheckPlacement refuses instances whose ports or directories clash with
// allocations on the same host. A directory clashes when it is equal to,
// inside or contains a directory of the allocation. The error (code
// Conflict) reports the first clash in instance order: for each instance,
// its ports, then its directories, each against the first allocation (in
// order) it clashes with. Clashes among the new instances themselves are
// ParseTopology's business.
//
// The allocations are indexed once (ports by host and port, directories by
// host, see dirIndex), so the check costs O((n + m) · depth) for n
// instances, m allocations and directories depth components deep, not
// O(n · m).
func CheckPlacement(instances []Instance, existing []Allocation) error {
	if len(instances) == 0 || len(existing) == 0 {
		return nil
	}
	ports := make(map[hostPortKey]int, len(existing))
	dirs := map[string]*dirIndex{}
	for i, a := range existing {
		hk := canonicalHost(a.Instance.Host)
		for _, p := range a.Instance.Ports() {
			if _, ok := ports[hostPortKey{hk, p}]; !ok {
				ports[hostPortKey{hk, p}] = i
			}
		}
		x := dirs[hk]
		if x == nil {
			x = newDirIndex()
			dirs[hk] = x
		}
		for _, d := range a.Instance.Dirs() {
			x.add(d, i)
		}
	}
	for _, in := range instances {
		hk := canonicalHost(in.Host)
		for _, port := range in.Ports() {
			if i, ok := ports[hostPortKey{hk, port}]; ok {
				a := existing[i]
				return placementErr(in, "port %d on %s is already used by cluster %s (%s)", port, in.Host, a.Cluster, a.Instance.label())
			}
		}
		x := dirs[hk]
		if x == nil {
			continue
		}
		for _, d := range in.Dirs() {
			if i, ok := x.clash(d); ok {
				a := existing[i]
				return placementErr(in, "directory %s on %s clashes with cluster %s (%s)", d, in.Host, a.Cluster, a.Instance.label())
			}
		}
	}
	return nil
}

// placementErr locates a Conflict at the instance's topology line, or names
// the instance when it has no line.
func placementErr(in Instance, format string, args ...any) *Error {
	where := fmt.Sprintf("topology line %d", in.Line)
	if in.Line <= 0 {
		where = in.label()
	}
	return Errorf(Conflict, "%s: %s", where, fmt.Sprintf(format, args...))
}

// hostPortKey is a port on a host (canonicalHost form).
type hostPortKey struct {
	host string
	port int
}

// dirIndex finds, among the directories of one host added to it, the
// first owner of one that is equal to, inside or contains a given
// directory, in O(depth) per lookup and (amortised) per addition: each
// directory is kept with the first owner that added it, and each of its
// ancestors with the first owner that added a directory below it. Owners
// are added in increasing order, so "first" is "smallest". Directories are
// clean absolute paths.
type dirIndex struct {
	exact map[string]int // directory → its first owner
	below map[string]int // directory → the first owner of a directory strictly inside it
}

func newDirIndex() *dirIndex {
	return &dirIndex{exact: map[string]int{}, below: map[string]int{}}
}

// add records that owner uses directory d.
func (x *dirIndex) add(d string, owner int) {
	if _, ok := x.exact[d]; !ok {
		x.exact[d] = owner
	}
	for a, ok := parentDir(d); ok; a, ok = parentDir(a) {
		if _, seen := x.below[a]; seen {
			// Whoever recorded a recorded its ancestors too, with an owner
			// no larger than this one.
			return
		}
		x.below[a] = owner
	}
}

// clash returns the smallest owner of a directory equal to, inside or
// containing d.
func (x *dirIndex) clash(d string) (int, bool) {
	best := -1
	take := func(o int, ok bool) {
		if ok && (best < 0 || o < best) {
			best = o
		}
	}
	o, ok := x.exact[d]
	take(o, ok)
	o, ok = x.below[d]
	take(o, ok)
	for a, more := parentDir(d); more; a, more = parentDir(a) {
		o, ok := x.exact[a]
		take(o, ok)
	}
	return best, best >= 0
}

// parentDir returns the directory that contains the clean absolute path d
// ("/" for "/a"); ok is false for "/" and for a path that is not absolute.
func parentDir(d string) (string, bool) {
	i := strings.LastIndexByte(d, '/')
	switch {
	case i < 0 || d == "/":
		return "", false
	case i == 0:
		return "/", true
	}
	return d[:i], true
}
