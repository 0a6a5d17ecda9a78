package projections

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/dmgr/dmgr/domain"
)

// Audit query limits.
const (
	DefaultAuditLimit = 100
	MaxAuditLimit     = 1000
)

// AuditQuery filters the audit trail. Empty fields do not filter. Every
// value reaches ClickHouse as a bound parameter, never as SQL.
type AuditQuery struct {
	Cluster   string   // events of this cluster
	Machine   string   // events that concern this host (its own, its steps, deploys onto it)
	Actor     string   // who committed the event
	Operation string   // events of this operation
	Types     []string // event types (any of them)
	// Groups are the groups whose events the caller sees: nil sees every
	// event (a super admin), an empty slice none. Events that belong to
	// no group (users, claims) are seen by super admins only.
	Groups []string
	Since  time.Time
	Until  time.Time // exclusive
	// Cursor continues a listing: the NextCursor of the previous page.
	Cursor string
	// Limit is the page size (default 100, at most 1000).
	Limit int
}

// AuditEvent is one event of the audit trail.
type AuditEvent struct {
	Seq              uint64          `json:"seq"`   // stream sequence of its commit
	Index            uint16          `json:"index"` // position in the commit
	CommitID         string          `json:"commit_id"`
	EventID          string          `json:"event_id"`
	Type             string          `json:"type"`
	SchemaVersion    uint16          `json:"schema_version"`
	AggregateType    string          `json:"aggregate_type"`
	AggregateID      string          `json:"aggregate_id"`
	AggregateVersion uint64          `json:"aggregate_version"`
	Group            string          `json:"group,omitempty"` // the group that owns what the event is about
	Time             time.Time       `json:"time"`
	Actor            string          `json:"actor"`
	ActorToken       string          `json:"actor_token,omitempty"` // id of the credential the actor used
	OperationID      string          `json:"operation_id,omitempty"`
	CorrelationID    string          `json:"correlation_id,omitempty"`
	CausationID      string          `json:"causation_id,omitempty"`
	FencingToken     int64           `json:"fencing_token,omitempty"` // of the coordinator that made the commit
	Cluster          string          `json:"cluster,omitempty"`
	Machines         []string        `json:"machines,omitempty"`
	Step             string          `json:"step,omitempty"`
	Outcome          string          `json:"outcome,omitempty"` // succeeded, failed, cancelled, or empty when the event reports no result
	Payload          json.RawMessage `json:"payload"`
}

// AuditPage is one page of the audit trail, newest first.
type AuditPage struct {
	Events []AuditEvent `json:"events"`
	// NextCursor fetches the next (older) page; empty on the last page.
	// Events committed after the first page never show up on later pages,
	// so paging is stable while events arrive.
	NextCursor string `json:"next_cursor,omitempty"`
}

// cursor is a position in the trail: the last event of a page.
type cursor struct {
	seq uint64
	idx uint16
}

func (c cursor) String() string {
	return base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf("v1.%d.%d", c.seq, c.idx)))
}

func parseCursor(s string) (cursor, error) {
	bad := domain.Errorf(domain.Invalid, "cursor %q is invalid: pass the next_cursor of the previous page unchanged", s)
	if len(s) > 64 {
		return cursor{}, domain.Errorf(domain.Invalid, "cursor is invalid: pass the next_cursor of the previous page unchanged")
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return cursor{}, bad
	}
	parts := strings.Split(string(b), ".")
	if len(parts) != 3 || parts[0] != "v1" {
		return cursor{}, bad
	}
	seq, err1 := strconv.ParseUint(parts[1], 10, 64)
	idx, err2 := strconv.ParseUint(parts[2], 10, 16)
	if err1 != nil || err2 != nil {
		return cursor{}, bad
	}
	return cursor{seq, uint16(idx)}, nil
}

