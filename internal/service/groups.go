package service

import (
	"context"
	"fmt"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
)

// Groups: created, renamed and deleted by super admins; their members and
// approval policies managed by their admins. A group's id and each name
// it has had are held by claims ("group:<name>"), taken atomically with
// the group's commit, so no two groups share an id or a name.

// CreateGroup makes group name (super admins only).
func (s *Service) CreateGroup(ctx context.Context, meta Meta, name string) (domain.Group, error) {
	meta = s.complete(meta)
	meta.Group = name
	if err := s.superOnly(ctx, meta, "create group "+name); err != nil {
		return domain.Group{}, err
	}
	if err := domain.ValidateGroupName(name); err != nil {
		return domain.Group{}, err
	}
	meta.noOperation, meta.OperationID = true, ""
	acc, err := s.run(ctx, meta, func(ctx context.Context) (decision, error) {
		g, err := loadedOf(s.groups.read(ctx, name))
		if err != nil {
			return decision{}, err
		}
		evs, err := domain.DecideCreateGroup(g.state, name)
		if err != nil {
			return decision{}, err
		}
		d := one(domain.AggregateGroup, name, evs, g.expect())
		claim, err := s.groupClaim(ctx, name, name)
		if err != nil {
			return decision{}, err
		}
		d.also = append(d.also, claim)
		return d, nil
	})
	if err != nil {
		return domain.Group{}, err
	}
	return s.groupAfter(ctx, acc, name)
}

// groupClaim is the reservation of name for group id, or a Conflict when
// another group holds it.
func (s *Service) groupClaim(ctx context.Context, name, id string) (pending, error) {
	key := domain.GroupClaim(name)
	c, err := s.claims.read(ctx, key)
	if err != nil {
		return pending{}, err
	}
	if c.exists && c.state.Owner != "" && c.state.Owner != id {
		return pending{}, domain.Errorf(domain.Conflict, "group name %s is taken by group %s (group ids and names are never given twice)", name, c.state.Owner)
	}
	return pending{aggregateType: domain.AggregateClaim, aggregateID: key,
		events: []domain.Event{domain.ClaimTaken{Claim: key, Owner: id}}, expect: c.expect()}, nil
}

// groupAfter answers a group command once the directory has it.
func (s *Service) groupAfter(ctx context.Context, acc Accepted, id string) (domain.Group, error) {
	if err := s.dir.WaitFor(ctx, acc.CommitSeq); err != nil {
		return domain.Group{}, err
	}
	g, _ := s.dir.Group(id)
	return g, nil
}

// resolveGroup finds a group by id or name.
func (s *Service) resolveGroup(ref string) (domain.Group, error) {
	g, ok := s.dir.Group(ref)
	if !ok {
		return domain.Group{}, domain.Errorf(domain.NotFound, "group %s does not exist", ref)
	}
	return g, nil
}

// onGroup authorizes a on group ref (whose id it fills in), decides on
// the group (the group's events, and the reservations taken with them)
// and appends.
func (s *Service) onGroup(ctx context.Context, meta Meta, ref string, a domain.Access,
	decide func(g *domain.Group, id string) ([]domain.Event, []pending, error)) (domain.Group, error) {
	meta = s.complete(meta)
	g, err := s.resolveGroup(ref)
	if err != nil {
		return domain.Group{}, err
	}
	a.Group, meta.Group = g.ID, g.ID
	meta.noOperation, meta.OperationID = true, ""
	if err := s.allow(ctx, meta, a, "", ""); err != nil {
		return domain.Group{}, err
	}
	acc, err := s.run(ctx, meta, func(ctx context.Context) (decision, error) {
		l, err := loadedOf(s.groups.read(ctx, g.ID))
		if err != nil {
			return decision{}, err
		}
		evs, also, err := decide(l.state, g.ID)
		d := one(domain.AggregateGroup, g.ID, evs, l.expect())
		d.also = also
		return d, err
	})
	if err != nil {
		return domain.Group{}, err
	}
	return s.groupAfter(ctx, acc, g.ID)
}

