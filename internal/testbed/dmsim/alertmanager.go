package dmsim

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"
)

// AlertmanagerConfig is the command line of the simulated alertmanager, as
// tiup-style run scripts give it.
type AlertmanagerConfig struct {
	ConfigFile           string   // --config.file, default "alertmanager.yml"
	StoragePath          string   // --storage.path, default "data/"; the start marker goes here
	Retention            string   // --data.retention, default "120h"
	ListenAddr           string   // --web.listen-address, default ":9093"
	ExternalURL          string   // --web.external-url
	RoutePrefix          string   // --web.route-prefix, default the path of ExternalURL
	ClusterListenAddr    string   // --cluster.listen-address, default "0.0.0.0:9094"; "" turns clustering off
	ClusterAdvertiseAddr string   // --cluster.advertise-address
	ClusterPeers         []string // --cluster.peer, repeatable
	LogLevel             string   // --log.level, default "info"
	PrintVersion         bool     // --version
	Version              string   // reported version; empty means CurrentVersion()
}

// alertmanagerFlags are Alertmanager 0.2x's flags; the simulator acts on the
// ones AlertmanagerConfig holds and accepts the others.
var alertmanagerFlags = map[string]flagKind{
	"config.file": valueFlag, "storage.path": valueFlag, "data.retention": valueFlag,
	"data.maintenance-interval": valueFlag, "alerts.gc-interval": valueFlag, "web.config.file": valueFlag,
	"web.external-url": valueFlag, "web.route-prefix": valueFlag, "web.listen-address": valueFlag,
	"web.get-concurrency": valueFlag, "web.timeout": valueFlag, "cluster.listen-address": valueFlag,
	"cluster.advertise-address": valueFlag, "cluster.peer": listFlag, "cluster.peer-timeout": valueFlag,
	"cluster.gossip-interval": valueFlag, "cluster.pushpull-interval": valueFlag, "cluster.tcp-timeout": valueFlag,
	"cluster.probe-timeout": valueFlag, "cluster.probe-interval": valueFlag, "cluster.settle-timeout": valueFlag,
	"cluster.reconnect-interval": valueFlag, "cluster.reconnect-timeout": valueFlag, "cluster.tls-config": valueFlag,
	"cluster.allow-insecure-public-advertise-address-discovery": boolFlag, "cluster.label": valueFlag,
	"log.level": valueFlag, "log.format": valueFlag,
}

// ParseAlertmanagerFlags parses alertmanager's command line (see parseLongFlags).
func ParseAlertmanagerFlags(args []string) (AlertmanagerConfig, error) {
	f, err := parseLongFlags("alertmanager", args, alertmanagerFlags)
	if err != nil {
		return AlertmanagerConfig{}, err
	}
	c := AlertmanagerConfig{
		ConfigFile:           f.str("config.file", "alertmanager.yml"),
		StoragePath:          f.str("storage.path", "data/"),
		Retention:            f.str("data.retention", "120h"),
		ListenAddr:           f.str("web.listen-address", ":9093"),
		ExternalURL:          f.str("web.external-url", ""),
		RoutePrefix:          f.str("web.route-prefix", ""),
		ClusterListenAddr:    f.str("cluster.listen-address", "0.0.0.0:9094"),
		ClusterAdvertiseAddr: f.str("cluster.advertise-address", ""),
		ClusterPeers:         f["cluster.peer"],
		LogLevel:             f.str("log.level", "info"),
		PrintVersion:         f.on("version"),
	}
	if c.PrintVersion {
		return c, nil
	}
	return c, c.validate()
}

func (c AlertmanagerConfig) validate() error {
	if c.ConfigFile == "" {
		return fmt.Errorf("--config.file is empty")
	}
	if c.StoragePath == "" {
		return fmt.Errorf("--storage.path is empty")
	}
	if _, err := time.ParseDuration(c.Retention); err != nil {
		return fmt.Errorf("--data.retention %q: want a duration like 120h", c.Retention)
	}
	if err := checkListenAddr("--web.listen-address", c.ListenAddr); err != nil {
		return err
	}
	if _, err := routePrefixOf(c.RoutePrefix, c.ExternalURL); err != nil {
		return err
	}
	if c.ClusterListenAddr != "" {
		if err := checkListenAddr("--cluster.listen-address", c.ClusterListenAddr); err != nil {
			return err
		}
	}
	if c.ClusterAdvertiseAddr != "" {
		if err := checkListenAddr("--cluster.advertise-address", c.ClusterAdvertiseAddr); err != nil {
			return err
		}
	}
	for _, p := range c.ClusterPeers {
		if err := checkListenAddr("--cluster.peer", p); err != nil {
			return err
		}
	}
	return checkLogLevel(c.LogLevel)
}

