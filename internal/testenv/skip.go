package testenv

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/dmgr/dmgr/internal/chserver"
)

// SkipOrFail skips the test with the message, or fails it with the same
// reason when CI is set to true (CI=true, CI=1): in CI every prerequisite
// is installed, so a missing one is a broken set-up, never a silent skip.
func SkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf(strings.TrimPrefix(format, "SKIP: ")+" (CI is set, so this fails instead of skipping)", args...)
	}
	t.Skipf(format, args...)
}

// InCI reports whether the environment variable CI is true.
func InCI() bool {
	ci, _ := strconv.ParseBool(os.Getenv("CI"))
	return ci
}

// RequireClickHouse skips the test when no clickhouse-server binary is
// installed, and fails it under CI=true (SkipOrFail).
func RequireClickHouse(t testing.TB) {
	t.Helper()
	if err := chserver.Installed(); err != nil {
		SkipOrFail(t, "SKIP: needs a real ClickHouse server: %v. `dmgr dev` installs it the same way; CI installs it.", err)
	}
}
