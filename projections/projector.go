package projections

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/internal/leadership"
)

// ConsumerName is the durable consumer of generation gen.
func ConsumerName(gen uint32) string {
	return "dmgr-projections-g" + strconv.FormatUint(uint64(gen), 10)
}

// ProjectorConfig wires a Projector.
type ProjectorConfig struct {
	Store *Store
	JS    jetstream.JetStream
	// Events loads the history of an aggregate the projector has not
	// folded yet (after a restart).
	Events *eventstore.Store
	// Etcd, when set, makes the projector campaign for
	// leadership.ProjectorElection and run only while it leads, so that
	// several servers have one projector.
	Etcd *clientv3.Client
	// SessionTTL is the etcd lease behind the projector's leadership
	// (default 5 s): as for a cluster's leader, the projector stops when
	// its lease is lost or no keepalive has answered for two thirds of it.
	SessionTTL time.Duration
	// ID names this projector in the election (default the hostname-less
	// "projector").
	ID string
	// MaxBatch is the most commits one batch holds (default 50,000; a
	// commit holds one event, or a few). Larger batches are fewer, larger
	// parts for ClickHouse to write and merge.
	MaxBatch int
	// MaxWait is how long a batch waits for more commits after its first
	// one (default 50 ms): the bound on the lag batching adds.
	MaxWait time.Duration
	// MaxBackoff bounds the wait between retries while ClickHouse is down
	// (default 5 s).
	MaxBackoff time.Duration
	Log        zerolog.Logger
}

// Projector feeds the projections: a durable consumer of the event stream
// that folds commits in batches and inserts them into ClickHouse, acking a
// batch only after ClickHouse has all of it.
type Projector struct {
	cfg ProjectorConfig
	log zerolog.Logger
	m   *Metrics

	// hook, when set (tests), runs at each stage of a batch: after each
	// table's insert ("inserted <table>"), after the progress record
	// ("inserted progress") and after the ack ("acked").
	hook func(stage string)
}

// NewProjector returns a projector; Run starts it.
func NewProjector(cfg ProjectorConfig) *Projector {
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 50000
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = 50 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	if cfg.ID == "" {
		cfg.ID = "projector"
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 5 * time.Second
	}
	return &Projector{cfg: cfg, log: cfg.Store.log.With().Str("projector", cfg.ID).Logger(), m: cfg.Store.metrics}
}

// Run projects until ctx ends. With Etcd set, it first waits to be
// elected and stops projecting as soon as its etcd session ends.
func (p *Projector) Run(ctx context.Context) error {
	if p.cfg.Etcd == nil {
		p.lead(ctx)
		return nil
	}
	for ctx.Err() == nil {
		if err := p.campaign(ctx); err != nil && ctx.Err() == nil {
			p.log.Warn().Err(err).Msg("projector election")
			sleep(ctx, time.Second)
		}
	}
	return nil
}

// etcdTimeout bounds the projector's etcd requests that are not waits by
// design.
const etcdTimeout = 5 * time.Second

// campaign runs one term: wait to lead, project while leading. The term,
// and with it the projecting, ends the moment the session does.
func (p *Projector) campaign(ctx context.Context) error {
	sess, err := leadership.NewSession(ctx, p.cfg.Etcd, p.cfg.SessionTTL, etcdTimeout)
	if err != nil {
		return err
	}
	defer sess.Close()
	term, err := sess.Campaign(ctx, leadership.ProjectorElection, p.cfg.ID)
	if err != nil {
		return err
	}
	p.log.Info().Int64("token", term.Token).Msg("projector elected")
	p.lead(term.Context())
	if err := term.Resign(context.WithoutCancel(ctx)); err != nil {
		p.log.Debug().Err(err).Msg("projector resign")
	}
	if err := sess.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("projector leadership ended: %w", err)
	}
	return nil
}

