package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
)

// ClusterCommand is one command on a cluster as a person sent it: what
// the API hands to Command, and what an approval request keeps to run it
// once approved. Kind is one of domain.ApprovableCommands, plus "cancel"
// and "retry" (never held for approval); the field of its kind is set.
type ClusterCommand struct {
	Kind      string                 `json:"kind"`
	Cluster   string                 `json:"cluster"`
	Deploy    *DeployClusterRequest  `json:"deploy,omitempty"`
	Control   *ControlClusterRequest `json:"control,omitempty"`
	Destroy   *DestroyClusterRequest `json:"destroy,omitempty"`
	Topology  string                 `json:"topology,omitempty"` // scale-out
	Nodes     []string               `json:"nodes,omitempty"`    // scale-in
	Force     bool                   `json:"force,omitempty"`    // scale-in
	Upgrade   *UpgradeClusterRequest `json:"upgrade,omitempty"`
	Patch     *PatchClusterRequest   `json:"patch,omitempty"`
	Reload    *ReloadRequest         `json:"reload,omitempty"`
	Import    *ImportClusterRequest  `json:"import,omitempty"`
	Operation string                 `json:"operation,omitempty"` // rollback, cancel, retry
}

// ReloadRequest is a reload's body.
type ReloadRequest struct {
	ServerConfigs map[string]map[string]any `json:"server_configs,omitempty"`
}

// Command kinds besides domain.ApprovableCommands.
const (
	CommandCancel = "cancel"
	CommandRetry  = "retry"
)

// target reads what the command is about: the cluster's group and labels
// (for a deploy, the ones it asks for), and the name for messages.
func (s *Service) target(ctx context.Context, c ClusterCommand) (group string, labels map[string]string, err error) {
	if c.Kind == "deploy" {
		if c.Deploy == nil {
			return "", nil, domain.Errorf(domain.Invalid, "deploy: no request")
		}
		group := domain.OwnerGroup(c.Deploy.Group)
		if _, ok := s.dir.Group(group); !ok && group != domain.DefaultGroup {
			return "", nil, domain.Errorf(domain.Invalid, "group %s does not exist: a super admin creates it with POST /api/v1/groups", group)
		}
		return group, c.Deploy.Labels, nil
	}
	if c.Kind == "import" {
		if c.Import == nil {
			return "", nil, domain.Errorf(domain.Invalid, "import: no request")
		}
		group := domain.OwnerGroup(c.Import.Group)
		if _, ok := s.dir.Group(group); !ok && group != domain.DefaultGroup {
			return "", nil, domain.Errorf(domain.Invalid, "group %s does not exist: a super admin creates it with POST /api/v1/groups", group)
		}
		return group, c.Import.Labels, nil
	}
	if err := domain.ValidateClusterName(c.Cluster); err != nil {
		return "", nil, err
	}
	snap, err := s.clusters.read(ctx, c.Cluster)
	if err != nil {
		return "", nil, err
	}
	if !snap.exists || snap.state.Status == "" {
		return "", nil, domain.Errorf(domain.NotFound, "cluster %s does not exist", c.Cluster)
	}
	return snap.state.Group, snap.state.Labels, nil
}

// what is how a message names the command ("deploy to group g1",
// "destroy cluster c1").
func (c ClusterCommand) what(group string) string {
	if c.Kind == "deploy" || c.Kind == "import" {
		return c.Kind + " to group " + group
	}
	return c.Kind + " cluster " + c.Cluster
}

// Command authorizes a cluster command for meta's principal (operator in
// the cluster's group), holds it for approval when the group's policy
// names it, and otherwise runs it. A held command answers Accepted with
// ApprovalID and ApprovalState "pending" and no operation.
func (s *Service) Command(ctx context.Context, meta Meta, c ClusterCommand) (Accepted, error) {
	meta = s.complete(meta)
	group, labels, err := s.target(ctx, c)
	if err != nil {
		return Accepted{}, err
	}
	meta.Group = group
	if err := s.allow(ctx, meta, domain.Access{What: c.what(group), Group: group, Need: domain.MemberOperator, Write: true}, c.Cluster, ""); err != nil {
		return Accepted{}, err
	}
	if meta.approval == nil && meta.Principal != nil {
		if g, ok := s.dir.Group(group); ok && g.Policy.Requires(c.Kind, labels) {
			return s.requestApproval(ctx, meta, c, g)
		}
	}
	return s.execute(ctx, meta, c)
}

// Plan is a command's dry run, for a principal who may run it.
func (s *Service) Plan(ctx context.Context, meta Meta, c ClusterCommand) (any, error) {
	group, _, err := s.target(ctx, c)
	if err != nil {
		return nil, err
	}
	if err := s.allow(ctx, meta, domain.Access{What: "plan " + c.what(group), Group: group, Need: domain.MemberOperator}, c.Cluster, ""); err != nil {
		return nil, err
	}
	return s.plan(ctx, c)
}

