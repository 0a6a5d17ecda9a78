package domain

import "sort"

// World is the state of every aggregate, for decisions that span several
// (a deploy checks machines, packages and the other clusters). It is a pure
// fold of the event history.
type World struct {
	Machines map[string]*Machine
	Packages map[string]*Package
	Clusters map[string]*Cluster
}

// NewWorld returns an empty world.
func NewWorld() *World {
	return &World{Machines: map[string]*Machine{}, Packages: map[string]*Package{}, Clusters: map[string]*Cluster{}}
}

// Apply folds one event of the aggregate (aggregateType, id) into the world.
func (w *World) Apply(aggregateType, id string, e Event) {
	switch aggregateType {
	case AggregateMachine:
		m := EvolveMachine(deref0(w.Machines[id]), e)
		w.Machines[id] = &m
	case AggregatePackage:
		p := EvolvePackage(deref0(w.Packages[id]), e)
		w.Packages[id] = &p
	case AggregateCluster:
		c := EvolveCluster(deref0(w.Clusters[id]), e)
		w.Clusters[id] = &c
	}
}

func deref0[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}

// ClustersOn lists, sorted, the clusters with an instance on host.
func (w *World) ClustersOn(host string) []string {
	var out []string
	for name, c := range w.Clusters {
		if !c.Exists() {
			continue
		}
		for _, in := range c.Instances {
			if in.Host == host {
				out = append(out, name)
				break
			}
		}
	}
	sort.Strings(out)
	return out
}

// Allocations lists the instances of every existing cluster but except,
// ordered by cluster name and then instance order.
func (w *World) Allocations(except string) []Allocation {
	names := make([]string, 0, len(w.Clusters))
	for name, c := range w.Clusters {
		if name != except && c.Exists() {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	var out []Allocation
	for _, name := range names {
		for _, in := range w.Clusters[name].Instances {
			out = append(out, Allocation{Cluster: name, Instance: in})
		}
	}
	return out
}
