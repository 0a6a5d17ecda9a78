package main

import (
	"flag"
	"fmt"
	stdlog "log"
	"net/http"
	"time"

	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/httpapi"
	"github.com/dmgr/dmgr/internal/coordinator"
)

// httpConfig is how the HTTP server bounds its clients.
type httpConfig struct {
	readHeaderTimeout time.Duration
	readTimeout       time.Duration
	writeTimeout      time.Duration
	idleTimeout       time.Duration
	requestTimeout    time.Duration
	maxHeaderBytes    int
	maxInFlight       int
	maxStreams        int
	minUploadRate     int64
}

// limitsConfig is the size limits and the coordinator's retries.
type limitsConfig struct {
	maxInstances     int
	advanceGiveUp    time.Duration
	advanceRetryMax  time.Duration
	advanceRetryBase time.Duration
}

// addHTTPFlags registers the flags of the HTTP server's bounds (server
// and dev).
func addHTTPFlags(fs *flag.FlagSet, c *httpConfig) {
	fs.DurationVar(&c.readHeaderTimeout, "http-read-header-timeout", 10*time.Second, "how long a client may take to send a request's headers (slow clients are cut off)")
	fs.DurationVar(&c.readTimeout, "http-read-timeout", 30*time.Second, "how long a client may take to send a whole request; a package upload gets this plus --max-package-bytes at --http-min-upload-rate")
	fs.DurationVar(&c.writeTimeout, "http-write-timeout", 60*time.Second, "how long a request may take from its headers to the end of its answer; must exceed --http-request-timeout (event streams have none)")
	fs.DurationVar(&c.idleTimeout, "http-idle-timeout", 120*time.Second, "how long an idle keep-alive connection stays open")
	fs.DurationVar(&c.requestTimeout, "http-request-timeout", 30*time.Second, "deadline of a request's work (NATS, etcd, ClickHouse); past it the request answers 503 with Retry-After")
	fs.IntVar(&c.maxHeaderBytes, "http-max-header-bytes", 64<<10, "largest request header block accepted, in bytes")
	fs.IntVar(&c.maxInFlight, "http-max-concurrent", 256, "requests served at once; one more answers 503 with Retry-After at once")
	fs.IntVar(&c.maxStreams, "http-max-streams", 256, "event streams (server-sent events of operations and clusters, which the CLI and the console follow) served at once, besides --http-max-concurrent; each holds one JetStream consumer")
	fs.Int64Var(&c.minUploadRate, "http-min-upload-rate", 1<<20, "slowest package upload accepted, in bytes per second: it sets the upload's read deadline")
}

func (c httpConfig) validate() error {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"--http-read-header-timeout", c.readHeaderTimeout}, {"--http-read-timeout", c.readTimeout},
		{"--http-write-timeout", c.writeTimeout}, {"--http-idle-timeout", c.idleTimeout}, {"--http-request-timeout", c.requestTimeout}} {
		if d.v <= 0 {
			return fmt.Errorf("%s must be positive, got %s", d.name, d.v)
		}
	}
	switch {
	case c.writeTimeout <= c.requestTimeout:
		return fmt.Errorf("--http-write-timeout (%s) must be longer than --http-request-timeout (%s), or answers past the deadline are cut off", c.writeTimeout, c.requestTimeout)
	case c.maxHeaderBytes < 4<<10:
		return fmt.Errorf("--http-max-header-bytes must be at least 4096")
	case c.maxInFlight < 1 || c.maxStreams < 1:
		return fmt.Errorf("--http-max-concurrent and --http-max-streams must be at least 1")
	case c.minUploadRate < 1<<10:
		return fmt.Errorf("--http-min-upload-rate must be at least 1024 bytes per second")
	}
	return nil
}

// addLimitsFlags registers the size limits and the coordinator's retries
// (server and dev).
func addLimitsFlags(fs *flag.FlagSet, c *limitsConfig) {
	fs.IntVar(&c.maxInstances, "max-instances-per-cluster", domain.DefaultMaxInstancesPerCluster, "most instances a cluster may have; larger deploys and scale-outs answer 400")
	fs.DurationVar(&c.advanceGiveUp, "advance-give-up-after", coordinator.DefaultGiveUpAfter, "how long the coordinator retries an operation it cannot advance (a result it cannot record, a step it cannot dispatch) before it fails the operation with the error")
	fs.DurationVar(&c.advanceRetryBase, "advance-retry-min", coordinator.DefaultRetryMin, "first wait before the coordinator tries again to advance an operation, doubled (with jitter) per failure")
	fs.DurationVar(&c.advanceRetryMax, "advance-retry-max", coordinator.DefaultRetryMax, "longest wait between the coordinator's tries to advance an operation")
}

func (c limitsConfig) validate() error {
	switch {
	case c.maxInstances < 1:
		return fmt.Errorf("--max-instances-per-cluster must be at least 1")
	case c.advanceGiveUp <= 0 || c.advanceRetryBase <= 0:
		return fmt.Errorf("--advance-give-up-after and --advance-retry-min must be positive")
	case c.advanceRetryMax < c.advanceRetryBase:
		return fmt.Errorf("--advance-retry-max (%s) must not be shorter than --advance-retry-min (%s)", c.advanceRetryMax, c.advanceRetryBase)
	}
	return nil
}

// newHTTPServer is the API's server: every timeout set, the long-lived
// routes excepted per request, requests capped and given a deadline
// (httpapi.Guard).
func newHTTPServer(c config, handler http.Handler, log zerolog.Logger) *http.Server {
	h := c.http
	guard := httpapi.Guard(httpapi.GuardConfig{
		MaxInFlight: h.maxInFlight, MaxStreams: h.maxStreams, RequestTimeout: h.requestTimeout,
		ReadTimeout: h.readTimeout, WriteTimeout: h.writeTimeout,
		MaxJSONBody: maxJSONBody, MaxUploadBody: c.maxPackage, MinUploadRate: h.minUploadRate, Log: log,
	})
	return &http.Server{
		Handler:           guard(handler),
		ReadHeaderTimeout: h.readHeaderTimeout,
		ReadTimeout:       h.readTimeout,
		WriteTimeout:      h.writeTimeout,
		IdleTimeout:       h.idleTimeout,
		MaxHeaderBytes:    h.maxHeaderBytes,
		ErrorLog:          httpErrorLog(log),
	}
}

// maxJSONBody is the JSON body limit of the API (httpapi.Config's default).
const maxJSONBody = 1 << 20

// httpErrorLog sends the HTTP server's own errors (a broken connection, a
// malformed request) to the log.
func httpErrorLog(log zerolog.Logger) *stdlog.Logger {
	return stdlog.New(log.With().Str("component", "http").Str("level", "warn").Logger(), "", 0)
}
