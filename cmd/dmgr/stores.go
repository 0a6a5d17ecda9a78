package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/chserver"
	"github.com/dmgr/dmgr/internal/embedded"
	"github.com/dmgr/dmgr/internal/secretfile"
)

// How dmgr logs in to etcd and ClickHouse.
//
// `dmgr server` and `dmgr agent` read a user and a password file from
// their flags (--etcd-user, --etcd-password-file, --clickhouse-user,
// --clickhouse-password-file); the passwords are never logged. `dmgr dev`
// generates every password at first start into <data-dir>/creds/ (0700,
// files 0600), makes its embedded etcd require them (users root,
// dmgr-server, dmgr-agent; embedded.EtcdRoles) and starts ClickHouse with
// user dmgr only. The server side logs in to etcd as dmgr-server; dev's
// in-process agent uses a client of its own as dmgr-agent, as a separate
// `dmgr agent` would.

// Names of the files in <data-dir>/creds/ that dev generates.
const (
	credsDirName          = "creds"
	etcdRootPasswordFile  = "etcd-root.password"
	etcdServerPassFile    = "etcd-server.password"
	etcdAgentPassFile     = "etcd-agent.password"
	clickhousePassFile    = "clickhouse.password"
	defaultClickHouseUser = chserver.User
)

// storeConfig holds the flags of the etcd and ClickHouse logins.
type storeConfig struct {
	etcdUser, etcdPasswordFile, etcdCAFile string
	chUser, chPasswordFile                 string
}

// register adds the login flags of mode (dev, server, agent) to fs.
func (s *storeConfig) register(fs *flag.FlagSet, mode string) {
	if mode == "server" || mode == "agent" {
		user := embedded.EtcdServerUser
		if mode == "agent" {
			user = embedded.EtcdAgentUser
		}
		fs.StringVar(&s.etcdUser, "etcd-user", envOr("DMGR_ETCD_USER", user), "etcd user to log in as (env DMGR_ETCD_USER)")
		fs.StringVar(&s.etcdPasswordFile, "etcd-password-file", envOr("DMGR_ETCD_PASSWORD_FILE", ""),
			"file holding the etcd user's password; required: etcd must require a login (env DMGR_ETCD_PASSWORD_FILE)")
		fs.StringVar(&s.etcdCAFile, "etcd-ca-file", envOr("DMGR_ETCD_CA_FILE", ""),
			"PEM file of the CA that signed the etcd members' certificates; turns on TLS (https:// endpoints) (env DMGR_ETCD_CA_FILE)")
	}
	if mode == "server" || mode == "dev" {
		registerClickHouseLogin(fs, &s.chUser, &s.chPasswordFile, mode == "dev")
	}
}

// registerClickHouseLogin adds --clickhouse-user and
// --clickhouse-password-file (also used by `dmgr projections rebuild`).
func registerClickHouseLogin(fs *flag.FlagSet, user, passwordFile *string, dev bool) {
	userHelp := "ClickHouse user to log in as (env DMGR_CLICKHOUSE_USER)"
	fileHelp := "file holding the ClickHouse user's password; required (env DMGR_CLICKHOUSE_PASSWORD_FILE)"
	if dev {
		userHelp = "with --clickhouse-addr: the ClickHouse user to log in as (env DMGR_CLICKHOUSE_USER)"
		fileHelp = "with --clickhouse-addr, required: file holding that user's password; without --clickhouse-addr dev starts its own ClickHouse with a password it generates in <data-dir>/creds/ (env DMGR_CLICKHOUSE_PASSWORD_FILE)"
	}
	fs.StringVar(user, "clickhouse-user", envOr("DMGR_CLICKHOUSE_USER", defaultClickHouseUser), userHelp)
	fs.StringVar(passwordFile, "clickhouse-password-file", envOr("DMGR_CLICKHOUSE_PASSWORD_FILE", ""), fileHelp)
}

// validate checks the login flags of c after parsing.
func (s storeConfig) validate(c config) error {
	if c.mode == "server" || c.mode == "agent" {
		if s.etcdUser == "" {
			return fmt.Errorf("dmgr %s: --etcd-user (or DMGR_ETCD_USER) must not be empty", c.mode)
		}
		if s.etcdPasswordFile == "" {
			return fmt.Errorf("dmgr %s: --etcd-password-file (or DMGR_ETCD_PASSWORD_FILE) is required: etcd must require a login (user %s; SECURITY.md says how to set it up)", c.mode, s.etcdUser)
		}
		if s.etcdCAFile != "" {
			for _, e := range c.etcdEndpoints {
				if strings.HasPrefix(e, "http://") {
					return fmt.Errorf("dmgr %s: --etcd-ca-file turns on TLS but endpoint %s is http://; use https://", c.mode, e)
				}
			}
		}
	}
	if c.mode == "server" || (c.mode == "dev" && c.clickhouseAddr != "") {
		if s.chUser == "" {
			return fmt.Errorf("dmgr %s: --clickhouse-user (or DMGR_CLICKHOUSE_USER) must not be empty", c.mode)
		}
		if s.chPasswordFile == "" {
			return fmt.Errorf("dmgr %s: --clickhouse-password-file (or DMGR_CLICKHOUSE_PASSWORD_FILE) is required with --clickhouse-addr: ClickHouse must require a login (user %s)", c.mode, s.chUser)
		}
	}
	return nil
}

