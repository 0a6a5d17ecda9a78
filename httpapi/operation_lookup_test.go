package httpapi_test

import (
	"net/http"
	"testing"

	"github.com/google/uuid"

	"github.com/dmgr/dmgr/internal/pkgstore"
	"github.com/dmgr/dmgr/internal/testenv"
)

// An operation id that no commit carries answers 404 on every route that
// takes one, as a problem that names it; a known one is found.
func TestUnknownOperationAnswers404(t *testing.T) {
	s := newStack(t, pkgstore.DefaultLimits())
	t.Cleanup(s.svc.Close)
	known := s.mustAccept("POST", "/api/v1/machines", map[string]any{
		"host": "198.18.0.11", "user": "tidb", "password": "pw", "host_key": testenv.HostKey})
	if r := s.do("GET", "/api/v1/operations/"+known.OperationID, nil); r.status != http.StatusOK {
		t.Fatalf("GET a known operation: %d %s", r.status, r.body)
	}
	id := uuid.NewString()
	for _, c := range []struct{ method, path string }{
		{"GET", "/api/v1/operations/" + id},
		{"POST", "/api/v1/operations/" + id + "/cancel"},
		{"POST", "/api/v1/operations/" + id + "/retry"},
		{"POST", "/api/v1/operations/" + id + "/rollback"},
		{"POST", "/api/v1/operations/" + id + "/rollback?dry_run=true"},
	} {
		r := s.do(c.method, c.path, nil)
		if r.status != http.StatusNotFound {
			t.Errorf("%s %s: %d %s, want 404", c.method, c.path, r.status, r.body)
			continue
		}
		if p := r.problem(t); p.Detail != "operation "+id+" does not exist" {
			t.Errorf("%s %s: detail %q", c.method, c.path, p.Detail)
		}
	}
}
