package projections

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/internal/chserver"
)

// DefaultDatabase is the ClickHouse database that holds the projections.
const DefaultDatabase = "dmgr"

// Options configure a Store.
type Options struct {
	// Database holds the tables (default "dmgr"); it is created when
	// missing.
	Database string
	// JS reaches the event stream, for the lag metrics and for waits that
	// want everything committed so far. Optional.
	JS  jetstream.JetStream
	Log zerolog.Logger
	// GenerationTTL is how long a Store trusts what it read about the
	// current generation before it reads it again, so that a rebuild run
	// by another process is seen (default 2 s).
	GenerationTTL time.Duration
	// PollInterval is how often WaitFor reads the progress from ClickHouse
	// when no projector in this process reports it (default 25 ms).
	PollInterval time.Duration
}

// Store is dmgr's view of its projections in ClickHouse: the schema, which
// generation of tables is current, how far it has projected, and the
// queries. It is safe for concurrent use. A Projector in the same process
// shares it to report progress without a round trip.
type Store struct {
	conn    driver.Conn
	db      string
	js      jetstream.JetStream
	log     zerolog.Logger
	ttl     time.Duration
	poll    time.Duration
	metrics *Metrics

	mu      sync.Mutex
	gen     uint32
	genRead time.Time
	stream  jetstream.Stream // the event stream, once looked up

	local watermark
	// auditWindow, when set (tests), is the first window of sequences an
	// audit query without a cluster looks at.
	auditWindow uint64
}

// Dial returns a clickhouse-go connection pool for the native protocol at
// addr ("host:port") that logs in as cred. It does not connect: the first
// query does, so a server that starts before ClickHouse answers does not
// fail.
func Dial(addr string, cred chserver.Credentials) (driver.Conn, error) {
	if cred.User == "" {
		return nil, domain.Errorf(domain.Invalid, "clickhouse at %s: no user name given", addr)
	}
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:     []string{addr},
		Protocol: clickhouse.Native,
		Auth:     clickhouse.Auth{Database: "default", Username: cred.User, Password: cred.Password},
		// Short dials: while ClickHouse is down the projector backs off
		// and queries fail fast with 503.
		DialTimeout:     3 * time.Second,
		MaxOpenConns:    16,
		MaxIdleConns:    8,
		ConnMaxLifetime: 10 * time.Minute,
		// No Settings: 18.16 rejects settings it does not know, and the
		// driver sends the ones given here with every query.
	})
	if err != nil {
		return nil, fmt.Errorf("clickhouse at %s: %w", addr, err)
	}
	return conn, nil
}

// New returns a Store on conn. It does no I/O; EnsureSchema (which the
// projector runs) creates the tables.
func New(conn driver.Conn, o Options) (*Store, error) {
	if o.Database == "" {
		o.Database = DefaultDatabase
	}
	if err := validDatabase(o.Database); err != nil {
		return nil, err
	}
	if o.GenerationTTL <= 0 {
		o.GenerationTTL = 2 * time.Second
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 25 * time.Millisecond
	}
	s := &Store{conn: conn, db: o.Database, js: o.JS, log: o.Log.With().Str("component", "projections").Logger(),
		ttl: o.GenerationTTL, poll: o.PollInterval, metrics: newMetrics()}
	s.local.init()
	return s, nil
}

// Database is the ClickHouse database of the projections.
func (s *Store) Database() string { return s.db }

// Conn is the ClickHouse connection (for tests and tools).
func (s *Store) Conn() driver.Conn { return s.conn }

// Metrics are the projection metrics of this process.
func (s *Store) Metrics() *Metrics { return s.metrics }

// EnsureSchema creates the database and bookkeeping tables, the first
// generation when there is none, and runs the migrations the current
// generation has not run. It is idempotent and safe to run from several
// processes at once. It returns the current generation.
func (s *Store) EnsureSchema(ctx context.Context) (uint32, error) {
	return s.ensureSchema(ctx, migrations)
}

