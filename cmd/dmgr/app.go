package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dmgr/dmgr/agents"
	"github.com/dmgr/dmgr/agents/remote"
	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/httpapi"
	"github.com/dmgr/dmgr/internal/busauth"
	"github.com/dmgr/dmgr/internal/chserver"
	"github.com/dmgr/dmgr/internal/coordinator"
	"github.com/dmgr/dmgr/internal/embedded"
	"github.com/dmgr/dmgr/internal/leadership"
	"github.com/dmgr/dmgr/internal/pkgstore"
	"github.com/dmgr/dmgr/internal/secrets"
	"github.com/dmgr/dmgr/internal/service"
	"github.com/dmgr/dmgr/projections"
)

// Main is the dmgr process: it builds every part in Run and takes them
// down in Close, so that tests can run the real program in-process.
type Main struct {
	cfg    config
	log    zerolog.Logger
	stdout io.Writer

	natsSrv *embedded.NATS
	etcdSrv *embedded.Etcd
	chSrv   *chserver.Server
	nc      *nats.Conn
	agentNC *nats.Conn // dev: the in-process agent's own connection, as agent
	etcd    *clientv3.Client
	// coordEtcd is the coordinator's own etcd client: its sessions and
	// watches neither wait behind nor break the API's requests.
	coordEtcd *clientv3.Client
	stores    stores // etcd and ClickHouse logins (stores.go)
	http      *http.Server
	httpLn    net.Listener

	// Background work (coordinator, agent) runs under bgCtx until Close.
	bgCancel context.CancelFunc
	bgDone   chan struct{}
	bgErr    error

	failMu  sync.Mutex
	failed  chan struct{} // closed by fail
	failure error
	closing atomic.Bool                        // Close has begun: parts that stop now do not fail the process
	names   []string                           // the parts under supervision
	kills   map[string]context.CancelCauseFunc // by part name: ends the part's context (killPart)
	agent   *agents.Agent

	devUsers []busauth.User // dev: the NATS users and their seeds

	// URL is the base URL of the HTTP API once Run has returned.
	URL string
	// AdminToken is the bearer token of the API.
	AdminToken string
	// bootstrapPassword is the first super admin's password ("" makes none).
	bootstrapPassword string
	// Coordinator drives the clusters this server leads (server and dev).
	Coordinator *coordinator.Coordinator

	svc *service.Service // closed before the NATS connection: its operation index tails the stream
}

// NewMain returns a Main for cfg.
func NewMain(cfg config, log zerolog.Logger, stdout io.Writer) *Main {
	return &Main{cfg: cfg, log: log, stdout: stdout, failed: make(chan struct{})}
}

