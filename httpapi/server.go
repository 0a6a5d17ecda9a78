package httpapi

import (
	"context"
	_ "embed"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/agents"
	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/service"
	"github.com/dmgr/dmgr/projections"
)

//go:embed openapi.yaml
var openAPI []byte

// OpenAPI is the API description served at /api/v1/openapi.yaml.
func OpenAPI() []byte { return openAPI }

// Config wires the API.
type Config struct {
	Service     *service.Service
	Idempotency *Idempotency
	AdminToken  string
	// AdminUser is the bootstrap super admin the admin token acts as
	// (default "admin").
	AdminUser string
	// Now is the clock credentials' expiry is checked against (default
	// time.Now).
	Now func() time.Time
	// MaxJSONBody bounds JSON request bodies (default 1 MiB); package
	// uploads are bounded by the service's package limits.
	MaxJSONBody int64
	// Ready reports whether commands are accepted (the dependencies they
	// need answer); nil means ready.
	// GET /readyz runs it at most once per ReadyTTL (default 1 s), under
	// a deadline of ReadyTimeout (default 2 s); concurrent calls share one
	// run.
	Ready        func(ctx context.Context) error
	ReadyTTL     time.Duration
	ReadyTimeout time.Duration
	// MetricsToken, when set, is the bearer token GET /metrics needs;
	// empty leaves /metrics open (it shows no secret, only projection
	// lag and counters).
	MetricsToken string
	// Agents lists a page of the agents registered in etcd (agents.List):
	// up to limit after the agent id after, and the id to ask after for
	// the next page ("" on the last); nil means none.
	Agents func(ctx context.Context, after string, limit int) (list []agents.Info, next string, err error)
	// Projections, when set, serves the queries of current state and the
	// audit trail from ClickHouse (read-your-writes with X-Dmgr-Min-Seq);
	// nil serves current state from the event store and no audit trail.
	Projections *projections.Store
	// ProjectionWait bounds how long a query waits for the projections
	// (default 10 s).
	ProjectionWait time.Duration
	// StreamMaxLife is how long an event stream (server-sent events) lives
	// at most before the server closes it and the client reconnects with
	// Last-Event-ID (default DefaultStreamMaxLife); StreamKeepAlive is how
	// often a quiet one sends a comment (default DefaultStreamKeepAlive).
	// How many streams run at once is Guard's (GuardConfig.MaxStreams).
	StreamMaxLife   time.Duration
	StreamKeepAlive time.Duration
	Log             zerolog.Logger
}

type api struct {
	svc      *service.Service
	maxJSON  int64
	ready    *readyCache
	agents   func(ctx context.Context, after string, limit int) ([]agents.Info, string, error)
	proj     *projections.Store
	projWait time.Duration
	// Event streams (events.go).
	streamLife, streamKeepAlive time.Duration
}

// DefaultAdminUser is the bootstrap super admin's name.
const DefaultAdminUser = "admin"

