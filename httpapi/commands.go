package httpapi

import (
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5/middleware"

	"github.com/dmgr/dmgr/internal/service"
)

// meta is who sends the command and, for a keyed command, the ids that
// make a re-run append the same commit.
func meta(r *http.Request) service.Meta {
	m := service.Meta{Principal: principalOf(r.Context()), CorrelationID: middleware.GetReqID(r.Context())}
	if ids, ok := idempotentIDs(r.Context()); ok {
		m.CommitID, m.OperationID = ids.commitID, ids.operationID
	}
	return m
}

// accepted answers a command: 202, the operation's Location, and
// {operation_id, commit_seq}; or, for a command held for approval, 202,
// the request's Location and {approval_id, state: "pending", commit_seq}.
func accepted(w http.ResponseWriter, acc service.Accepted) {
	if acc.ApprovalID != "" {
		w.Header().Set("Location", "/api/v1/approvals/"+acc.ApprovalID)
	} else {
		w.Header().Set("Location", "/api/v1/operations/"+acc.OperationID)
	}
	writeJSON(w, http.StatusAccepted, acc)
}

// command runs a cluster command, or its dry run when ?dry_run=true.
func (a *api) command(w http.ResponseWriter, r *http.Request, c service.ClusterCommand) {
	if dryRun(r) {
		plan, err := a.svc.Plan(r.Context(), meta(r), c)
		if err != nil {
			writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"dry_run": true, "plan": plan})
		return
	}
	acc, err := a.svc.Command(r.Context(), meta(r), c)
	if err != nil {
		writeError(w, r, err)
		return
	}
	accepted(w, acc)
}

// dryRun reports whether ?dry_run is true (strictInput has refused a
// value that is not a boolean).
func dryRun(r *http.Request) bool {
	v, err := strconv.ParseBool(r.URL.Query().Get("dry_run"))
	return err == nil && v
}
