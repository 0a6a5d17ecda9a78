package dmsim

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"gopkg.in/yaml.v3"
)

// GrafanaConfig is the command line of the simulated grafana-server, as
// tiup-style run scripts give it.
type GrafanaConfig struct {
	HomePath     string            // --homepath; default the working directory. It must hold conf/defaults.ini
	ConfigFile   string            // --config; default <homepath>/conf/custom.ini if it exists
	PidFile      string            // --pidfile: the process id is written there
	Defaults     map[string]string // cfg:default.<section>.<key>=value arguments, keyed "<section>.<key>"
	Overrides    map[string]string // cfg:<section>.<key>=value arguments, keyed "<section>.<key>"
	PrintVersion bool              // -v, -vv
	Version      string            // reported version; empty means CurrentVersion()
}

// ParseGrafanaFlags parses grafana-server's command line as Grafana does:
// Go flags (-homepath or --homepath, -config, -pidfile, -packaging, -v, …)
// then arguments, of which those like cfg:default.paths.logs=DIR set
// defaults and those like cfg:server.http_port=3001 override the config
// file. As with Go flags, flags after the first argument are not flags.
func ParseGrafanaFlags(args []string) (GrafanaConfig, error) {
	fset := flag.NewFlagSet("grafana-server", flag.ContinueOnError)
	fset.SetOutput(io.Discard)
	var c GrafanaConfig
	var vv bool
	fset.StringVar(&c.HomePath, "homepath", "", "path to grafana install/home path, defaults to working directory")
	fset.StringVar(&c.ConfigFile, "config", "", "path to config file")
	fset.StringVar(&c.PidFile, "pidfile", "", "path to pid file")
	fset.String("packaging", "unknown", "describes the way Grafana was installed")
	fset.BoolVar(&c.PrintVersion, "v", false, "prints current version and exits")
	fset.BoolVar(&vv, "vv", false, "prints current version, all dependencies and exits")
	fset.Bool("profile", false, "turn on pprof profiling")
	fset.String("profile-addr", "localhost", "define custom address for profiling")
	fset.Uint64("profile-port", 6060, "define custom port for profiling")
	fset.Bool("tracing", false, "turn on tracing")
	fset.String("tracing-file", "trace.out", "define tracing output file")
	if err := fset.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			var b strings.Builder
			b.WriteString("usage: grafana-server [flags] [cfg:section.key=value ...]\n\nThe DM simulator's stand-in for grafana-server.\n\nFlags:\n")
			fset.SetOutput(&b)
			fset.PrintDefaults()
			return c, helpError{usage: b.String()}
		}
		return c, err
	}
	c.PrintVersion = c.PrintVersion || vv
	for _, a := range fset.Args() {
		kv, ok := strings.CutPrefix(a, "cfg:")
		if !ok {
			continue // Grafana ignores other arguments
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		m := &c.Overrides
		if d, isDefault := strings.CutPrefix(k, "default."); isDefault {
			k, m = d, &c.Defaults
		}
		if !strings.Contains(k, ".") {
			return c, fmt.Errorf("argument %q: want cfg:[default.]<section>.<key>=<value>", a)
		}
		if *m == nil {
			*m = map[string]string{}
		}
		(*m)[k] = v
	}
	return c, nil
}

// GrafanaSettings are the settings grafana-server runs with, from its ini
// files and cfg: arguments; paths are absolute.
type GrafanaSettings struct {
	HomePath         string
	ConfigFiles      []string // ini files read, in order
	HTTPAddr         string   // [server] http_addr; "" means every interface
	HTTPPort         int      // [server] http_port, default 3000
	DataPath         string   // [paths] data; the start marker goes here
	LogsPath         string   // [paths] logs; grafana.log goes here when [log] mode has "file"
	ProvisioningPath string   // [paths] provisioning
	LogMode          string   // [log] mode, default "console file"
	LogLevel         string   // [log] level, default "info"
	AdminUser        string   // [security] admin_user, default "admin"
	AdminPassword    string   // [security] admin_password, default "admin"
}