// RenameGroup renames a group (super admins only).
func (s *Service) RenameGroup(ctx context.Context, meta Meta, ref, name string) (domain.Group, error) {
	return s.onGroup(ctx, meta, ref, domain.Access{What: "rename group " + ref, SuperOnly: true, Write: true},
		func(g *domain.Group, id string) ([]domain.Event, []pending, error) {
			evs, err := domain.DecideRenameGroup(g, ref, name)
			if err != nil || len(evs) == 0 {
				return evs, nil, err
			}
			claim, err := s.groupClaim(ctx, name, id)
			return evs, []pending{claim}, err
		})
}

// SetMember gives user role in group ref (its admins and super admins).
func (s *Service) SetMember(ctx context.Context, meta Meta, ref, user string, role domain.MemberRole) (domain.Group, error) {
	if u, ok := s.dir.User(user); !ok || u.Deleted {
		return domain.Group{}, domain.Errorf(domain.NotFound, "user %s does not exist: a super admin creates users with POST /api/v1/users", user)
	}
	return s.onGroup(ctx, meta, ref, domain.Access{What: "manage the members of group " + ref, Need: domain.MemberAdmin, Write: true},
		func(g *domain.Group, _ string) ([]domain.Event, []pending, error) {
			evs, err := domain.DecideSetMember(g, ref, user, role)
			return evs, nil, err
		})
}

// RemoveMember takes user out of group ref.
func (s *Service) RemoveMember(ctx context.Context, meta Meta, ref, user string) (domain.Group, error) {
	return s.onGroup(ctx, meta, ref, domain.Access{What: "manage the members of group " + ref, Need: domain.MemberAdmin, Write: true},
		func(g *domain.Group, _ string) ([]domain.Event, []pending, error) {
			evs, err := domain.DecideRemoveMember(g, ref, user)
			return evs, nil, err
		})
}

// SetApprovalPolicy replaces group ref's approval policy.
func (s *Service) SetApprovalPolicy(ctx context.Context, meta Meta, ref string, p domain.ApprovalPolicy) (domain.Group, error) {
	return s.onGroup(ctx, meta, ref, domain.Access{What: "set the approval policy of group " + ref, Need: domain.MemberAdmin, Write: true},
		func(g *domain.Group, _ string) ([]domain.Event, []pending, error) {
			evs, err := domain.DecideSetApprovalPolicy(g, ref, p)
			return evs, nil, err
		})
}

// DeleteGroup deletes a group that owns nothing (super admins only).
func (s *Service) DeleteGroup(ctx context.Context, meta Meta, ref string) error {
	g, err := s.resolveGroup(ref)
	if err != nil {
		return err
	}
	if err := s.superOnly(ctx, meta, "delete group "+ref); err != nil {
		return err
	}
	owned, err := s.owned(ctx, g.ID)
	if err != nil {
		return err
	}
	_, err = s.onGroup(ctx, meta, ref, domain.Access{What: "delete group " + ref, SuperOnly: true, Write: true},
		func(g *domain.Group, _ string) ([]domain.Event, []pending, error) {
			evs, err := domain.DecideDeleteGroup(g, ref, owned)
			return evs, nil, err
		})
	return err
}

// owned describes one live thing group owns ("" when none).
func (s *Service) owned(ctx context.Context, group string) (string, error) {
	if s.ownedBy != nil {
		return s.ownedBy(ctx, group)
	}
	w, err := s.loadWorld(ctx, eventstore.AllSubjects)
	if err != nil {
		return "", err
	}
	for _, name := range domain.SortedKeys(w.Clusters) {
		if c := w.Clusters[name]; c.Exists() && c.Group == group {
			return "cluster " + name, nil
		}
	}
	for _, host := range domain.SortedKeys(w.Machines) {
		if m := w.Machines[host]; m.Active() && m.Group == group {
			return "machine " + host, nil
		}
	}
	for _, id := range domain.SortedKeys(w.Packages) {
		if p := w.Packages[id]; p != nil && p.Group == group {
			return "package " + id, nil
		}
	}
	return "", nil
}

