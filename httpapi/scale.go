package httpapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/dmgr/dmgr/internal/service"
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
	a.command(w, r, service.ClusterCommand{Kind: "scale-out", Cluster: name, Topology: b.Topology})
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
	a.command(w, r, service.ClusterCommand{Kind: "scale-in", Cluster: name, Nodes: b.Nodes, Force: b.Force})
}
