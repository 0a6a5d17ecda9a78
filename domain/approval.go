package domain

import (
	"encoding/json"
	"time"
)

// Approvals (four eyes, seed 001's flow): a command that its group's
// policy names is recorded as ApprovalRequested, with its full plan, and
// does nothing else. Another member with at least operator approves or
// rejects it; the approval is committed atomically with the command's own
// commit, on the condition that the request did not change, so it starts
// the operation exactly once. A request expires, and its requester may
// withdraw it.
//
//	pending ─┬─▶ approved (the operation runs)
//	         ├─▶ rejected
//	         ├─▶ expired
//	         └─▶ withdrawn

// AggregateApproval is the aggregate type of approval requests.
const AggregateApproval = "approval"

// Approval states.
const (
	ApprovalStatePending   = "pending"
	ApprovalStateApproved  = "approved"
	ApprovalStateRejected  = "rejected"
	ApprovalStateExpired   = "expired"
	ApprovalStateWithdrawn = "withdrawn"
)

// ApprovalStates are the states a request can be in.
var ApprovalStates = []string{ApprovalStatePending, ApprovalStateApproved, ApprovalStateRejected, ApprovalStateExpired, ApprovalStateWithdrawn}

// Event types of approvals.
const (
	TypeApprovalRequested = "ApprovalRequested"
	TypeApprovalGranted   = "ApprovalGranted"
	TypeApprovalRejected  = "ApprovalRejected"
	TypeApprovalWithdrawn = "ApprovalWithdrawn"
	TypeApprovalExpired   = "ApprovalExpired"
)

// MaxApprovalComment bounds a comment (bytes).
const MaxApprovalComment = 2048

// Approval is the state of an approval request.
type Approval struct {
	ID      string `json:"id"`
	Group   string `json:"group"`
	Cluster string `json:"cluster"`
	// Command is the command kind (ApprovableCommands); Params its
	// request, as the service replays it on approval.
	Command        string          `json:"command"`
	Params         json.RawMessage `json:"params"`
	Plan           json.RawMessage `json:"plan,omitempty"`
	Requester      string          `json:"requester"`
	RequesterToken string          `json:"requester_token,omitempty"`
	RequestedAt    time.Time       `json:"requested_at"`
	ExpiresAt      time.Time       `json:"expires_at"`
	// OperationID is the operation the command starts once approved.
	OperationID string    `json:"operation_id"`
	State       string    `json:"state"`
	DecidedBy   string    `json:"decided_by,omitempty"`
	Comment     string    `json:"comment,omitempty"`
	DecidedAt   time.Time `json:"decided_at,omitzero"`
	Revision    uint64    `json:"-"`
}

// Exists reports whether the request was made.
func (a *Approval) Exists() bool { return a != nil && a.ID != "" }

// StateAt is the request's state at now: a pending request past its
// expiry is expired.
func (a *Approval) StateAt(now time.Time) string {
	if a.State == ApprovalStatePending && !now.Before(a.ExpiresAt) {
		return ApprovalStateExpired
	}
	return a.State
}

// ApprovalRequested (approval).
type ApprovalRequested struct {
	ID             string          `json:"id"`
	Group          string          `json:"group"`
	Cluster        string          `json:"cluster"`
	Command        string          `json:"command"`
	Params         json.RawMessage `json:"params"`
	Plan           json.RawMessage `json:"plan,omitempty"`
	Requester      string          `json:"requester"`
	RequesterToken string          `json:"requester_token,omitempty"`
	RequestedAt    time.Time       `json:"requested_at"`
	ExpiresAt      time.Time       `json:"expires_at"`
	OperationID    string          `json:"operation_id"`
}

// ApprovalGranted (approval): By approved; the command's commit (operation
// Operation) was appended in the same atomic batch.
type ApprovalGranted struct {
	By        string    `json:"by"`
	Comment   string    `json:"comment,omitempty"`
	Operation string    `json:"operation"`
	At        time.Time `json:"at"`
}

// ApprovalRejected (approval).
type ApprovalRejected struct {
	By      string    `json:"by"`
	Comment string    `json:"comment,omitempty"`
	At      time.Time `json:"at"`
}

// ApprovalWithdrawn (approval).
type ApprovalWithdrawn struct {
	By      string    `json:"by"`
	Comment string    `json:"comment,omitempty"`
	At      time.Time `json:"at"`
}

// ApprovalExpired (approval): the request was found past its expiry.
type ApprovalExpired struct {
	At time.Time `json:"at"`
}

func (ApprovalRequested) EventType() string { return TypeApprovalRequested }
func (ApprovalGranted) EventType() string   { return TypeApprovalGranted }
func (ApprovalRejected) EventType() string  { return TypeApprovalRejected }
func (ApprovalWithdrawn) EventType() string { return TypeApprovalWithdrawn }
func (ApprovalExpired) EventType() string   { return TypeApprovalExpired }