// Group returns group ref for a principal who sees it (a member or a
// super admin).
func (s *Service) Group(ctx context.Context, meta Meta, ref string) (domain.Group, error) {
	g, err := s.resolveGroup(ref)
	if err != nil {
		return domain.Group{}, err
	}
	if err := s.allow(ctx, meta, domain.Access{What: "read group " + ref, Group: g.ID, Need: domain.MemberViewer}, "", ""); err != nil {
		return domain.Group{}, err
	}
	return g, nil
}

// Groups lists the groups a principal sees.
func (s *Service) Groups(meta Meta, after string, limit int) ([]domain.Group, bool) {
	return s.dir.Groups(after, limit, func(g domain.Group) bool { return meta.Principal == nil || meta.Principal.Sees(g.ID) })
}

// MoveOwner moves a cluster, machine or package (kind is the aggregate
// type) into group to (super admins only).
func (s *Service) MoveOwner(ctx context.Context, meta Meta, kind, id, to string) (Accepted, error) {
	meta = s.complete(meta)
	meta.noOperation, meta.OperationID = true, ""
	if err := s.superOnly(ctx, meta, fmt.Sprintf("move %s %s to group %s", kind, id, to)); err != nil {
		return Accepted{}, err
	}
	g, err := s.resolveGroup(to)
	if err != nil {
		return Accepted{}, err
	}
	meta.Group = g.ID
	return s.run(ctx, meta, func(ctx context.Context) (decision, error) {
		var (
			from string
			exp  eventstore.Expect
		)
		switch kind {
		case domain.AggregateCluster:
			c, err := loadedOf(s.clusters.read(ctx, id))
			if err != nil {
				return decision{}, err
			}
			if !c.state.Exists() {
				return decision{}, domain.Errorf(domain.NotFound, "cluster %s does not exist", id)
			}
			from, exp = c.state.Group, c.expect()
		case domain.AggregateMachine:
			m, err := loadedOf(s.machines.read(ctx, id))
			if err != nil {
				return decision{}, err
			}
			if !m.state.Active() {
				return decision{}, domain.Errorf(domain.NotFound, "machine %s is not registered", id)
			}
			from, exp = m.state.Group, m.expect()
		case domain.AggregatePackage:
			p, err := loadedOf(s.packageAgg.read(ctx, id))
			if err != nil {
				return decision{}, err
			}
			if p.state == nil {
				return decision{}, domain.Errorf(domain.NotFound, "package %s does not exist", id)
			}
			from, exp = p.state.Group, p.expect()
		default:
			return decision{}, domain.Errorf(domain.Invalid, "%s cannot be moved", kind)
		}
		evs, err := domain.DecideMoveOwner(kind, from, g.ID)
		return one(kind, id, evs, exp), err
	})
}

// SetClusterLabels replaces a cluster's labels (its group's admins).
func (s *Service) SetClusterLabels(ctx context.Context, meta Meta, name string, labels map[string]string) (Accepted, error) {
	meta = s.complete(meta)
	meta.noOperation, meta.OperationID = true, ""
	c, err := loadedOf(s.clusters.read(ctx, name))
	if err != nil {
		return Accepted{}, err
	}
	if !c.state.Exists() {
		return Accepted{}, domain.Errorf(domain.NotFound, "cluster %s does not exist", name)
	}
	meta.Group = c.state.Group
	if err := s.allow(ctx, meta, domain.Access{What: "set the labels of cluster " + name, Group: c.state.Group, Need: domain.MemberAdmin, Write: true}, name, ""); err != nil {
		return Accepted{}, err
	}
	return s.onCluster(ctx, meta, name, func(c *domain.Cluster) ([]domain.Event, error) {
		return domain.DecideSetClusterLabels(c, labels)
	})
}
