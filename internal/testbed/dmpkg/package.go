package dmpkg

import (
	"context"
	"runtime"
	"testing"
)

// Package is Build for tests: it returns the bytes of dm-<version>.tar.gz
// for linux on the arch the test runs on. The simulator is compiled once
// per version per test process (concurrent callers share that build) and
// the package kept in memory; a failed build fails t.
func Package(t testing.TB, version string) []byte {
	t.Helper()
	b, err := tarball(context.Background(), version, runtime.GOARCH)
	if err != nil {
		t.Fatalf("dmpkg.Package(%s): %v", version, err)
	}
	return b
}
