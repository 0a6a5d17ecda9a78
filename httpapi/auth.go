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

// bearerToken returns the token of the request's one Authorization header
// when its scheme is Bearer, in any case ("bearer", "BEARER"), as RFC 9110
// has auth schemes; "" otherwise.
func bearerToken(r *http.Request) string {
	hs := r.Header.Values("Authorization")
	if len(hs) != 1 {
		return ""
	}
	scheme, token, ok := strings.Cut(strings.TrimSpace(hs[0]), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimLeft(token, " ")
}

// tokenChecker compares a presented token with want in constant time (over
// their SHA-256 digests, so the length of want does not leak either).
func tokenChecker(want string) func(got string) bool {
	w := sha256.Sum256([]byte(want))
	return func(got string) bool {
		g := sha256.Sum256([]byte(got))
		return subtle.ConstantTimeCompare(g[:], w[:]) == 1
	}
}

// bearerAuth admits requests that carry the admin token. Users and roles
// come later; until then every authenticated caller is "admin".
func bearerAuth(adminToken string) func(http.Handler) http.Handler {
	return tokenAuth(adminToken, "missing bearer token: send Authorization: Bearer <token> (dev mode writes it to <data-dir>/admin-token)",
		func(r *http.Request) *http.Request {
			return r.WithContext(context.WithValue(r.Context(), actorCtxKey{}, "admin"))
		})
}

// tokenAuth admits requests whose bearer token is token; then, when admit
// is set, passes the request it returns on.
func tokenAuth(token, missing string, admit func(*http.Request) *http.Request) func(http.Handler) http.Handler {
	ok := tokenChecker(token)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got := bearerToken(r)
			if got == "" {
				w.Header().Set("WWW-Authenticate", `Bearer realm="dmgr"`)
				writeProblem(w, r, http.StatusUnauthorized, domain.Unauthorized, missing)
				return
			}
			if !ok(got) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="dmgr", error="invalid_token"`)
				writeProblem(w, r, http.StatusUnauthorized, domain.Unauthorized, "invalid bearer token")
				return
			}
			if admit != nil {
				r = admit(r)
			}
			next.ServeHTTP(w, r)
		})
	}
}