func (s *Store) ensureSchema(ctx context.Context, list []Migration) (uint32, error) {
	for _, stmt := range bootstrap {
		if err := s.conn.Exec(ctx, expand(stmt, s.db, 0)); err != nil {
			return 0, unavailable(fmt.Errorf("create projection schema in %s: %w", s.db, err))
		}
	}
	gen, err := s.readGeneration(ctx)
	if err != nil {
		return 0, err
	}
	if gen == 0 {
		gen = 1
		if _, err := applyMigrations(ctx, s.conn, s.db, gen, list); err != nil {
			return 0, unavailable(err)
		}
		if err := s.setGeneration(ctx, gen); err != nil {
			return 0, err
		}
	} else if n, err := applyMigrations(ctx, s.conn, s.db, gen, list); err != nil {
		return 0, unavailable(err)
	} else if n > 0 {
		s.log.Info().Uint32("generation", gen).Int("migrations", n).Msg("projection schema migrated")
	}
	s.noteGeneration(gen)
	return gen, nil
}

// readGeneration reads the current generation (0: none yet).
func (s *Store) readGeneration(ctx context.Context) (uint32, error) {
	var gen uint64
	var n uint64
	row := s.conn.QueryRow(ctx, "SELECT argMax(value, version), count() FROM "+s.db+"."+tableMeta+" WHERE key = 'generation'")
	if err := row.Scan(&gen, &n); err != nil {
		if isMissing(err) {
			return 0, nil // the projector has not created the schema yet
		}
		return 0, unavailable(fmt.Errorf("read the current projection generation: %w", err))
	}
	if n == 0 {
		return 0, nil
	}
	return uint32(gen), nil
}

// setGeneration makes gen the current generation.
func (s *Store) setGeneration(ctx context.Context, gen uint32) error {
	var version uint64
	if err := s.conn.QueryRow(ctx, "SELECT max(version) FROM "+s.db+"."+tableMeta+" WHERE key = 'generation'").Scan(&version); err != nil {
		return unavailable(fmt.Errorf("switch to generation %d: %w", gen, err))
	}
	if err := insertTable(ctx, s.conn, s.db+"."+tableMeta, "key, value, version", func(b driver.Batch) error {
		return b.Append("generation", uint64(gen), version+1)
	}); err != nil {
		return unavailable(fmt.Errorf("switch to generation %d: %w", gen, err))
	}
	s.noteGeneration(gen)
	return nil
}

func (s *Store) noteGeneration(gen uint32) {
	s.mu.Lock()
	s.gen, s.genRead = gen, time.Now()
	s.mu.Unlock()
}

// Generation is the generation that queries read: the one this Store read
// within GenerationTTL, or read again.
func (s *Store) Generation(ctx context.Context) (uint32, error) {
	s.mu.Lock()
	gen, at := s.gen, s.genRead
	s.mu.Unlock()
	if gen != 0 && time.Since(at) < s.ttl {
		return gen, nil
	}
	gen, err := s.readGeneration(ctx)
	if err != nil {
		return 0, err
	}
	if gen == 0 {
		return 0, errNotSetUp
	}
	s.noteGeneration(gen)
	return gen, nil
}

// errNotSetUp is Generation's answer before the first projector started.
var errNotSetUp = domain.Errorf(domain.Unavailable, "the projections in ClickHouse are not set up yet; the projector creates them when it starts")

// generationOrZero is Generation, with 0 while there is none yet.
func (s *Store) generationOrZero(ctx context.Context) (uint32, error) {
	gen, err := s.Generation(ctx)
	if errors.Is(err, errNotSetUp) {
		return 0, nil
	}
	return gen, err
}

// isMissing reports a ClickHouse error about a database or table that
// does not exist.
func isMissing(err error) bool {
	var ex *clickhouse.Exception
	return errors.As(err, &ex) && (ex.Code == 81 || ex.Code == 60) // UNKNOWN_DATABASE, UNKNOWN_TABLE
}

// progress is how far generation gen has projected: every commit up to
// the returned stream sequence is in its tables.
func (s *Store) progress(ctx context.Context, gen uint32) (uint64, error) {
	var seq uint64
	if err := s.conn.QueryRow(ctx, "SELECT max(seq) FROM "+table(s.db, tableProgress, gen)).Scan(&seq); err != nil {
		return 0, unavailable(fmt.Errorf("read projection progress: %w", err))
	}
	return seq, nil
}

