package httpapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/dmgr/dmgr/domain"
)

type scaleOutBody struct {
	Topology string `json:"topology"`
}

func (a *api) scaleOut(w http.ResponseWriter, r *http.Request) {
	var b scaleOutBody
	if err := decodeJSON(r, a.maxJSON, &b); err != nil {
		writeError(w, r, err)
		return
	}
	if err := required([2]string{"topology", b.Topology}); err != nil {
		writeError(w, r, err)
		return
	}
	name := chi.URLParam(r, "name")
	if dryRun(r) {
		writePlan(w, r, func() ([]domain.Step, error) { return a.svc.PlanScaleOut(r.Context(), name, b.Topology) })
		return
	}
	acc, err := a.svc.ScaleOut(r.Context(), meta(r), name, b.Topology)
	if err != nil {
		writeError(w, r, err)
		return
	}
	accepted(w, acc)
}

type scaleInBody struct {
	Nodes []string `json:"nodes"`
	Force bool     `json:"force"`
}

func (a *api) scaleIn(w http.ResponseWriter, r *http.Request) {
	var b scaleInBody
	if err := decodeJSON(r, a.maxJSON, &b); err != nil {
		writeError(w, r, err)
		return
	}
	name := chi.URLParam(r, "name")
	if dryRun(r) {
		writePlan(w, r, func() ([]domain.Step, error) { return a.svc.PlanScaleIn(r.Context(), name, b.Nodes, b.Force) })
		return
	}
	acc, err := a.svc.ScaleIn(r.Context(), meta(r), name, b.Nodes, b.Force)
	if err != nil {
		writeError(w, r, err)
		return
	}
	accepted(w, acc)
}

// writePlan answers a dry run: the steps the command would run.
func writePlan(w http.ResponseWriter, r *http.Request, plan func() ([]domain.Step, error)) {
	steps, err := plan()
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"dry_run": true, "plan": map[string]any{"steps": steps}})
}