// execute runs a command that is allowed.
func (s *Service) execute(ctx context.Context, meta Meta, c ClusterCommand) (Accepted, error) {
	switch c.Kind {
	case "deploy":
		return s.DeployCluster(ctx, meta, *c.Deploy)
	case "import":
		return s.ImportCluster(ctx, meta, *c.Import)
	case "scale-out":
		return s.ScaleOut(ctx, meta, c.Cluster, c.Topology)
	case "scale-in":
		return s.ScaleIn(ctx, meta, c.Cluster, c.Nodes, c.Force)
	case "upgrade":
		if c.Upgrade != nil {
			return s.UpgradeCluster(ctx, meta, *c.Upgrade)
		}
	case "patch":
		if c.Patch != nil {
			return s.PatchCluster(ctx, meta, *c.Patch)
		}
	case "rollback":
		return s.RollbackOperation(ctx, meta, c.Operation)
	case domain.OperationStart, domain.OperationStop, domain.OperationRestart:
		if c.Control != nil {
			return s.ControlCluster(ctx, meta, *c.Control)
		}
	case "reload":
		r := ReloadRequest{}
		if c.Reload != nil {
			r = *c.Reload
		}
		return s.ReloadCluster(ctx, meta, c.Cluster, r.ServerConfigs)
	case "destroy":
		if c.Destroy != nil {
			return s.DestroyCluster(ctx, meta, *c.Destroy)
		}
	case CommandCancel:
		return s.CancelOperation(ctx, meta, c.Operation)
	case CommandRetry:
		return s.RetryOperation(ctx, meta, c.Operation)
	}
	return Accepted{}, domain.Errorf(domain.Invalid, "command %q on cluster %s is incomplete or unknown", c.Kind, c.Cluster)
}

// plan is a command's dry run.
func (s *Service) plan(ctx context.Context, c ClusterCommand) (any, error) {
	steps := func(st []domain.Step, err error) (any, error) {
		if err != nil {
			return nil, err
		}
		return map[string]any{"steps": st}, nil
	}
	switch c.Kind {
	case "deploy":
		return s.PlanDeployCluster(ctx, *c.Deploy)
	case "import":
		return s.PlanImportCluster(ctx, *c.Import)
	case "scale-out":
		return steps(s.PlanScaleOut(ctx, c.Cluster, c.Topology))
	case "scale-in":
		return steps(s.PlanScaleIn(ctx, c.Cluster, c.Nodes, c.Force))
	case "upgrade":
		if c.Upgrade != nil {
			return steps(s.PlanUpgradeCluster(ctx, *c.Upgrade))
		}
	case "patch":
		if c.Patch != nil {
			return steps(s.PlanPatchCluster(ctx, *c.Patch))
		}
	case "rollback":
		return steps(s.PlanRollbackOperation(ctx, c.Operation))
	case domain.OperationStart, domain.OperationStop, domain.OperationRestart:
		if c.Control != nil {
			return steps(s.PlanControlCluster(ctx, *c.Control))
		}
	case "reload":
		r := ReloadRequest{}
		if c.Reload != nil {
			r = *c.Reload
		}
		return steps(s.PlanReloadCluster(ctx, c.Cluster, r.ServerConfigs))
	case "destroy":
		if c.Destroy != nil {
			return steps(s.PlanDestroyCluster(ctx, *c.Destroy))
		}
	}
	return nil, domain.Errorf(domain.Invalid, "command %q has no dry run", c.Kind)
}

// maxStoredPlan bounds the plan an approval request keeps; a larger one
// is kept as a summary (its steps' kinds and hosts), and the approver
// can ask the dry run again.
const maxStoredPlan = 256 << 10

