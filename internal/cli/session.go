package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

type meDoc struct {
	User       string `json:"user"`
	SuperAdmin bool   `json:"super_admin"`
	Groups     []struct {
		Group string `json:"group"`
		Name  string `json:"name"`
		Role  string `json:"role"`
	} `json:"groups"`
	Token    *tokenDoc `json:"token,omitempty"`
	TokenID  string    `json:"token_id"`
	ReadOnly bool      `json:"read_only"`
}

func (a *App) addSessionCommands(root *cobra.Command) {
	var (
		user     string
		ttl      string
		readOnly bool
	)
	login := &cobra.Command{
		Use:   "login --server URL --user NAME",
		Short: "Log in to a dmgr server and keep an API token for the next commands",
		Long: `Log in with your user name and password. The password is read from the
terminal without echo, or from stdin when stdin is not a terminal
(echo "$PW" | dmgr login …). With the session the login gives, dmgr makes an
API token named "dmgr-cli <hostname>" (valid --token-ttl, 30 days by
default) and ends the session. It keeps the server and the token, never the
password, in $XDG_CONFIG_HOME/dmgr/config.json (~/.config/dmgr/config.json),
mode 0600; the token of a previous login is revoked. dmgr logout revokes the
token and forgets it.`,
		Example: "  dmgr login --server http://dmgr.example:7700 --user alice",
		Args:    args(0, 0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.login(cmd.Context(), user, ttl, readOnly)
		},
	}
	login.Flags().StringVarP(&user, "user", "u", "", "your user name")
	login.Flags().StringVar(&ttl, "token-ttl", "30d", `how long the API token is valid: a Go duration ("720h") or days ("30d"), at most 366 days`)
	login.Flags().BoolVar(&readOnly, "read-only", false, "make a token that may only read")

	logout := &cobra.Command{
		Use:   "logout",
		Short: "Revoke the stored API token and forget it",
		Args:  args(0, 0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.logout(cmd.Context())
		},
	}
	whoami := &cobra.Command{
		Use:   "whoami",
		Short: "Show who the token acts as: user, groups and roles, the token",
		Args:  args(0, 0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			var me meDoc
			raw, err := getDoc(cmd.Context(), c, Request{Method: http.MethodGet, Path: "/api/v1/me"}, &me)
			if err != nil {
				return err
			}
			return a.print(raw, func(w io.Writer) error {
				kv := [][2]string{{"User", me.User}, {"Server", c.base}}
				if me.SuperAdmin {
					kv = append(kv, [2]string{"Super admin", "yes"})
				}
				var groups []string
				for _, g := range me.Groups {
					groups = append(groups, g.Name+" ("+g.Role+")")
				}
				kv = append(kv, [2]string{"Groups", orDash(strings.Join(groups, ", "))})
				tok := me.TokenID
				if me.Token != nil {
					tok += " " + me.Token.Name + ", expires " + me.Token.ExpiresAt.Local().Format(time.RFC3339)
				}
				if me.ReadOnly {
					tok += ", read-only"
				}
				kv = append(kv, [2]string{"Token", tok})
				return KeyValues(w, kv...)
			})
		},
	}
	root.AddCommand(login, logout, whoami)
}