// EvolveApproval folds one event into an approval request.
func EvolveApproval(a Approval, e Event) Approval {
	switch e := e.(type) {
	case ApprovalRequested:
		a = Approval{ID: e.ID, Group: e.Group, Cluster: e.Cluster, Command: e.Command, Params: e.Params, Plan: e.Plan,
			Requester: e.Requester, RequesterToken: e.RequesterToken, RequestedAt: e.RequestedAt, ExpiresAt: e.ExpiresAt,
			OperationID: e.OperationID, State: ApprovalStatePending, Revision: a.Revision}
	case ApprovalGranted:
		a.State, a.DecidedBy, a.Comment, a.DecidedAt = ApprovalStateApproved, e.By, e.Comment, e.At
	case ApprovalRejected:
		a.State, a.DecidedBy, a.Comment, a.DecidedAt = ApprovalStateRejected, e.By, e.Comment, e.At
	case ApprovalWithdrawn:
		a.State, a.DecidedBy, a.Comment, a.DecidedAt = ApprovalStateWithdrawn, e.By, e.Comment, e.At
	case ApprovalExpired:
		if a.State == ApprovalStatePending {
			a.State, a.DecidedAt = ApprovalStateExpired, e.At
		}
	}
	a.Revision++
	return a
}

// DecideRequestApproval records a request (a: none by that id yet).
func DecideRequestApproval(a *Approval, r ApprovalRequested) ([]Event, error) {
	if a.Exists() {
		return nil, Errorf(Conflict, "approval %s already exists", r.ID)
	}
	if r.ID == "" || r.Group == "" || r.Command == "" || r.Requester == "" || r.OperationID == "" {
		return nil, Errorf(Invalid, "approval request: id, group, command, requester and operation are required")
	}
	if !r.ExpiresAt.After(r.RequestedAt) {
		return nil, Errorf(Invalid, "approval request: it must expire after it is made")
	}
	return []Event{r}, nil
}

// ApprovalDecision is what a person decides on a request.
type ApprovalDecision struct {
	// Verb is "approve", "reject" or "withdraw".
	Verb    string
	By      Principal
	Comment string
	Now     time.Time
}

// DecideOnApproval checks that d may be taken on a and returns its event.
// An expired request answers Conflict (with ApprovalExpired when it was
// still recorded as pending, for the caller to append).
func DecideOnApproval(a *Approval, id string, d ApprovalDecision) ([]Event, error) {
	if !a.Exists() {
		return nil, Errorf(NotFound, "approval %s does not exist", id)
	}
	if len(d.Comment) > MaxApprovalComment {
		return nil, Errorf(Invalid, "comment is too long: use at most %d bytes", MaxApprovalComment)
	}
	switch st := a.StateAt(d.Now); st {
	case ApprovalStatePending:
	case ApprovalStateExpired:
		return nil, Errorf(Conflict, "approval %s expired at %s; ask again", id, a.ExpiresAt.UTC().Format(time.RFC3339))
	default:
		by := ""
		if a.DecidedBy != "" {
			by = " by " + a.DecidedBy
		}
		return nil, Errorf(Conflict, "approval %s is already %s%s", id, st, by)
	}
	at := d.Now.UTC()
	switch d.Verb {
	case "approve", "reject":
		if d.By.User == a.Requester {
			return nil, Errorf(Forbidden, "%s approval %s needs another person: you asked for it (withdraw it instead)", d.Verb, id)
		}
		if err := d.By.Authorize(Access{What: d.Verb + " a request of group " + a.Group, Group: a.Group, Need: MemberOperator, Write: true}); err != nil {
			return nil, err
		}
		if d.Verb == "reject" {
			return []Event{ApprovalRejected{By: d.By.User, Comment: d.Comment, At: at}}, nil
		}
		return []Event{ApprovalGranted{By: d.By.User, Comment: d.Comment, Operation: a.OperationID, At: at}}, nil
	case "withdraw":
		if d.By.User != a.Requester && !d.By.SuperAdmin {
			return nil, Errorf(Forbidden, "withdraw approval %s needs its requester (%s) or a super admin", id, a.Requester)
		}
		if d.By.ReadOnly {
			return nil, Errorf(Forbidden, "withdraw approval %s needs a token that may write; this one (%s) is read-only", id, d.By.TokenID)
		}
		return []Event{ApprovalWithdrawn{By: d.By.User, Comment: d.Comment, At: at}}, nil
	}
	return nil, Errorf(Invalid, "%q is not a decision: use approve, reject or withdraw", d.Verb)
}
