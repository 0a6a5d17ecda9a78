package httpapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"
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
