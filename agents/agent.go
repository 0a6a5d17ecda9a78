package agents

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dmgr/dmgr/agents/remote"
	"github.com/dmgr/dmgr/pkgstore"
	"github.com/dmgr/dmgr/secrets"
	"github.com/dmgr/dmgr/workqueue"
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
	Remote   *remote.Pool // SSH connections; the agent owns and closes it
	Log      zerolog.Logger

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
	// CacheDir keeps package files extracted once per agent (default a
	// temporary directory).
	CacheDir string
}

// Agent pulls steps from its pool's work queue and runs them over SSH.
// It keeps no state between steps: any agent can run any step.
type Agent struct {
	cfg   Config
	log   zerolog.Logger
	files *fileCache
}

// New returns an agent; Run starts it.
func New(cfg Config) (*Agent, error) {
	if cfg.JS == nil || cfg.Etcd == nil || cfg.Vault == nil || cfg.Packages == nil || cfg.Remote == nil {
		return nil, errors.New("agent: JetStream, etcd, vault, package store and SSH pool are required")
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
	if cfg.CacheDir == "" {
		dir, err := os.MkdirTemp("", "dmgr-agent-cache-")
		if err != nil {
			return nil, fmt.Errorf("agent: cache dir: %w", err)
		}
		cfg.CacheDir = dir
	}
	log := cfg.Log.With().Str("agent", cfg.ID).Str("pool", cfg.Pool).Logger()
	return &Agent{cfg: cfg, log: log, files: newFileCache(cfg.CacheDir, cfg.Packages)}, nil
}

// ID is the agent's id, as it appears in step results and events.
func (a *Agent) ID() string { return a.cfg.ID }

// SSHStats reports the agent's SSH connections per host:port.
func (a *Agent) SSHStats() map[string]remote.HostStats { return a.cfg.Remote.Stats() }

// Run registers the agent in etcd and runs steps until ctx ends. Steps
// running when ctx ends are cancelled and handed back to the queue.
func (a *Agent) Run(ctx context.Context) error {
	defer a.cfg.Remote.Close()
	host, _ := os.Hostname()
	lost, revoke, err := register(ctx, a.cfg.Etcd, Info{ID: a.cfg.ID, Pool: a.cfg.Pool, Hostname: host,
		PID: os.Getpid(), Version: a.cfg.Version, StartedAt: time.Now().UTC()}, a.cfg.LeaseTTL)
	if err != nil {
		return err
	}
	defer revoke()
	cons, err := a.cfg.JS.CreateOrUpdateConsumer(ctx, workqueue.StepsStream, workqueue.AgentConsumerConfig(a.cfg.Pool, a.cfg.AckWait))
	if err != nil {
		return fmt.Errorf("agent %s: consumer on %s: %w", a.cfg.ID, workqueue.StepsStream, err)
	}
	a.log.Info().Int("concurrency", a.cfg.Concurrency).Dur("ack_wait", a.cfg.AckWait).Msg("agent started")

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-lost:
			// Without its lease the agent shows offline; it keeps working
			// (the work queue, not etcd, hands out steps) and says so.
			if runCtx.Err() == nil {
				a.log.Warn().Msg("etcd lease lost: the agent shows offline until it restarts")
			}
		case <-runCtx.Done():
		}
	}()
	var wg sync.WaitGroup
	for range a.cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.worker(runCtx, cons)
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

// handle runs one delivered step: report started, run, report the result,
// and ack only once the result is stored.
func (a *Agent) handle(ctx context.Context, msg jetstream.Msg) {
	var d workqueue.Dispatch
	if err := workqueue.Decode(msg, &d); err != nil {
		a.log.Error().Err(err).Msg("undecodable step dropped")
		_ = msg.Term()
		return
	}
	log := a.log.With().Str("cluster", d.Cluster).Str("operation", d.Operation).Str("step", d.Step.ID).
		Str("host", d.Step.Host).Int("attempt", d.Attempt).Logger()
	if md, err := msg.Metadata(); err == nil && md.NumDelivered > 1 {
		log.Info().Uint64("delivery", md.NumDelivered).Msg("step redelivered")
	}

	if stale, leader := a.staleDispatch(ctx, d); stale {
		log.Info().Int64("token", d.Token).Int64("leader_token", leader).Msg("step of an old leader dropped")
		_ = msg.Term()
		return
	}

	hbCtx, stopHeartbeat := context.WithCancel(ctx)
	defer stopHeartbeat()
	go a.heartbeat(hbCtx, msg)

	base := workqueue.Result{Cluster: d.Cluster, Operation: d.Operation, Attempt: d.Attempt, Token: d.Token,
		Step: d.Step.ID, Host: d.Step.Host, Agent: a.cfg.ID}
	started := base
	started.Time = time.Now().UTC()
	if err := a.publish(ctx, started); err != nil {
		log.Warn().Err(err).Msg("could not report the start; handing the step back")
		_ = msg.Nak()
		return
	}
	log.Info().Str("kind", d.Step.Kind).Msg("step started")
	begin := time.Now()
	out := a.execute(ctx, log, d)
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
	ackCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := msg.DoubleAck(ackCtx); err != nil {
		// The result is stored; a redelivery is reported again and the
		// coordinator drops the duplicate.
		log.Warn().Err(err).Msg("ack step")
	}
}

// staleDispatch reports whether the step was dispatched by a leader older
// than the cluster's current one (whose election key was created later).
// Without a current leader, or when etcd cannot be asked, the step runs:
// steps are idempotent, and the leader that takes over ignores results of
// dispatches that are not its own.
func (a *Agent) staleDispatch(ctx context.Context, d workqueue.Dispatch) (bool, int64) {
	gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := a.cfg.Etcd.Get(gctx, workqueue.LeaderKeyPrefix(d.Cluster), clientv3.WithFirstCreate()...)
	if err != nil || len(resp.Kvs) == 0 {
		return false, 0
	}
	leader := resp.Kvs[0].CreateRevision
	return d.Token < leader, leader
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
