package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/agents"
	"github.com/dmgr/dmgr/internal/busauth"
)

// config is what `dmgr dev` and `dmgr server` run with.
type config struct {
	mode string // "dev" or "server"

	dataDir  string
	httpAddr string

	// dev: where the embedded servers listen.
	natsAddr       string
	etcdClientAddr string
	etcdPeerAddr   string

	// server: the external services; dev may point at an existing ClickHouse.
	natsURL        string
	etcdEndpoints  []string
	clickhouseAddr string
	bus            busConfig // server and agent: credentials and TLS of the NATS connection

	// agent (and the agent that dev runs in-process)
	pool     string
	agentID  string
	devAgent bool // dev: run one agent in-process

	// server and dev: the coordinator
	coordinatorID   string
	sessionTTL      time.Duration
	etcdGiveUp      time.Duration // how long the coordinator or the agent's registration may go without etcd
	concurrency     int
	ackWait         time.Duration
	retries         int
	retryBackoff    time.Duration
	sessionsPerHost int
	sshDialTimeout  time.Duration
	cacheMaxBytes   int64 // agent: bound of the package cache

	stores storeConfig // etcd and ClickHouse logins (stores.go)

	adminTokenFile string
	// bootstrapAdmin is the first super admin's name; the admin token
	// acts as that user.
	bootstrapAdmin        string
	bootstrapPasswordFile string
	masterKeyFile         string
	replicas              int
	maxPackage            int64
	shutdownGrace         time.Duration
	logLevel              zerolog.Level

	// metricsToken, when set, is the bearer token GET /metrics needs
	// (--metrics-token, DMGR_METRICS_TOKEN or --metrics-token-file).
	metricsToken string

	// maxPackageEntries bounds a package's entries (pkgstore.Limits.MaxEntries).
	maxPackageEntries int

	http   httpConfig   // server and dev: the HTTP server's bounds (httpserver.go)
	limits limitsConfig // server and dev: size limits and the coordinator's retries
}

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

