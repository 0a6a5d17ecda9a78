package httpapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/dmgr/dmgr/internal/service"
)

// upgradeBody is POST /clusters/{name}/upgrade.
type upgradeBody struct {
	Version        string `json:"version"`
	WaitTimeoutSec int    `json:"wait_timeout_sec"`
}

// patchBody is POST /clusters/{name}/patch: package is the id of an
// uploaded package (GET /api/v1/packages), e.g. dm-v8.1.0-hotfix.1-linux-amd64.
type patchBody struct {
	Package        string   `json:"package"`
	Roles          []string `json:"roles"`
	Nodes          []string `json:"nodes"`
	Parallel       int      `json:"parallel"`
	WaitTimeoutSec int      `json:"wait_timeout_sec"`
}

func (a *api) upgradeCluster(w http.ResponseWriter, r *http.Request) {
	var b upgradeBody
	if err := decodeJSON(r, a.maxJSON, &b); err != nil {
		writeError(w, r, err)
		return
	}
	req := service.UpgradeClusterRequest{Name: chi.URLParam(r, "name"), Version: b.Version, WaitTimeoutSec: b.WaitTimeoutSec}
	a.command(w, r, service.ClusterCommand{Kind: "upgrade", Cluster: req.Name, Upgrade: &req})
}

func (a *api) patchCluster(w http.ResponseWriter, r *http.Request) {
	var b patchBody
	if err := decodeJSON(r, a.maxJSON, &b); err != nil {
		writeError(w, r, err)
		return
	}
	req := service.PatchClusterRequest{Name: chi.URLParam(r, "name"), Package: b.Package, Roles: b.Roles, Nodes: b.Nodes,
		Parallel: b.Parallel, WaitTimeoutSec: b.WaitTimeoutSec}
	a.command(w, r, service.ClusterCommand{Kind: "patch", Cluster: req.Name, Patch: &req})
}

func (a *api) rollbackOperation(w http.ResponseWriter, r *http.Request) {
	a.operationCommand(w, r, "rollback")
}
