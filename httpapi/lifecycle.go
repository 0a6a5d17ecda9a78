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
		a.command(w, r, service.ClusterCommand{Kind: kind, Cluster: req.Name, Control: &req})
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
	a.command(w, r, service.ClusterCommand{Kind: "destroy", Cluster: req.Name, Destroy: &req})
}

// liveOr answers GET /clusters/{name}?status=live by probing the
// instances, and otherwise with next.
func (a *api) liveOr(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Query().Get("status") {
		case "":
			next(w, r)
		case "live":
			if !a.mayRead(w, r, "cluster", chi.URLParam(r, "name")) {
				return
			}
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
	a.command(w, r, service.ClusterCommand{Kind: "reload", Cluster: name, Reload: &service.ReloadRequest{ServerConfigs: b.ServerConfigs}})
}
