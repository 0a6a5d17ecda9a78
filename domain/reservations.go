package domain

import (
	"cmp"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Reservations: how the invariants that span aggregates stay exact while
// each command reads and conditions only the aggregates it touches.
//
//   - A machine records every cluster that places instances on it
//     (InstancesPlaced, committed atomically with the deploy or scale-out on
//     the condition that the machine did not change since it was read). The
//     clusters that may have instances on a machine are therefore exactly
//     the ones its state lists (Machine.Clusters); which instances they have
//     there now is read from those clusters. A deploy that clashes with
//     another on a port of a machine, and a removal of the machine racing a
//     deploy onto it, both write the machine: one of them is refused by the
//     condition and decides again on what the other wrote.
//   - A cluster name is unique because a deploy appends to the cluster's own
//     subject on the condition that it has no commit.
//   - A machine's identity (its host name, case-insensitively, and its
//     address with its SSH port) is held by claims, one aggregate each
//     (ClaimTaken, ClaimReleased), taken atomically with the registration
//     and released with the removal, each on the condition that the claim
//     did not change since it was read.
//
// A machine lists a cluster until a later command on the machine finds
// that the cluster no longer has an instance there (destroyed, scaled in)
// and releases it (PlacementsReleased): a listed cluster without instances
// on the machine only costs a read, never a wrong answer.

// Aggregate types of reservations: machine identity claims, and the
// store's own record that the reservations of the history written before
// them were made (ReservationsMade, aggregate id "reservations").
const (
	AggregateClaim = "claim"
	AggregateStore = "store"
)

// Event types of reservations.
const (
	TypeInstancesPlaced    = "InstancesPlaced"
	TypePlacementsReleased = "PlacementsReleased"
	TypeClaimTaken         = "ClaimTaken"
	TypeClaimReleased      = "ClaimReleased"
	TypeReservationsMade   = "ReservationsMade"
)

// InstancesPlaced (machine): a deploy or scale-out of Cluster placed these
// instances on the machine.
type InstancesPlaced struct {
	Cluster   string   `json:"cluster"`
	Operation string   `json:"operation"`
	Instances []string `json:"instance_ids"`
}

// PlacementsReleased (machine): these clusters have no instance on the
// machine any more.
type PlacementsReleased struct {
	Clusters []string `json:"clusters"`
}

// ClaimTaken (claim): the machine Owner holds the identity Claim.
type ClaimTaken struct {
	Claim string `json:"claim"`
	Owner string `json:"owner"`
}

// ClaimReleased (claim): the machine Owner no longer holds Claim.
type ClaimReleased struct {
	Claim string `json:"claim"`
	Owner string `json:"owner"`
}

// ReservationsMade (store): the claims and placements of every machine and
// cluster committed before reservations existed were made.
type ReservationsMade struct {
	Version int `json:"version"`
}

func (ReservationsMade) EventType() string   { return TypeReservationsMade }
func (InstancesPlaced) EventType() string    { return TypeInstancesPlaced }
func (PlacementsReleased) EventType() string { return TypePlacementsReleased }
func (ClaimTaken) EventType() string         { return TypeClaimTaken }
func (ClaimReleased) EventType() string      { return TypeClaimReleased }

// Claim is the state of one identity claim: the machine that holds it
// ("" when none does).
type Claim struct {
	ID    string `json:"id"`
	Owner string `json:"owner"`
}

// EvolveClaim folds one event into a claim.
func EvolveClaim(c Claim, e Event) Claim {
	switch e := e.(type) {
	case ClaimTaken:
		c = Claim{ID: e.Claim, Owner: e.Owner}
	case ClaimReleased:
		if c.Owner == e.Owner {
			c.Owner = ""
		}
	}
	return c
}

// MachineClaims are the identity claims of a machine with this host name,
// address and SSH port: the name folded to lower case, and the address
// with the port. Two machines that DecideRegisterMachine would call the
// same share a claim.
func MachineClaims(host, address string, sshPort int) []string {
	out := []string{"host:" + strings.ToLower(host)}
	if address != "" {
		out = append(out, "addr:"+net.JoinHostPort(address, strconv.Itoa(sshPort)))
	}
	return out
}

// ClaimsOf are the claims a registered machine holds.
func ClaimsOf(m *Machine) []string {
	return MachineClaims(m.Host, m.Addr(), m.SSHPort)
}

// Placements are the InstancesPlaced events of a deploy or scale-out of
// cluster: one per host the instances are on, keyed by host.
func Placements(cluster, operation string, instances []Instance) map[string]InstancesPlaced {
	out := map[string]InstancesPlaced{}
	for _, in := range instances {
		p := out[in.Host]
		p.Cluster, p.Operation = cluster, operation
		p.Instances = append(p.Instances, in.ID)
		out[in.Host] = p
	}
	return out
}

// PlacedInstances are the instances a deploy's, import's or scale-out's
// cluster events place (nil for other events).
func PlacedInstances(evs []Event) []Instance {
	for _, e := range evs {
		switch e := e.(type) {
		case ClusterDeployRequested:
			return e.Instances
		case ClusterImported:
			return e.Instances
		case ClusterScaleOutRequested:
			return e.Instances
		}
	}
	return nil
}

// Released lists, sorted, the clusters a machine lists that have no
// instance on it in clusters (their current states; a cluster missing
// from clusters is not released), except keep.
func Released(m *Machine, clusters map[string]*Cluster, keep string) []string {
	var out []string
	for _, name := range m.Clusters {
		c, ok := clusters[name]
		if !ok || name == keep {
			continue
		}
		if !c.Exists() || !slices.ContainsFunc(c.Instances, func(in Instance) bool { return in.Host == m.Host }) {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// withPlacements folds the reservation events into a machine's cluster
// list, copying it before it changes (states handed out never change).
func withPlacements(m Machine, e Event) (Machine, bool) {
	switch e := e.(type) {
	case InstancesPlaced:
		if !slices.Contains(m.Clusters, e.Cluster) {
			m.Clusters = append(slices.Clip(m.Clusters), e.Cluster)
		}
		return m, true
	case PlacementsReleased:
		m.Clusters = slices.DeleteFunc(slices.Clone(m.Clusters), func(c string) bool { return slices.Contains(e.Clusters, c) })
		return m, true
	}
	return m, false
}

// Needs is what a command reads besides its cluster: the machines it
// places on and the packages it installs.
type Needs struct {
	Hosts    []string
	Packages []string
}

// PackagesFor lists, sorted and once each, the DM packages of version
// that instances need under the cluster-wide options g.
func PackagesFor(version string, g GlobalOptions, instances []Instance) []string {
	ids := []string{PackageID(DMPackageName, version, g.OS, g.Arch)}
	for _, in := range instances {
		ids = append(ids, PackageID(DMPackageName, version, cmp.Or(in.OS, g.OS), cmp.Or(in.Arch, g.Arch)))
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

func hostsOf(instances []Instance) []string {
	hosts := make([]string, 0, len(instances))
	for _, in := range instances {
		hosts = append(hosts, in.Host)
	}
	slices.Sort(hosts)
	return slices.Compact(hosts)
}

// DeployNeeds is what DecideDeployCluster reads for c besides the cluster
// itself; nothing when the topology does not parse (the decision then
// refuses it without reading more).
func DeployNeeds(c DeployCluster) Needs {
	topo, err := ParseTopology(c.Topology)
	if err != nil {
		return Needs{}
	}
	return Needs{Hosts: hostsOf(topo.Instances), Packages: PackagesFor(c.Version, topo.Global, topo.Instances)}
}

// ScaleOutNeeds is what DecideScaleOut reads for cmd on cluster c besides
// c itself; nothing when c does not exist or the fragment does not parse.
func ScaleOutNeeds(c *Cluster, cmd ScaleOut) Needs {
	if !c.Exists() {
		return Needs{}
	}
	fragment, err := parseFragment(c, cmd.Topology)
	if err != nil {
		return Needs{}
	}
	return Needs{Hosts: hostsOf(fragment.Instances), Packages: PackagesFor(c.Version, c.Global, fragment.Instances)}
}
