package httpapi

import (
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/projections"
)

// auditParams are the query parameters GET /api/v1/audit takes.
var auditParams = map[string]bool{"cluster": true, "machine": true, "actor": true, "operation": true, "type": true,
	"group": true, "since": true, "until": true, "cursor": true, "limit": true}

// maxFilterLen bounds a filter value.
const maxFilterLen = 1024

// audit answers GET /api/v1/audit: the audit trail, newest first, filtered
// and paged. Every value goes to ClickHouse as a bound parameter.
func (a *api) audit(w http.ResponseWriter, r *http.Request) {
	q, err := parseAuditQuery(r.URL.Query())
	if err != nil {
		writeError(w, r, err)
		return
	}
	q.Groups = onlyGroup(visible(r), r.URL.Query().Get("group")) // only what the caller's groups own
	if !a.consistent(w, r) {
		return
	}
	page, err := a.proj.Audit(r.Context(), q)
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, page)
}

func parseAuditQuery(v url.Values) (projections.AuditQuery, error) {
	var unknown []string
	for k, vs := range v {
		if !auditParams[k] {
			unknown = append(unknown, k)
			continue
		}
		if len(vs) > 1 { // type takes a comma-separated list

			return projections.AuditQuery{}, domain.Errorf(domain.Invalid, "parameter %s is given %d times: give it once", k, len(vs))
		}
		for _, s := range vs {
			if len(s) > maxFilterLen {
				return projections.AuditQuery{}, domain.Errorf(domain.Invalid, "parameter %s is longer than %d bytes", k, maxFilterLen)
			}
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return projections.AuditQuery{}, domain.Errorf(domain.Invalid,
			"unknown parameter %s: use cluster, machine, actor, operation, type, group, since, until, cursor, limit", strings.Join(unknown, ", "))
	}
	q := projections.AuditQuery{Cluster: v.Get("cluster"), Machine: v.Get("machine"), Actor: v.Get("actor"),
		Operation: v.Get("operation"), Cursor: v.Get("cursor")}
	for _, t := range strings.Split(v.Get("type"), ",") {
		if t = strings.TrimSpace(t); t != "" {
			q.Types = append(q.Types, t)
		}
	}
	var err error
	if q.Since, err = parseTime("since", v.Get("since")); err != nil {
		return q, err
	}
	if q.Until, err = parseTime("until", v.Get("until")); err != nil {
		return q, err
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > projections.MaxAuditLimit {
			return q, domain.Errorf(domain.Invalid, "limit %q is invalid: use a number from 1 to %d", s, projections.MaxAuditLimit)
		}
		q.Limit = n
	}
	return q, nil
}

// onlyGroup narrows the groups a caller may see (nil: all) to group when
// one is asked for: a group the caller may not see leaves none, so the
// filter never widens what is visible.
func onlyGroup(visible []string, group string) []string {
	if group == "" {
		return visible
	}
	if inGroups(visible, group) {
		return []string{domain.OwnerGroup(group)}
	}
	return []string{}
}

func parseTime(name, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, domain.Errorf(domain.Invalid, "%s %q is not an RFC 3339 time: use e.g. 2025-05-01T00:00:00Z", name, s)
	}
	return t, nil
}