// Handler returns the HTTP handler of the API.
func Handler(c Config) http.Handler {
	if c.MaxJSONBody <= 0 {
		c.MaxJSONBody = 1 << 20
	}
	if c.Ready == nil {
		c.Ready = func(context.Context) error { return nil }
	}
	if c.Agents == nil {
		c.Agents = func(context.Context, string, int) ([]agents.Info, string, error) { return nil, "", nil }
	}
	if c.AdminUser == "" {
		c.AdminUser = DefaultAdminUser
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.ProjectionWait <= 0 {
		c.ProjectionWait = defaultProjectionWait
	}
	if c.StreamMaxLife <= 0 {
		c.StreamMaxLife = DefaultStreamMaxLife
	}
	if c.StreamKeepAlive <= 0 {
		c.StreamKeepAlive = DefaultStreamKeepAlive
	}
	a := &api{svc: c.Service, maxJSON: c.MaxJSONBody, ready: newReadyCache(c.Ready, c.ReadyTTL, c.ReadyTimeout), agents: c.Agents, proj: c.Projections, projWait: c.ProjectionWait,
		streamLife: c.StreamMaxLife, streamKeepAlive: c.StreamKeepAlive}
	q := a.queryHandlers()
	r := chi.NewRouter()
	r.Use(requestID, requestLog(c.Log), middleware.Recoverer)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, r, http.StatusNotFound, "not_found", "no route "+r.Method+" "+r.URL.Path+"; see /api/v1/openapi.yaml")
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, r, http.StatusMethodNotAllowed, "invalid", "method "+r.Method+" is not allowed on "+r.URL.Path)
	})
	r.Group(func(r chi.Router) {
		r.Use(strictInput)
		r.Get("/healthz", a.healthz)
		r.Get("/readyz", a.readyz)
	})
	r.Group(func(r chi.Router) {
		r.Use(metricsAuth(c.MetricsToken), strictInput)
		r.Get("/metrics", a.metrics)
	})
	r.Group(func(r chi.Router) {
		r.Use(strictInput)
		r.Post("/api/v1/login", a.login)
	})
	r.Group(func(r chi.Router) {
		r.Use(authenticate(c.Service, c.AdminToken, c.AdminUser, c.Now), strictInput)
		r.Get("/api/v1/openapi.yaml", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/yaml")
			_, _ = w.Write(openAPI)
		})
		r.Get("/api/v1/machines", q.listMachines)
		r.Get("/api/v1/machines/{host}", a.readable("machine", "host", q.getMachine))
		r.Get("/api/v1/packages", q.listPackages)
		r.Get("/api/v1/clusters", q.listClusters)
		r.Get("/api/v1/clusters/{name}", a.liveOr(a.readable("cluster", "name", q.getCluster)))
		r.Get("/api/v1/operations", q.listOperations)
		r.Get("/api/v1/operations/{id}", a.readable("operation", "id", q.getOperation))
		// Event streams check the caller as the GETs above do (mayRead),
		// under a deadline of their own.
		r.Get("/api/v1/operations/{id}/events", a.operationEvents)
		r.Get("/api/v1/clusters/{name}/events", a.clusterEvents)
		r.Get("/api/v1/me", a.me)
		r.Get("/api/v1/users", a.listUsers)
		r.Get("/api/v1/users/{name}", a.getUser)
		r.Get("/api/v1/groups", a.listGroups)
		r.Get("/api/v1/groups/{group}", a.getGroup)
		r.Get("/api/v1/tokens", a.listTokens)
		r.Get("/api/v1/approvals", a.listApprovals)
		r.Get("/api/v1/approvals/{id}", a.getApproval)
		// Logging out and revoking a token are allowed to read-only
		// tokens too (the service checks).
		r.Post("/api/v1/logout", a.logout)
		r.Delete("/api/v1/tokens/{token}", a.revokeToken)
		r.Get("/api/v1/audit", a.audit)
		r.Get("/api/v1/agents", a.listAgents)
		r.Group(func(r chi.Router) {
			if c.Idempotency != nil {
				r.Use(c.Idempotency.Middleware)
			}
			r.Post("/api/v1/machines", a.registerMachine)
			r.Delete("/api/v1/machines/{host}", a.removeMachine)
			r.Post("/api/v1/packages", a.uploadPackage)
			r.Post("/api/v1/clusters", a.deployCluster)
			r.Post("/api/v1/clusters/import", a.importCluster)
			r.Post("/api/v1/clusters/{name}/start", a.controlCluster(domain.OperationStart))
			r.Post("/api/v1/clusters/{name}/stop", a.controlCluster(domain.OperationStop))
			r.Post("/api/v1/clusters/{name}/restart", a.controlCluster(domain.OperationRestart))
			r.Delete("/api/v1/clusters/{name}", a.destroyCluster)
			r.Post("/api/v1/clusters/{name}/scale-out", a.scaleOut)
			r.Post("/api/v1/clusters/{name}/scale-in", a.scaleIn)
			r.Post("/api/v1/clusters/{name}/reload", a.reloadCluster)
			r.Post("/api/v1/operations/{id}/retry", a.retryOperation)
			r.Post("/api/v1/operations/{id}/cancel", a.cancelOperation)
			r.Post("/api/v1/clusters/{name}/upgrade", a.upgradeCluster)
			r.Post("/api/v1/clusters/{name}/patch", a.patchCluster)
			r.Post("/api/v1/operations/{id}/rollback", a.rollbackOperation)
			r.Post("/api/v1/users", a.createUser)
			r.Delete("/api/v1/users/{name}", a.changeUser(service.DeleteUser))
			r.Post("/api/v1/users/{name}/disable", a.changeUser(service.DisableUser))
			r.Post("/api/v1/users/{name}/enable", a.changeUser(service.EnableUser))
			r.Put("/api/v1/users/{name}/password", a.resetPassword)
			r.Post("/api/v1/groups", a.createGroup)
			r.Put("/api/v1/groups/{group}", a.renameGroup)
			r.Delete("/api/v1/groups/{group}", a.deleteGroup)
			r.Put("/api/v1/groups/{group}/members/{user}", a.setMember)
			r.Delete("/api/v1/groups/{group}/members/{user}", a.removeMember)
			r.Put("/api/v1/groups/{group}/policy", a.setPolicy)
			r.Put("/api/v1/clusters/{name}/group", a.moveOwner(domain.AggregateCluster, "name"))
			r.Put("/api/v1/clusters/{name}/labels", a.setClusterLabels)
			r.Put("/api/v1/machines/{host}/group", a.moveOwner(domain.AggregateMachine, "host"))
			r.Put("/api/v1/packages/{package}/group", a.moveOwner(domain.AggregatePackage, "package"))
			r.Post("/api/v1/tokens", a.createToken)
			r.Post("/api/v1/approvals/{id}/approve", a.decideApproval("approve"))
			r.Post("/api/v1/approvals/{id}/reject", a.decideApproval("reject"))
			r.Post("/api/v1/approvals/{id}/withdraw", a.decideApproval("withdraw"))
		})
	})
	return r
}

func (a *api) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (a *api) readyz(w http.ResponseWriter, r *http.Request) {
	if err := a.ready.get(r.Context()); err != nil {
		// /readyz needs no token: the answer names the dependency, the
		// log has the details (addresses, errors).
		zerolog.Ctx(r.Context()).Warn().Err(err).Msg("not ready")
		w.Header().Set("Retry-After", "1")
		writeProblem(w, r, http.StatusServiceUnavailable, domain.Unavailable, "not ready: "+readyComponent(err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// readyComponent is the part of a readiness error before its first ':'
// (the dependency, "clickhouse", "etcd", "event stream") when it is short.
func readyComponent(err error) string {
	c, _, ok := strings.Cut(err.Error(), ":")
	if !ok || len(c) > 40 {
		return "a dependency does not answer (see the server log)"
	}
	return c + " does not answer (see the server log)"
}

// requestLog logs one line per request with zerolog and puts the logger,
// with the request id, into the request's context.
func requestLog(log zerolog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			l := log.With().Str("request_id", middleware.GetReqID(r.Context())).Logger()
			ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
			next.ServeHTTP(ww, r.WithContext(l.WithContext(r.Context())))
			ev := l.Info()
			if ww.Status() >= 500 {
				ev = l.Error()
			}
			ev.Str("method", r.Method).Str("path", r.URL.Path).Int("status", ww.Status()).
				Int("bytes", ww.BytesWritten()).Dur("duration", time.Since(start)).Msg("http request")
		})
	}
}
