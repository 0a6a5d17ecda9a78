package dmsim

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"
)

// PrometheusConfig is the command line of the simulated prometheus, as
// tiup-style run scripts give it.
type PrometheusConfig struct {
	ConfigFile      string // --config.file, default "prometheus.yml"
	ListenAddr      string // --web.listen-address, default "0.0.0.0:9090"
	ExternalURL     string // --web.external-url
	RoutePrefix     string // --web.route-prefix, default the path of ExternalURL
	EnableLifecycle bool   // --web.enable-lifecycle: POST /-/reload
	StoragePath     string // --storage.tsdb.path, default "data/"; the start marker goes here
	Retention       string // --storage.tsdb.retention(.time), default "15d"
	LogLevel        string // --log.level, default "info"
	PrintVersion    bool   // --version
	Version         string // reported version; empty means CurrentVersion()
}

// prometheusFlags are Prometheus 2.x's flags; the simulator acts on the ones
// PrometheusConfig holds and accepts the others.
var prometheusFlags = map[string]flagKind{
	"config.file": valueFlag, "web.listen-address": valueFlag, "web.config.file": valueFlag,
	"web.read-timeout": valueFlag, "web.max-connections": valueFlag, "web.external-url": valueFlag,
	"web.route-prefix": valueFlag, "web.user-assets": valueFlag, "web.enable-lifecycle": boolFlag,
	"web.enable-admin-api": boolFlag, "web.enable-remote-write-receiver": boolFlag,
	"web.console.templates": valueFlag, "web.console.libraries": valueFlag, "web.page-title": valueFlag,
	"web.cors.origin": valueFlag, "storage.tsdb.path": valueFlag, "storage.tsdb.retention": valueFlag,
	"storage.tsdb.retention.time": valueFlag, "storage.tsdb.retention.size": valueFlag,
	"storage.tsdb.no-lockfile": boolFlag, "storage.tsdb.allow-overlapping-blocks": boolFlag,
	"storage.tsdb.wal-compression": boolFlag, "storage.tsdb.min-block-duration": valueFlag,
	"storage.tsdb.max-block-duration": valueFlag, "storage.remote.flush-deadline": valueFlag,
	"storage.remote.read-sample-limit": valueFlag, "storage.remote.read-concurrent-limit": valueFlag,
	"storage.remote.read-max-bytes-in-frame": valueFlag, "rules.alert.for-outage-tolerance": valueFlag,
	"rules.alert.for-grace-period": valueFlag, "rules.alert.resend-delay": valueFlag,
	"alertmanager.notification-queue-capacity": valueFlag, "alertmanager.timeout": valueFlag,
	"query.lookback-delta": valueFlag, "query.timeout": valueFlag, "query.max-concurrency": valueFlag,
	"query.max-samples": valueFlag, "enable-feature": listFlag, "log.level": valueFlag, "log.format": valueFlag,
}

// ParsePrometheusFlags parses prometheus' command line (see parseLongFlags).
func ParsePrometheusFlags(args []string) (PrometheusConfig, error) {
	f, err := parseLongFlags("prometheus", args, prometheusFlags)
	if err != nil {
		return PrometheusConfig{}, err
	}
	c := PrometheusConfig{
		ConfigFile:      f.str("config.file", "prometheus.yml"),
		ListenAddr:      f.str("web.listen-address", "0.0.0.0:9090"),
		ExternalURL:     f.str("web.external-url", ""),
		RoutePrefix:     f.str("web.route-prefix", ""),
		EnableLifecycle: f.on("web.enable-lifecycle"),
		StoragePath:     f.str("storage.tsdb.path", "data/"),
		Retention:       f.str("storage.tsdb.retention.time", f.str("storage.tsdb.retention", "15d")),
		LogLevel:        f.str("log.level", "info"),
		PrintVersion:    f.on("version"),
	}
	if c.PrintVersion {
		return c, nil
	}
	return c, c.validate()
}

