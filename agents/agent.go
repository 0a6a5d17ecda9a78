package agents

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dmgr/dmgr/agents/remote"
	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/internal/pkgstore"
	"github.com/dmgr/dmgr/internal/secrets"
	"github.com/dmgr/dmgr/internal/workqueue"
)

// Config wires an agent.
type Config struct {
	ID       string // default: hostname-<random>
	Pool     string // default workqueue.DefaultPool
	Version  string
	JS       jetstream.JetStream
	Etcd     *clientv3.Client
	Vault    *secrets.Vault
	Packages *pkgstore.Store
	// Events reads the committed events that a step is checked against
	// (eventstore.OpenExisting: direct get only, which is all an agent's
	// bus permissions allow on the event stream).
	Events Events
	Remote *remote.Pool // SSH connections; the agent owns and closes it
	Log    zerolog.Logger

	// Concurrency is how many steps the agent runs at once (default 16).
	Concurrency int
	// AckWait is how long a step may go without an in-progress ack before
	// JetStream gives it to another agent (default 30 s); the agent sends
	// one every AckWait/3 while a step runs.
	AckWait time.Duration
	// Retries is how many times a step's remote action is tried again after
	// a connection failure (default 3), waiting RetryBackoff, doubled each
	// time (default 1 s).
	Retries      int
	RetryBackoff time.Duration
	// LeaseTTL is the etcd lease of the agent's online key (default 10 s).
	LeaseTTL time.Duration
	// RegisterGiveUpAfter is how long the agent may fail to register in
	// etcd (at start, or again after its lease was lost) before Register,
	// and with it Run, fails (default 1 min).
	RegisterGiveUpAfter time.Duration
	// CacheDir is the agent's package cache (cache.go): each package is
	// read from the object store once and its files taken out once, each
	// checked against its SHA-256 whenever it is used. Default:
	// DefaultCacheDir(). It must be the agent user's own; it is made 0700.
	CacheDir string
	// CacheMaxBytes bounds the cache (default DefaultCacheMaxBytes); the
	// least recently used entries not in use are removed past it.
	CacheMaxBytes int64
	// Fetch tunes the package reads from the object store (zero: the
	// pkgstore defaults).
	Fetch pkgstore.FetchOptions
	// ClusterCache is how many clusters' states, folded from their events,
	// the agent keeps to check steps against (default 256); a cluster not
	// kept is read again from its first commit.
	ClusterCache int
}

// Events is the part of the event store an agent reads: one aggregate's
// commits after a stream sequence.
type Events interface {
	LoadSince(ctx context.Context, aggregateType, id string, after uint64) (eventstore.Stream, error)
}

// Agent pulls steps from its pool's work queue and runs them over SSH.
// It keeps no state between steps: any agent can run any step.
type Agent struct {
	cfg    Config
	log    zerolog.Logger
	files  *fileCache
	verify *verifier
}

// New returns an agent; Run starts it.
func New(cfg Config) (*Agent, error) {
	if cfg.JS == nil || cfg.Etcd == nil || cfg.Vault == nil || cfg.Packages == nil || cfg.Events == nil || cfg.Remote == nil {
		return nil, errors.New("agent: JetStream, etcd, vault, package store, event reader and SSH pool are required")
	}
	if cfg.ID == "" {
		host, _ := os.Hostname()
		cfg.ID = fmt.Sprintf("%s-%s", host, uuid.NewString()[:8])
	}
	if cfg.Pool == "" {
		cfg.Pool = workqueue.DefaultPool
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 16
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.Retries < 0 {
		cfg.Retries = 0
	} else if cfg.Retries == 0 {
		cfg.Retries = 3
	}
	if cfg.RetryBackoff <= 0 {
		cfg.RetryBackoff = time.Second
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 10 * time.Second
	}
	if cfg.RegisterGiveUpAfter <= 0 {
		cfg.RegisterGiveUpAfter = time.Minute
	}
	if cfg.CacheDir == "" {
		cfg.CacheDir = DefaultCacheDir()
	}
	files, err := newFileCache(cfg.CacheDir, cfg.CacheMaxBytes, cfg.Packages)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	files.fetch = cfg.Fetch
	log := cfg.Log.With().Str("agent", cfg.ID).Str("pool", cfg.Pool).Logger()
	return &Agent{cfg: cfg, log: log, files: files,
		verify: newVerifier(cfg.Etcd, cfg.Events, cfg.Vault, cfg.ClusterCache)}, nil
}

// DefaultCacheDir is the package cache of an agent not given one: dmgr's
// directory in the user's cache directory ($XDG_CACHE_HOME or ~/.cache),
// or, without a home, dmgr-agent-cache-<uid> in the temporary directory.
func DefaultCacheDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "dmgr", "agent-cache")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("dmgr-agent-cache-%d", os.Geteuid()))
}