// requestApproval records c as an approval request of group g, with its
// plan, and runs nothing.
func (s *Service) requestApproval(ctx context.Context, meta Meta, c ClusterCommand, g domain.Group) (Accepted, error) {
	plan, err := s.plan(ctx, c)
	if err != nil {
		return Accepted{}, err // the command would be refused: say so now, not at approval
	}
	if c.Kind == "import" {
		// The request's events keep the key's vault id, never the key.
		imp := *c.Import
		if err := s.holdImportKey(ctx, &imp); err != nil {
			return Accepted{}, err
		}
		c.Import = &imp
	}
	planJSON, err := json.Marshal(plan)
	if err != nil {
		return Accepted{}, fmt.Errorf("approval plan: %w", err)
	}
	if len(planJSON) > maxStoredPlan {
		planJSON, _ = json.Marshal(map[string]any{"summary": fmt.Sprintf("the plan is %d bytes; ask the dry run for it", len(planJSON))})
	}
	params, err := json.Marshal(c)
	if err != nil {
		return Accepted{}, fmt.Errorf("approval params: %w", err)
	}
	id := approvalIDFor(meta.CommitID)
	now := s.now().UTC()
	ev := domain.ApprovalRequested{ID: id, Group: g.ID, Cluster: c.Cluster, Command: c.Kind, Params: params, Plan: planJSON,
		Requester: meta.Actor, RequesterToken: meta.actorToken(), RequestedAt: now, ExpiresAt: now.Add(g.Policy.TTL()),
		OperationID: meta.OperationID}
	switch c.Kind {
	case "deploy":
		ev.Cluster = c.Deploy.Name
	case "import":
		ev.Cluster = c.Import.Name
	}
	m := meta
	m.noOperation, m.OperationID = true, ""
	acc, err := s.run(ctx, m, func(ctx context.Context) (decision, error) {
		a, err := loadedOf(s.approvals.read(ctx, id))
		if err != nil {
			return decision{}, err
		}
		evs, err := domain.DecideRequestApproval(a.state, ev)
		return one(domain.AggregateApproval, id, evs, a.expect()), err
	})
	if err != nil {
		if c.Import != nil && c.Import.HeldKey != "" {
			s.deleteCredential(ctx, c.Import.HeldKey, "delete the key of an import whose approval request was not recorded")
		}
		return Accepted{}, err
	}
	if err := s.dir.WaitFor(ctx, acc.CommitSeq); err != nil {
		return Accepted{}, err
	}
	s.log.Info().Str("approval", id).Str("cluster", ev.Cluster).Str("command", c.Kind).Str("actor", meta.Actor).Msg("command held for approval")
	return Accepted{CommitSeq: acc.CommitSeq, ApprovalID: id, ApprovalState: domain.ApprovalStatePending}, nil
}

// ApprovalAnswer is what a decision on a request answers: the request as
// it is now and, for an approval, the operation it started.
type ApprovalAnswer struct {
	domain.Approval
	CommitSeq uint64 `json:"commit_seq"`
}

// maxApprovalAttempts bounds how often a decision on a request reads it
// again after a conflict (a concurrent decision, or a change of the
// cluster an approval's command is about).
const maxApprovalAttempts = 5

// DecideApproval approves, rejects or withdraws request id as meta's
// principal (verb "approve", "reject", "withdraw"). An approval runs the
// command as its requester, atomically with ApprovalGranted on the
// condition that the request did not change: of any number of concurrent
// approvals, one starts the operation and the others are told it is
// already approved.
func (s *Service) DecideApproval(ctx context.Context, meta Meta, id, verb, comment string) (ApprovalAnswer, error) {
	meta = s.complete(meta)
	if meta.Principal == nil {
		return ApprovalAnswer{}, domain.Errorf(domain.Unauthorized, "approvals are decided by people")
	}
	for attempt := 1; ; attempt++ {
		snap, err := s.approvals.read(ctx, id)
		if err != nil {
			return ApprovalAnswer{}, err
		}
		a := snap.ptr()
		if a == nil {
			return ApprovalAnswer{}, domain.Errorf(domain.NotFound, "approval %s does not exist", id)
		}
		m := meta
		m.Group, m.OperationID, m.noOperation = a.Group, "", true
		if err := s.allow(ctx, m, domain.Access{What: "read approval " + id, Group: a.Group, Need: domain.MemberViewer}, a.Cluster, ""); err != nil {
			return ApprovalAnswer{}, err
		}
		evs, err := domain.DecideOnApproval(a, id, domain.ApprovalDecision{Verb: verb, By: *meta.Principal, Comment: comment, Now: s.now()})
		if err != nil {
			if a.State == domain.ApprovalStatePending && a.StateAt(s.now()) == domain.ApprovalStateExpired {
				s.recordExpiry(ctx, a, snap.expect())
				s.dropHeldKey(ctx, a, "expired") // expiry is final: the held key can go
			}
			if domain.ErrorCode(err) == domain.Forbidden {
				s.refuse(ctx, m, domain.Access{What: verb + " approval " + id, Group: a.Group, Need: domain.MemberOperator}, err, a.Cluster, "")
			}
			return ApprovalAnswer{}, err
		}
		// The decision is appended on the condition that the request did
		// not change; an approval with the command's commit, in one batch.
		decided := pending{aggregateType: domain.AggregateApproval, aggregateID: id, events: evs, expect: snap.expect(), group: a.Group}
		var acc Accepted
		if verb == "approve" {
			acc, err = s.runApproved(ctx, a, decided)
		} else {
			m.approval = &decided
			acc, err = s.run(ctx, m, func(context.Context) (decision, error) { return decision{}, nil })
		}
		if attempt < maxApprovalAttempts && domain.ErrorCode(err) == domain.Conflict {
			continue // the request (or the cluster) changed: read it again and decide again
		}
		if err != nil {
			return ApprovalAnswer{}, err
		}
		if verb != "approve" {
			s.dropHeldKey(ctx, a, verb)
		}
		if err := s.dir.WaitFor(ctx, acc.CommitSeq); err != nil {
			return ApprovalAnswer{}, err
		}
		after, err := s.approvals.read(ctx, id)
		if err != nil {
			return ApprovalAnswer{}, err
		}
		s.log.Info().Str("approval", id).Str("verb", verb).Str("actor", meta.Actor).Str("operation", a.OperationID).Msg("approval decided")
		return ApprovalAnswer{Approval: after.state, CommitSeq: acc.CommitSeq}, nil
	}
}

