package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/service"
)

// statusOf is the one table from error code to HTTP status.
var statusOf = map[string]int{
	domain.Invalid:      http.StatusBadRequest,
	domain.NotFound:     http.StatusNotFound,
	domain.Conflict:     http.StatusConflict,
	domain.Unauthorized: http.StatusUnauthorized,
	domain.Forbidden:    http.StatusForbidden,
	domain.TooLarge:     http.StatusRequestEntityTooLarge,
	domain.Unavailable:  http.StatusServiceUnavailable,
	domain.Unreachable:  http.StatusBadGateway,
	domain.Internal:     http.StatusInternalServerError,
}

// Problem is an RFC 9457 problem document with dmgr's error code.
type Problem struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail"`
	Code     string `json:"code"`
	Instance string `json:"instance,omitempty"`
}

// writeError answers err as a problem; only internal errors are logged as
// errors (with their details, which the client does not see).
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	var te *service.ThrottledError
	if errors.As(err, &te) {
		w.Header().Set("Retry-After", strconv.Itoa(int(te.RetryAfter.Seconds())))
		writeProblem(w, r, http.StatusTooManyRequests, "throttled", te.Error())
		return
	}
	code := domain.ErrorCode(err)
	status, ok := statusOf[code]
	if !ok {
		status = http.StatusInternalServerError
	}
	if code == domain.Internal && r.Context().Err() != nil {
		// The request's deadline passed (or its client left) while a store answered.
		code, status = domain.Unavailable, http.StatusServiceUnavailable
		err = domain.Errorf(domain.Unavailable, "the request did not finish within its deadline; retry it")
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		code, status = domain.TooLarge, http.StatusRequestEntityTooLarge
		err = domain.Errorf(domain.TooLarge, "request body is larger than the limit of %d bytes", mbe.Limit)
	}
	if code == domain.Internal {
		zerolog.Ctx(r.Context()).Error().Err(err).Msg("internal error")
	}
	writeProblem(w, r, status, code, domain.ErrorMessage(err))
}

func writeProblem(w http.ResponseWriter, r *http.Request, status int, code, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(Problem{
		Type: "https://dmgr.dev/problems/" + code, Title: http.StatusText(status), Status: status,
		Detail: detail, Code: code, Instance: r.URL.Path,
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
