package dmsim

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	"github.com/rs/zerolog"
)

// What the monitoring placeholders (prometheus, alertmanager, grafana-server)
// share: they report the package's version (CurrentVersion, or the Version
// field of their config) as their own, so that a test can tell which package
// a running instance came from.

// buildInfo is Prometheus' and Alertmanager's version information.
type buildInfo struct {
	Version   string `json:"version"`
	Revision  string `json:"revision"`
	Branch    string `json:"branch"`
	BuildUser string `json:"buildUser"`
	BuildDate string `json:"buildDate"`
	GoVersion string `json:"goVersion"`
}

func newBuildInfo(version string) buildInfo {
	return buildInfo{Version: version, Revision: "sim", Branch: "sim", BuildUser: "dmsim", BuildDate: BuildTime, GoVersion: runtime.Version()}
}

// kingpinVersion is what prometheus and alertmanager print for --version.
func kingpinVersion(program, version string) string {
	return fmt.Sprintf("%s, version %s (branch: sim, revision: sim)\n  build user:       dmsim\n  build date:       %s\n  go version:       %s\n  platform:         %s/%s\n",
		program, version, BuildTime, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// checkLogLevel validates --log.level as Prometheus' promlog does.
func checkLogLevel(s string) error {
	switch s {
	case "debug", "info", "warn", "error":
		return nil
	}
	return fmt.Errorf("--log.level: unrecognized log level %q (want debug, info, warn or error)", s)
}

func newLogger(w io.Writer, level string) zerolog.Logger {
	l := zerolog.New(w).With().Timestamp().Logger()
	if lv, err := zerolog.ParseLevel(level); err == nil && level != "" {
		l = l.Level(lv)
	}
	return l
}

// checkListenAddr validates a host:port listen address.
func checkListenAddr(flag, addr string) error {
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
		return fmt.Errorf("%s %q: want host:port or :port", flag, addr)
	}
	return nil
}

// routePrefixOf returns the path under which the web routes live:
// --web.route-prefix if given, else the path of --web.external-url, "" for
// the root. As in Prometheus and Alertmanager.
func routePrefixOf(prefix, externalURL string) (string, error) {
	if prefix == "" && externalURL != "" {
		u, err := url.Parse(externalURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return "", fmt.Errorf("--web.external-url %q: want an absolute http(s) URL like http://10.0.0.1:9090/", externalURL)
		}
		prefix = u.Path
	}
	prefix = strings.TrimSuffix(prefix, "/")
	if prefix != "" && !strings.HasPrefix(prefix, "/") {
		prefix = "/" + prefix
	}
	return prefix, nil
}

// underPrefix serves h under prefix ("" serves it at the root).
func underPrefix(prefix string, h http.Handler) http.Handler {
	if prefix == "" {
		return h
	}
	mux := http.NewServeMux()
	mux.Handle(prefix+"/", http.StripPrefix(prefix, h))
	mux.Handle("GET /{$}", http.RedirectHandler(prefix+"/", http.StatusFound))
	return mux
}

// okText answers 200 with a fixed text, as the /-/ready and /-/healthy routes do.
func okText(text string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, text)
	}
}

// serveWithReload serves h on lns until ctx ends, calling reload on SIGHUP
// (the real programs reload their configuration then, rather than die).
func serveWithReload(ctx context.Context, lns []net.Listener, h http.Handler, reload func()) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				reload()
			}
		}
	}()
	return serve(ctx, lns, h)
}

// listenFailed logs and wraps an error from listenAll.
func listenFailed(logger zerolog.Logger, program string, err error) error {
	logger.Error().Err(err).Msg(program + " failed to start")
	return fmt.Errorf("%s: %w", program, err)
}