// runApproved runs request a's command as its requester, with grant
// appended atomically.
func (s *Service) runApproved(ctx context.Context, a *domain.Approval, grant pending) (Accepted, error) {
	var c ClusterCommand
	if err := json.Unmarshal(a.Params, &c); err != nil {
		return Accepted{}, fmt.Errorf("approval %s: read its command: %w", a.ID, err)
	}
	p, ok := s.dir.PrincipalOf(a.Requester, a.RequesterToken, false)
	if !ok {
		return Accepted{}, domain.Errorf(domain.Conflict, "approval %s: its requester %s is disabled or deleted; the request cannot run", a.ID, a.Requester)
	}
	// A fresh commit id: exactly once comes from the condition on the
	// request, and a concurrent approval must not pass as a retry of this
	// one (the stream would deduplicate it and answer success).
	meta := Meta{Principal: &p, OperationID: a.OperationID, CorrelationID: a.ID, approval: &grant}
	acc, err := s.Command(ctx, meta, c)
	if err != nil {
		return Accepted{}, fmt.Errorf("approval %s: %w", a.ID, err)
	}
	return acc, nil
}

// recordExpiry appends ApprovalExpired to a request found past its expiry
// (best effort: its state reads expired either way).
func (s *Service) recordExpiry(ctx context.Context, a *domain.Approval, exp eventstore.Expect) {
	m := s.complete(Meta{Actor: reserveActor, Group: a.Group, noOperation: true})
	_, err := s.run(ctx, m, func(context.Context) (decision, error) {
		return decision{pending: pending{aggregateType: domain.AggregateApproval, aggregateID: a.ID,
			events: []domain.Event{domain.ApprovalExpired{At: s.now().UTC()}}, expect: exp}}, nil
	})
	if err != nil && !errors.Is(err, eventstore.ErrConflict) && domain.ErrorCode(err) != domain.Conflict {
		s.log.Warn().Err(err).Str("approval", a.ID).Msg("expired approval not recorded")
	}
}

// Approval returns request id with its command and plan, for a principal
// who sees its group.
func (s *Service) Approval(ctx context.Context, meta Meta, id string) (domain.Approval, error) {
	snap, err := s.approvals.read(ctx, id)
	if err != nil {
		return domain.Approval{}, err
	}
	a := snap.ptr()
	if a == nil {
		return domain.Approval{}, domain.Errorf(domain.NotFound, "approval %s does not exist", id)
	}
	if err := s.allow(ctx, meta, domain.Access{What: "read approval " + id, Group: a.Group, Need: domain.MemberViewer}, a.Cluster, ""); err != nil {
		return domain.Approval{}, err
	}
	a.State = a.StateAt(s.now())
	return *a, nil
}

// Approvals lists the requests a principal sees, in the order they were
// made: in state (any when ""), of group (any when "").
func (s *Service) Approvals(meta Meta, state, group, after string, limit int) ([]domain.Approval, bool) {
	now := s.now()
	list, more := s.dir.Approvals(after, limit, func(a domain.Approval) bool {
		return (meta.Principal == nil || meta.Principal.Sees(a.Group)) && (group == "" || a.Group == group) &&
			(state == "" || a.StateAt(now) == state)
	})
	for i := range list {
		list[i].State = list[i].StateAt(now)
	}
	return list, more
}

// dropHeldKey deletes the key an import kept in the vault while it waited
// for approval, once the request was rejected, withdrawn, or found expired
// when someone acted on it. (An expired request nobody acts on keeps it;
// acting on it — any approve, reject or withdraw — deletes it.)
func (s *Service) dropHeldKey(ctx context.Context, a *domain.Approval, verb string) {
	if a.Command != "import" {
		return
	}
	var c ClusterCommand
	if err := json.Unmarshal(a.Params, &c); err != nil || c.Import == nil || c.Import.HeldKey == "" {
		return
	}
	s.deleteCredential(ctx, c.Import.HeldKey, "delete the key of an import whose approval request was decided: "+verb)
}