// lead projects the current generation until ctx ends, following the
// switch to a new generation when a rebuild finishes.
func (p *Projector) lead(ctx context.Context) {
	p.m.leader.Store(true)
	defer p.m.leader.Store(false)
	defer p.cfg.Store.local.set(0, 0)
	var gen uint32
	retry(ctx, p.cfg.MaxBackoff, func() error {
		var err error
		gen, err = p.cfg.Store.EnsureSchema(ctx)
		if err != nil {
			p.log.Warn().Err(err).Msg("projection schema; retrying")
		}
		return err
	})
	for ctx.Err() == nil {
		_, err := p.consume(ctx, gen, false)
		if ctx.Err() != nil {
			return
		}
		var sw *switchError
		if errors.As(err, &sw) {
			p.log.Info().Uint32("from", gen).Uint32("to", sw.gen).Msg("projections switched to a rebuilt generation")
			p.deleteConsumer(ctx, gen)
			gen = sw.gen
			continue
		}
		p.log.Warn().Err(err).Uint32("generation", gen).Msg("projector stopped; restarting")
		sleep(ctx, time.Second)
		if g, err := p.cfg.Store.readGeneration(ctx); err == nil && g != 0 {
			gen = g
		}
	}
}

func (p *Projector) deleteConsumer(ctx context.Context, gen uint32) {
	err := p.cfg.JS.DeleteConsumer(ctx, eventstore.StreamName, ConsumerName(gen))
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		p.log.Warn().Err(err).Str("consumer", ConsumerName(gen)).Msg("delete the consumer of an old generation")
	}
}

// switchError says that the current generation is no longer gen.
type switchError struct{ gen uint32 }

func (e *switchError) Error() string { return fmt.Sprintf("the current generation is now %d", e.gen) }

func consumerConfig(gen uint32, from uint64) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ConsumerName(gen),
		Description:   fmt.Sprintf("dmgr projections into ClickHouse, generation %d", gen),
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   from,
		AckPolicy:     jetstream.AckAllPolicy,
		AckWait:       time.Minute,
		MaxDeliver:    -1,
		MaxAckPending: 200000,
		// No filter subject: the stream holds commits only
		// (eventstore.AllSubjects), and a filter makes the server match
		// every message's subject against it.
		// The consumer's state lives in memory: the projector recreates
		// it at ClickHouse's progress whenever it starts, so nothing
		// needs it on disk, and a file-backed consumer rewrites its
		// whole pending set (up to two batches) on every flush.
		MemoryStorage: true,
	}
}

