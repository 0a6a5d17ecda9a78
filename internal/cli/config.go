package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Config is what `dmgr login` keeps: the server and an API token of the
// user (never the password), in ConfigDir/config.json, mode 0600.
type Config struct {
	Server    string    `json:"server"`
	User      string    `json:"user,omitempty"`
	Token     string    `json:"token"`
	TokenID   string    `json:"token_id,omitempty"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

func (a *App) configPath() string { return filepath.Join(a.ConfigDir, "config.json") }

// loadConfig reads the stored login; no file is an empty Config.
func (a *App) loadConfig() (Config, error) {
	var c Config
	b, err := os.ReadFile(a.configPath())
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("read the login: %w", err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("read the login %s: %w (run dmgr login again)", a.configPath(), err)
	}
	return c, nil
}

// saveConfig writes the login 0600 (its directory 0700), replacing the
// file in one rename so a crash never leaves half a token.
func (a *App) saveConfig(c Config) error {
	if err := os.MkdirAll(a.ConfigDir, 0o700); err != nil {
		return fmt.Errorf("save the login: %w", err)
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("save the login: %w", err)
	}
	tmp, err := os.CreateTemp(a.ConfigDir, ".config-*.json")
	if err != nil {
		return fmt.Errorf("save the login: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("save the login: %w", err)
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("save the login: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save the login: %w", err)
	}
	if err := os.Rename(tmp.Name(), a.configPath()); err != nil {
		return fmt.Errorf("save the login: %w", err)
	}
	return nil
}

// removeConfig forgets the login.
func (a *App) removeConfig() error {
	err := os.Remove(a.configPath())
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("forget the login: %w", err)
	}
	return nil
}

// endpoint is the server and token a command uses: the flags, then
// DMGR_SERVER and DMGR_TOKEN, then the stored login.
func (a *App) endpoint() (server, token string, err error) {
	server, token = a.server, a.token
	if server == "" {
		server = a.Getenv("DMGR_SERVER")
	}
	if token == "" {
		token = a.Getenv("DMGR_TOKEN")
	}
	if server == "" || token == "" {
		c, err := a.loadConfig()
		if err != nil {
			return "", "", err
		}
		if server == "" {
			server = c.Server
		}
		if token == "" && (c.Server == "" || sameServer(c.Server, server)) {
			token = c.Token
		}
	}
	if server == "" {
		return "", "", usageError("no server: run dmgr login --server URL --user NAME, or pass --server or set DMGR_SERVER")
	}
	return normalizeServer(server), token, nil
}

// normalizeServer adds http:// to a bare host:port and drops a trailing /.
func normalizeServer(s string) string {
	s = strings.TrimRight(strings.TrimSpace(s), "/")
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	return s
}

func sameServer(a, b string) bool { return normalizeServer(a) == normalizeServer(b) }
