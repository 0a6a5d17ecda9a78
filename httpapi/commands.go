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
	m := service.Meta{Actor: actorOf(r.Context()), CorrelationID: middleware.GetReqID(r.Context())}
	if ids, ok := idempotentIDs(r.Context()); ok {
		m.CommitID, m.OperationID = ids.commitID, ids.operationID
	}
	return m
}

// accepted answers a command: 202, the operation's Location, and
// {operation_id, commit_seq}.
func accepted(w http.ResponseWriter, acc service.Accepted) {
	w.Header().Set("Location", "/api/v1/operations/"+acc.OperationID)
	writeJSON(w, http.StatusAccepted, acc)
}

// dryRun reports whether ?dry_run is true (strictInput has refused a
// value that is not a boolean).
func dryRun(r *http.Request) bool {
	v, err := strconv.ParseBool(r.URL.Query().Get("dry_run"))
	return err == nil && v
}