func parseConfig(mode string, args []string, stderr io.Writer) (config, error) {
	c := config{mode: mode, shutdownGrace: 15 * time.Second}
	fs := flag.NewFlagSet("dmgr "+mode, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var etcd, level, metricsTokenFile string
	if mode != "agent" {
		fs.StringVar(&c.httpAddr, "http-addr", envOr("DMGR_HTTP_ADDR", "127.0.0.1:7700"), "address of the HTTP API (env DMGR_HTTP_ADDR)")
		fs.StringVar(&c.clickhouseAddr, "clickhouse-addr", envOr("DMGR_CLICKHOUSE_ADDR", ""), "ClickHouse native-protocol address host:port (env DMGR_CLICKHOUSE_ADDR)"+
			map[bool]string{true: "; empty: start a local clickhouse-server in the data dir", false: ""}[mode == "dev"])
		fs.Int64Var(&c.maxPackage, "max-package-bytes", 1<<30, "largest package upload accepted, in bytes")
		fs.IntVar(&c.maxPackageEntries, "max-package-entries", 10000, "most entries (files, directories, links) a package may hold; a package's manifest must also fit in one bus message")
		fs.DurationVar(&c.shutdownGrace, "shutdown-grace", 15*time.Second, "how long in-flight requests may take to finish on SIGTERM")
		fs.StringVar(&c.metricsToken, "metrics-token", envOr("DMGR_METRICS_TOKEN", ""), "bearer token GET /metrics requires (env DMGR_METRICS_TOKEN; prefer the env or --metrics-token-file, a flag shows in ps); empty with no --metrics-token-file: /metrics is open")
		fs.StringVar(&metricsTokenFile, "metrics-token-file", envOr("DMGR_METRICS_TOKEN_FILE", ""), "file holding the bearer token GET /metrics requires (env DMGR_METRICS_TOKEN_FILE)")
		addHTTPFlags(fs, &c.http)
		addLimitsFlags(fs, &c.limits)
	}
	fs.IntVar(&c.replicas, "replicas", 1, "replicas of the JetStream streams and buckets (3 in production)")
	fs.StringVar(&level, "log-level", envOr("DMGR_LOG_LEVEL", "info"), "log level: debug, info, warn, error (env DMGR_LOG_LEVEL)")
	if mode == "agent" || mode == "dev" {
		fs.StringVar(&c.pool, "pool", envOr("DMGR_AGENT_POOL", "default"), "agent pool whose steps this agent runs (env DMGR_AGENT_POOL)")
		fs.StringVar(&c.agentID, "agent-id", envOr("DMGR_AGENT_ID", ""), "agent id; default <hostname>-<random> (env DMGR_AGENT_ID)")
		fs.IntVar(&c.concurrency, "concurrency", 16, "steps the agent runs at once")
		fs.IntVar(&c.retries, "retries", 3, "tries again of a step's remote action after a connection failure")
		fs.DurationVar(&c.retryBackoff, "retry-backoff", time.Second, "wait before the first retry, doubled each time")
		fs.IntVar(&c.sessionsPerHost, "max-sessions-per-host", 8, "SSH sessions the agent opens at once on one host")
		fs.DurationVar(&c.sshDialTimeout, "ssh-dial-timeout", 10*time.Second, "timeout of an SSH connection and handshake")
		fs.Int64Var(&c.cacheMaxBytes, "cache-max-bytes", agents.DefaultCacheMaxBytes, "bound of the agent's package cache, in bytes; the least recently used entries not in use are removed past it")
	}
	if mode != "agent" {
		fs.StringVar(&c.coordinatorID, "coordinator-id", envOr("DMGR_COORDINATOR_ID", ""), "this server's coordinator id, unique among the servers; default <hostname>-<random> (env DMGR_COORDINATOR_ID)")
		fs.DurationVar(&c.sessionTTL, "session-ttl", 5*time.Second, "etcd lease behind cluster and projector leadership: a dead server's clusters and projector move to another after about this long")
	}
	fs.DurationVar(&c.etcdGiveUp, "etcd-give-up-after", time.Minute, map[string]string{
		"agent":  "how long the agent may fail to register in etcd (at start, or again after its lease was lost) before it exits non-zero",
		"server": "how long the coordinator may go without an etcd session (or without marking the clusters commands go to) before the server exits non-zero; at least 3 session TTLs",
		"dev":    "how long the coordinator, or the in-process agent's registration, may go without etcd before dev exits non-zero; the coordinator's bound is at least 3 session TTLs",
	}[mode])
	fs.DurationVar(&c.ackWait, "ack-wait", 30*time.Second, "how long a running step may go without an in-progress ack before another agent gets it")
	if mode == "agent" {
		fs.StringVar(&c.natsURL, "nats-url", envOr("DMGR_NATS_URL", "nats://127.0.0.1:4222"), "NATS server URL(s), comma-separated (env DMGR_NATS_URL)")
		fs.StringVar(&etcd, "etcd-endpoints", envOr("DMGR_ETCD_ENDPOINTS", "http://127.0.0.1:2379"), "etcd endpoints, comma-separated (env DMGR_ETCD_ENDPOINTS)")
		fs.StringVar(&c.masterKeyFile, "master-key-file", envOr("DMGR_MASTER_KEY_FILE", ""), "file holding the base64 AES-256 master key that decrypts machine credentials; or set DMGR_MASTER_KEY")
		fs.StringVar(&c.dataDir, "cache-dir", envOr("DMGR_AGENT_CACHE_DIR", ""), "the agent's package cache: each package is read from the bus once and each of its files taken out once, checked against its SHA-256 on every use; must be the agent user's own, made 0700 (env DMGR_AGENT_CACHE_DIR; default "+agents.DefaultCacheDir()+")")
		addBusFlags(fs, &c.bus, busauth.Agent)
	} else if mode == "dev" {
		fs.BoolVar(&c.devAgent, "agent", true, "run one agent in-process (false: steps wait for agents started with `dmgr agent`)")
		fs.StringVar(&c.dataDir, "data-dir", envOr("DMGR_DATA_DIR", "./.dmgr"), "directory for JetStream, etcd, ClickHouse, the admin token and the master key (env DMGR_DATA_DIR)")
		fs.StringVar(&c.natsAddr, "nats-addr", envOr("DMGR_NATS_ADDR", "127.0.0.1:4222"), "listen address of the embedded NATS server, a loopback address; port 0 picks one (env DMGR_NATS_ADDR)")
		fs.StringVar(&c.etcdClientAddr, "etcd-client-addr", envOr("DMGR_ETCD_CLIENT_ADDR", "127.0.0.1:2379"), "client address of the embedded etcd; port 0 picks one (env DMGR_ETCD_CLIENT_ADDR)")
		fs.StringVar(&c.etcdPeerAddr, "etcd-peer-addr", envOr("DMGR_ETCD_PEER_ADDR", "127.0.0.1:2380"), "peer address of the embedded etcd; port 0 picks one (env DMGR_ETCD_PEER_ADDR)")
	} else {
		fs.StringVar(&c.natsURL, "nats-url", envOr("DMGR_NATS_URL", "nats://127.0.0.1:4222"), "NATS server URL(s), comma-separated (env DMGR_NATS_URL)")
		fs.StringVar(&etcd, "etcd-endpoints", envOr("DMGR_ETCD_ENDPOINTS", "http://127.0.0.1:2379"), "etcd endpoints, comma-separated (env DMGR_ETCD_ENDPOINTS)")
		fs.StringVar(&c.adminTokenFile, "admin-token-file", envOr("DMGR_ADMIN_TOKEN_FILE", ""), "file holding the admin bearer token; or set DMGR_ADMIN_TOKEN")
		fs.StringVar(&c.bootstrapAdmin, "bootstrap-admin", envOr("DMGR_BOOTSTRAP_ADMIN", "admin"), "name of the first super admin, made at first start when its password is given; the admin token acts as this user (env DMGR_BOOTSTRAP_ADMIN)")
		fs.StringVar(&c.bootstrapPasswordFile, "bootstrap-admin-password-file", envOr("DMGR_BOOTSTRAP_ADMIN_PASSWORD_FILE", ""), "file holding the first super admin's password (used once, at first start); or set DMGR_BOOTSTRAP_ADMIN_PASSWORD")
		fs.StringVar(&c.masterKeyFile, "master-key-file", envOr("DMGR_MASTER_KEY_FILE", ""), "file holding the base64 AES-256 master key for credentials; or set DMGR_MASTER_KEY")
		addBusFlags(fs, &c.bus, busauth.Server)
	}
	c.stores.register(fs, mode)
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.bootstrapAdmin == "" {
		c.bootstrapAdmin = "admin"
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("dmgr %s: unexpected argument %q", mode, fs.Arg(0))
	}
	lv, err := zerolog.ParseLevel(level)
	if err != nil {
		return c, fmt.Errorf("--log-level %q: %w", level, err)
	}
	c.logLevel = lv
	if etcd != "" {
		for _, e := range strings.Split(etcd, ",") {
			if e = strings.TrimSpace(e); e != "" {
				c.etcdEndpoints = append(c.etcdEndpoints, e)
			}
		}
	}
	if err := c.loadMetricsToken(metricsTokenFile); err != nil {
		return c, err
	}
	if mode == "server" && c.clickhouseAddr == "" {
		return c, fmt.Errorf("dmgr server: --clickhouse-addr (or DMGR_CLICKHOUSE_ADDR) is required")
	}
	if err := c.stores.validate(c); err != nil {
		return c, err
	}
	if mode != "server" && c.cacheMaxBytes < 1 {
		return c, fmt.Errorf("--cache-max-bytes must be at least 1")
	}
	if mode != "server" && c.concurrency < 1 {
		return c, fmt.Errorf("--concurrency must be at least 1")
	}
	if mode != "agent" && c.sessionTTL < 2*time.Second {
		return c, fmt.Errorf("--session-ttl must be at least 2s")
	}
	if c.etcdGiveUp <= 0 {
		return c, fmt.Errorf("--etcd-give-up-after must be positive")
	}
	if c.ackWait < 3*time.Second {
		return c, fmt.Errorf("--ack-wait must be at least 3s")
	}
	if c.replicas < 1 {
		return c, fmt.Errorf("--replicas must be at least 1")
	}
	if err := c.checkBus(); err != nil {
		return c, err
	}
	if mode != "agent" {
		if err := c.http.validate(); err != nil {
			return c, err
		}
		if err := c.limits.validate(); err != nil {
			return c, err
		}
	}
	return c, nil
}

// minMetricsToken is the shortest metrics token accepted.
const minMetricsToken = 16

// loadMetricsToken reads the metrics token from file when one is named and
// checks the token: one source only, at least 16 characters, no white
// space.
func (c *config) loadMetricsToken(file string) error {
	if file != "" {
		if c.metricsToken != "" {
			return fmt.Errorf("give the metrics token once: --metrics-token (or DMGR_METRICS_TOKEN) or --metrics-token-file, not both")
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("--metrics-token-file: %w", err)
		}
		if c.metricsToken = strings.TrimSpace(string(b)); c.metricsToken == "" {
			return fmt.Errorf("--metrics-token-file %s is empty", file)
		}
	}
	if c.metricsToken != "" && len(c.metricsToken) < minMetricsToken {
		return fmt.Errorf("the metrics token is shorter than %d characters", minMetricsToken)
	}
	if strings.ContainsAny(c.metricsToken, " \t\r\n") {
		return fmt.Errorf("the metrics token contains white space")
	}
	return nil
}
