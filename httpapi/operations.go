package httpapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/dmgr/dmgr/agents"
	"github.com/dmgr/dmgr/domain"
)

func (a *api) listOperations(w http.ResponseWriter, r *http.Request) {
	ops, err := a.svc.Operations(r.Context())
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"operations": ops})
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
	list, err := a.agents(r.Context())
	if err != nil {
		writeError(w, r, domain.Errorf(domain.Unavailable, "list agents from etcd: %v", err))
		return
	}
	if list == nil {
		list = []agents.Info{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"agents": list})
}
