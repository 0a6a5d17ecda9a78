package domain

import "fmt"

// Allocation is an instance already placed on a machine by some cluster.
type Allocation struct {
	Cluster  string
	Instance Instance
}

// CheckPlacement refuses instances whose ports or directories clash with
// allocations on the same host. A directory clashes when it is equal to,
// inside or contains a directory of the allocation. The error (code
// Conflict) reports the first clash in instance order: for each instance,
// its ports, then its directories, against the allocations in order.
// Clashes among the new instances themselves are ParseTopology's business.
func CheckPlacement(instances []Instance, existing []Allocation) error {
	onHost := map[string][]Allocation{}
	for _, a := range existing {
		hk := canonicalHost(a.Instance.Host)
		onHost[hk] = append(onHost[hk], a)
	}
	for _, in := range instances {
		same := onHost[canonicalHost(in.Host)]
		for _, port := range in.Ports() {
			for _, a := range same {
				for _, ap := range a.Instance.Ports() {
					if ap == port {
						return placementErr(in, "port %d on %s is already used by cluster %s (%s)", port, in.Host, a.Cluster, a.Instance.label())
					}
				}
			}
		}
		for _, d := range in.Dirs() {
			for _, a := range same {
				if _, _, ok := firstDirClash([]string{d}, a.Instance.Dirs()); ok {
					return placementErr(in, "directory %s on %s clashes with cluster %s (%s)", d, in.Host, a.Cluster, a.Instance.label())
				}
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
