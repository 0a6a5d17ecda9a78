package service

import (
	"context"
	"slices"

	"github.com/dmgr/dmgr/domain"
)

// placement is what a deploy or scale-out reads: the cluster, the
// machines it places on, every cluster those machines list (the only ones
// that may have an instance there: see domain/reservations.go), and the
// packages it installs. Its decision appends the cluster's commit and,
// atomically with it, an InstancesPlaced on each machine, every commit on
// the condition that its aggregate did not change since it was read.
type placement struct {
	cluster  string
	self     snapshot[domain.Cluster]
	machines map[string]snapshot[domain.Machine]
	world    *domain.World
}

func (s *Service) readPlacement(ctx context.Context, cluster string, needs domain.Needs) (placement, error) {
	self, err := s.clusters.read(ctx, cluster)
	if err != nil {
		return placement{}, err
	}
	return s.readPlacementOf(ctx, self, cluster, needs)
}

// readPlacementOf is readPlacement for a cluster already read.
func (s *Service) readPlacementOf(ctx context.Context, self snapshot[domain.Cluster], cluster string, needs domain.Needs) (placement, error) {
	p := placement{cluster: cluster, self: self, world: domain.NewWorld()}
	if self.exists {
		p.world.Clusters[cluster] = self.ptr()
	}
	var err error
	if p.machines, err = s.machines.readEach(ctx, needs.Hosts); err != nil {
		return placement{}, err
	}
	pkgs, err := s.packageAgg.readEach(ctx, needs.Packages)
	if err != nil {
		return placement{}, err
	}
	for id, pk := range pkgs {
		if pk.exists {
			p.world.Packages[id] = pk.ptr()
		}
	}
	var others []string
	for host, m := range p.machines {
		if m.exists {
			p.world.Machines[host] = m.ptr()
			others = append(others, m.state.Clusters...)
		}
	}
	slices.Sort(others)
	others = slices.DeleteFunc(slices.Compact(others), func(c string) bool { return c == cluster })
	owners, err := s.clusters.readEach(ctx, others)
	if err != nil {
		return placement{}, err
	}
	for name, c := range owners {
		if c.exists {
			p.world.Clusters[name] = c.ptr()
		}
	}
	return p, nil
}

// decision is the cluster's commit of evs with the reservation of each
// machine evs place instances on (and the release of the clusters the
// machine lists that have no instance there any more).
func (p placement) decision(evs []domain.Event, operationID string) decision {
	d := one(domain.AggregateCluster, p.cluster, evs, p.self.expect())
	placed := domain.Placements(p.cluster, operationID, domain.PlacedInstances(evs))
	hosts := make([]string, 0, len(placed))
	for host := range placed {
		hosts = append(hosts, host)
	}
	slices.Sort(hosts)
	for _, host := range hosts {
		m := p.machines[host]
		mevs := []domain.Event{placed[host]}
		if gone := domain.Released(&m.state, p.world.Clusters, p.cluster); len(gone) > 0 {
			mevs = append(mevs, domain.PlacementsReleased{Clusters: gone})
		}
		d.also = append(d.also, pending{aggregateType: domain.AggregateMachine, aggregateID: host, events: mevs, expect: m.expect()})
	}
	return d
}
