package projections

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/dmgr/dmgr/eventstore"
)

// RebuildResult says what a rebuild did.
type RebuildResult struct {
	From, To uint32 // the generation before and after
	Seq      uint64 // the stream sequence the new generation had reached at the switch
	Events   uint64 // distinct events in the new generation's audit trail at the switch
	Took     time.Duration
}

// Rebuild replays the event stream from sequence 1 into a new generation
// of tables and then makes it the current one. Queries and the live
// projector keep using the old generation until the switch; the live
// projector then continues the new generation from where the rebuild
// stopped (the new generation's durable consumer). The previous generation
// is kept (for comparison or to switch back by hand); older ones are
// dropped.
//
// It runs without the projector election, so it can run beside a live
// server (dmgr projections rebuild). cfg.Etcd is ignored.
func Rebuild(ctx context.Context, cfg ProjectorConfig) (RebuildResult, error) {
	began := time.Now()
	st := cfg.Store
	cfg.Etcd = nil
	if cfg.ID == "" {
		cfg.ID = "rebuild"
	}
	for _, stmt := range bootstrap {
		if err := st.conn.Exec(ctx, expand(stmt, st.db, 0)); err != nil {
			return RebuildResult{}, unavailable(fmt.Errorf("create projection schema in %s: %w", st.db, err))
		}
	}
	cur, err := st.readGeneration(ctx)
	if err != nil {
		return RebuildResult{}, err
	}
	var used uint32
	if err := st.conn.QueryRow(ctx, "SELECT max(generation) FROM "+st.db+"."+tableMigrations).Scan(&used); err != nil {
		return RebuildResult{}, unavailable(fmt.Errorf("read generations: %w", err))
	}
	next := max(cur, used) + 1
	res := RebuildResult{From: cur, To: next}
	log := st.log.With().Uint32("generation", next).Logger()
	// Tables of rebuilds that did not finish are of no use.
	for g := cur + 1; g < next; g++ {
		if err := dropGeneration(ctx, st.conn, st.db, g); err != nil {
			return res, unavailable(err)
		}
		deleteConsumer(ctx, cfg.JS, g)
	}
	if _, err := applyMigrations(ctx, st.conn, st.db, next, migrations); err != nil {
		return res, unavailable(err)
	}
	deleteConsumer(ctx, cfg.JS, next)
	log.Info().Uint32("from", cur).Msg("rebuilding projections from the start of the event stream")

	p := NewProjector(cfg)
	caught, err := p.consume(ctx, next, true)
	if err != nil {
		return res, fmt.Errorf("rebuild generation %d: %w", next, err)
	}
	if !caught {
		return res, fmt.Errorf("rebuild generation %d: stopped before it caught up", next)
	}
	if res.Seq, err = st.progress(ctx, next); err != nil {
		return res, err
	}
	var n uint64
	if err := st.conn.QueryRow(ctx, "SELECT uniqExact(seq, idx) FROM "+table(st.db, tableEvents, next)).Scan(&n); err != nil {
		return res, unavailable(fmt.Errorf("count events: %w", err))
	}
	res.Events = n
	if err := st.setGeneration(ctx, next); err != nil {
		return res, err
	}
	log.Info().Uint32("from", cur).Uint64("commit_seq", res.Seq).Uint64("events", n).Msg("projections switched to the rebuilt generation")
	// The old generation's consumer would keep every commit pending for
	// nobody; the live projector moves to the new one.
	for g := uint32(1); g <= cur; g++ {
		deleteConsumer(ctx, cfg.JS, g)
	}
	for g := uint32(1); g+1 <= cur; g++ {
		if err := dropGeneration(ctx, st.conn, st.db, g); err != nil {
			log.Warn().Err(err).Uint32("old", g).Msg("drop an old generation")
		}
	}
	res.Took = time.Since(began)
	return res, nil
}

func deleteConsumer(ctx context.Context, js jetstream.JetStream, gen uint32) {
	_ = js.DeleteConsumer(ctx, eventstore.StreamName, ConsumerName(gen))
}
