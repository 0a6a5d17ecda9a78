package httpapi

import (
	"context"
	"io"
	"net/http"
	"time"
)

// metrics answers GET /metrics in the Prometheus text format: the
// projections' lag (in commits and seconds, measured now), batch sizes and
// insert errors. It needs the metrics token (Authorization: Bearer
// <token>) when Config.MetricsToken is set, and no token otherwise.
func (a *api) metrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	if a.proj == nil {
		_, _ = io.WriteString(w, "# HELP dmgr_projection_up 1 when the projection lag could be measured.\n# TYPE dmgr_projection_up gauge\ndmgr_projection_up 0\n")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	a.proj.WritePrometheus(ctx, w)
}

// metricsAuth guards /metrics with token; an empty token leaves it open.
func metricsAuth(token string) func(http.Handler) http.Handler {
	if token == "" {
		return func(next http.Handler) http.Handler { return next }
	}
	return tokenAuth(token, "missing bearer token: /metrics needs Authorization: Bearer <metrics token> (the server's --metrics-token)")
}
