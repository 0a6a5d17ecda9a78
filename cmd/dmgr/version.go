package main

import (
	"runtime/debug"
	"strings"
)

// versionOverride, when set at build time with
//
//	go build -ldflags "-X main.versionOverride=v1.2.3" ./cmd/dmgr
//
// is the version `dmgr version` prints. It is the one package-level
// variable of the command: -X can set nothing else.
var versionOverride string

// buildVersion is the version of this binary: the -X override when set;
// else the main module's version as the Go toolchain stamped it (a tag,
// or a pseudo-version from the commit when built in a git checkout, with
// "+dirty" for uncommitted changes); else the VCS revision; else "dev"
// (built without module or VCS information, e.g. by go test or with
// -buildvcs=false).
func buildVersion(override string, info *debug.BuildInfo, ok bool) string {
	if override != "" {
		return override
	}
	if !ok || info == nil {
		return "dev"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev == "" {
		return "dev"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	v := "devel-" + rev
	if modified == "true" {
		v += "+dirty"
	}
	return v
}

// dmgrVersion is the version of this binary (buildVersion of its build
// information); agents register with it.
func dmgrVersion() string {
	info, ok := debug.ReadBuildInfo()
	return buildVersion(versionOverride, info, ok)
}

// versionLine is what `dmgr version` prints: the version and the Go
// toolchain that built it.
func versionLine() string {
	line := "dmgr " + dmgrVersion()
	if info, ok := debug.ReadBuildInfo(); ok && info != nil && info.GoVersion != "" {
		line += " (" + strings.TrimSpace(info.GoVersion) + ")"
	}
	return line
}
