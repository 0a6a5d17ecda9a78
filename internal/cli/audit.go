package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// auditFlags are the filters of dmgr audit, as typed.
type auditFlags struct {
	cluster, machine, actor, operation, group string
	types                                     []string
	since, until                              string
	pageFlags
}

// addAuditCommand adds `dmgr audit`: the audit trail, filtered and paged.
func (a *App) addAuditCommand(root *cobra.Command) {
	var f auditFlags
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Show the audit trail: who did what, when, to which cluster or machine",
		Long: `Show the audit trail, newest first: every event with its time, the user who
committed it, the group it concerns, its type, its cluster or hosts, its
operation and a short detail (a refusal's reason, a step's error, …).

Filters combine with AND. --since and --until take an RFC 3339 time
(2025-05-01T00:00:00Z) or a duration back from now (90m, 1h, 7d); --since is
inclusive, --until exclusive. You see only the events of your groups (super
admins see every event).

` + pagingHelp("events", "events"),
		Example: `  dmgr audit --cluster prod-a --since 24h
  dmgr audit --actor bob --type AccessRefused
  dmgr audit --group payments --since 7d
  dmgr audit --type StepFailed,OperationFailed --since 2025-05-01T00:00:00Z --until 2025-05-02T00:00:00Z
  dmgr audit --operation 0190f3a2-5b1c-7d4e-8f00-123456789abc --all -o json`,
		Args: args(0, 0, "[flags]"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			q, err := f.query(a.Now())
			if err != nil {
				return err
			}
			return a.printPages(cmd, "/api/v1/audit", "events", q, f.all, writeAuditTable)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.cluster, "cluster", "", "only events of this cluster")
	fl.StringVar(&f.machine, "machine", "", "only events that concern this host (its own, steps on it, deploys onto it)")
	fl.StringVar(&f.actor, "actor", "", "only events committed by this user")
	fl.StringVar(&f.group, "group", "", "only events of what this group owns (within your groups)")
	fl.StringVar(&f.operation, "operation", "", "only events of this operation (its id)")
	fl.StringSliceVar(&f.types, "type", nil, "only events of these types (repeat or comma-separate: StepFailed,AccessRefused)")
	fl.StringVar(&f.since, "since", "", "only events at or after this time: RFC 3339, or a duration back from now (1h, 7d)")
	fl.StringVar(&f.until, "until", "", "only events before this time: RFC 3339, or a duration back from now (1h, 7d)")
	f.pageFlags.add(fl, "events")
	root.AddCommand(cmd)
}

// query is the API's query for the flags; now resolves relative times.
// A bad value is a usage error (exit status 2).
func (f auditFlags) query(now time.Time) (url.Values, error) {
	q := queryOf("cluster", f.cluster, "machine", f.machine, "actor", f.actor, "operation", f.operation, "group", f.group)
	var types []string
	for _, t := range f.types {
		if t = strings.TrimSpace(t); t != "" {
			types = append(types, t)
		}
	}
	if len(types) > 0 {
		q.Set("type", strings.Join(types, ","))
	}
	since, err := auditWhen("--since", f.since, now)
	if err != nil {
		return nil, err
	}
	until, err := auditWhen("--until", f.until, now)
	if err != nil {
		return nil, err
	}
	if !since.IsZero() && !until.IsZero() && !until.After(since) {
		return nil, usageError("--until (%s) must be after --since (%s)", until.Format(time.RFC3339), since.Format(time.RFC3339))
	}
	if !since.IsZero() {
		q.Set("since", since.UTC().Format(time.RFC3339Nano))
	}
	if !until.IsZero() {
		q.Set("until", until.UTC().Format(time.RFC3339Nano))
	}
	return f.pageFlags.query(q)
}

