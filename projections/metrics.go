package projections

import (
	"context"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Metrics are the projector's counters in this process, written in the
// Prometheus text exposition format (version 0.0.4) by WritePrometheus.
type Metrics struct {
	events       atomic.Uint64 // events inserted
	commits      atomic.Uint64 // commits (stream messages) inserted
	batches      atomic.Uint64
	insertErrors atomic.Uint64
	decodeErrors atomic.Uint64
	loads        atomic.Uint64 // aggregates loaded from the stream
	leader       atomic.Bool   // this process's projector is the active one
	generation   atomic.Uint32

	batchSize *histogram // events per batch
	insertDur *histogram // seconds to insert a batch
	delay     *histogram // seconds from append to the event being in ClickHouse
}

func newMetrics() *Metrics {
	return &Metrics{
		batchSize: newHistogram(1, 10, 100, 500, 1000, 5000, 10000, 50000),
		insertDur: newHistogram(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
		delay:     newHistogram(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
	}
}

// histogram is a Prometheus histogram: cumulative bucket counts, sum and
// count.
type histogram struct {
	mu     sync.Mutex
	bounds []float64
	counts []uint64 // per bucket (not cumulative); the last is +Inf
	sum    float64
	n      uint64
}

func newHistogram(bounds ...float64) *histogram {
	return &histogram{bounds: bounds, counts: make([]uint64, len(bounds)+1)}
}

func (h *histogram) observe(v float64) { h.observeN(v, 1) }

func (h *histogram) observeN(v float64, n uint64) {
	i := sort.SearchFloat64s(h.bounds, v)
	h.mu.Lock()
	h.counts[i] += n
	h.sum += v * float64(n)
	h.n += n
	h.mu.Unlock()
}

func (h *histogram) write(w io.Writer, name, help string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name)
	var cum uint64
	for i, b := range h.bounds {
		cum += h.counts[i]
		fmt.Fprintf(w, "%s_bucket{le=\"%s\"} %d\n", name, formatFloat(b), cum)
	}
	cum += h.counts[len(h.bounds)]
	fmt.Fprintf(w, "%s_bucket{le=\"+Inf\"} %d\n%s_sum %s\n%s_count %d\n", name, cum, name, formatFloat(h.sum), name, h.n)
}

func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

func writeMetric(w io.Writer, name, typ, help string, v float64) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s %s\n", name, help, name, typ, name, formatFloat(v))
}

// Lag is how far the projections are behind the event stream.
type Lag struct {
	Head      uint64        // last sequence in the stream
	Projected uint64        // last sequence in ClickHouse (current generation)
	Commits   uint64        // Head - Projected
	Age       time.Duration // how long the oldest commit not yet projected has waited (0 when none)
}

// Lag measures the projections' lag: the stream's last sequence against
// the current generation's progress, and the age of the first commit not
// yet projected. It needs Options.JS.
func (s *Store) Lag(ctx context.Context) (Lag, error) {
	if s.js == nil {
		return Lag{}, fmt.Errorf("projections: lag needs the event stream (Options.JS)")
	}
	head, err := s.streamHead(ctx)
	if err != nil {
		return Lag{}, err
	}
	proj, err := s.Seq(ctx)
	if err != nil {
		return Lag{}, err
	}
	l := Lag{Head: head, Projected: proj}
	if head > proj {
		l.Commits = head - proj
		if t, err := s.commitTime(ctx, proj+1); err == nil {
			l.Age = max(time.Since(t), 0)
		}
	}
	return l, nil
}

// WritePrometheus writes the projection metrics. The lag is measured now
// (stream against ClickHouse, bounded by ctx); when it cannot be, the lag
// metrics are left out and dmgr_projection_up is 0.
func (s *Store) WritePrometheus(ctx context.Context, w io.Writer) {
	m := s.metrics
	var b strings.Builder
	lag, err := s.Lag(ctx)
	up := 1.0
	if err != nil {
		up = 0
	}
	writeMetric(&b, "dmgr_projection_up", "gauge", "1 when the projection lag could be measured (ClickHouse and the event stream answer).", up)
	if err == nil {
		writeMetric(&b, "dmgr_projection_lag_events", "gauge", "Commits (stream messages) in the event stream not yet in ClickHouse.", float64(lag.Commits))
		writeMetric(&b, "dmgr_projection_lag_seconds", "gauge", "Age of the oldest commit not yet in ClickHouse (0 when caught up).", lag.Age.Seconds())
		writeMetric(&b, "dmgr_projection_seq", "gauge", "Last stream sequence in ClickHouse (current generation).", float64(lag.Projected))
		writeMetric(&b, "dmgr_event_stream_seq", "gauge", "Last sequence in the event stream.", float64(lag.Head))
	}
	writeMetric(&b, "dmgr_projection_generation", "gauge", "Generation of the tables this process's projector writes (0: none).", float64(m.generation.Load()))
	leader := 0.0
	if m.leader.Load() {
		leader = 1
	}
	writeMetric(&b, "dmgr_projection_leader", "gauge", "1 when this process runs the active projector.", leader)
	writeMetric(&b, "dmgr_projection_events_total", "counter", "Events inserted into ClickHouse by this process.", float64(m.events.Load()))
	writeMetric(&b, "dmgr_projection_commits_total", "counter", "Commits inserted into ClickHouse by this process.", float64(m.commits.Load()))
	writeMetric(&b, "dmgr_projection_batches_total", "counter", "Batches inserted into ClickHouse by this process.", float64(m.batches.Load()))
	writeMetric(&b, "dmgr_projection_insert_errors_total", "counter", "Failed batch inserts into ClickHouse (each is retried).", float64(m.insertErrors.Load()))
	writeMetric(&b, "dmgr_projection_decode_errors_total", "counter", "Events the domain could not decode (in the audit trail, not in current state).", float64(m.decodeErrors.Load()))
	writeMetric(&b, "dmgr_projection_aggregate_loads_total", "counter", "Aggregates folded from the event stream because the projector had not seen their history.", float64(m.loads.Load()))
	m.batchSize.write(&b, "dmgr_projection_batch_size", "Events per inserted batch.")
	m.insertDur.write(&b, "dmgr_projection_insert_duration_seconds", "Time to insert one batch into ClickHouse.")
	m.delay.write(&b, "dmgr_projection_delay_seconds", "Time from an event's commit to the event being in ClickHouse.")
	_, _ = io.WriteString(w, b.String())
}