// Seq is how far the current generation has projected.
func (s *Store) Seq(ctx context.Context) (uint64, error) {
	gen, err := s.Generation(ctx)
	if err != nil {
		return 0, err
	}
	if lg, seq, _ := s.local.get(); lg == gen {
		return seq, nil
	}
	return s.progress(ctx, gen)
}

// WaitFor waits until the projections have every commit up to seq (the
// commit_seq a command answered) and returns how far they are. It ends
// with ctx; the caller bounds the wait.
func (s *Store) WaitFor(ctx context.Context, seq uint64) (uint64, error) {
	for {
		gen, err := s.generationOrZero(ctx)
		if err != nil {
			return 0, err
		}
		lg, ls, changed := s.local.get()
		wait := s.poll
		if gen == 0 {
			// No tables yet: the projector creates them when it starts.
		} else if lg == gen {
			// A projector in this process writes this generation: it
			// wakes us when it has more.
			if ls >= seq {
				return ls, nil
			}
			wait = 10 * s.poll
		} else if gen != 0 {
			got, err := s.progress(ctx, gen)
			if err != nil {
				return 0, err
			}
			if got >= seq {
				return got, nil
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-changed:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return 0, ctx.Err()
		}
		t.Stop()
	}
}

// WaitForHead waits until the projections have every commit that was in
// the event stream when it was called, and returns that sequence.
func (s *Store) WaitForHead(ctx context.Context) (uint64, error) {
	head, err := s.streamHead(ctx)
	if err != nil {
		return 0, err
	}
	return s.WaitFor(ctx, head)
}

// streamHead is the event stream's last sequence (0 without Options.JS).
func (s *Store) streamHead(ctx context.Context) (uint64, error) {
	if s.js == nil {
		return 0, nil
	}
	st, err := s.eventStream(ctx)
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, domain.Errorf(domain.Unavailable, "event stream: %v", err)
	}
	return info.State.LastSeq, nil
}

func (s *Store) eventStream(ctx context.Context) (jetstream.Stream, error) {
	s.mu.Lock()
	st := s.stream
	s.mu.Unlock()
	if st != nil {
		return st, nil
	}
	st, err := s.js.Stream(ctx, eventstore.StreamName)
	if err != nil {
		return nil, domain.Errorf(domain.Unavailable, "event stream: %v", err)
	}
	s.mu.Lock()
	s.stream = st
	s.mu.Unlock()
	return st, nil
}

// commitTime is when the commit at seq was stored in the stream.
func (s *Store) commitTime(ctx context.Context, seq uint64) (time.Time, error) {
	st, err := s.eventStream(ctx)
	if err != nil {
		return time.Time{}, err
	}
	m, err := st.GetMsg(ctx, seq)
	if err != nil {
		return time.Time{}, err
	}
	return m.Time, nil
}

// watermark is the progress a projector in this process reports.
type watermark struct {
	mu      sync.Mutex
	gen     uint32 // 0: no projector runs here
	seq     uint64
	changed chan struct{} // closed on every change
}

func (w *watermark) init() { w.changed = make(chan struct{}) }

func (w *watermark) set(gen uint32, seq uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.gen, w.seq = gen, seq
	close(w.changed)
	w.changed = make(chan struct{})
}

func (w *watermark) get() (uint32, uint64, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.gen, w.seq, w.changed
}

// unavailable marks a ClickHouse failure as the Unavailable error code
// (503), keeping the cause.
func unavailable(err error) error {
	if err == nil {
		return nil
	}
	var de *domain.Error
	if errors.As(err, &de) {
		return err
	}
	return &chError{domain.Errorf(domain.Unavailable, "%v", err), err}
}

// chError is an Unavailable domain error that still unwraps to its cause.
type chError struct {
	de    *domain.Error
	cause error
}

func (e *chError) Error() string   { return e.de.Message }
func (e *chError) Unwrap() []error { return []error{e.de, e.cause} }