// stores is what Main keeps of the etcd and ClickHouse logins.
type stores struct {
	etcd      clientv3.Config      // this process's login (dmgr-server, or dmgr-agent in agent mode)
	agentEtcd *clientv3.Config     // dev: the in-process agent's own login
	agentCli  *clientv3.Client     // dev: the in-process agent's client
	ch        chserver.Credentials // server and dev
	dev       devCreds             // dev only
}

// devCreds are the passwords `dmgr dev` generated in <data-dir>/creds/.
type devCreds struct {
	etcd       embedded.EtcdPasswords
	clickhouse string
}

// loadOrCreateDevCreds reads the passwords in <dataDir>/creds/, creating
// the directory (0700) and each missing file (0600, 32 random bytes in
// hex) on first start. Modes found wider are narrowed.
func loadOrCreateDevCreds(dataDir string) (devCreds, error) {
	dir := filepath.Join(dataDir, credsDirName)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return devCreds{}, fmt.Errorf("credentials dir: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return devCreds{}, fmt.Errorf("credentials dir: %w", err)
	}
	var c devCreds
	for _, f := range []struct {
		name string
		into *string
	}{
		{etcdRootPasswordFile, &c.etcd.Root}, {etcdServerPassFile, &c.etcd.Server},
		{etcdAgentPassFile, &c.etcd.Agent}, {clickhousePassFile, &c.clickhouse},
	} {
		p, err := loadOrCreatePassword(filepath.Join(dir, f.name))
		if err != nil {
			return devCreds{}, err
		}
		*f.into = p
	}
	return c, nil
}

func loadOrCreatePassword(path string) (string, error) {
	if _, err := os.Stat(path); err == nil {
		if err := os.Chmod(path, 0o600); err != nil {
			return "", fmt.Errorf("password file %s: %w", path, err)
		}
		return readPasswordFile(path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("password file %s: %w", path, err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("generate a password for %s: %w", path, err)
	}
	pw := hex.EncodeToString(raw)
	created, err := secretfile.Create(path, []byte(pw+"\n"))
	if err != nil {
		return "", fmt.Errorf("password file %s: %w", path, err)
	}
	if !created { // another process made it meanwhile
		return readPasswordFile(path)
	}
	return pw, nil
}

// readPasswordFile returns the file's content without its line ending. An
// empty password is refused.
func readPasswordFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("password file: %w", err)
	}
	pw := strings.TrimRight(string(b), "\r\n")
	if pw == "" {
		return "", fmt.Errorf("password file %s is empty", path)
	}
	if strings.ContainsAny(pw, "\r\n") {
		return "", fmt.Errorf("password file %s holds more than one line; it must hold the password alone", path)
	}
	return pw, nil
}

// startDevStores starts dev's etcd with authentication required and, unless
// --clickhouse-addr is given, a local ClickHouse with user dmgr only, both
// with the passwords in <data-dir>/creds/.
func (m *Main) startDevStores(ctx context.Context) error {
	c := m.cfg
	creds, err := loadOrCreateDevCreds(c.dataDir)
	if err != nil {
		return err
	}
	m.stores.dev = creds
	m.etcdSrv, err = embedded.StartEtcd(filepath.Join(c.dataDir, "etcd"), c.etcdClientAddr, c.etcdPeerAddr)
	if err != nil {
		return err
	}
	if err := m.etcdSrv.EnableAuth(ctx, creds.etcd); err != nil {
		return fmt.Errorf("embedded etcd: %w (the passwords are in %s)", err, filepath.Join(c.dataDir, credsDirName))
	}
	if c.clickhouseAddr == "" {
		m.chSrv, err = chserver.Start(ctx, chserver.Options{Dir: filepath.Join(c.dataDir, "clickhouse"), Password: creds.clickhouse, Log: m.log})
		if err != nil {
			return fmt.Errorf("start local ClickHouse: %w", err)
		}
	}
	return nil
}

// openStores resolves the logins of this process, connects to etcd as
// m.etcd, and, for the API side against an external ClickHouse, checks the
// ClickHouse login at chAddr.
func (m *Main) openStores(ctx context.Context, endpoints []string, chAddr string) error {
	c, s := m.cfg, &m.stores
	s.etcd = clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Context: ctx, Logger: embedded.EtcdClientLogger()}
	if c.mode == "dev" {
		s.etcd.Username, s.etcd.Password = embedded.EtcdServerUser, s.dev.etcd.Server
		agent := s.etcd
		agent.Username, agent.Password = embedded.EtcdAgentUser, s.dev.etcd.Agent
		s.agentEtcd = &agent
		s.ch = chserver.Credentials{User: chserver.User, Password: s.dev.clickhouse}
	} else {
		pw, err := readPasswordFile(c.stores.etcdPasswordFile)
		if err != nil {
			return fmt.Errorf("--etcd-password-file: %w", err)
		}
		s.etcd.Username, s.etcd.Password = c.stores.etcdUser, pw
		if c.stores.etcdCAFile != "" {
			if s.etcd.TLS, err = caTLS(c.stores.etcdCAFile); err != nil {
				return fmt.Errorf("--etcd-ca-file: %w", err)
			}
		}
	}
	externalCH := c.mode == "server" || (c.mode == "dev" && c.clickhouseAddr != "")
	if externalCH {
		var err error
		if s.ch, err = clickHouseLogin(c.stores.chUser, c.stores.chPasswordFile); err != nil {
			return err
		}
	}
	var err error
	if m.etcd, err = connectEtcd(ctx, s.etcd); err != nil {
		return err
	}
	if c.mode != "dev" {
		m.warnIfEtcdOpen(ctx, endpoints)
	}
	if externalCH {
		return m.checkClickHouseLogin(ctx, chAddr)
	}
	return nil
}

