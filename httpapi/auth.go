package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
	"time"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/service"
)

type principalCtxKey struct{}

// principalOf is who sends the request (set by authenticate).
func principalOf(ctx context.Context) *domain.Principal {
	p, _ := ctx.Value(principalCtxKey{}).(*domain.Principal)
	return p
}

// actorOf is the user who sends the request.
func actorOf(ctx context.Context) string {
	if p := principalOf(ctx); p != nil {
		return p.User
	}
	return ""
}

// AdminTokenID is the token id the bootstrap admin token acts with.
const AdminTokenID = "admin-token"

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

// authenticate admits requests whose bearer token is a live session or
// API token of an enabled user, or the bootstrap admin token (which acts
// as the bootstrap super admin adminUser, while that user is not disabled
// or deleted), and puts the principal in the request's context.
func authenticate(svc *service.Service, adminToken, adminUser string, now func() time.Time) func(http.Handler) http.Handler {
	isAdmin := tokenChecker(adminToken)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got := bearerToken(r)
			if got == "" {
				unauthorized(w, r, false, "missing bearer token: log in with POST /api/v1/login and send Authorization: Bearer <token> (dev mode writes the admin token to <data-dir>/admin-token)")
				return
			}
			var (
				p   domain.Principal
				err error
			)
			switch {
			case adminToken != "" && isAdmin(got) && svc == nil: // a router without a service (tests of the input rules)
				p = domain.Principal{User: adminUser, SuperAdmin: true, TokenID: AdminTokenID}
			case adminToken != "" && isAdmin(got):
				var ok bool
				if p, ok = svc.Directory().PrincipalOf(adminUser, AdminTokenID, true); !ok {
					err = domain.Errorf(domain.Unauthorized, "the admin token acts as user %s, who is disabled or deleted", adminUser)
				}
			case svc == nil:
				err = domain.Errorf(domain.Unauthorized, "invalid bearer token")
			default:
				p, err = svc.Directory().Authenticate(got, now())
			}
			if err != nil {
				unauthorized(w, r, true, domain.ErrorMessage(err))
				return
			}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalCtxKey{}, &p)))
		})
	}
}

// tokenAuth admits requests whose bearer token is token.
func tokenAuth(token, missing string) func(http.Handler) http.Handler {
	ok := tokenChecker(token)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch got := bearerToken(r); {
			case got == "":
				unauthorized(w, r, false, missing)
			case !ok(got):
				unauthorized(w, r, true, "invalid bearer token")
			default:
				next.ServeHTTP(w, r)
			}
		})
	}
}

// unauthorized answers 401 with the Bearer challenge (RFC 6750): with
// error="invalid_token" when a token was sent and refused.
func unauthorized(w http.ResponseWriter, r *http.Request, invalid bool, detail string) {
	challenge := `Bearer realm="dmgr"`
	if invalid {
		challenge += `, error="invalid_token"`
	}
	w.Header().Set("WWW-Authenticate", challenge)
	writeProblem(w, r, http.StatusUnauthorized, domain.Unauthorized, detail)
}