func (c PrometheusConfig) validate() error {
	if c.ConfigFile == "" {
		return fmt.Errorf("--config.file is empty")
	}
	if err := checkListenAddr("--web.listen-address", c.ListenAddr); err != nil {
		return err
	}
	if _, err := routePrefixOf(c.RoutePrefix, c.ExternalURL); err != nil {
		return err
	}
	if c.StoragePath == "" {
		return fmt.Errorf("--storage.tsdb.path is empty")
	}
	if err := checkPromDuration(c.Retention); err != nil {
		return fmt.Errorf("--storage.tsdb.retention: %w", err)
	}
	return checkLogLevel(c.LogLevel)
}

// promFile is the part of prometheus.yml the simulator reads.
type promFile struct {
	Global struct {
		ScrapeInterval     string            `yaml:"scrape_interval"`
		ScrapeTimeout      string            `yaml:"scrape_timeout"`
		EvaluationInterval string            `yaml:"evaluation_interval"`
		ExternalLabels     map[string]string `yaml:"external_labels"`
	} `yaml:"global"`
	RuleFiles []string `yaml:"rule_files"`
	Alerting  struct {
		Alertmanagers []struct {
			Scheme        string             `yaml:"scheme"`
			PathPrefix    string             `yaml:"path_prefix"`
			StaticConfigs []promStaticConfig `yaml:"static_configs"`
		} `yaml:"alertmanagers"`
	} `yaml:"alerting"`
	ScrapeConfigs []struct {
		JobName        string             `yaml:"job_name"`
		ScrapeInterval string             `yaml:"scrape_interval"`
		ScrapeTimeout  string             `yaml:"scrape_timeout"`
		MetricsPath    string             `yaml:"metrics_path"`
		Scheme         string             `yaml:"scheme"`
		StaticConfigs  []promStaticConfig `yaml:"static_configs"`
	} `yaml:"scrape_configs"`
}

type promStaticConfig struct {
	Targets []string          `yaml:"targets"`
	Labels  map[string]string `yaml:"labels"`
}