// consume projects generation gen from its consumer. It returns a
// *switchError when another generation became current, and, with
// untilCaughtUp, (true, nil) once it has projected the whole stream as it
// was at some moment.
func (p *Projector) consume(ctx context.Context, gen uint32, untilCaughtUp bool) (bool, error) {
	st := p.cfg.Store
	var wm uint64
	retry(ctx, p.cfg.MaxBackoff, func() error {
		var err error
		if wm, err = st.progress(ctx, gen); err != nil {
			p.log.Warn().Err(err).Msg("read projection progress; retrying")
		}
		return err
	})
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	// ClickHouse's progress, not the consumer's ack floor, says what is
	// projected: (re)start the durable consumer right after it. Commits a
	// crashed projector had been delivered but not acked would otherwise
	// come back only after the ack wait, behind newer ones; and a restored
	// ClickHouse backup is filled up from where it is.
	p.deleteConsumer(ctx, gen)
	cons, err := p.cfg.JS.CreateOrUpdateConsumer(ctx, eventstore.StreamName, consumerConfig(gen, wm+1))
	if err != nil {
		return false, fmt.Errorf("consumer %s: %w", ConsumerName(gen), err)
	}
	if !untilCaughtUp {
		st.noteGeneration(gen) // readers here follow a switch at once
		st.local.set(gen, wm)
		p.m.generation.Store(gen)
	}
	f := newFolder(func(ctx context.Context, typ, id string) ([]eventstore.Event, error) {
		s, err := p.cfg.Events.Load(ctx, typ, id)
		return s.Events, err
	}, p.log, func(e eventstore.Event, err error) {
		p.m.decodeErrors.Add(1)
		p.log.Error().Err(err).Uint64("commit_seq", e.Seq).Str("type", e.Type).
			Msg("event not folded into current state (it is in the audit trail); upgrade dmgr")
	})
	commits, err := consumeCommits(cons, min(p.cfg.MaxBatch, 100000), p.log)
	if err != nil {
		return false, fmt.Errorf("consume %s: %w", ConsumerName(gen), err)
	}
	defer commits.Stop()
	p.log.Info().Uint32("generation", gen).Uint64("commit_seq", wm).Msg("projector consuming")

	// Two stages: while one batch is inserted (insertBatch, in its own
	// goroutine), the next is collected and folded. Inserts stay in
	// order: a batch's insert starts after the previous one has its
	// progress recorded and its ack sent.
	var inflight chan error
	wait := func() error {
		if inflight == nil {
			return nil
		}
		err := <-inflight
		inflight = nil
		return err
	}
	defer func() { _ = wait() }()
	nextGenCheck := time.Now().Add(2 * time.Second)
	var next uint64    // the first commit delivered may be any at or after wm+1
	folded := wm       // the last commit folded (inserted or being inserted)
	var pending uint64 // what the stream held beyond the last commit collected
	for {
		b, err := p.collect(ctx, commits)
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		if err != nil {
			if werr := wait(); werr != nil {
				return false, werr
			}
			if g, gerr := st.readGeneration(ctx); gerr == nil && g != gen && !untilCaughtUp {
				return false, &switchError{g}
			}
			return false, err
		}
		if len(b.data) > 0 {
			rows, err := p.fold(ctx, f, folded, &next, b)
			if err != nil {
				_ = wait()
				return false, err
			}
			folded, pending = max(folded, b.lastSeq), b.pending
			if err := wait(); err != nil {
				return false, err
			}
			inflight = make(chan error, 1)
			go func(done chan<- error) { done <- p.insertBatch(ctx, gen, rows, b, !untilCaughtUp) }(inflight)
		}
		if untilCaughtUp {
			// Caught up: the stream held nothing beyond the last commit
			// when it was delivered, or nothing came and the stream ends
			// where the projections do.
			caught := len(b.data) > 0 && pending == 0
			if len(b.data) == 0 {
				head, err := st.streamHead(ctx)
				if err != nil {
					_ = wait()
					return false, err
				}
				caught = folded >= head
			}
			if caught {
				return true, wait()
			}
		}
		if !untilCaughtUp && time.Now().After(nextGenCheck) {
			nextGenCheck = time.Now().Add(2 * time.Second)
			if g, err := st.readGeneration(ctx); err == nil && g != gen && g != 0 {
				if err := wait(); err != nil {
					return false, err
				}
				return false, &switchError{g}
			}
		}
	}
}

// batch is what collect gathered.
type batch struct {
	// The commits' bodies, and the last message, whose ack acks the batch
	// (AckAll). Only the bodies are kept: a message's headers are a map
	// per commit that the garbage collector would trace while the batch
	// lives.
	data    [][]byte
	last    jetstream.Msg
	commits []commit
	stored  []time.Time
	events  int
	lastSeq uint64
	pending uint64 // commits the stream held beyond the last one, when it was delivered
}

// collect waits up to a second for a commit, then gathers more until the
// batch holds MaxBatch commits or MaxWait has passed since its first one,
// and decodes them.
func (p *Projector) collect(ctx context.Context, d *delivery) (*batch, error) {
	b, err := p.gather(ctx, d)
	p.decode(b)
	return b, err
}

// gather is collect without the decoding.
func (p *Projector) gather(ctx context.Context, d *delivery) (*batch, error) {
	b := &batch{}
	timer := time.NewTimer(time.Second)
	defer timer.Stop()
	got := 0         // commits gathered when the timer was last set
	overdue := false // MaxWait has passed while the stream held more
	for len(b.data) < p.cfg.MaxBatch {
		var msg jetstream.Msg
		select {
		case msg = <-d.msgs:
		default:
			select {
			case msg = <-d.msgs:
			case <-timer.C:
				// Nothing yet, or MaxWait has passed: the batch is done,
				// unless it is catching up (the stream holds more than
				// this batch, so waiting adds no lag, and a full batch is
				// fewer, larger inserts for ClickHouse) and commits still
				// come.
				if len(b.data) == 0 || b.pending == 0 || len(b.data) == got {
					return b, nil
				}
				got, overdue = len(b.data), true
				timer.Reset(time.Second)
				continue
			case <-d.cc.Closed():
				if len(b.data) > 0 {
					// Project what we have; the error comes back on the next call.
					return b, nil
				}
				return b, d.closedErr()
			case <-ctx.Done():
				return b, nil
			}
		}
		meta, err := metaOf(msg)
		if err != nil {
			return b, fmt.Errorf("commit metadata: %w", err)
		}
		if b.data == nil {
			// The first commit says how many follow: size the batch once.
			n := int(min(uint64(p.cfg.MaxBatch), meta.pending+1))
			b.data, b.commits, b.stored = make([][]byte, 0, n), make([]commit, 0, n), make([]time.Time, 0, n)
			timer.Reset(p.cfg.MaxWait) // no stale fire comes after a Reset (Go ≥ 1.23)
			got = 1
		}
		b.data, b.last = append(b.data, msg.Data()), msg
		b.commits = append(b.commits, commit{seq: meta.seq})
		b.stored = append(b.stored, meta.stored)
		b.lastSeq = max(b.lastSeq, meta.seq)
		b.pending = meta.pending
		if overdue && meta.pending == 0 {
			break // caught up with the stream, past MaxWait
		}
	}
	return b, nil
}