// auditWhen reads a point in time: RFC 3339 (2025-05-01T10:00:00Z), a date
// (2025-05-01, midnight UTC), or a positive duration back from now (90m,
// 1h, 7d). Empty is the zero time.
func auditWhen(flag, s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	d, err := admParseDuration(s)
	if err != nil {
		return time.Time{}, usageError("%s %q: give an RFC 3339 time (2025-05-01T10:00:00Z), a date (2025-05-01) or a duration back from now (90m, 1h, 7d)", flag, s)
	}
	if d <= 0 {
		return time.Time{}, usageError("%s %q: a duration back from now must be positive (1h, 7d)", flag, s)
	}
	return now.Add(-d), nil
}

// admParseDuration reads a Go duration (1h30m) or whole days (7d).
func admParseDuration(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n > 100000 {
			return 0, fmt.Errorf("%q is not a number of days", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}

// auditEvent is what the table shows of an event of the audit trail.
type auditEvent struct {
	Seq         uint64          `json:"seq"`
	Type        string          `json:"type"`
	AggType     string          `json:"aggregate_type"`
	AggID       string          `json:"aggregate_id"`
	Group       string          `json:"group"`
	Time        time.Time       `json:"time"`
	Actor       string          `json:"actor"`
	OperationID string          `json:"operation_id"`
	Cluster     string          `json:"cluster"`
	Machines    []string        `json:"machines"`
	Step        string          `json:"step"`
	Outcome     string          `json:"outcome"`
	Payload     json.RawMessage `json:"payload"`
}

// writeAuditTable prints events as a table.
func writeAuditTable(w io.Writer, events []json.RawMessage) error {
	if len(events) == 0 {
		_, err := fmt.Fprintln(w, "No events match.")
		return err
	}
	t := NewTable("Time", "Actor", "Group", "Type", "Cluster/Host", "Operation", "Detail")
	for _, raw := range events {
		var e auditEvent
		if err := json.Unmarshal(raw, &e); err != nil {
			return fmt.Errorf("an audit event is not what this dmgr expects (%w); is the server the same version?", err)
		}
		where := e.Cluster
		if where == "" {
			where = strings.Join(e.Machines, ",")
		}
		if where == "" && e.AggType != "" && e.AggType != "cluster" && e.AggType != "machine" && e.AggType != "access" {
			where = e.AggType + " " + e.AggID
		}
		t.Row(admTime(e.Time), orDash(e.Actor), orDash(e.Group), e.Type, orDash(where), orDash(e.OperationID), auditDetail(e))
	}
	return t.Write(w)
}

// auditDetailWidth bounds the Detail column.
const auditDetailWidth = 72

// auditDetail is a short line about an event: the reason of a refusal,
// the error of a failure, the step and its outcome, or else its payload's
// scalar fields.
func auditDetail(e auditEvent) string {
	var p map[string]any
	_ = json.Unmarshal(e.Payload, &p)
	str := func(k string) string {
		s, _ := p[k].(string)
		return s
	}
	var d string
	switch {
	case str("reason") != "":
		d = str("reason")
	case str("error") != "":
		d = str("error")
		if e.Step != "" {
			d = e.Step + ": " + d
		}
	case e.Step != "" || e.Outcome != "":
		d = strings.TrimSpace(e.Step + " " + e.Outcome)
	default:
		keys := make([]string, 0, len(p))
		for k := range p {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var parts []string
		for _, k := range keys {
			if k == "at" || strings.HasSuffix(k, "_at") {
				continue // the Time column says when
			}
			switch v := p[k].(type) {
			case string:
				if v != "" {
					parts = append(parts, k+"="+v)
				}
			case bool:
				if v {
					parts = append(parts, k)
				}
			case float64:
				parts = append(parts, k+"="+strconv.FormatFloat(v, 'f', -1, 64))
			}
		}
		d = strings.Join(parts, " ")
	}
	return admShorten(d, auditDetailWidth)
}

// admShorten puts s on one line of at most n characters.
func admShorten(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// admTime prints a time of the API in UTC, to the second; "-" for none.
func admTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