func (a *App) login(ctx context.Context, user, ttl string, readOnly bool) error {
	server := a.server
	if server == "" {
		server = a.Getenv("DMGR_SERVER")
	}
	if server == "" {
		if c, err := a.loadConfig(); err == nil {
			server = c.Server
		}
	}
	if server == "" {
		return usageError("dmgr login: name the server with --server URL (or DMGR_SERVER)")
	}
	server = normalizeServer(server)
	if user == "" {
		return usageError("dmgr login: name your user with --user NAME")
	}
	password, err := a.readSecret(ctx, "Password for "+user+" at "+server+": ", !isTerminal(a.Stdin), "")
	if err != nil {
		return err
	}
	anon := newClient(server, "", a.timeout)
	var session tokenDoc
	if _, err := anon.Do(ctx, Request{Method: http.MethodPost, Path: "/api/v1/login", Body: map[string]string{"user": user, "password": password}}, &session); err != nil {
		return fmt.Errorf("login to %s as %s: %w", server, user, err)
	}
	sc := newClient(server, session.Secret, a.timeout)
	defer func() {
		// The session was only the way to the API token: end it, whatever
		// happened (with a deadline of its own, even after Ctrl-C).
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, err := sc.Do(lctx, Request{Method: http.MethodPost, Path: "/api/v1/logout"}, nil); err != nil {
			fmt.Fprintf(a.Stderr, "dmgr: warning: the login session %s could not be ended (%v); it expires by itself\n", session.ID, err)
		}
	}()
	host, _ := os.Hostname()
	var tok tokenDoc
	body := map[string]any{"name": strings.TrimSpace("dmgr-cli " + host), "expires_in": ttl}
	if readOnly {
		body["read_only"] = true
	}
	if _, err := sc.Do(ctx, Request{Method: http.MethodPost, Path: "/api/v1/tokens", Body: body}, &tok); err != nil {
		return fmt.Errorf("login to %s: make the API token: %w", server, err)
	}
	old, _ := a.loadConfig()
	if err := a.saveConfig(Config{Server: server, User: user, Token: tok.Secret, TokenID: tok.ID, ExpiresAt: tok.ExpiresAt}); err != nil {
		return err
	}
	if old.Token != "" && old.TokenID != "" && old.TokenID != tok.ID {
		// The token this login replaces would live on unused: revoke it
		// with itself (best effort: it may have expired or been revoked).
		oc := newClient(old.Server, old.Token, a.timeout)
		if _, err := oc.Do(ctx, Request{Method: http.MethodDelete, Path: pathf("/api/v1/tokens/%s", old.TokenID)}, nil); err != nil {
			var ae *APIError
			if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
				fmt.Fprintf(a.Stderr, "dmgr: warning: the token of the previous login (%s at %s) could not be revoked: %v\n", old.TokenID, old.Server, err)
			}
		}
	}
	if a.output != OutputTable {
		return a.print(map[string]any{"server": server, "user": user, "token_id": tok.ID, "expires_at": tok.ExpiresAt, "config": a.configPath()}, nil)
	}
	fmt.Fprintf(a.Stdout, "Logged in to %s as %s. Token %s (%s) expires %s; kept in %s\n",
		server, user, tok.ID, tok.Name, tok.ExpiresAt.Local().Format("2006-01-02 15:04 MST"), a.configPath())
	return nil
}

func (a *App) logout(ctx context.Context) error {
	cfg, err := a.loadConfig()
	if err != nil {
		return err
	}
	if cfg.Token == "" {
		fmt.Fprintln(a.Stdout, "Not logged in: nothing to do")
		return nil
	}
	c := newClient(cfg.Server, cfg.Token, a.timeout)
	path := "/api/v1/logout" // a login of an older dmgr kept no token id
	if cfg.TokenID != "" {
		path = pathf("/api/v1/tokens/%s", cfg.TokenID)
	}
	method := http.MethodDelete
	if cfg.TokenID == "" {
		method = http.MethodPost
	}
	_, err = c.Do(ctx, Request{Method: method, Path: path}, nil)
	var ae *APIError
	switch {
	case err == nil:
	case errors.As(err, &ae) && ae.Status == http.StatusUnauthorized:
		// expired or revoked already: forgetting it is all there is to do
	default:
		return fmt.Errorf("logout from %s: revoke token %s: %w (the token is kept; try again, or remove %s)", cfg.Server, cfg.TokenID, err, a.configPath())
	}
	if err := a.removeConfig(); err != nil {
		return err
	}
	fmt.Fprintf(a.Stdout, "Logged out of %s: token %s revoked and forgotten\n", cfg.Server, cfg.TokenID)
	return nil
}
