package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/dmgr/dmgr/domain"
)

type actorCtxKey struct{}

func actorOf(ctx context.Context) string {
	a, _ := ctx.Value(actorCtxKey{}).(string)
	return a
}

// bearerAuth admits requests that carry the admin token. Users and roles
// come later; until then every authenticated caller is "admin".
func bearerAuth(adminToken string) func(http.Handler) http.Handler {
	want := sha256.Sum256([]byte(adminToken))
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := r.Header.Get("Authorization")
			token, ok := strings.CutPrefix(h, "Bearer ")
			if !ok || token == "" {
				w.Header().Set("WWW-Authenticate", `Bearer realm="dmgr"`)
				writeProblem(w, r, http.StatusUnauthorized, domain.Unauthorized,
					"missing bearer token: send Authorization: Bearer <token> (dev mode writes it to <data-dir>/admin-token)")
				return
			}
			got := sha256.Sum256([]byte(token))
			if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="dmgr", error="invalid_token"`)
				writeProblem(w, r, http.StatusUnauthorized, domain.Unauthorized, "invalid bearer token")
				return
			}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), actorCtxKey{}, "admin")))
		})
	}
}