// CacheStats reports what the agent's package cache did so far.
func (a *Agent) CacheStats() CacheStats { return a.files.stats() }

// ID is the agent's id, as it appears in step results and events.
func (a *Agent) ID() string { return a.cfg.ID }

// SSHStats reports the agent's SSH connections per host:port.
func (a *Agent) SSHStats() map[string]remote.HostStats { return a.cfg.Remote.Stats() }

// Run registers the agent in etcd (Register) and runs steps (Work) until
// ctx ends, or until the registration fails for good, which stops the
// steps and is what Run returns. Steps running when it stops are
// cancelled and handed back to the queue.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	regErr := make(chan error, 1)
	go func() {
		err := a.Register(ctx)
		cancel()
		regErr <- err
	}()
	workErr := a.Work(ctx)
	cancel()
	if err := <-regErr; err != nil {
		return err
	}
	return workErr
}

// Register keeps the agent registered in etcd until ctx ends: its seen
// key, and its online key under a lease kept alive. When the lease is lost
// (expired while etcd could not be reached, or revoked) the agent
// registers again under a new lease, with backoff. Register fails when
// registering has failed for longer than Config.RegisterGiveUpAfter, or at
// once when the etcd client is closed.
func (a *Agent) Register(ctx context.Context) error {
	host, _ := os.Hostname()
	info := Info{ID: a.cfg.ID, Pool: a.cfg.Pool, Hostname: host, PID: os.Getpid(), Version: a.cfg.Version, StartedAt: time.Now().UTC()}
	return keepRegistered(ctx, a.cfg.Etcd, info, a.cfg.LeaseTTL, a.cfg.RegisterGiveUpAfter, a.log, nil)
}

// Work runs steps until ctx ends. Steps running when ctx ends are
// cancelled and handed back to the queue.
func (a *Agent) Work(ctx context.Context) error {
	defer a.cfg.Remote.Close()
	cons, err := a.cfg.JS.CreateOrUpdateConsumer(ctx, workqueue.StepsStream, workqueue.AgentConsumerConfig(a.cfg.Pool, a.cfg.AckWait))
	if err != nil {
		return fmt.Errorf("agent %s: consumer on %s: %w", a.cfg.ID, workqueue.StepsStream, err)
	}
	a.log.Info().Int("concurrency", a.cfg.Concurrency).Dur("ack_wait", a.cfg.AckWait).Msg("agent started")
	var wg sync.WaitGroup
	for range a.cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.worker(ctx, cons)
		}()
	}
	wg.Wait()
	a.log.Info().Msg("agent stopped")
	return nil
}

// worker fetches one step at a time, so that steps spread over the agents
// instead of piling up in one agent's buffer.
func (a *Agent) worker(ctx context.Context, cons jetstream.Consumer) {
	for ctx.Err() == nil {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			if ctx.Err() == nil {
				a.log.Warn().Err(err).Msg("fetch steps")
				sleep(ctx, time.Second)
			}
			continue
		}
		for msg := range batch.Messages() {
			a.handle(ctx, msg)
		}
	}
}

// handle runs one delivered step: check it against what the store
// ordered, report started, run, report the result, and ack only once the
// result is stored.
func (a *Agent) handle(ctx context.Context, msg jetstream.Msg) {
	d, err := workqueue.DecodeDispatch(msg.Data())
	if err != nil {
		a.refuse(claimed(a.log, msg.Data()), msg, err.Error())
		return
	}
	log := a.log.With().Str("cluster", d.Cluster).Str("operation", d.Operation).Str("step", d.Step).
		Int("attempt", d.Attempt).Int64("token", d.Token).Logger()
	if md, err := msg.Metadata(); err == nil && md.NumDelivered > 1 {
		log.Info().Uint64("delivery", md.NumDelivered).Msg("step redelivered")
	}

	hbCtx, stopHeartbeat := context.WithCancel(ctx)
	defer stopHeartbeat()
	go a.heartbeat(hbCtx, msg)

	o, err := a.verify.verify(ctx, d)
	var no *refusal
	var bad *unusable
	switch {
	case errors.As(err, &no):
		a.refuse(log, msg, no.reason)
		return
	case errors.As(err, &bad):
		a.failUnusable(ctx, log, msg, d, bad)
		return
	case err != nil:
		if ctx.Err() == nil {
			log.Warn().Err(err).Msg("cannot check the step against the event store; handing it back")
		}
		_ = msg.NakWithDelay(retryCheckDelay)
		return
	}
	log = log.With().Str("host", o.Step.Host).Logger()

	base := workqueue.Result{Cluster: d.Cluster, Operation: d.Operation, Attempt: d.Attempt, Token: d.Token,
		Step: d.Step, Host: o.Step.Host, Agent: a.cfg.ID}
	started := base
	started.Time = time.Now().UTC()
	if err := a.publish(ctx, started); err != nil {
		log.Warn().Err(err).Msg("could not report the start; handing the step back")
		_ = msg.Nak()
		return
	}
	log.Info().Str("kind", o.Step.Kind).Msg("step started")
	begin := time.Now()
	out := a.execute(ctx, log, o)
	if ctx.Err() != nil {
		// Shutting down: another agent takes the step; it is idempotent.
		_ = msg.Nak()
		return
	}
	res := base
	res.Finished, res.OK, res.ExitCode, res.Error = true, out.err == nil, out.exitCode, errString(out.err)
	res.Stdout, res.Stderr = out.stdout.String(), out.stderr.String()
	res.DurationMS, res.Time = time.Since(begin).Milliseconds(), time.Now().UTC()
	if err := a.publish(ctx, res); err != nil {
		log.Warn().Err(err).Msg("could not report the result; handing the step back")
		_ = msg.Nak()
		return
	}
	ev := log.Info()
	if out.err != nil {
		ev = log.Warn().Str("error", res.Error)
	}
	ev.Int64("duration_ms", res.DurationMS).Msg("step finished")
	a.ack(log, msg)
}