type amRoute struct {
	Receiver string    `yaml:"receiver"`
	Routes   []amRoute `yaml:"routes"`
}

// amFile is the part of alertmanager.yml the simulator checks.
type amFile struct {
	Route     *amRoute `yaml:"route"`
	Receivers []struct {
		Name string `yaml:"name"`
	} `yaml:"receivers"`
}

// loadAlertmanagerConfig reads and checks alertmanager.yml as Alertmanager
// would refuse it: unreadable, not YAML, no route, a root route without a
// receiver, a receiver without a name or with a repeated one, a route naming
// an undefined receiver. It returns the text.
func loadAlertmanagerConfig(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("loading configuration file: %w", err)
	}
	fail := func(format string, args ...any) (string, error) {
		return "", fmt.Errorf("loading configuration file %s: %s", path, fmt.Sprintf(format, args...))
	}
	var f amFile
	if err := yaml.Unmarshal(b, &f); err != nil {
		return fail("%v", err)
	}
	if f.Route == nil {
		return fail("no route provided in config")
	}
	if f.Route.Receiver == "" {
		return fail("root route must specify a default receiver")
	}
	names := map[string]bool{}
	for _, r := range f.Receivers {
		if r.Name == "" {
			return fail("missing name in receiver")
		}
		if names[r.Name] {
			return fail("notification config name %q is not unique", r.Name)
		}
		names[r.Name] = true
	}
	var check func(r amRoute) error
	check = func(r amRoute) error {
		if r.Receiver != "" && !names[r.Receiver] {
			return fmt.Errorf("undefined receiver %q used in route", r.Receiver)
		}
		for _, sub := range r.Routes {
			if err := check(sub); err != nil {
				return err
			}
		}
		return nil
	}
	if err := check(*f.Route); err != nil {
		return fail("%v", err)
	}
	return string(b), nil
}

type alertmanager struct {
	cfg     AlertmanagerConfig
	version string
	self    string // cluster address announced to peers
	started time.Time

	mu     sync.Mutex
	config string
	alive  map[string]bool // --cluster.peer → it accepted a TCP connection on the last probe
}

