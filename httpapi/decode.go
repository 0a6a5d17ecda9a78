package httpapi

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/dmgr/dmgr/domain"
)

// decodeJSON reads exactly one JSON object into dst, strictly: a duplicate
// key, an unknown field (also one that differs from a known field only in
// case: names are matched case-sensitively), trailing data, invalid UTF-8
// and bodies over the limit are refused, with messages that name the key.
// The media type was checked by strictInput.
func decodeJSON(r *http.Request, limit int64, dst any) error {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, limit))
	if err != nil {
		return jsonError(err, dst)
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	switch {
	case len(trimmed) == 0:
		return domain.Errorf(domain.Invalid, "request body is empty: send a JSON object")
	case trimmed[0] != '{':
		return domain.Errorf(domain.Invalid, "request body is not a JSON object: send {\"field\": value, …}")
	}
	if err := jsonv2.Unmarshal(body, dst, jsonv2.RejectUnknownMembers(true)); err != nil {
		return jsonError(err, dst)
	}
	return nil
}

func jsonError(err error, dst any) error {
	var (
		syn *jsontext.SyntacticError
		sem *jsonv2.SemanticError
		mbe *http.MaxBytesError
	)
	switch {
	case errors.As(err, &mbe):
		return domain.Errorf(domain.TooLarge, "request body is larger than the limit of %d bytes", mbe.Limit)
	case errors.As(err, &syn) && errors.Is(syn.Err, jsontext.ErrDuplicateName):
		return domain.Errorf(domain.Invalid, "duplicate field %q: give each field once", pointerName(syn.JSONPointer))
	case errors.As(err, &syn) && errors.Is(syn.Err, io.ErrUnexpectedEOF):
		return domain.Errorf(domain.Invalid, "malformed JSON: the body ends in the middle of a value")
	case errors.As(err, &syn) && strings.Contains(syn.Err.Error(), "after top-level value"):
		return domain.Errorf(domain.Invalid, "request body has data after the JSON object (at byte %d)", syn.ByteOffset)
	case errors.As(err, &syn):
		return domain.Errorf(domain.Invalid, "malformed JSON at byte %d: %v", syn.ByteOffset, syn.Err)
	case errors.As(err, &sem) && errors.Is(sem.Err, jsonv2.ErrUnknownName):
		name := pointerName(sem.JSONPointer)
		if known := caseFoldMatch(sem.GoType, lastToken(sem.JSONPointer)); known != "" {
			return domain.Errorf(domain.Invalid, "unknown field %q: field names are case-sensitive; did you mean %q?", name, known)
		}
		return domain.Errorf(domain.Invalid, "unknown field %q", name)
	case errors.As(err, &sem):
		want := "another type"
		if sem.GoType != nil {
			want = goTypeName(sem.GoType)
		}
		got := "value"
		if sem.JSONKind != 0 {
			got = kindName(sem.JSONKind)
		}
		if sem.JSONPointer == "" {
			return domain.Errorf(domain.Invalid, "request body: want a JSON object, got JSON %s", got)
		}
		return domain.Errorf(domain.Invalid, "field %q: want %s, got JSON %s", pointerName(sem.JSONPointer), want, got)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return domain.Errorf(domain.Invalid, "malformed JSON: the body ends in the middle of a value")
	}
	return domain.Errorf(domain.Invalid, "malformed JSON: %v", err)
}

// pointerName writes a JSON pointer as a field path: "labels.zone".
func pointerName(p jsontext.Pointer) string {
	var parts []string
	for tok := range p.Tokens() {
		parts = append(parts, tok)
	}
	name := strings.Join(parts, ".")
	if len(name) > 100 { // a hostile key is not echoed in full
		name = name[:100] + "…"
	}
	return name
}

func lastToken(p jsontext.Pointer) string {
	return p.LastToken()
}

// caseFoldMatch returns the JSON name of a field of struct type t that
// equals name but for case, or "".
func caseFoldMatch(t reflect.Type, name string) string {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct {
		return ""
	}
	for i := range t.NumField() {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if tag != "" && tag != "-" && tag != name && strings.EqualFold(tag, name) {
			return tag
		}
	}
	return ""
}

func goTypeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return t.String()
}

func kindName(k jsontext.Kind) string {
	switch k {
	case '"':
		return "string"
	case '0':
		return "number"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	case '{':
		return "object"
	case '[':
		return "array"
	}
	return k.String()
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
