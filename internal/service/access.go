package service

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
)

// allow authorizes a for meta's principal; dmgr's own identities (no
// principal) are allowed. A refusal is a Forbidden error that says what is
// missing, and it is recorded in the audit trail (refuse). cluster and
// host name what the refusal is about, for the audit trail's filters.
func (s *Service) allow(ctx context.Context, meta Meta, a domain.Access, cluster, host string) error {
	if meta.Principal == nil {
		return nil
	}
	err := meta.Principal.Authorize(a)
	if err != nil {
		s.refuse(ctx, meta, a, err, cluster, host)
	}
	return err
}

// superOnly authorizes what only super admins do.
func (s *Service) superOnly(ctx context.Context, meta Meta, what string) error {
	return s.allow(ctx, meta, domain.Access{What: what, SuperOnly: true, Write: true}, "", "")
}

// Authorize checks a for p outside a command (queries), recording a
// refusal in the audit trail as commands do.
func (s *Service) Authorize(ctx context.Context, p domain.Principal, a domain.Access, cluster, host string) error {
	return s.allow(ctx, Meta{Principal: &p}, a, cluster, host)
}

// refusalTimeout bounds the append of a refusal record: the answer (403)
// does not wait longer for it.
const refusalTimeout = 2 * time.Second

// refuse records that meta's principal was refused a with err. The record
// is one unconditioned append to the user's access subject
// (dmgr.ev.access.<user>): it cannot conflict, and a failure to write it
// is logged, not answered (the 403 stands either way).
func (s *Service) refuse(ctx context.Context, meta Meta, a domain.Access, err error, cluster, host string) {
	ev := meta.Principal.Refusal(a, err)
	ev.Cluster, ev.Host = cluster, host
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), refusalTimeout)
	defer cancel()
	p := pending{aggregateType: domain.AggregateAccess, aggregateID: meta.Principal.User,
		events: []domain.Event{ev}, expect: eventstore.Expect{Any: true}, group: ev.Group}
	m := meta
	m.Actor, m.CommitID, m.OperationID = meta.Principal.User, uuid.NewString(), ""
	c, cerr := s.commitOf(m, p, true)
	if cerr == nil {
		_, cerr = s.store.Append(ctx, c, p.expect)
	}
	l := s.log.Warn().Str("actor", meta.Principal.User).Str("token", meta.Principal.TokenID).Str("what", ev.What).
		Str("group", ev.Group).Str("reason", ev.Reason)
	if cerr != nil {
		l = l.AnErr("record_error", cerr)
	}
	l.Msg("access refused")
}

// Owners of what queries read, for their authorization.

// ClusterGroup is the group that owns cluster name.
func (s *Service) ClusterGroup(ctx context.Context, name string) (string, error) {
	if err := domain.ValidateClusterName(name); err != nil {
		return "", err
	}
	c, err := s.clusters.read(ctx, name)
	if err != nil {
		return "", err
	}
	if !c.exists || !c.state.Exists() {
		return "", domain.Errorf(domain.NotFound, "cluster %s does not exist", name)
	}
	return c.state.Group, nil
}

// MachineGroup is the group that owns machine host.
func (s *Service) MachineGroup(ctx context.Context, host string) (string, error) {
	m, err := s.machines.read(ctx, host)
	if err != nil {
		return "", err
	}
	if !m.exists || !m.state.Active() {
		return "", domain.Errorf(domain.NotFound, "machine %s is not registered", host)
	}
	return m.state.Group, nil
}

// OperationGroup is the group that owns operation id (its cluster's or
// machine's) and the cluster it belongs to ("" for none).
func (s *Service) OperationGroup(ctx context.Context, id string) (group, cluster string, err error) {
	ref, ok, err := s.ops.Lookup(ctx, id)
	if err != nil {
		return "", "", s.indexErr(ctx, err)
	}
	if !ok {
		return "", "", domain.Errorf(domain.NotFound, "operation %s does not exist", id)
	}
	switch {
	case ref.Home != "":
		c, err := s.clusters.read(ctx, ref.Home)
		if err != nil {
			return "", "", err
		}
		return domain.OwnerGroup(c.state.Group), ref.Home, nil
	case ref.AggregateType == domain.AggregateMachine:
		m, err := s.machines.read(ctx, ref.AggregateID)
		if err != nil {
			return "", "", err
		}
		return domain.OwnerGroup(m.state.Group), "", nil
	case ref.AggregateType == domain.AggregatePackage:
		p, err := s.packageAgg.read(ctx, ref.AggregateID)
		if err != nil {
			return "", "", err
		}
		return domain.OwnerGroup(p.state.Group), "", nil
	}
	return "", "", nil
}