// decode decodes a batch's commits, in parallel: JSON is most of a
// projector's work.
func (p *Projector) decode(b *batch) {
	decodeAll(b.commits, func(i int) []byte { return b.data[i] }, func(seq uint64, err error) {
		p.m.decodeErrors.Add(1)
		p.log.Error().Err(err).Uint64("commit_seq", seq).Msg("undecodable commit left out of the projections")
	})
	for _, c := range b.commits {
		b.events += len(c.events)
	}
}

// decodeAll decodes and prepares commits, data(i) being commit i's
// message, on every processor. A commit is read in one pass, its payloads
// decoded into domain events as they are met; one that pass does not take
// (not the format EncodeCommit writes) is decoded the lenient way.
func decodeAll(commits []commit, data func(i int) []byte, onError func(seq uint64, err error)) {
	workers := min(runtime.GOMAXPROCS(0), max(len(commits)/256, 1))
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var r eventstore.CommitReader
			for i := w; i < len(commits); i += workers {
				c := &commits[i]
				evs, pre, err := r.Read(c.seq, data(i), readPayload)
				if err == nil {
					c.events = evs
					c.prepareWith(pre)
					continue
				}
				if c.events, err = eventstore.DecodeCommit(c.seq, data(i)); err != nil {
					onError(c.seq, err)
				}
				c.prepare()
			}
		}()
	}
	wg.Wait()
}

// readPayload decodes the payloads of the event types the domain knows
// while a commit is read, and leaves the others (prepare reads their
// fields from the bytes).
func readPayload(eventType string, schemaVersion int, payload []byte) (any, error) {
	if !domain.Decodes(eventType, schemaVersion) {
		return nil, nil
	}
	return domain.DecodeEvent(eventType, schemaVersion, payload)
}

// fold folds a batch's new commits (those after folded; the others are
// redeliveries) into the rows that record them; nil when there are none.
//
// next is the sequence the next new commit must have (0: any, right after
// the consumer was positioned).
func (p *Projector) fold(ctx context.Context, f *folder, folded uint64, next *uint64, b *batch) (*rowSet, error) {
	fresh, err := newCommits(b.commits, folded, next)
	if err != nil {
		return nil, err
	}
	if len(fresh) == 0 {
		return nil, nil
	}
	loads := f.loads()
	rows, err := f.project(ctx, fresh)
	if err != nil {
		return nil, err
	}
	rows.commits = len(fresh)
	p.m.loads.Add(uint64(f.loads() - loads))
	return rows, nil
}

// newCommits are the commits of a batch after folded (the others are
// redeliveries), which must start at *next (0: anywhere) and follow each
// other; it moves *next past them. Usually they are the whole batch, and
// the batch's slice is returned as it is.
func newCommits(commits []commit, folded uint64, next *uint64) ([]commit, error) {
	if len(commits) > 0 && commits[0].seq > folded && (*next == 0 || commits[0].seq == *next) && consecutive(commits) {
		*next = commits[len(commits)-1].seq + 1
		return commits, nil
	}
	var fresh []commit
	for _, c := range commits {
		if c.seq <= folded {
			continue // a redelivery
		}
		// Commits come in stream order and the stream has no holes (it
		// denies deletes): a commit that skips one means the consumer is
		// not where the projector thinks; start it again at the progress.
		if c.seq != *next && *next != 0 {
			return nil, fmt.Errorf("commit %d arrived where %d was expected; restarting the consumer at the recorded progress", c.seq, *next)
		}
		*next = c.seq + 1
		fresh = append(fresh, c)
	}
	return fresh, nil
}

