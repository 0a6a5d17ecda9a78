package httpapi

import (
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/service"
)

// controlClusterBody selects instances as `tiup dm start|stop|restart -R -N`
// does; an empty body means every instance.
type controlClusterBody struct {
	Roles []string `json:"roles"`
	Nodes []string `json:"nodes"`
}

func (a *api) controlCluster(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var b controlClusterBody
		if r.ContentLength != 0 {
			if err := decodeJSON(r, a.maxJSON, &b); err != nil {
				writeError(w, r, err)
				return
			}
		}
		req := service.ControlClusterRequest{Kind: kind, Name: chi.URLParam(r, "name"), Roles: b.Roles, Nodes: b.Nodes}
		if dryRun(r) {
			steps, err := a.svc.PlanControlCluster(r.Context(), req)
			if err != nil {
				writeError(w, r, err)
				return
			}
			writeJSON(w, http.StatusOK, map[string]any{"dry_run": true, "plan": map[string]any{"steps": steps}})
			return
		}
		acc, err := a.svc.ControlCluster(r.Context(), meta(r), req)
		if err != nil {
			writeError(w, r, err)
			return
		}
		accepted(w, acc)
	}
}

func (a *api) destroyCluster(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	retain := false
	if v := r.URL.Query().Get("retain_data"); v != "" {
		var err error
		if retain, err = strconv.ParseBool(v); err != nil {
			writeError(w, r, domain.Errorf(domain.Invalid, "retain_data %q: want true or false", v))
			return
		}
	}
	if dryRun(r) {
		steps, err := a.svc.PlanDestroyCluster(r.Context(), name, retain)
		if err != nil {
			writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"dry_run": true, "plan": map[string]any{"steps": steps}})
		return
	}
	acc, err := a.svc.DestroyCluster(r.Context(), meta(r), name, retain)
	if err != nil {
		writeError(w, r, err)
		return
	}
	accepted(w, acc)
}

// liveOr answers GET /clusters/{name}?status=live by probing the
// instances, and otherwise with next.
func (a *api) liveOr(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Query().Get("status") {
		case "":
			next(w, r)
		case "live":
			live, err := a.svc.LiveCluster(r.Context(), chi.URLParam(r, "name"))
			if err != nil {
				writeError(w, r, err)
				return
			}
			writeJSON(w, http.StatusOK, live)
		default:
			writeError(w, r, domain.Errorf(domain.Invalid, "status %q: the only value is live", r.URL.Query().Get("status")))
		}
	}
}

type reloadBody struct {
	// ServerConfigs replaces the cluster's server_configs (the sections
	// "master" and "worker"); omitted, the configs are re-rendered as they
	// are.
	ServerConfigs map[string]map[string]any `json:"server_configs"`
}

func (a *api) reloadCluster(w http.ResponseWriter, r *http.Request) {
	var b reloadBody
	if r.ContentLength != 0 {
		if err := decodeJSON(r, a.maxJSON, &b); err != nil {
			writeError(w, r, err)
			return
		}
	}
	name := chi.URLParam(r, "name")
	if dryRun(r) {
		writePlan(w, r, func() ([]domain.Step, error) { return a.svc.PlanReloadCluster(r.Context(), name, b.ServerConfigs) })
		return
	}
	acc, err := a.svc.ReloadCluster(r.Context(), meta(r), name, b.ServerConfigs)
	if err != nil {
		writeError(w, r, err)
		return
	}
	accepted(w, acc)
}