// promRuleFile is a Prometheus rule file.
type promRuleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert  string `yaml:"alert"`
			Record string `yaml:"record"`
			Expr   string `yaml:"expr"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// PromTarget is one entry of GET /api/v1/targets' activeTargets.
type PromTarget struct {
	DiscoveredLabels   map[string]string `json:"discoveredLabels"`
	Labels             map[string]string `json:"labels"`
	ScrapePool         string            `json:"scrapePool"`
	ScrapeURL          string            `json:"scrapeUrl"`
	GlobalURL          string            `json:"globalUrl"`
	LastError          string            `json:"lastError"`
	LastScrape         time.Time         `json:"lastScrape"`
	LastScrapeDuration float64           `json:"lastScrapeDuration"`
	Health             string            `json:"health"` // always "unknown": the simulator scrapes nothing
	ScrapeInterval     string            `json:"scrapeInterval"`
	ScrapeTimeout      string            `json:"scrapeTimeout"`
}

// promLoaded is a loaded configuration.
type promLoaded struct {
	text          string
	targets       []PromTarget
	alertmanagers []string // alert push URLs
	rules         int      // rules in the rule files
	ruleFiles     int
}

// loadPromConfig reads and checks prometheus.yml the way Prometheus would
// refuse it: unreadable, not YAML, a scrape config without job_name or with
// a repeated one, a target with a scheme or path, a bad duration, a rule file
// that does not parse. Rule file globs are relative to the config file.
func loadPromConfig(path string) (promLoaded, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return promLoaded{}, fmt.Errorf("error loading config from %q: %w", path, err)
	}
	fail := func(format string, args ...any) (promLoaded, error) {
		return promLoaded{}, fmt.Errorf("error loading config from %q: %s", path, fmt.Sprintf(format, args...))
	}
	var f promFile
	if err := yaml.Unmarshal(b, &f); err != nil {
		return fail("parsing YAML: %v", err)
	}
	l := promLoaded{text: string(b), targets: []PromTarget{}, alertmanagers: []string{}}
	interval, timeout := orDefault(f.Global.ScrapeInterval, "1m"), orDefault(f.Global.ScrapeTimeout, "10s")
	for _, d := range []string{interval, timeout, f.Global.EvaluationInterval} {
		if err := checkPromDuration(d); err != nil {
			return fail("global: %v", err)
		}
	}
	jobs := map[string]bool{}
	for i, sc := range f.ScrapeConfigs {
		if sc.JobName == "" {
			return fail("scrape_configs[%d]: job_name is empty", i)
		}
		if jobs[sc.JobName] {
			return fail("found multiple scrape configs with job name %q", sc.JobName)
		}
		jobs[sc.JobName] = true
		scheme, mpath := orDefault(sc.Scheme, "http"), orDefault(sc.MetricsPath, "/metrics")
		iv, to := orDefault(sc.ScrapeInterval, interval), orDefault(sc.ScrapeTimeout, timeout)
		for _, d := range []string{iv, to} {
			if err := checkPromDuration(d); err != nil {
				return fail("job %q: %v", sc.JobName, err)
			}
		}
		for _, st := range sc.StaticConfigs {
			for _, t := range st.Targets {
				if t == "" || strings.Contains(t, "/") {
					return fail("job %q: target %q is not a host:port (no scheme or path)", sc.JobName, t)
				}
				disc := map[string]string{"__address__": t, "__metrics_path__": mpath, "__scheme__": scheme, "job": sc.JobName}
				labels := map[string]string{"instance": t, "job": sc.JobName}
				for k, v := range st.Labels {
					disc[k], labels[k] = v, v
				}
				u := scheme + "://" + t + mpath
				l.targets = append(l.targets, PromTarget{DiscoveredLabels: disc, Labels: labels, ScrapePool: sc.JobName,
					ScrapeURL: u, GlobalURL: u, Health: "unknown", ScrapeInterval: iv, ScrapeTimeout: to})
			}
		}
	}
	for _, am := range f.Alerting.Alertmanagers {
		for _, st := range am.StaticConfigs {
			for _, t := range st.Targets {
				if t == "" || strings.Contains(t, "/") {
					return fail("alerting: alertmanager target %q is not a host:port", t)
				}
				l.alertmanagers = append(l.alertmanagers, orDefault(am.Scheme, "http")+"://"+t+strings.TrimSuffix(am.PathPrefix, "/")+"/api/v2/alerts")
			}
		}
	}
	for _, pat := range f.RuleFiles {
		if !filepath.IsAbs(pat) {
			pat = filepath.Join(filepath.Dir(path), pat)
		}
		files, err := filepath.Glob(pat)
		if err != nil {
			return fail("rule_files: %q: %v", pat, err)
		}
		for _, rf := range files {
			n, err := loadPromRules(rf)
			if err != nil {
				return fail("%v", err)
			}
			l.rules += n
			l.ruleFiles++
		}
	}
	return l, nil
}

func loadPromRules(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("rule file: %w", err)
	}
	var rf promRuleFile
	if err := yaml.Unmarshal(b, &rf); err != nil {
		return 0, fmt.Errorf("rule file %s: %v", path, err)
	}
	n := 0
	for _, g := range rf.Groups {
		if g.Name == "" {
			return 0, fmt.Errorf("rule file %s: a group has no name", path)
		}
		for _, r := range g.Rules {
			if (r.Alert == "") == (r.Record == "") || r.Expr == "" {
				return 0, fmt.Errorf("rule file %s: group %q: every rule needs expr and one of alert or record", path, g.Name)
			}
			n++
		}
	}
	return n, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

type prometheus struct {
	cfg     PrometheusConfig
	version string
	prefix  string
	mu      sync.Mutex
	loaded  promLoaded
}

// RunPrometheus runs the prometheus placeholder until ctx ends: it loads
// --config.file (it must exist and parse), writes the start marker into
// --storage.tsdb.path and serves /-/healthy, /-/ready, /-/reload (with
// --web.enable-lifecycle; SIGHUP also reloads), /api/v1/status/buildinfo,
// /api/v1/status/config, /api/v1/targets (every static target of the scrape
// config, health "unknown") and /api/v1/alertmanagers. It logs to stdout;
// Prometheus has no log file.
func RunPrometheus(ctx context.Context, cfg PrometheusConfig, stdout io.Writer) error {
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("prometheus: %w", err)
	}
	logger := newLogger(stdout, cfg.LogLevel)
	p := &prometheus{cfg: cfg, version: orDefault(cfg.Version, CurrentVersion())}
	loaded, err := loadPromConfig(cfg.ConfigFile)
	if err != nil {
		logger.Error().Err(err).Msg("prometheus failed to start")
		return fmt.Errorf("prometheus: %w", err)
	}
	p.loaded = loaded
	if err := writeStartMarker(cfg.StoragePath, time.Now()); err != nil {
		return fmt.Errorf("prometheus: %w", err)
	}
	p.prefix, _ = routePrefixOf(cfg.RoutePrefix, cfg.ExternalURL)
	lns, err := listenAll([]string{cfg.ListenAddr})
	if err != nil {
		return listenFailed(logger, "prometheus", err)
	}
	logger.Info().Str("version", p.version).Str("listen_address", cfg.ListenAddr).Str("config_file", cfg.ConfigFile).
		Int("config_bytes", len(loaded.text)).Int("targets", len(loaded.targets)).Int("rule_files", loaded.ruleFiles).
		Int("rules", loaded.rules).Str("storage_path", cfg.StoragePath).Str("retention", cfg.Retention).
		Str("external_url", cfg.ExternalURL).Int("pid", os.Getpid()).Msg("prometheus started; server is ready to receive web requests")

	reload := func() error {
		l, err := loadPromConfig(cfg.ConfigFile)
		if err != nil {
			logger.Error().Err(err).Msg("error reloading config; keeping the previous one")
			return err
		}
		p.mu.Lock()
		p.loaded = l
		p.mu.Unlock()
		logger.Info().Int("config_bytes", len(l.text)).Int("targets", len(l.targets)).Msg("completed loading of configuration file")
		return nil
	}
	err = serveWithReload(ctx, lns, underPrefix(p.prefix, p.routes(reload)), func() { reload() })
	if err != nil {
		logger.Error().Err(err).Msg("prometheus stopped on error")
		return fmt.Errorf("prometheus: %w", err)
	}
	logger.Info().Int("pid", os.Getpid()).Msg("prometheus stopped")
	return nil
}

func (p *prometheus) current() promLoaded {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.loaded
}

type promResponse struct {
	Status string `json:"status"`
	Data   any    `json:"data"`
}

func (p *prometheus) routes(reload func() error) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /-/healthy", okText("Prometheus Server is Healthy.\n"))
	mux.HandleFunc("GET /-/ready", okText("Prometheus Server is Ready.\n"))
	mux.HandleFunc("/-/reload", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost && r.Method != http.MethodPut {
			http.Error(w, "This endpoint requires a POST or PUT request.", http.StatusMethodNotAllowed)
			return
		}
		if !p.cfg.EnableLifecycle {
			http.Error(w, "Lifecycle API is not enabled.", http.StatusForbidden)
			return
		}
		if err := reload(); err != nil {
			http.Error(w, "failed to reload config: "+err.Error(), http.StatusInternalServerError)
		}
	})
	mux.HandleFunc("GET /api/v1/status/buildinfo", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, promResponse{Status: "success", Data: newBuildInfo(p.version)})
	})
	mux.HandleFunc("GET /api/v1/status/config", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, promResponse{Status: "success", Data: map[string]string{"yaml": p.current().text}})
	})
	mux.HandleFunc("GET /api/v1/targets", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, promResponse{Status: "success",
			Data: map[string]any{"activeTargets": p.current().targets, "droppedTargets": []any{}}})
	})
	mux.HandleFunc("GET /api/v1/alertmanagers", func(w http.ResponseWriter, r *http.Request) {
		active := []map[string]string{}
		for _, u := range p.current().alertmanagers {
			active = append(active, map[string]string{"url": u})
		}
		writeJSON(w, http.StatusOK, promResponse{Status: "success",
			Data: map[string]any{"activeAlertmanagers": active, "droppedAlertmanagers": []any{}}})
	})
	mux.HandleFunc("GET /graph", okText("Prometheus Time Series Collection and Processing Server (DM simulator)\n"))
	mux.Handle("GET /{$}", http.RedirectHandler(p.prefix+"/graph", http.StatusFound))
	return mux
}