// consecutive reports whether the commits' sequences are s, s+1, s+2, ….
func consecutive(commits []commit) bool {
	for i := 1; i < len(commits); i++ {
		if commits[i].seq != commits[i-1].seq+1 {
			return false
		}
	}
	return true
}

// insertBatch inserts a folded batch until ClickHouse has all of it (or
// ctx ends), records the progress, acks, and, when live, reports the new
// watermark to this process's readers.
func (p *Projector) insertBatch(ctx context.Context, gen uint32, rows *rowSet, b *batch, live bool) error {
	st := p.cfg.Store
	if rows != nil {
		plan := &insertPlan{rows: rows}
		began := time.Now()
		failures := 0
		retry(ctx, p.cfg.MaxBackoff, func() error {
			err := p.insert(ctx, plan, gen)
			if err == nil {
				err = recordProgress(ctx, st.conn, st.db, gen, rows.maxSeq)
			}
			if err != nil && ctx.Err() == nil {
				p.m.insertErrors.Add(1)
				failures++
				if failures == 1 || failures%20 == 0 {
					p.log.Warn().Err(err).Int("failures", failures).Uint64("commit_seq", rows.maxSeq).
						Msg("insert into ClickHouse failed; the batch is kept and retried")
				}
			}
			return err
		})
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if failures > 0 {
			p.log.Info().Int("failures", failures).Uint64("commit_seq", rows.maxSeq).Msg("ClickHouse took the batch again")
		}
		p.stage("inserted progress")
		now := time.Now()
		p.m.insertDur.observe(now.Sub(began).Seconds())
		p.m.batches.Add(1)
		p.m.commits.Add(uint64(rows.commits))
		p.m.events.Add(uint64(len(rows.events)))
		p.m.batchSize.observe(float64(len(rows.events)))
		for i, c := range b.commits {
			if c.seq >= rows.minSeq {
				p.m.delay.observeN(now.Sub(b.stored[i]).Seconds(), uint64(max(len(c.events), 1)))
			}
		}
		if live {
			st.local.set(gen, rows.maxSeq)
		}
	}
	// AckAll: the last message acks the batch. A lost ack costs a
	// redelivery, which the progress skips.
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := b.last.DoubleAck(actx); err != nil && ctx.Err() == nil {
		p.log.Debug().Err(err).Uint64("commit_seq", b.lastSeq).Msg("ack of a projected batch failed; it will be redelivered and skipped")
	}
	p.stage("acked")
	return nil
}

// insertTimeout bounds one batch's inserts, so that a ClickHouse that
// stopped answering fails the batch (which is then retried) rather than
// hanging the projector.
const insertTimeout = 2 * time.Minute

// insert sends a batch's tables in parallel.
func (p *Projector) insert(ctx context.Context, plan *insertPlan, gen uint32) error {
	ctx, cancel := context.WithTimeout(ctx, insertTimeout)
	defer cancel()
	st := p.cfg.Store
	if plan.done == nil {
		plan.done = map[string]bool{}
	}
	parts := plan.parts()
	errs := make([]error, len(parts))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, t := range parts {
		mu.Lock()
		skip := t.n == 0 || plan.done[t.table]
		mu.Unlock()
		if skip {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := insertRows(ctx, st.conn, table(st.db, t.table, gen), t.columns, t.n, t.append); err != nil {
				errs[i] = fmt.Errorf("insert %d rows into %s: %w", t.n, table(st.db, t.table, gen), err)
				return
			}
			mu.Lock()
			plan.done[t.table] = true
			mu.Unlock()
			p.stage("inserted " + t.table)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (p *Projector) stage(s string) {
	if p.hook != nil {
		p.hook(s)
	}
}

// retry runs f until it succeeds or ctx ends, waiting 100 ms after the
// first failure and doubling up to maxWait.
func retry(ctx context.Context, maxWait time.Duration, f func() error) {
	wait := 100 * time.Millisecond
	for ctx.Err() == nil {
		if f() == nil {
			return
		}
		sleep(ctx, wait)
		wait = min(2*wait, maxWait)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
