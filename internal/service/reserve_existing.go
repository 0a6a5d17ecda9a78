package service

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
)

// Where the store records that the reservations of everything committed
// before reservations existed were made (ReserveExisting).
const (
	reservationsMark  = "reservations"
	reserveAttempts   = 5
	reserveActor      = "dmgr"
	reserveCommitRoot = "reserve-existing/"
)

// ReserveExisting makes, once per store, the reservations that stores
// written before them lack: a claim for each registered machine's
// identity, and an InstancesPlaced on each machine for each cluster with
// instances there (domain/reservations.go). Decisions are exact only with
// them, so a server runs it before it accepts commands. It reads the
// machines' and clusters' whole history, once: the store then records
// that it is done, and later starts cost one read. Servers that run it
// at once make the same commits (their ids are derived, so each is
// stored once). It returns how many commits it made.
func (s *Service) ReserveExisting(ctx context.Context) (int, error) {
	mark, err := s.store.Load(ctx, domain.AggregateStore, reservationsMark)
	if err != nil {
		return 0, fmt.Errorf("reserve existing: read the mark: %w", err)
	}
	if len(mark.Events) > 0 {
		return 0, nil
	}
	machines, err := s.loadWorld(ctx, eventstore.TypeSubjects(domain.AggregateMachine))
	if err != nil {
		return 0, fmt.Errorf("reserve existing: %w", err)
	}
	clusters, err := s.loadWorld(ctx, eventstore.TypeSubjects(domain.AggregateCluster))
	if err != nil {
		return 0, fmt.Errorf("reserve existing: %w", err)
	}
	n := 0
	for _, host := range sortedKeys(machines.Machines) {
		m := machines.Machines[host]
		if !m.Active() {
			continue
		}
		for _, id := range domain.ClaimsOf(m) {
			made, err := reserve(ctx, s, domain.AggregateClaim, id, host, func(c domain.Claim, exists bool) []domain.Event {
				if c.Owner != "" {
					if c.Owner != host {
						s.log.Warn().Str("machine", host).Str("claim", id).Str("holder", c.Owner).
							Msg("two registered machines share an identity; the first keeps it")
					}
					return nil
				}
				return []domain.Event{domain.ClaimTaken{Claim: id, Owner: host}}
			}, s.claims)
			if err != nil {
				return n, err
			}
			n += made
		}
	}
	for _, name := range sortedKeys(clusters.Clusters) {
		c := clusters.Clusters[name]
		if !c.Exists() {
			continue
		}
		for host, p := range domain.Placements(name, "", c.Instances) {
			made, err := reserve(ctx, s, domain.AggregateMachine, host, name, func(m domain.Machine, exists bool) []domain.Event {
				if !exists || slices.Contains(m.Clusters, name) {
					return nil
				}
				return []domain.Event{p}
			}, s.machines)
			if err != nil {
				return n, err
			}
			n += made
		}
	}
	done, err := s.commitOf(Meta{Actor: reserveActor, CommitID: reserveCommitRoot + "done"},
		pending{aggregateType: domain.AggregateStore, aggregateID: reservationsMark, events: []domain.Event{domain.ReservationsMade{Version: 1}}}, false)
	if err != nil {
		return n, err
	}
	if _, err := s.store.Append(ctx, done, eventstore.Expect{}); err != nil && !errors.Is(err, eventstore.ErrConflict) {
		return n, fmt.Errorf("reserve existing: record the mark: %w", err)
	}
	s.log.Info().Int("commits", n).Msg("reservations of the existing machines and clusters made")
	return n, nil
}

// reserve appends what decide makes of one aggregate's current state (if
// anything), on the condition that it did not change, deciding again on
// a conflict. It returns 1 when it appended.
func reserve[T any](ctx context.Context, s *Service, typ, id, why string, decide func(T, bool) []domain.Event, agg *aggregates[T]) (int, error) {
	for attempt := 1; ; attempt++ {
		snap, err := agg.read(ctx, id)
		if err != nil {
			return 0, fmt.Errorf("reserve existing: %w", err)
		}
		evs := decide(snap.state, snap.exists)
		if len(evs) == 0 {
			return 0, nil
		}
		meta := Meta{Actor: reserveActor, CommitID: reserveCommitRoot + typ + "/" + id + "/" + why, OperationID: "-"}
		c, err := s.commitOf(meta, pending{aggregateType: typ, aggregateID: id, events: evs, expect: snap.expect()}, false)
		if err != nil {
			return 0, err
		}
		_, err = s.store.Append(ctx, c, snap.expect())
		switch {
		case err == nil:
			return 1, nil
		case errors.Is(err, eventstore.ErrConflict) && attempt < reserveAttempts:
			continue
		}
		return 0, fmt.Errorf("reserve existing: %s %s: %w", typ, id, err)
	}
}