// RunAlertmanager runs the alertmanager placeholder until ctx ends: it
// loads --config.file (it must exist and pass Alertmanager's checks), writes
// the start marker into --storage.path, listens on --web.listen-address and,
// unless it is "", on --cluster.listen-address (TCP only; connections are
// closed at once), probes each --cluster.peer over TCP every second and
// serves /-/healthy, /-/ready, /-/reload (SIGHUP also reloads) and
// /api/v2/status (version, configuration, and the cluster: this member and the
// peers that answered the last probe). It logs to stdout; Alertmanager has no
// log file.
func RunAlertmanager(ctx context.Context, cfg AlertmanagerConfig, stdout io.Writer) error {
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("alertmanager: %w", err)
	}
	logger := newLogger(stdout, cfg.LogLevel)
	a := &alertmanager{cfg: cfg, version: orDefault(cfg.Version, CurrentVersion()), started: time.Now(), alive: map[string]bool{}}
	text, err := loadAlertmanagerConfig(cfg.ConfigFile)
	if err != nil {
		logger.Error().Err(err).Msg("alertmanager failed to start")
		return fmt.Errorf("alertmanager: %w", err)
	}
	a.config = text
	if err := writeStartMarker(cfg.StoragePath, a.started); err != nil {
		return fmt.Errorf("alertmanager: %w", err)
	}
	lns, err := listenAll([]string{cfg.ListenAddr})
	if err != nil {
		return listenFailed(logger, "alertmanager", err)
	}
	var cluster net.Listener
	if cfg.ClusterListenAddr != "" {
		cl, err := listenAll([]string{cfg.ClusterListenAddr})
		if err != nil {
			lns[0].Close()
			return listenFailed(logger, "alertmanager", fmt.Errorf("cluster: %w", err))
		}
		cluster = cl[0]
		a.self = orDefault(cfg.ClusterAdvertiseAddr, advertiseFrom(cluster.Addr().String()))
	}
	prefix, _ := routePrefixOf(cfg.RoutePrefix, cfg.ExternalURL)
	logger.Info().Str("version", a.version).Str("listen_address", cfg.ListenAddr).
		Str("cluster_listen_address", cfg.ClusterListenAddr).Strs("cluster_peers", cfg.ClusterPeers).
		Str("config_file", cfg.ConfigFile).Int("config_bytes", len(text)).Str("storage_path", cfg.StoragePath).
		Int("pid", os.Getpid()).Msg("alertmanager started; listening")

	var g sync.WaitGroup
	if cluster != nil {
		g.Go(func() {
			for {
				c, err := cluster.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		})
		g.Go(func() { a.probePeers(ctx) })
	}
	reload := func() error {
		t, err := loadAlertmanagerConfig(cfg.ConfigFile)
		if err != nil {
			logger.Error().Err(err).Msg("error reloading config; keeping the previous one")
			return err
		}
		a.mu.Lock()
		a.config = t
		a.mu.Unlock()
		logger.Info().Int("config_bytes", len(t)).Msg("completed loading of configuration file")
		return nil
	}
	err = serveWithReload(ctx, lns, underPrefix(prefix, a.routes(reload)), func() { reload() })
	if cluster != nil {
		cluster.Close()
	}
	g.Wait()
	if err != nil {
		logger.Error().Err(err).Msg("alertmanager stopped on error")
		return fmt.Errorf("alertmanager: %w", err)
	}
	logger.Info().Int("pid", os.Getpid()).Msg("alertmanager stopped")
	return nil
}

func (a *alertmanager) probePeers(ctx context.Context) {
	d := net.Dialer{Timeout: 500 * time.Millisecond}
	for {
		alive := map[string]bool{}
		for _, p := range a.cfg.ClusterPeers {
			if p == a.self {
				continue
			}
			if c, err := d.DialContext(ctx, "tcp", p); err == nil {
				c.Close()
				alive[p] = true
			}
		}
		a.mu.Lock()
		a.alive = alive
		a.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// amStatus is GET /api/v2/status.
type amStatus struct {
	Cluster     amClusterStatus   `json:"cluster"`
	Config      map[string]string `json:"config"`
	Uptime      time.Time         `json:"uptime"`
	VersionInfo buildInfo         `json:"versionInfo"`
}

type amClusterStatus struct {
	Name   string   `json:"name,omitempty"`
	Status string   `json:"status"` // "ready", or "disabled" without a cluster listen address
	Peers  []amPeer `json:"peers"`
}

type amPeer struct {
	Name    string `json:"name"`
	Address string `json:"address"`
}

func (a *alertmanager) status() amStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := amStatus{Config: map[string]string{"original": a.config}, Uptime: a.started, VersionInfo: newBuildInfo(a.version),
		Cluster: amClusterStatus{Status: "disabled", Peers: []amPeer{}}}
	if a.self != "" {
		st.Cluster.Name, st.Cluster.Status = a.self, "ready"
		st.Cluster.Peers = append(st.Cluster.Peers, amPeer{Name: a.self, Address: a.self})
		for p := range a.alive {
			st.Cluster.Peers = append(st.Cluster.Peers, amPeer{Name: p, Address: p})
		}
		slices.SortFunc(st.Cluster.Peers, func(x, y amPeer) int { return strings.Compare(x.Address, y.Address) })
	}
	return st
}

func (a *alertmanager) routes(reload func() error) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /-/healthy", okText("OK"))
	mux.HandleFunc("GET /-/ready", okText("OK"))
	mux.HandleFunc("POST /-/reload", func(w http.ResponseWriter, r *http.Request) {
		if err := reload(); err != nil {
			http.Error(w, "failed to reload config: "+err.Error(), http.StatusInternalServerError)
		}
	})
	mux.HandleFunc("GET /api/v2/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, a.status())
	})
	return mux
}