// Run starts everything and returns once the API serves.
func (m *Main) Run(ctx context.Context) error {
	c := m.cfg
	natsURL, etcdEndpoints, chAddr := c.natsURL, c.etcdEndpoints, c.clickhouseAddr
	var masterKey []byte
	if c.mode == "dev" {
		if err := os.MkdirAll(c.dataDir, 0o700); err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
		if err := m.startDevServers(ctx); err != nil {
			return err
		}
		natsURL, etcdEndpoints = m.natsSrv.URL(), []string{m.etcdSrv.Endpoint()}
		if chAddr == "" {
			chAddr = m.chSrv.Addr()
		}
		token, err := loadOrCreateToken(filepath.Join(c.dataDir, "admin-token"))
		if err != nil {
			return err
		}
		m.AdminToken = token
		if m.bootstrapPassword, err = loadOrCreateToken(filepath.Join(c.dataDir, "admin-password")); err != nil {
			return err
		}
		if masterKey, err = secrets.LoadOrCreateMasterKeyFile(filepath.Join(c.dataDir, "master-key")); err != nil {
			return err
		}
	} else {
		var err error
		if c.mode == "server" {
			if m.AdminToken, err = serverToken(c.adminTokenFile); err != nil {
				return err
			}
			if m.bootstrapPassword, err = bootstrapPassword(c.bootstrapPasswordFile); err != nil {
				return err
			}
		}
		if masterKey, err = serverMasterKey(c.masterKeyFile); err != nil {
			return err
		}
	}

	var err error
	if m.nc, err = m.connectBus(ctx, natsURL); err != nil {
		return err
	}
	js, err := jetstream.New(m.nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	if err := m.openStores(ctx, etcdEndpoints, chAddr); err != nil {
		return err
	}
	vault, pkgs, store, err := m.setupBus(ctx, js, masterKey)
	if err != nil {
		return err
	}
	bgCtx, bgCancel := context.WithCancel(context.WithoutCancel(ctx))
	m.bgCancel = bgCancel
	var background []part
	if c.mode == "agent" || (c.mode == "dev" && c.devAgent) {
		ab, err := m.openAgentBus(ctx, natsURL, js, masterKey)
		if err != nil {
			return err
		}
		if m.agent, err = m.newAgent(ctx, ab); err != nil {
			return err
		}
		background = append(background, part{"agent " + m.agent.ID(), m.agent.Work},
			part{"agent " + m.agent.ID() + " registration", m.agent.Register})
	}
	if c.mode == "agent" {
		m.startBackground(bgCtx, background)
		m.log.Info().Str("agent", m.agent.ID()).Str("pool", c.pool).Str("nats", redactURLs(natsURL)).Strs("etcd", etcdEndpoints).Msg("dmgr agent running")
		return nil
	}

	idem, err := httpapi.OpenIdempotency(ctx, js, c.replicas)
	if err != nil {
		return err
	}
	// The manifest must fit in one event on this bus.
	lim := pkgstore.DefaultLimits().ForPayload(m.nc.MaxPayload())
	lim.MaxBytes, lim.MaxEntries = c.maxPackage, c.maxPackageEntries
	passwords, err := secrets.OpenPasswords(ctx, js, masterKey, c.replicas)
	if err != nil {
		return err
	}
	var projRef *projections.Store // set below; group deletion asks it what a group owns
	svc := service.New(service.Config{Store: store, Vault: vault, Packages: pkgs, PackageLimits: lim, Log: m.log,
		ScanHostKey: remote.ScanHostKey, MaxInstancesPerCluster: c.limits.maxInstances, Passwords: passwords,
		OwnedBy: func(ctx context.Context, group string) (string, error) {
			if projRef == nil {
				return "", domain.Errorf(domain.Unavailable, "this server has no ClickHouse projections to find what group %s owns", group)
			}
			return projRef.OwnedBy(ctx, group)
		}})
	m.svc = svc
	// Users, groups and approvals: followed from the stream; the first
	// super admin and the default group made once.
	svc.StartDirectory()
	bctx, bcancel := context.WithTimeout(ctx, bootstrapTimeout)
	err = svc.Bootstrap(bctx, c.bootstrapAdmin, m.bootstrapPassword)
	bcancel()
	if err != nil {
		return err
	}
	// Decisions are exact only with the reservations of everything
	// committed before they existed: made once per store, before any
	// command is accepted (later starts read one mark).
	rctx, rcancel := context.WithTimeout(ctx, reserveExistingTimeout)
	n, err := svc.ReserveExisting(rctx)
	rcancel()
	if err != nil {
		return fmt.Errorf("reserve the existing machines and clusters (%d commits made): %w", n, err)
	}
	// The operation index reads the stream's history in the background
	// from now on, so that the first cancel or retry need not wait for it.
	if err := svc.StartOperationIndex(); err != nil {
		return err
	}
	// Credentials stored by a dmgr older than their binding to a machine
	// are bound once, in the background: it reads every machine's
	// events, which the start must not wait for. A failure is logged per
	// machine and is no reason not to serve; Close cancels it.
	go func() {
		bctx, bcancel := context.WithTimeout(bgCtx, 30*time.Second)
		defer bcancel()
		if n, err := svc.BindCredentials(bctx); err != nil && bgCtx.Err() == nil {
			m.log.Warn().Err(err).Int("machines", n).Msg("some machines' credentials are not bound to them")
		}
	}()
	coordID := c.coordinatorID
	if coordID == "" {
		host, _ := os.Hostname()
		coordID = host + "-" + uuid.NewString()[:8]
	}
	if m.coordEtcd, err = connectEtcd(ctx, m.stores.etcd); err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	m.Coordinator = coordinator.New(coordinator.Config{ID: coordID, Service: svc, JS: js, Etcd: m.coordEtcd,
		SessionTTL: c.sessionTTL, Log: m.log, DownGiveUpAfter: c.etcdGiveUp,
		GiveUpAfter: c.limits.advanceGiveUp, RetryMin: c.limits.advanceRetryBase, RetryMax: c.limits.advanceRetryMax})
	coord := m.Coordinator
	proj, runProjector, err := m.newProjections(js, store, chAddr)
	if err != nil {
		return err
	}
	projRef = proj
	handler := httpapi.Handler(httpapi.Config{
		Service: svc, Idempotency: idem, AdminToken: m.AdminToken, AdminUser: c.bootstrapAdmin, MetricsToken: c.metricsToken, Log: m.log, Projections: proj, MaxJSONBody: maxJSONBody,
		Ready: func(ctx context.Context) error { return m.ready(ctx, store) },
		Agents: func(ctx context.Context, after string, limit int) ([]agents.Info, string, error) {
			return agents.List(ctx, m.etcd, after, limit)
		},
	})

	m.httpLn, err = net.Listen("tcp", c.httpAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", c.httpAddr, err)
	}
	m.URL = "http://" + m.httpLn.Addr().String()
	m.http = newHTTPServer(c, handler, m.log)
	// Every long-running part, in one group: one that stops fails the
	// process (supervise.go).
	m.startBackground(bgCtx, append(background, part{"HTTP server", m.serveHTTP},
		part{"coordinator", coord.Run}, part{"projector", runProjector}))

	m.log.Info().Str("url", m.URL).Str("mode", c.mode).Str("nats", redactURLs(natsURL)).
		Strs("etcd", etcdEndpoints).Str("clickhouse", chAddr).Msg("dmgr serving")
	if c.mode == "dev" {
		tokenFile := filepath.Join(c.dataDir, "admin-token")
		fmt.Fprintf(m.stdout, "dmgr dev is serving %s\n  admin token: %s (send it as Authorization: Bearer <token>)\n  super admin %s, password in %s (log in with POST /api/v1/login)\n  try: curl -H \"Authorization: Bearer $(cat %s)\" %s/api/v1/machines\n",
			m.URL, tokenFile, c.bootstrapAdmin, filepath.Join(c.dataDir, "admin-password"), tokenFile, m.URL)
	}
	return nil
}

// newAgent builds the agent of `dmgr agent` (and the in-process one of
// `dmgr dev`).
func (m *Main) newAgent(ctx context.Context, ab agentBus) (*agents.Agent, error) {
	c := m.cfg
	etcd, err := m.agentEtcdClient(ctx)
	if err != nil {
		return nil, err
	}
	cacheDir := ""
	if c.mode == "dev" {
		cacheDir = filepath.Join(c.dataDir, "agent-cache")
	} else if c.dataDir != "" {
		cacheDir = c.dataDir
	}
	return agents.New(agents.Config{
		ID: c.agentID, Pool: c.pool, Version: dmgrVersion(), JS: ab.js, Etcd: etcd, Vault: ab.vault, Packages: ab.pkgs, Events: ab.events,
		Remote: remote.NewPool(remote.Options{MaxSessionsPerHost: c.sessionsPerHost, DialTimeout: c.sshDialTimeout,
			Log: m.log}),
		Log: m.log, Concurrency: c.concurrency, AckWait: c.ackWait, Retries: c.retries, RetryBackoff: c.retryBackoff,
		CacheDir: cacheDir, CacheMaxBytes: c.cacheMaxBytes, RegisterGiveUpAfter: c.etcdGiveUp,
	})
}

func (m *Main) startDevServers(ctx context.Context) error {
	c := m.cfg
	users, err := m.devBusUsers()
	if err != nil {
		return err
	}
	m.natsSrv, err = embedded.StartNATS(c.natsAddr, filepath.Join(c.dataDir, "nats"), embedded.NATSUsers(users))
	if err != nil {
		return err
	}
	return m.startDevStores(ctx)
}

// serveHTTP serves the API until ctx ends (the server is closed then) or
// Close shuts it down; any other end of serving is its failure.
func (m *Main) serveHTTP(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { _ = m.http.Close() })
	defer stop()
	err := m.http.Serve(m.httpLn)
	if errors.Is(err, http.ErrServerClosed) && (ctx.Err() != nil || m.closing.Load()) {
		return nil
	}
	return err
}