// ListenAddr is the address grafana-server listens on.
func (s GrafanaSettings) ListenAddr() string {
	return net.JoinHostPort(s.HTTPAddr, strconv.Itoa(s.HTTPPort))
}

// Settings resolves the settings as Grafana does, lowest first:
// <homepath>/conf/defaults.ini (which must exist), cfg:default.* arguments,
// the --config file (or conf/custom.ini), cfg:* arguments. Relative paths
// are relative to the home path.
func (c GrafanaConfig) Settings() (GrafanaSettings, error) {
	home := c.HomePath
	if home == "" {
		wd, err := os.Getwd()
		if err != nil {
			return GrafanaSettings{}, err
		}
		home = wd
	}
	home, err := filepath.Abs(home)
	if err != nil {
		return GrafanaSettings{}, err
	}
	s := GrafanaSettings{HomePath: home}
	kv := map[string]string{}
	defaults := filepath.Join(home, "conf", "defaults.ini")
	if _, err := os.Stat(defaults); err != nil {
		return s, fmt.Errorf("could not find config defaults (%s), make sure homepath command line parameter is set or working directory is homepath", defaults)
	}
	read := func(path string) error {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("failed to parse %q: %w", path, err)
		}
		if err := parseINI(string(b), kv); err != nil {
			return fmt.Errorf("failed to parse %q: %w", path, err)
		}
		s.ConfigFiles = append(s.ConfigFiles, path)
		return nil
	}
	if err := read(defaults); err != nil {
		return s, err
	}
	for k, v := range c.Defaults {
		kv[k] = v
	}
	custom := c.ConfigFile
	if custom == "" {
		if p := filepath.Join(home, "conf", "custom.ini"); fileExists(p) {
			custom = p
		}
	} else if !filepath.IsAbs(custom) {
		custom = filepath.Join(home, custom)
	}
	if custom != "" {
		if err := read(custom); err != nil {
			return s, err
		}
	}
	for k, v := range c.Overrides {
		kv[k] = v
	}
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(home, p)
	}
	s.HTTPAddr = kv["server.http_addr"]
	s.HTTPPort = 3000
	if p := kv["server.http_port"]; p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 65535 {
			return s, fmt.Errorf("[server] http_port %q: want a port number", p)
		}
		s.HTTPPort = n
	}
	s.DataPath = abs(orDefault(kv["paths.data"], "data"))
	s.LogsPath = abs(kv["paths.logs"])
	s.ProvisioningPath = abs(orDefault(kv["paths.provisioning"], "conf/provisioning"))
	s.LogMode = orDefault(kv["log.mode"], "console file")
	s.LogLevel = orDefault(kv["log.level"], "info")
	s.AdminUser = orDefault(kv["security.admin_user"], "admin")
	s.AdminPassword = orDefault(kv["security.admin_password"], "admin")
	return s, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// parseINI adds the keys of an ini file to kv as "<section>.<key>" (keys
// before any section as "<key>"). Lines starting with ; or # are comments,
// as is the rest of a line after " ;" or " #"; values may be quoted.
func parseINI(text string, kv map[string]string) error {
	section := ""
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == ';' || line[0] == '#' {
			continue
		}
		if line[0] == '[' {
			end := strings.IndexByte(line, ']')
			if end < 0 {
				return fmt.Errorf("line %d: unclosed section: %s", i+1, line)
			}
			section = strings.TrimSpace(line[1:end])
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return fmt.Errorf("line %d: key-value delimiter not found: %s", i+1, line)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'' || v[0] == '`') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		} else {
			for _, c := range []string{" ;", " #", "\t;", "\t#"} {
				if j := strings.Index(v, c); j >= 0 {
					v = strings.TrimSpace(v[:j])
				}
			}
		}
		if section != "" {
			k = section + "." + k
		}
		kv[k] = v
	}
	return nil
}

// GrafanaDatasource is a provisioned data source, as GET /api/datasources lists it.
type GrafanaDatasource struct {
	ID        int    `json:"id" yaml:"-"`
	OrgID     int    `json:"orgId" yaml:"-"`
	Name      string `json:"name" yaml:"name"`
	Type      string `json:"type" yaml:"type"`
	URL       string `json:"url" yaml:"url"`
	Access    string `json:"access" yaml:"access"`
	IsDefault bool   `json:"isDefault" yaml:"isDefault"`
}

