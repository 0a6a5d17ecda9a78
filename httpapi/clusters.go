package httpapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/service"
	"github.com/dmgr/dmgr/projections"
)

type deployClusterBody struct {
	Name     string            `json:"name"`
	Version  string            `json:"version"`
	Topology string            `json:"topology"`
	Group    string            `json:"group"`
	Labels   map[string]string `json:"labels"`
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
	req := service.DeployClusterRequest{Name: b.Name, Version: b.Version, Topology: b.Topology, Group: b.Group, Labels: b.Labels}
	a.command(w, r, service.ClusterCommand{Kind: "deploy", Cluster: b.Name, Deploy: &req})
}

func (a *api) listClusters(w http.ResponseWriter, r *http.Request) {
	cs, err := a.svc.Clusters(r.Context())
	name := func(c domain.Cluster) string { return c.Name }
	groups := visible(r)
	answerList(w, r, cs, err, name, name, func(q projections.ListQuery) func(domain.Cluster) bool {
		kept := clusterKept(q)
		return func(c domain.Cluster) bool { return inGroups(groups, c.Group) && kept(c) }
	})
}

func (a *api) getCluster(w http.ResponseWriter, r *http.Request) {
	c, err := a.svc.Cluster(r.Context(), chi.URLParam(r, "name"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}