// ready checks that commands are accepted: NATS, the event stream and
// etcd answer. ClickHouse is not among them: while it is down (or still
// starting) the queries it serves answer 503 with Retry-After on their
// own, and the commands, the coordinator and the agents work on.
func (m *Main) ready(ctx context.Context, store *eventstore.Store) error {
	if !m.nc.IsConnected() {
		return errors.New("NATS is not connected")
	}
	if _, err := store.LastSeq(ctx); err != nil {
		return fmt.Errorf("event stream: %w", err)
	}
	if _, err := m.etcd.Get(ctx, leadership.ReadyProbeKey); err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	return nil
}

// Close lets in-flight requests finish, then closes the clients and the
// embedded servers (which flush JetStream and etcd to disk).
func (m *Main) Close() error {
	m.closing.Store(true)
	var errs []error
	if m.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), m.cfg.shutdownGrace)
		if err := m.http.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("http shutdown: %w", err))
		}
		cancel()
	}
	if m.bgCancel != nil {
		m.bgCancel()
	}
	if m.bgDone != nil {
		select {
		case <-m.bgDone:
			if m.bgErr != nil {
				errs = append(errs, m.bgErr)
			}
		case <-time.After(m.cfg.shutdownGrace + 5*time.Second):
			errs = append(errs, errors.New("coordinator or agent did not stop in time"))
		}
	}
	if m.coordEtcd != nil {
		// Closed already (the coordinator failed on it): context.Canceled.
		if err := m.coordEtcd.Close(); err != nil && !errors.Is(err, context.Canceled) {
			errs = append(errs, fmt.Errorf("coordinator etcd client: %w", err))
		}
	}
	if m.svc != nil {
		m.svc.Close()
	}
	if err := m.closeAgentBus(); err != nil {
		errs = append(errs, err)
	}
	if m.nc != nil {
		if err := m.nc.Drain(); err != nil {
			errs = append(errs, fmt.Errorf("nats drain: %w", err))
		}
		for i := 0; i < 100 && !m.nc.IsClosed(); i++ {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if err := m.closeStores(); err != nil {
		errs = append(errs, err)
	}
	if m.etcd != nil {
		if err := m.etcd.Close(); err != nil {
			errs = append(errs, fmt.Errorf("etcd client: %w", err))
		}
	}
	if m.etcdSrv != nil {
		m.etcdSrv.Close()
	}
	if m.natsSrv != nil {
		m.natsSrv.Shutdown()
	}
	if m.chSrv != nil {
		if err := m.chSrv.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("clickhouse: %w", err))
		}
	}
	m.log.Info().Msg("dmgr stopped")
	return errors.Join(errs...)
}

