package httpapi

import (
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/service"
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

// destroyClusterBody repeats the cluster's name, which a forced destroy
// needs.
type destroyClusterBody struct {
	Name string `json:"name"`
}

func (a *api) destroyCluster(w http.ResponseWriter, r *http.Request) {
	req := service.DestroyClusterRequest{Name: chi.URLParam(r, "name")}
	for _, f := range []struct {
		key string
		dst *bool
	}{{"retain_data", &req.RetainData}, {"force", &req.Force}} {
		if v := r.URL.Query().Get(f.key); v != "" {
			var err error
			if *f.dst, err = strconv.ParseBool(v); err != nil {
				writeError(w, r, domain.Errorf(domain.Invalid, "%s %q: want true or false", f.key, v))
				return
			}
		}
	}
	if r.ContentLength != 0 {
		var b destroyClusterBody
		if err := decodeJSON(r, a.maxJSON, &b); err != nil {
			writeError(w, r, err)
			return
		}
		if b.Name == "" {
			writeError(w, r, domain.Errorf(domain.Invalid, `body: name is empty: repeat the cluster's name, {"name": %q}`, req.Name))
			return
		}
		req.Confirm = b.Name
	}
	if dryRun(r) {
		writePlan(w, r, func() ([]domain.Step, error) { return a.svc.PlanDestroyCluster(r.Context(), req) })
		return
	}
	acc, err := a.svc.DestroyCluster(r.Context(), meta(r), req)
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