// retryCheckDelay is how long a step whose check could not be done waits
// before it is delivered again.
const retryCheckDelay = 2 * time.Second

// refuse drops a step message that the store did not order: it is logged
// with the reason and terminated in the queue; nothing is published and
// nothing runs.
func (a *Agent) refuse(log zerolog.Logger, msg jetstream.Msg, reason string) {
	log.Warn().Str("reason", reason).Msg("step refused: the event store did not order it")
	_ = msg.Term()
}

// failUnusable reports an ordered step whose machine or credential cannot
// be used as failed, with the reason, so that its operation ends; nothing
// runs and no start is reported.
func (a *Agent) failUnusable(ctx context.Context, log zerolog.Logger, msg jetstream.Msg, d workqueue.Dispatch, bad *unusable) {
	log.Warn().Str("reason", bad.Error()).Msg("step failed before it ran: its machine or credential cannot be used")
	res := workqueue.Result{Cluster: d.Cluster, Operation: d.Operation, Attempt: d.Attempt, Token: d.Token, Step: d.Step,
		Agent: a.cfg.ID, Finished: true, ExitCode: -1, Error: fmt.Sprintf("step %s: %s", d.Step, bad.Error()),
		Time: time.Now().UTC()}
	if err := a.publish(ctx, res); err != nil {
		log.Warn().Err(err).Msg("could not report the result; handing the step back")
		_ = msg.NakWithDelay(retryCheckDelay)
		return
	}
	a.ack(log, msg)
}

func (a *Agent) ack(log zerolog.Logger, msg jetstream.Msg) {
	ackCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := msg.DoubleAck(ackCtx); err != nil {
		// The result is stored; a redelivery is reported again and the
		// coordinator drops the duplicate.
		log.Warn().Err(err).Msg("ack step")
	}
}

// claimed adds to log what an unreadable step message says it is: its
// cluster, operation and step (a string, or an old-format step's id), where
// it has them. They are unverified, for the log only.
func claimed(log zerolog.Logger, data []byte) zerolog.Logger {
	var c struct {
		Cluster   any `json:"cluster"`
		Operation any `json:"operation"`
		Step      any `json:"step"`
	}
	lc := log.With().Int("bytes", len(data))
	if len(data) > workqueue.MaxDispatchSize || json.Unmarshal(data, &c) != nil {
		return lc.Logger()
	}
	if s, ok := c.Step.(map[string]any); ok {
		c.Step = s["id"]
	}
	for _, f := range []struct {
		name string
		v    any
	}{{"cluster", c.Cluster}, {"operation", c.Operation}, {"step", c.Step}} {
		if s, ok := f.v.(string); ok {
			lc = lc.Str(f.name, s)
		}
	}
	return lc.Logger()
}

// publish stores a result, retrying while JetStream is briefly away.
func (a *Agent) publish(ctx context.Context, r workqueue.Result) error {
	var err error
	for i := range 5 {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = workqueue.PublishResult(pctx, a.cfg.JS, r)
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
		sleep(ctx, time.Duration(i+1)*200*time.Millisecond)
	}
	return err
}

// heartbeat tells JetStream the step is still being worked on.
func (a *Agent) heartbeat(ctx context.Context, msg jetstream.Msg) {
	t := time.NewTicker(a.cfg.AckWait / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = msg.InProgress()
		}
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

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