// loadOrCreateToken reads the admin token, creating it (mode 0600) on
// first start.
func loadOrCreateToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if t := strings.TrimSpace(string(b)); t != "" {
			return t, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("admin token: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	t := hex.EncodeToString(raw)
	if err := os.WriteFile(path, []byte(t+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write admin token: %w", err)
	}
	return t, nil
}

func serverToken(file string) (string, error) {
	if t := os.Getenv("DMGR_ADMIN_TOKEN"); t != "" {
		return t, nil
	}
	if file == "" {
		return "", errors.New("no admin token: set DMGR_ADMIN_TOKEN or --admin-token-file")
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if len(t) < 16 {
		return "", fmt.Errorf("admin token in %s is shorter than 16 characters", file)
	}
	return t, nil
}

// bootstrapTimeout bounds the start's wait for the directory of users and
// the making of the first super admin.
const bootstrapTimeout = 60 * time.Second

// bootstrapPassword is the first super admin's password for `dmgr
// server`: DMGR_BOOTSTRAP_ADMIN_PASSWORD, or the file given; "" makes no
// user (the admin token still acts as the bootstrap super admin).
func bootstrapPassword(file string) (string, error) {
	if p := os.Getenv("DMGR_BOOTSTRAP_ADMIN_PASSWORD"); p != "" {
		return p, nil
	}
	if file == "" {
		return "", nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("bootstrap admin password: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

func serverMasterKey(file string) ([]byte, error) {
	if k := os.Getenv("DMGR_MASTER_KEY"); k != "" {
		return secrets.LoadMasterKey(k)
	}
	if file == "" {
		return nil, errors.New("no master key: set DMGR_MASTER_KEY or --master-key-file (generate one with `head -c 32 /dev/urandom | base64`)")
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	return secrets.LoadMasterKey(strings.TrimSpace(string(b)))
}

// reserveExistingTimeout bounds the one-time reservation of a store
// written before reservations (service.ReserveExisting): it reads the
// machines' and clusters' history once.
const reserveExistingTimeout = 5 * time.Minute
