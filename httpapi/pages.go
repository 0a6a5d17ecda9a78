package httpapi

import (
	"encoding/base64"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/projections"
)

// Every list (machines, packages, clusters, operations) answers one page:
// {"items": [...], "next_cursor": "..."}, at most limit items (default
// 100, at most 1,000); next_cursor, absent on the last page, fetches the
// next one, with the same filters. Paging is by key, so a page costs the
// same however long the list, and is stable while commands are accepted.

// page is the answer of a list.
type page[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor,omitempty"`
}

// cursorPrefix versions the cursor: a cursor is base64url("l1." + key),
// opaque to clients.
const cursorPrefix = "l1."

// maxCursor bounds a cursor (a host name or an operation position).
const maxCursor = 512

func encodeCursor(key string) string {
	if key == "" {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString([]byte(cursorPrefix + key))
}

func decodeCursor(c string) (string, error) {
	if c == "" {
		return "", nil
	}
	bad := domain.Errorf(domain.Invalid, "cursor is invalid: pass the next_cursor of the previous page unchanged")
	if len(c) > maxCursor {
		return "", bad
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || !strings.HasPrefix(string(b), cursorPrefix) || !utf8.Valid(b) || len(b) == len(cursorPrefix) {
		return "", bad
	}
	return string(b[len(cursorPrefix):]), nil
}

// Query parameters of the lists.
func limitParam() param {
	return param{"limit", func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > projections.MaxPageLimit {
			return domain.Errorf(domain.Invalid, "query parameter limit=%q: want a whole number from 1 to %d", v, projections.MaxPageLimit)
		}
		return nil
	}}
}

func cursorParam() param {
	return param{"cursor", func(v string) error { _, err := decodeCursor(v); return err }}
}

func labelParam() param {
	return param{"label", func(v string) error { _, err := parseLabel(v); return err }}
}

func listParams(extra ...param) []param {
	return append([]param{limitParam(), cursorParam()}, extra...)
}

// parseLabel reads label=<region|zone|rack>=<value>.
func parseLabel(v string) (projections.LabelFilter, error) {
	k, val, ok := strings.Cut(v, "=")
	switch k {
	case "region", "zone", "rack":
	default:
		ok = false
	}
	if !ok || val == "" || len(val) > 128 {
		return projections.LabelFilter{}, domain.Errorf(domain.Invalid,
			"query parameter label=%q: want region=<value>, zone=<value> or rack=<value>", v)
	}
	return projections.LabelFilter{Key: k, Value: val}, nil
}

// listQuery reads a list's parameters (checked already by strictInput).
func listQuery(v url.Values) (projections.ListQuery, error) {
	q := projections.ListQuery{Status: v.Get("status"), Cluster: v.Get("cluster"), Kind: v.Get("kind")}
	if s := v.Get("limit"); s != "" {
		q.Limit, _ = strconv.Atoi(s)
	}
	var err error
	if q.After, err = decodeCursor(v.Get("cursor")); err != nil {
		return q, err
	}
	if s := v.Get("label"); s != "" {
		if q.Label, err = parseLabel(s); err != nil {
			return q, err
		}
	}
	return q, nil
}

// pageAnswer is the answer of p: its items and its cursor.
func pageAnswer[T any](p projections.Page[T]) page[T] {
	items := p.Items
	if items == nil {
		items = []T{}
	}
	return page[T]{Items: items, NextCursor: encodeCursor(p.Next)}
}

// answerList answers a list read whole from the event store (a server
// without projections), paged as the projections page it: sorted by
// sortKey (ascending), the items past the cursor that keep selects, the
// next cursor made by cursorKey.
func answerList[T any](w http.ResponseWriter, r *http.Request, items []T, err error,
	sortKey, cursorKey func(T) string, keep func(projections.ListQuery) func(T) bool) {
	if err != nil {
		writeError(w, r, err)
		return
	}
	q, err := listQuery(r.URL.Query())
	if err != nil {
		writeError(w, r, err)
		return
	}
	sort.SliceStable(items, func(i, j int) bool { return sortKey(items[i]) < sortKey(items[j]) })
	n, kept := q.PageLimit(), keep(q)
	out := []T{}
	for _, it := range items {
		if kept(it) {
			if out = append(out, it); len(out) > n {
				break
			}
		}
	}
	writeJSON(w, http.StatusOK, pageAnswer(projections.CutPage(out, n, cursorKey)))
}

func machineKept(q projections.ListQuery) func(domain.Machine) bool {
	return func(m domain.Machine) bool {
		if m.Host <= q.After {
			return false
		}
		switch q.Label.Key {
		case "region":
			return m.Labels.Region == q.Label.Value
		case "zone":
			return m.Labels.Zone == q.Label.Value
		case "rack":
			return m.Labels.Rack == q.Label.Value
		}
		return true
	}
}

func clusterKept(q projections.ListQuery) func(domain.Cluster) bool {
	return func(c domain.Cluster) bool { return c.Name > q.After && (q.Status == "" || c.Status == q.Status) }
}

func operationKept(q projections.ListQuery) func(domain.OperationView) bool {
	after, ok := projections.ParseOperationsAfter(q.After)
	return func(o domain.OperationView) bool {
		if !ok || after.CommitSeq != 0 && (o.CommitSeq > after.CommitSeq || o.CommitSeq == after.CommitSeq && o.ID <= after.ID) {
			return false
		}
		return (q.Status == "" || o.Status == q.Status) && (q.Cluster == "" || o.Cluster == q.Cluster) &&
			(q.Kind == "" || o.Kind == q.Kind)
	}
}

// operationOrder sorts operations newest first as the projections do (a
// later commit first, then by id).
func operationOrder(o domain.OperationView) string {
	return fmt.Sprintf("%020d/%s", math.MaxUint64-o.CommitSeq, o.ID)
}

// operationCursor is the cursor key of o, as the projections make it.
func operationCursor(o domain.OperationView) string {
	return projections.OperationsAfter{CommitSeq: o.CommitSeq, ID: o.ID}.String()
}
