package httpapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/dmgr/dmgr/agents"
	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/projections"
)

func (a *api) listOperations(w http.ResponseWriter, r *http.Request) {
	if q, err := listQuery(r.URL.Query()); err == nil {
		if _, ok := projections.ParseOperationsAfter(q.After); !ok {
			writeError(w, r, projections.ErrNotAnOperationsCursor)
			return
		}
	}
	ops, err := a.svc.Operations(r.Context())
	answerList(w, r, ops, err, operationOrder, operationCursor, operationKept)
}

func (a *api) getOperation(w http.ResponseWriter, r *http.Request) {
	op, err := a.svc.Operation(r.Context(), chi.URLParam(r, "id"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, op)
}

func (a *api) retryOperation(w http.ResponseWriter, r *http.Request) {
	acc, err := a.svc.RetryOperation(r.Context(), meta(r), chi.URLParam(r, "id"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	accepted(w, acc)
}

func (a *api) cancelOperation(w http.ResponseWriter, r *http.Request) {
	acc, err := a.svc.CancelOperation(r.Context(), meta(r), chi.URLParam(r, "id"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	accepted(w, acc)
}

func (a *api) listAgents(w http.ResponseWriter, r *http.Request) {
	q, err := listQuery(r.URL.Query())
	if err != nil {
		writeError(w, r, err)
		return
	}
	list, next, err := a.agents(r.Context(), q.After, q.PageLimit())
	if err != nil {
		writeError(w, r, domain.Errorf(domain.Unavailable, "list agents from etcd: %v", err))
		return
	}
	writeJSON(w, http.StatusOK, pageAnswer(projections.Page[agents.Info]{Items: list, Next: next}))
}
