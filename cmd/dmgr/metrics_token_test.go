package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// --metrics-token, DMGR_METRICS_TOKEN and --metrics-token-file set the
// token /metrics needs; one source at most, and a short token is refused.
func TestMetricsTokenConfig(t *testing.T) {
	t.Setenv("DMGR_METRICS_TOKEN", "")
	t.Setenv("DMGR_METRICS_TOKEN_FILE", "")
	base := serverArgs()
	file := filepath.Join(t.TempDir(), "metrics-token")
	if err := os.WriteFile(file, []byte("from-a-file-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := parseConfig("server", base, io.Discard)
	if err != nil || cfg.metricsToken != "" {
		t.Fatalf("default: %q %v (want none: /metrics open)", cfg.metricsToken, err)
	}
	cfg, err = parseConfig("server", append(base, "--metrics-token", "from-the-flag-0123456789"), io.Discard)
	if err != nil || cfg.metricsToken != "from-the-flag-0123456789" {
		t.Fatalf("flag: %q %v", cfg.metricsToken, err)
	}
	cfg, err = parseConfig("dev", []string{"--metrics-token-file", file}, io.Discard)
	if err != nil || cfg.metricsToken != "from-a-file-0123456789" {
		t.Fatalf("file: %q %v", cfg.metricsToken, err)
	}
	t.Setenv("DMGR_METRICS_TOKEN", "from-the-env-0123456789")
	cfg, err = parseConfig("server", base, io.Discard)
	if err != nil || cfg.metricsToken != "from-the-env-0123456789" {
		t.Fatalf("env: %q %v", cfg.metricsToken, err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--metrics-token-file", file}, "not both"},
		{[]string{"--metrics-token", "short"}, "shorter than 16"},
		{[]string{"--metrics-token", "with a space in it 0123"}, "white space"},
		{[]string{"--metrics-token", "", "--metrics-token-file", filepath.Join(t.TempDir(), "missing")}, "--metrics-token-file"},
	} {
		if _, err := parseConfig("server", append(append([]string{}, base...), tc.args...), io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error saying %q", tc.args, err, tc.want)
		}
	}
}