// GrafanaDashboard is a provisioned dashboard, as GET /api/search lists it.
type GrafanaDashboard struct {
	ID          int      `json:"id"`
	UID         string   `json:"uid"`
	Title       string   `json:"title"`
	URL         string   `json:"url"`
	Type        string   `json:"type"`
	Tags        []string `json:"tags"`
	FolderTitle string   `json:"folderTitle,omitempty"`
	File        string   `json:"-"`
}

// loadGrafanaProvisioning reads <provisioning>/datasources/*.y*ml and the
// dashboards that <provisioning>/dashboards/*.y*ml providers point to. As in
// Grafana, a provisioning file that is not valid YAML stops the start, a
// missing directory or a dashboard that is not JSON is only logged.
func loadGrafanaProvisioning(dir, home string, log zerolog.Logger) ([]GrafanaDatasource, []GrafanaDashboard, error) {
	dss := []GrafanaDatasource{}
	dashes := []GrafanaDashboard{}
	files := func(sub string) []string {
		d := filepath.Join(dir, sub)
		if _, err := os.Stat(d); err != nil {
			log.Warn().Err(err).Str("path", d).Msg("can't read " + sub + " provisioning files from directory")
			return nil
		}
		var out []string
		for _, pat := range []string{"*.yaml", "*.yml"} {
			m, _ := filepath.Glob(filepath.Join(d, pat))
			out = append(out, m...)
		}
		slices.Sort(out)
		return out
	}
	for _, f := range files("datasources") {
		var doc struct {
			Datasources []GrafanaDatasource `yaml:"datasources"`
		}
		if err := readYAML(f, &doc); err != nil {
			return nil, nil, fmt.Errorf("datasource provisioning error: %w", err)
		}
		for _, ds := range doc.Datasources {
			if ds.Name == "" {
				return nil, nil, fmt.Errorf("datasource provisioning error: %s: a data source has no name", f)
			}
			ds.ID, ds.OrgID = len(dss)+1, 1
			dss = append(dss, ds)
		}
	}
	for _, f := range files("dashboards") {
		var doc struct {
			Providers []struct {
				Name    string `yaml:"name"`
				Folder  string `yaml:"folder"`
				Options struct {
					Path string `yaml:"path"`
				} `yaml:"options"`
			} `yaml:"providers"`
		}
		if err := readYAML(f, &doc); err != nil {
			return nil, nil, fmt.Errorf("dashboard provisioning error: %w", err)
		}
		for _, p := range doc.Providers {
			path := p.Options.Path
			if path == "" {
				return nil, nil, fmt.Errorf("dashboard provisioning error: %s: provider %q has no options.path", f, p.Name)
			}
			if !filepath.IsAbs(path) {
				path = filepath.Join(home, path)
			}
			err := filepath.WalkDir(path, func(fp string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() || !strings.HasSuffix(fp, ".json") {
					return err
				}
				b, err := os.ReadFile(fp)
				if err != nil {
					return err
				}
				var dash struct {
					UID   string   `json:"uid"`
					Title string   `json:"title"`
					Tags  []string `json:"tags"`
				}
				if err := json.Unmarshal(b, &dash); err != nil || dash.Title == "" {
					log.Warn().Str("file", fp).Msg("failed to load dashboard from file: not JSON with a title")
					return nil
				}
				slug := slugify(dash.Title)
				dashes = append(dashes, GrafanaDashboard{ID: len(dashes) + 1, UID: dash.UID, Title: dash.Title,
					URL: "/d/" + dash.UID + "/" + slug, Type: "dash-db", Tags: append([]string{}, dash.Tags...),
					FolderTitle: p.Folder, File: fp})
				return nil
			})
			if err != nil {
				log.Warn().Err(err).Str("path", path).Msg("cannot read dashboards directory")
			}
		}
	}
	return dss, dashes, nil
}