// Audit returns one page of the audit trail, newest first. Each event
// appears once, however often replays wrote it.
func (s *Store) Audit(ctx context.Context, q AuditQuery) (AuditPage, error) {
	limit := q.Limit
	switch {
	case limit == 0:
		limit = DefaultAuditLimit
	case limit < 0 || limit > MaxAuditLimit:
		return AuditPage{}, domain.Errorf(domain.Invalid, "limit %d is out of range: use 1 to %d", q.Limit, MaxAuditLimit)
	}
	if !q.Since.IsZero() && !q.Until.IsZero() && !q.Until.After(q.Since) {
		return AuditPage{}, domain.Errorf(domain.Invalid, "until (%s) must be after since (%s)", q.Until.Format(time.RFC3339Nano), q.Since.Format(time.RFC3339Nano))
	}
	var conds []string
	var args []any
	add := func(cond string, a ...any) { conds = append(conds, cond); args = append(args, a...) }
	if q.Cluster != "" {
		add("cluster = ?", q.Cluster)
	}
	if q.Machine != "" {
		add("has(machines, ?)", q.Machine)
	}
	if q.Actor != "" {
		add("actor = ?", q.Actor)
	}
	if q.Operation != "" {
		add("operation = ?", q.Operation)
	}
	if len(q.Types) > 0 {
		add("type IN ?", inSet(q.Types))
	}
	gcond, gargs, none := groupCond("owner_group", q.Groups)
	if gcond != "" {
		add(gcond, gargs...)
	}
	if !q.Since.IsZero() {
		sec, ns := boundTime(q.Since)
		add("time >= toDateTime(?) AND (time > toDateTime(?) OR time_ns >= ?)", sec, sec, ns)
	}
	if !q.Until.IsZero() {
		sec, ns := boundTime(q.Until)
		add("time <= toDateTime(?) AND (time < toDateTime(?) OR time_ns < ?)", sec, sec, ns)
	}
	if q.Cursor != "" {
		c, err := parseCursor(q.Cursor)
		if err != nil {
			return AuditPage{}, err
		}
		add("seq <= ? AND (seq < ? OR idx < ?)", c.seq, c.seq, c.idx)
	}
	where := ""
	if len(conds) > 0 {
		where = "WHERE " + strings.Join(conds, " AND ")
	}
	if none {
		return AuditPage{Events: []AuditEvent{}}, nil
	}
	gen, err := s.Generation(ctx)
	if err != nil {
		return AuditPage{}, err
	}
	events := table(s.db, tableEvents, gen)

	// First the keys of the page (distinct, so that a duplicate not yet
	// merged away takes no place on it), then their rows.
	keys, err := s.auditKeys(ctx, gen, q, where, args, limit+1)
	if err != nil {
		return AuditPage{}, err
	}
	page := AuditPage{Events: []AuditEvent{}}
	if len(keys) > limit {
		keys = keys[:limit]
		page.NextCursor = keys[limit-1].String()
	}
	if len(keys) == 0 {
		return page, nil
	}
	seqs := make([]uint64, 0, len(keys))
	want := map[cursor]int{}
	for i, k := range keys {
		if len(seqs) == 0 || seqs[len(seqs)-1] != k.seq {
			seqs = append(seqs, k.seq)
		}
		want[k] = i
	}
	cond, cargs := "", []any{}
	if q.Cluster != "" {
		cond, cargs = "cluster = ? AND ", []any{q.Cluster}
	}
	rows := make([]*AuditEvent, len(keys))
	err = s.query(ctx, func(r driver.Rows) error {
		var e AuditEvent
		var sec, ns uint32
		var payload string
		if err := r.Scan(&e.Seq, &e.Index, &e.CommitID, &e.EventID, &e.Type, &e.SchemaVersion, &e.AggregateType, &e.AggregateID,
			&e.AggregateVersion, &e.Group, &sec, &ns, &e.Actor, &e.ActorToken, &e.OperationID, &e.CorrelationID, &e.CausationID, &e.FencingToken, &e.Cluster,
			&e.Machines, &e.Step, &e.Outcome, &payload); err != nil {
			return err
		}
		i, ok := want[cursor{e.Seq, e.Index}]
		if !ok || rows[i] != nil {
			return nil // another event of a commit on the page, or a duplicate row
		}
		e.Time = joinTime(int64(sec), ns)
		if payload == "" {
			payload = "null"
		}
		e.Payload = json.RawMessage(payload)
		if len(e.Machines) == 0 {
			e.Machines = nil
		}
		rows[i] = &e
		return nil
	}, "SELECT seq, idx, commit_id, event_id, type, schema_version, aggregate_type, aggregate_id, aggregate_version, owner_group, "+
		"toUInt32(time), time_ns, actor, actor_token, operation, correlation_id, causation_id, fencing_token, cluster, machines, step, outcome, payload FROM "+
		events+" WHERE "+cond+"seq >= ? AND seq <= ? AND seq IN ?", append(cargs, seqs[len(seqs)-1], seqs[0], inSet(seqs))...)
	if err != nil {
		return AuditPage{}, err
	}
	for i, e := range rows {
		if e == nil {
			return AuditPage{}, unavailable(fmt.Errorf("audit: event %d.%d vanished between two reads", keys[i].seq, keys[i].idx))
		}
		page.Events = append(page.Events, *e)
	}
	return page, nil
}

