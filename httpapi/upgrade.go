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

// writeUpgradePlan answers a dry run with its plan, or with why it would be refused.
func writeUpgradePlan(w http.ResponseWriter, r *http.Request, steps any, err error) {
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"dry_run": true, "plan": map[string]any{"steps": steps}})
}

func (a *api) upgradeCluster(w http.ResponseWriter, r *http.Request) {
	var b upgradeBody
	if err := decodeJSON(r, a.maxJSON, &b); err != nil {
		writeError(w, r, err)
		return
	}
	req := service.UpgradeClusterRequest{Name: chi.URLParam(r, "name"), Version: b.Version, WaitTimeoutSec: b.WaitTimeoutSec}
	if dryRun(r) {
		steps, err := a.svc.PlanUpgradeCluster(r.Context(), req)
		writeUpgradePlan(w, r, steps, err)
		return
	}
	acc, err := a.svc.UpgradeCluster(r.Context(), meta(r), req)
	if err != nil {
		writeError(w, r, err)
		return
	}
	accepted(w, acc)
}

func (a *api) patchCluster(w http.ResponseWriter, r *http.Request) {
	var b patchBody
	if err := decodeJSON(r, a.maxJSON, &b); err != nil {
		writeError(w, r, err)
		return
	}
	req := service.PatchClusterRequest{Name: chi.URLParam(r, "name"), Package: b.Package, Roles: b.Roles, Nodes: b.Nodes,
		Parallel: b.Parallel, WaitTimeoutSec: b.WaitTimeoutSec}
	if dryRun(r) {
		steps, err := a.svc.PlanPatchCluster(r.Context(), req)
		writeUpgradePlan(w, r, steps, err)
		return
	}
	acc, err := a.svc.PatchCluster(r.Context(), meta(r), req)
	if err != nil {
		writeError(w, r, err)
		return
	}
	accepted(w, acc)
}

func (a *api) rollbackOperation(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	if dryRun(r) {
		steps, err := a.svc.PlanRollbackOperation(r.Context(), id)
		writeUpgradePlan(w, r, steps, err)
		return
	}
	acc, err := a.svc.RollbackOperation(r.Context(), meta(r), id)
	if err != nil {
		writeError(w, r, err)
		return
	}
	accepted(w, acc)
}
