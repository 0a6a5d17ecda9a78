package httpapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/service"
)

type deployClusterBody struct {
	Name     string `json:"name"`
	Version  string `json:"version"`
	Topology string `json:"topology"`
}

func (a *api) deployCluster(w http.ResponseWriter, r *http.Request) {
	var b deployClusterBody
	if err := decodeJSON(r, a.maxJSON, &b); err != nil {
		writeError(w, r, err)
		return
	}
	if err := required([2]string{"name", b.Name}, [2]string{"version", b.Version}, [2]string{"topology", b.Topology}); err != nil {
		writeError(w, r, err)
		return
	}
	req := service.DeployClusterRequest{Name: b.Name, Version: b.Version, Topology: b.Topology}
	if dryRun(r) {
		plan, err := a.svc.PlanDeployCluster(r.Context(), req)
		if err != nil {
			writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"dry_run": true, "plan": plan})
		return
	}
	acc, err := a.svc.DeployCluster(r.Context(), meta(r), req)
	if err != nil {
		writeError(w, r, err)
		return
	}
	accepted(w, acc)
}

func (a *api) listClusters(w http.ResponseWriter, r *http.Request) {
	cs, err := a.svc.Clusters(r.Context())
	name := func(c domain.Cluster) string { return c.Name }
	answerList(w, r, cs, err, name, name, clusterKept)
}

func (a *api) getCluster(w http.ResponseWriter, r *http.Request) {
	c, err := a.svc.Cluster(r.Context(), chi.URLParam(r, "name"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}
