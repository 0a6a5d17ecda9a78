package service

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
)

// refusedError is a Forbidden answer together with the record of it that
// the audit trail keeps (AccessRefused).
type refusedError struct {
	err *domain.Error
	ev  domain.AccessRefused
}

func (r *refusedError) Error() string { return r.err.Error() }
func (r *refusedError) Unwrap() error { return r.err }

// allow authorizes a for meta's principal. A refusal is a Forbidden error
// that the command's run records in the audit trail (noteRefusal); dmgr's
// own identities (no principal) are allowed. cluster and host name what
// the refusal is about, for the audit trail's filters.
func allow(meta Meta, a domain.Access, cluster, host string) error {
	if meta.Principal == nil {
		return nil
	}
	err := meta.Principal.Authorize(a)
	if err == nil {
		return nil
	}
	var de *domain.Error
	if !errors.As(err, &de) {
		return err
	}
	ev := meta.Principal.Refusal(a, err)
	ev.Cluster, ev.Host = cluster, host
	return &refusedError{err: de, ev: ev}
}

// Authorize checks a for p outside a command (queries), recording a
// refusal in the audit trail as commands do.
func (s *Service) Authorize(ctx context.Context, p domain.Principal, a domain.Access, cluster, host string) error {
	err := allow(Meta{Principal: &p}, a, cluster, host)
	s.noteRefusal(ctx, Meta{Principal: &p}, err)
	return err
}

// refusalTimeout bounds the append of a refusal record: the answer (403)
// does not wait longer for it.
const refusalTimeout = 2 * time.Second

// noteRefusal appends the record of a refusal when err is one. The record
// is one unconditioned append to the user's access subject
// (dmgr.ev.access.<user>): it cannot conflict, and a failure to write it
// is logged, not answered (the 403 stands either way).
func (s *Service) noteRefusal(ctx context.Context, meta Meta, err error) {
	var r *refusedError
	if !errors.As(err, &r) || meta.Principal == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), refusalTimeout)
	defer cancel()
	p := pending{aggregateType: domain.AggregateAccess, aggregateID: meta.Principal.User,
		events: []domain.Event{r.ev}, expect: eventstore.Expect{Any: true}, group: r.ev.Group}
	m := meta
	m.Actor, m.CommitID, m.OperationID = meta.Principal.User, uuid.NewString(), ""
	c, cerr := s.commitOf(m, p, true)
	if cerr == nil {
		_, cerr = s.store.Append(ctx, c, p.expect)
	}
	l := s.log.Warn().Str("actor", meta.Principal.User).Str("token", meta.Principal.TokenID).Str("what", r.ev.What).
		Str("group", r.ev.Group).Str("reason", r.ev.Reason)
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
