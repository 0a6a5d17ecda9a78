package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/projections"
)

// Read-your-writes on queries served from the ClickHouse projections.
const (
	// HeaderMinSeq on a query: answer only once the projections have
	// every commit up to this commit_seq (the value a command answered).
	// Without it a query waits for every commit made before it arrived;
	// 0 reads what the projections have, without waiting.
	HeaderMinSeq = "X-Dmgr-Min-Seq"
	// HeaderSeq on an answer: the commit_seq the projections had reached
	// when they answered.
	HeaderSeq = "X-Dmgr-Seq"
	// defaultProjectionWait bounds that wait.
	defaultProjectionWait = 10 * time.Second
)

// queryHandlers are the GET handlers of the current state: from the
// ClickHouse projections when they are configured, from the event store
// otherwise.
type queryHandlers struct {
	listMachines, getMachine, listPackages, listClusters, getCluster, listOperations, getOperation http.HandlerFunc
}

func (a *api) queryHandlers() queryHandlers {
	if a.proj == nil {
		return queryHandlers{a.listMachines, a.getMachine, a.listPackages, a.listClusters, a.getCluster, a.listOperations, a.getOperation}
	}
	return queryHandlers{
		listMachines: a.listFromProjections(func(r *http.Request, q projections.ListQuery) (any, error) {
			p, err := a.proj.ListMachines(r.Context(), q)
			return pageAnswer(p), err
		}),
		getMachine: a.fromProjections(func(r *http.Request) (any, error) {
			return a.proj.Machine(r.Context(), chi.URLParam(r, "host"))
		}),
		listPackages: a.listFromProjections(func(r *http.Request, q projections.ListQuery) (any, error) {
			p, err := a.proj.ListPackages(r.Context(), q)
			return pageAnswer(p), err
		}),
		listClusters: a.listFromProjections(func(r *http.Request, q projections.ListQuery) (any, error) {
			p, err := a.proj.ListClusters(r.Context(), q)
			return pageAnswer(p), err
		}),
		getCluster: a.fromProjections(func(r *http.Request) (any, error) {
			return a.proj.Cluster(r.Context(), chi.URLParam(r, "name"))
		}),
		listOperations: a.listFromProjections(func(r *http.Request, q projections.ListQuery) (any, error) {
			p, err := a.proj.ListOperations(r.Context(), q)
			return pageAnswer(p), err
		}),
		getOperation: a.fromProjections(func(r *http.Request) (any, error) {
			return a.proj.Operation(r.Context(), chi.URLParam(r, "id"))
		}),
	}
}

// listFromProjections answers a list from the projections: one page, as
// the request's limit, cursor and filters ask.
func (a *api) listFromProjections(query func(*http.Request, projections.ListQuery) (any, error)) http.HandlerFunc {
	return a.fromProjections(func(r *http.Request) (any, error) {
		q, err := listQuery(r.URL.Query())
		if err != nil {
			return nil, err
		}
		q.Groups = visible(r) // only what the caller's groups own
		return query(r, q)
	})
}

// fromProjections answers a query from the projections once they are as
// fresh as the request asks (consistent).
func (a *api) fromProjections(query func(*http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !a.consistent(w, r) {
			return
		}
		v, err := query(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, v)
	}
}

// consistent waits until the projections have what the request needs
// (X-Dmgr-Min-Seq, or everything committed before it), sets X-Dmgr-Seq,
// and reports whether the request may be answered. It answers 400 for a
// malformed header and 503 when the projections do not get there within
// the bound.
func (a *api) consistent(w http.ResponseWriter, r *http.Request) bool {
	if a.proj == nil {
		writeError(w, r, domain.Errorf(domain.Unavailable, "this server has no ClickHouse projections configured"))
		return false
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.projWait)
	defer cancel()
	var (
		seq  uint64
		want string
		err  error
	)
	if v := r.Header.Get(HeaderMinSeq); v != "" {
		min, perr := strconv.ParseUint(v, 10, 64)
		if perr != nil {
			writeError(w, r, domain.Errorf(domain.Invalid, "%s %q is not a commit_seq: send the non-negative integer a command answered", HeaderMinSeq, v))
			return false
		}
		want = "commit_seq " + strconv.FormatUint(min, 10)
		seq, err = a.proj.WaitFor(ctx, min)
	} else {
		want = "the last commit"
		seq, err = a.proj.WaitForHead(ctx)
	}
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && r.Context().Err() == nil {
			at, _ := a.proj.Seq(r.Context())
			w.Header().Set("Retry-After", "1")
			writeError(w, r, domain.Errorf(domain.Unavailable,
				"the projections have not reached %s within %s (they are at commit_seq %d); retry, or send %s: 0 to read them as they are",
				want, a.projWait, at, HeaderMinSeq))
			return false
		}
		writeError(w, r, err)
		return false
	}
	w.Header().Set(HeaderSeq, strconv.FormatUint(seq, 10))
	return true
}
