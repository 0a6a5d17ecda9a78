// Package dmsim simulates TiDB DM's dm-master and dm-worker as far as dmgr
// uses them: DM's command-line flags and config files, GET /status, the
// gRPC-gateway member routes, the OpenAPI cluster routes, a simple leader
// election among masters and worker registration. Tests install the two
// programs under cmd/ as bin/dm-master and bin/dm-worker of a DM package.
package dmsim

import (
	"fmt"
	"os"
	"runtime"
)

// Version is the DM release this simulator claims to be. It is a package
// variable (not passed in) because it is set at link time:
//
//	go build -ldflags "-X github.com/dmgr/dmgr/testbed/dmsim.Version=v8.1.0"
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
