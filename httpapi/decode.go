package httpapi

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/dmgr/dmgr/domain"
)

// decodeJSON reads exactly one JSON object into dst, refusing unknown
// fields, trailing data and bodies over the limit, with messages that say
// what is wrong.
func decodeJSON(r *http.Request, limit int64, dst any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return domain.Errorf(domain.Invalid, "Content-Type %q is not supported: send application/json", ct)
	}
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			return jsonError(err)
		}
		return domain.Errorf(domain.Invalid, "request body has data after the JSON object")
	}
	return nil
}

func jsonError(err error) error {
	var (
		syn *json.SyntaxError
		typ *json.UnmarshalTypeError
		mbe *http.MaxBytesError
	)
	switch {
	case errors.As(err, &mbe):
		return domain.Errorf(domain.TooLarge, "request body is larger than the limit of %d bytes", mbe.Limit)
	case errors.Is(err, io.EOF):
		return domain.Errorf(domain.Invalid, "request body is empty: send a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return domain.Errorf(domain.Invalid, "malformed JSON: the body ends in the middle of a value")
	case errors.As(err, &syn):
		return domain.Errorf(domain.Invalid, "malformed JSON at byte %d: %s", syn.Offset, syn.Error())
	case errors.As(err, &typ):
		return domain.Errorf(domain.Invalid, "field %q: want %s, got JSON %s", typ.Field, typ.Type, typ.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return domain.Errorf(domain.Invalid, "unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	return domain.Errorf(domain.Invalid, "malformed JSON: %v", err)
}

// required checks that every named string field is set.
func required(fields ...[2]string) error {
	var missing []string
	for _, f := range fields {
		if strings.TrimSpace(f[1]) == "" {
			missing = append(missing, f[0])
		}
	}
	if len(missing) > 0 {
		return domain.Errorf(domain.Invalid, "missing required field%s: %s", plural(len(missing)), strings.Join(missing, ", "))
	}
	return nil
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