func readYAML(path string, out any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := yaml.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

var nonSlug = regexp.MustCompile(`[^a-z0-9]+`)

func slugify(s string) string {
	return strings.Trim(nonSlug.ReplaceAllString(strings.ToLower(s), "-"), "-")
}

// RunGrafana runs the grafana-server placeholder until ctx ends: it
// resolves its settings (GrafanaConfig.Settings), loads provisioning, writes
// the pid file and the start marker (into [paths] data), logs to
// <[paths] logs>/grafana.log when [log] mode has "file" and to stdout when it
// has "console", and serves GET /api/health ({"database":"ok","version":…})
// and, with the admin's basic auth, GET /api/datasources and GET /api/search
// (the provisioned data sources and dashboards).
func RunGrafana(ctx context.Context, cfg GrafanaConfig, stdout io.Writer) error {
	s, err := cfg.Settings()
	if err != nil {
		fmt.Fprintf(stdout, "Grafana-server Init Failed: %v\n", err)
		return fmt.Errorf("grafana-server: %w", err)
	}
	var outs []io.Writer
	if strings.Contains(s.LogMode, "console") {
		outs = append(outs, stdout)
	}
	if strings.Contains(s.LogMode, "file") && s.LogsPath != "" {
		if err := os.MkdirAll(s.LogsPath, 0o755); err != nil {
			return fmt.Errorf("grafana-server: create log dir: %w", err)
		}
		f, err := os.OpenFile(filepath.Join(s.LogsPath, "grafana.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return fmt.Errorf("grafana-server: open log file: %w", err)
		}
		defer f.Close()
		outs = append(outs, f)
	}
	logger := newLogger(io.MultiWriter(outs...), s.LogLevel)
	version := orDefault(cfg.Version, CurrentVersion())
	dss, dashes, err := loadGrafanaProvisioning(s.ProvisioningPath, s.HomePath, logger)
	if err != nil {
		logger.Error().Err(err).Msg("grafana-server failed to start")
		return fmt.Errorf("grafana-server: %w", err)
	}
	if cfg.PidFile != "" {
		if err := os.MkdirAll(filepath.Dir(cfg.PidFile), 0o755); err != nil {
			return fmt.Errorf("grafana-server: pid file: %w", err)
		}
		if err := os.WriteFile(cfg.PidFile, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			return fmt.Errorf("grafana-server: pid file: %w", err)
		}
	}
	if err := writeStartMarker(s.DataPath, time.Now()); err != nil {
		return fmt.Errorf("grafana-server: %w", err)
	}
	lns, err := listenAll([]string{s.ListenAddr()})
	if err != nil {
		return listenFailed(logger, "grafana-server", err)
	}
	logger.Info().Str("version", version).Str("address", s.ListenAddr()).Str("homepath", s.HomePath).
		Strs("config_files", s.ConfigFiles).Str("data", s.DataPath).Str("logs", s.LogsPath).
		Int("datasources", len(dss)).Int("dashboards", len(dashes)).Int("pid", os.Getpid()).Msg("HTTP Server Listen")

	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"commit": "sim", "database": "ok", "version": version})
	})
	admin := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if u, p, ok := r.BasicAuth(); !ok || u != s.AdminUser || p != s.AdminPassword {
				writeJSON(w, http.StatusUnauthorized, map[string]string{"message": "Unauthorized"})
				return
			}
			h(w, r)
		}
	}
	mux.HandleFunc("GET /api/datasources", admin(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, dss)
	}))
	mux.HandleFunc("GET /api/search", admin(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, dashes)
	}))
	mux.HandleFunc("GET /login", okText("Grafana (DM simulator)\n"))
	mux.Handle("GET /{$}", http.RedirectHandler("/login", http.StatusFound))

	err = serveWithReload(ctx, lns, mux, func() { logger.Info().Msg("SIGHUP: reloading log settings") })
	if err != nil {
		logger.Error().Err(err).Msg("grafana-server stopped on error")
		return fmt.Errorf("grafana-server: %w", err)
	}
	if cfg.PidFile != "" {
		os.Remove(cfg.PidFile)
	}
	logger.Info().Int("pid", os.Getpid()).Msg("grafana-server stopped")
	return nil
}
