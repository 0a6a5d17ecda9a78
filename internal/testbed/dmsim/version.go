// Package dmsim simulates TiDB DM's dm-master and dm-worker as far as dmgr
// uses them: DM's command-line flags and config files, GET /status, the
// gRPC-gateway member routes, the OpenAPI cluster routes, a simple leader
// election among masters and worker registration.
//
// It also holds placeholders for the monitoring programs of a DM package,
// prometheus, alertmanager and grafana-server: they take the real programs'
// flags and config files (and refuse what the real ones refuse: unknown
// flags, a missing or malformed config file, a busy port), listen where they
// are told, answer their health routes and list what their configuration
// names (scrape targets, cluster peers, provisioned data sources and
// dashboards), but monitor nothing. dmctl and grafana-cli only print their
// version.
//
// Every program writes a started-<unixnano> marker into its data directory
// on each start, so that tests can count starts, and stops cleanly on
// SIGTERM or SIGINT. [Main] runs any of them by name; cmd/dmsim is one
// binary that runs the program it is installed as, which is how package
// testbed/dmpkg ships it. A simulator-only config key, [StartDelayKey],
// slows the start of dm-master and dm-worker for tests.
package dmsim

import (
	"fmt"
	"os"
	"runtime"
)

// Version is the DM release this simulator claims to be. It is a package
// variable (not passed in) because it is set at link time:
//
//	go build -ldflags "-X github.com/dmgr/dmgr/internal/testbed/dmsim.Version=v8.1.0"
//
// The environment variable DMSIM_VERSION overrides it.
var Version = "v0.0.0-sim"

// BuildTime may be set with -ldflags like Version.
var BuildTime = "2006-01-02 15:04:05"

// CurrentVersion returns DMSIM_VERSION if set, else Version.
func CurrentVersion() string {
	if v := os.Getenv("DMSIM_VERSION"); v != "" {
		return v
	}
	return Version
}

// StatusText is the body of GET /status and the output of -V, shaped like DM's.
func StatusText(version string) string {
	return fmt.Sprintf("Release Version: %s\nGit Commit Hash: sim\nGit Branch: sim\nUTC Build Time: %s\nGo Version: %s\nFailpoint Build: false\n",
		version, BuildTime, runtime.Version())
}