// auditKeys finds the newest n (seq, idx) that match. Filtered by cluster,
// the table's key takes the query straight to the cluster's rows. Without
// one, it looks at the newest sequences first and widens the window only
// when it holds fewer than n: parts older than the window are skipped by
// their minmax index on seq, so a page of recent events reads recent parts.
func (s *Store) auditKeys(ctx context.Context, gen uint32, q AuditQuery, where string, args []any, n int) ([]cursor, error) {
	events := table(s.db, tableEvents, gen)
	read := func(extra string, extraArgs ...any) ([]cursor, error) {
		w := where
		if extra != "" {
			if w == "" {
				w = "WHERE " + extra
			} else {
				w += " AND " + extra
			}
		}
		var keys []cursor
		err := s.query(ctx, func(r driver.Rows) error {
			var c cursor
			if err := r.Scan(&c.seq, &c.idx); err != nil {
				return err
			}
			keys = append(keys, c)
			return nil
		}, "SELECT seq, idx FROM "+events+" "+w+" GROUP BY seq, idx ORDER BY seq DESC, idx DESC LIMIT ?",
			append(append(append([]any(nil), args...), extraArgs...), n)...)
		return keys, err
	}
	if q.Cluster != "" {
		return read("")
	}
	var hi uint64
	if !q.Until.IsZero() {
		// A time range that may lie far back: start at its newest match
		// (the range's parts only are read).
		var found uint64
		if err := s.conn.QueryRow(ctx, "SELECT max(seq), count() FROM "+events+" "+where, args...).Scan(&hi, &found); err != nil {
			return nil, unavailable(fmt.Errorf("query projections: %w", err))
		}
		if found == 0 {
			return nil, nil
		}
		hi++ // the window is (hi - window, ∞)
	} else {
		var err error
		if hi, err = s.progress(ctx, gen); err != nil {
			return nil, err
		}
		if q.Cursor != "" {
			if c, err := parseCursor(q.Cursor); err == nil {
				hi = min(hi, c.seq)
			}
		}
	}
	window := uint64(max(64*n, 4096))
	if s.auditWindow != 0 {
		window = s.auditWindow
	}
	for ; ; window *= 16 {
		if window >= hi {
			return read("")
		}
		keys, err := read("seq > ?", hi-window)
		if err != nil || len(keys) >= n {
			return keys, err
		}
	}
}

// boundTime is a time as DateTime seconds and nanoseconds, clamped to the
// range a DateTime holds.
func boundTime(t time.Time) (uint32, uint32) {
	sec := t.Unix()
	switch {
	case sec < 0:
		return 0, 0
	case sec > 4294967295:
		return 4294967295, 999999999
	}
	return uint32(sec), uint32(t.Nanosecond())
}

// EventCount is the number of distinct events in the current generation's
// audit trail (for checks against the stream).
func (s *Store) EventCount(ctx context.Context) (uint64, error) {
	gen, err := s.Generation(ctx)
	if err != nil {
		return 0, err
	}
	var n uint64
	if err := s.conn.QueryRow(ctx, "SELECT uniqExact(seq, idx) FROM "+table(s.db, tableEvents, gen)).Scan(&n); err != nil {
		return 0, unavailable(fmt.Errorf("count events: %w", err))
	}
	return n, nil
}

// inSet is a bound parameter for "x IN ?": clickhouse-go writes a Go
// slice as an array literal, which IN does not take, and a GroupSet as a
// parenthesised list of literals.
func inSet[T any](xs []T) clickhouse.GroupSet {
	vs := make([]any, len(xs))
	for i, x := range xs {
		vs[i] = x
	}
	return clickhouse.GroupSet{Value: vs}
}
