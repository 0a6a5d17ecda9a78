package httpapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/dmgr/dmgr/agents"
	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/service"
	"github.com/dmgr/dmgr/projections"
)

func (a *api) listOperations(w http.ResponseWriter, r *http.Request) {
	if q, err := listQuery(r.URL.Query()); err == nil {
		if _, ok := projections.ParseOperationsAfter(q.After); !ok {
			writeError(w, r, projections.ErrNotAnOperationsCursor)
			return
		}
	}
	ops, err := a.svc.Operations(r.Context())
	groups, groupOf := visible(r), map[string]string{}
	answerList(w, r, ops, err, operationOrder, operationCursor, func(q projections.ListQuery) func(domain.OperationView) bool {
		kept := operationKept(q)
		return func(o domain.OperationView) bool {
			if groups != nil {
				g, seen := groupOf[o.Cluster]
				if !seen {
					g, _ = a.svc.ClusterGroup(r.Context(), o.Cluster)
					groupOf[o.Cluster] = g
				}
				if o.Cluster == "" || !inGroups(groups, g) {
					return false
				}
			}
			return kept(o)
		}
	})
}

func (a *api) getOperation(w http.ResponseWriter, r *http.Request) {
	op, err := a.svc.Operation(r.Context(), chi.URLParam(r, "id"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, op)
}

func (a *api) retryOperation(w http.ResponseWriter, r *http.Request) {
	a.operationCommand(w, r, service.CommandRetry)
}

func (a *api) cancelOperation(w http.ResponseWriter, r *http.Request) {
	a.operationCommand(w, r, service.CommandCancel)
}

// operationCommand runs a command on operation {id} (retry, cancel,
// rollback) as a command on its cluster.
func (a *api) operationCommand(w http.ResponseWriter, r *http.Request, kind string) {
	id := chi.URLParam(r, "id")
	_, cluster, err := a.svc.OperationGroup(r.Context(), id)
	if err != nil {
		writeError(w, r, err)
		return
	}
	if cluster == "" {
		writeError(w, r, domain.Errorf(domain.Conflict, "operation %s completed in its commit; there is nothing to %s", id, kind))
		return
	}
	a.command(w, r, service.ClusterCommand{Kind: kind, Cluster: cluster, Operation: id})
}

func (a *api) listAgents(w http.ResponseWriter, r *http.Request) {
	q, err := listQuery(r.URL.Query())
	if err != nil {
		writeError(w, r, err)
		return
	}
	list, next, err := a.agents(r.Context(), q.After, q.PageLimit())
	if err != nil {
		writeError(w, r, domain.Errorf(domain.Unavailable, "list agents from etcd: %v", err))
		return
	}
	writeJSON(w, http.StatusOK, pageAnswer(projections.Page[agents.Info]{Items: list, Next: next}))
}