// connectEtcd connects to etcd as cfg's user: a wrong password fails here
// (clientv3 logs in while it connects).
func connectEtcd(ctx context.Context, cfg clientv3.Config) (*clientv3.Client, error) {
	where := strings.Join(cfg.Endpoints, ",")
	cli, err := clientv3.New(cfg)
	if err != nil {
		if errors.Is(err, rpctypes.ErrAuthFailed) {
			return nil, domain.Errorf(domain.Unauthorized,
				"etcd at %s refused the login of user %s: %v; check --etcd-user and the password in --etcd-password-file", where, cfg.Username, err)
		}
		return nil, fmt.Errorf("connect to etcd at %s as %s: %w", where, cfg.Username, err)
	}
	return cli, nil
}

// agentEtcdClient is the etcd client of the agent that runs in this
// process: in agent mode the process's own (dmgr-agent), in dev a client
// of its own logged in as dmgr-agent, so that the in-process agent has no
// more rights than a separate one.
func (m *Main) agentEtcdClient(ctx context.Context) (*clientv3.Client, error) {
	if m.stores.agentEtcd == nil {
		return m.etcd, nil
	}
	if m.stores.agentCli == nil {
		cfg := *m.stores.agentEtcd
		cfg.Context = ctx
		cli, err := connectEtcd(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("in-process agent: %w", err)
		}
		m.stores.agentCli = cli
	}
	return m.stores.agentCli, nil
}

// closeStores closes the in-process agent's etcd client.
func (m *Main) closeStores() error {
	if m.stores.agentCli == nil {
		return nil
	}
	if err := m.stores.agentCli.Close(); err != nil {
		return fmt.Errorf("agent etcd client: %w", err)
	}
	return nil
}

// warnIfEtcdOpen warns when etcd does not require a login: whoever
// reaches it could then take or overwrite leader keys.
func (m *Main) warnIfEtcdOpen(ctx context.Context, endpoints []string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := m.etcd.AuthStatus(ctx)
	if err != nil {
		m.log.Warn().Err(err).Msg("could not read whether etcd requires a login")
		return
	}
	if !st.Enabled {
		m.log.Warn().Strs("etcd", endpoints).
			Msg("etcd does not require a login: anyone who reaches it can take or overwrite leader keys; enable its authentication (SECURITY.md)")
	}
}

// checkClickHouseLogin fails when ClickHouse refuses the configured login,
// and warns when it also lets in user default without a password. A
// ClickHouse that does not answer yet is not an error: the projector
// retries and /readyz says so.
func (m *Main) checkClickHouseLogin(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := chserver.Connect(ctx, addr, m.stores.ch)
	if domain.ErrorCode(err) == domain.Unauthorized {
		return err
	}
	if err != nil {
		m.log.Warn().Err(err).Str("clickhouse", addr).Msg("ClickHouse does not answer yet; queries answer 503 until it does")
		return nil
	}
	_ = conn.Close()
	anon, err := chserver.Connect(ctx, addr, chserver.Credentials{User: "default"})
	if err == nil {
		_ = anon.Close()
		m.log.Warn().Str("clickhouse", addr).
			Msg("ClickHouse lets user default in without a password: anyone who reaches it can forge or delete audit rows; remove that user or give it a password (SECURITY.md)")
	}
	return nil
}

// caTLS is a TLS config that trusts the CA certificates in file.
func caTLS(file string) (*tls.Config, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// clickHouseLogin reads the flags of a ClickHouse login.
func clickHouseLogin(user, passwordFile string) (chserver.Credentials, error) {
	if user == "" {
		return chserver.Credentials{}, errors.New("--clickhouse-user (or DMGR_CLICKHOUSE_USER) must not be empty")
	}
	if passwordFile == "" {
		return chserver.Credentials{}, fmt.Errorf("--clickhouse-password-file (or DMGR_CLICKHOUSE_PASSWORD_FILE) is required: ClickHouse must require a login (user %s)", user)
	}
	pw, err := readPasswordFile(passwordFile)
	if err != nil {
		return chserver.Credentials{}, fmt.Errorf("--clickhouse-password-file: %w", err)
	}
	return chserver.Credentials{User: user, Password: pw}, nil
}
