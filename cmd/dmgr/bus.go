package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/internal/busauth"
	"github.com/dmgr/dmgr/internal/pkgstore"
	"github.com/dmgr/dmgr/internal/secrets"
	"github.com/dmgr/dmgr/internal/workqueue"
)

// busConfig is how a process that is not dev connects to the bus.
type busConfig struct {
	nkeyFile string // the role's seed file
	caFile   string // CA of the server's TLS certificate
	insecure bool   // --insecure-dev-bus: run on a bus that takes anonymous connections
}

// addBusFlags adds the bus flags of a process of role to fs.
func addBusFlags(fs *flag.FlagSet, b *busConfig, role busauth.Role) {
	name := "nats-" + string(role) + ".nk"
	if role == busauth.Agent {
		name = "nats-agent.nk for pool default, nats-agent-<pool>.nk for another"
	}
	fs.StringVar(&b.nkeyFile, "nats-nkey-file", envOr("DMGR_NATS_NKEY_FILE", ""),
		fmt.Sprintf("file holding the %s role's NATS nkey seed, mode 0600, as dmgr bus init writes it (%s) (env DMGR_NATS_NKEY_FILE)", role, name))
	fs.StringVar(&b.caFile, "nats-ca-file", envOr("DMGR_NATS_CA_FILE", ""),
		"PEM file of the CA that signed the NATS server's TLS certificate; set it when the server uses TLS (tls:// URLs) (env DMGR_NATS_CA_FILE)")
	fs.BoolVar(&b.insecure, "insecure-dev-bus", false,
		"run even though the NATS server takes connections without credentials, and without --nats-nkey-file; only on a trusted development machine: whoever reaches such a bus runs commands as root on every managed machine")
}

// checkBus says what is wrong with the bus settings of c, if anything.
func (c config) checkBus() error {
	if c.mode == "agent" || c.mode == "dev" {
		if err := busauth.ValidPool(c.pool); err != nil {
			return fmt.Errorf("--pool: %w", err)
		}
	}
	if c.mode == "dev" {
		return nil // dev makes its own credentials
	}
	return c.bus.check("dmgr " + c.mode)
}

func (b busConfig) check(cmd string) error {
	if b.nkeyFile == "" && !b.insecure {
		return fmt.Errorf("%s: --nats-nkey-file (or DMGR_NATS_NKEY_FILE) is required: the bus must know who connects (`dmgr bus init` writes one seed per role and the nats-server users); --insecure-dev-bus runs without one, on a bus that takes anonymous connections", cmd)
	}
	return nil
}

// tlsOptions are the connection's TLS settings.
func (b busConfig) tlsOptions() []nats.Option {
	if b.caFile == "" {
		return nil
	}
	return []nats.Option{nats.RootCAs(b.caFile)}
}

// dialBus connects to the bus at urls as id, with the seed in seedFile
// (none only with --insecure-dev-bus). With probe, it then checks that the
// bus refuses anonymous connections, and refuses to go on when it takes
// them, unless --insecure-dev-bus.
func dialBus(ctx context.Context, urls string, id busauth.Identity, seedFile string, b busConfig, probe bool,
	log zerolog.Logger, opts ...nats.Option) (*nats.Conn, error) {
	all := append([]nats.Option{nats.CustomInboxPrefix(id.InboxPrefix())}, b.tlsOptions()...)
	if seedFile != "" {
		auth, err := busauth.ClientOptions(id, seedFile)
		if err != nil {
			return nil, err
		}
		all = append(all, auth...)
	}
	nc, err := nats.Connect(urls, append(all, opts...)...)
	if errors.Is(err, nats.ErrNkeysNotSupported) {
		// A server without users turns a key down: it takes anyone.
		if !b.insecure {
			if perr := checkAnonymousRefused(ctx, urls, b, log); perr != nil {
				return nil, perr
			}
		} else {
			log.Warn().Msg("the bus takes no credentials; connecting without the nkey (--insecure-dev-bus)")
			nc, err = nats.Connect(urls, slices.Concat([]nats.Option{nats.CustomInboxPrefix(id.InboxPrefix())}, b.tlsOptions(), opts)...)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s as %s: %w", redactURLs(urls), id, err)
	}
	if probe {
		if err := checkAnonymousRefused(ctx, urls, b, log); err != nil {
			nc.Close()
			return nil, err
		}
	}
	log.Info().Str("nats_role", id.String()).Bool("nats_nkey", seedFile != "").Msg("connected to NATS")
	return nc, nil
}

// checkAnonymousRefused connects to every server of urls without
// credentials: a bus that takes such a connection lets anyone run steps
// on the managed machines, so dmgr refuses to run on it, unless
// --insecure-dev-bus.
func checkAnonymousRefused(ctx context.Context, urls string, b busConfig, log zerolog.Logger) error {
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	open, err := busauth.ProbeAnonymous(pctx, urls, b.tlsOptions()...)
	switch {
	case err != nil && b.insecure:
		log.Warn().Err(err).Msg("could not tell whether the bus takes anonymous connections (--insecure-dev-bus)")
	case err != nil:
		return fmt.Errorf("check that the NATS server at %s refuses connections without credentials: %w", redactURLs(urls), err)
	case open != "" && b.insecure:
		log.Warn().Str("nats", redactURLs(open)).Msg("the bus takes connections without credentials: whoever reaches it runs commands on every managed machine (--insecure-dev-bus)")
	case open != "":
		return fmt.Errorf("the NATS server at %s takes connections without credentials: whoever reaches it could run commands as root on every managed machine, so dmgr does not start. "+
			"Give the server dmgr's users (`dmgr bus init --dir DIR` writes the seeds and an authorization block to include in nats-server.conf; never set no_auth_user), "+
			"or, on a trusted development machine only, start with --insecure-dev-bus", redactURLs(open))
	default:
		log.Info().Msg("the bus refuses connections without credentials")
	}
	return nil
}

// redactURLs drops the user information of each URL of a comma-separated
// list, so that a password in a URL never reaches a log or an error.
func redactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			u.User = nil
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}

// busIdentity is the role of the process's own connection: the server's
// for dev and server, the agent's for an agent.
func (m *Main) busIdentity() busauth.Identity {
	if m.cfg.mode == "agent" {
		return busauth.Identity{Role: busauth.Agent, Pool: m.cfg.pool}
	}
	return busauth.Identity{Role: busauth.Server}
}

// connectBus opens the process's connection to the bus. Dev connects with
// the seeds it made at start and does not probe its own server.
func (m *Main) connectBus(ctx context.Context, urls string) (*nats.Conn, error) {
	id := m.busIdentity()
	seed := m.cfg.bus.nkeyFile
	if m.cfg.mode == "dev" {
		seed = m.devSeed(id)
	}
	return dialBus(ctx, urls, id, seed, m.cfg.bus, m.cfg.mode != "dev", m.log,
		nats.Name("dmgr "+m.cfg.mode), nats.MaxReconnects(-1))
}

// devBusUsers makes, at dev's first start, one nkey seed per role in
// <data-dir>/creds (0600 files in a 0700 directory), and returns the users
// the embedded NATS server takes: the server, the projector, the admin
// and the agents of pool default and of dev's pool.
func (m *Main) devBusUsers() ([]busauth.User, error) {
	dir := filepath.Join(m.cfg.dataDir, "creds")
	ids := []busauth.Identity{{Role: busauth.Server}, {Role: busauth.Projector}, {Role: busauth.Admin},
		{Role: busauth.Agent, Pool: busauth.DefaultPool}, {Role: busauth.Agent, Pool: m.cfg.pool}}
	users, err := busauth.EnsureSeeds(dir, ids...)
	if err != nil {
		return nil, fmt.Errorf("dev NATS credentials: %w", err)
	}
	m.devUsers = users
	m.log.Info().Str("dir", dir).Msg("NATS users ready (one nkey seed per role; `dmgr agent --nats-nkey-file " +
		filepath.Join(dir, busauth.Identity{Role: busauth.Agent, Pool: busauth.DefaultPool}.SeedFileName()) + "` joins from this machine)")
	return users, nil
}

// devSeed is the seed file dev made for id.
func (m *Main) devSeed(id busauth.Identity) string {
	for _, u := range m.devUsers {
		if u.Identity == id {
			return u.SeedFile
		}
	}
	return ""
}

// setupBus creates or updates what the server owns on the bus: the
// vault, the package store, the work queue and the event stream. An agent
// does none of it (it may not): it returns nils.
func (m *Main) setupBus(ctx context.Context, js jetstream.JetStream, masterKey []byte) (*secrets.Vault, *pkgstore.Store, *eventstore.Store, error) {
	c := m.cfg
	if c.mode == "agent" {
		return nil, nil, nil, nil
	}
	vault, err := secrets.Open(ctx, js, masterKey, c.replicas)
	if err != nil {
		return nil, nil, nil, err
	}
	pkgs, err := pkgstore.Open(ctx, js, c.replicas)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := workqueue.Setup(ctx, js, workqueue.Config{Replicas: c.replicas}); err != nil {
		return nil, nil, nil, err
	}
	store, err := eventstore.Open(ctx, js, eventstore.Config{Replicas: c.replicas})
	if err != nil {
		return nil, nil, nil, err
	}
	return vault, pkgs, store, nil
}

// agentBus is what an agent reads on the bus, opened with the agent's
// credentials and without creating anything.
type agentBus struct {
	js     jetstream.JetStream
	vault  *secrets.Vault
	pkgs   *pkgstore.Store
	events *eventstore.Store // the committed steps, read by direct get
}

// openAgentBus opens the agent's side of the bus: on the process's own
// connection in agent mode, on a connection of its own as agent (dev's
// pool) in dev, so that dev runs its agent with an agent's permissions.
// The server must have set the bus up (setupBus) first.
func (m *Main) openAgentBus(ctx context.Context, urls string, js jetstream.JetStream, masterKey []byte) (agentBus, error) {
	if m.cfg.mode == "dev" {
		id := busauth.Identity{Role: busauth.Agent, Pool: m.cfg.pool}
		nc, err := dialBus(ctx, urls, id, m.devSeed(id), m.cfg.bus, false, m.log,
			nats.Name("dmgr dev agent"), nats.MaxReconnects(-1))
		if err != nil {
			return agentBus{}, err
		}
		m.agentNC = nc
		if js, err = jetstream.New(nc); err != nil {
			return agentBus{}, fmt.Errorf("jetstream: %w", err)
		}
	}
	ab := agentBus{js: js}
	var err error
	if ab.vault, err = secrets.OpenExisting(ctx, js, masterKey); err != nil {
		return agentBus{}, err
	}
	if ab.pkgs, err = pkgstore.OpenExisting(ctx, js); err != nil {
		return agentBus{}, err
	}
	if ab.events, err = eventstore.OpenExisting(ctx, js); err != nil {
		return agentBus{}, err
	}
	return ab, nil
}

// closeAgentBus drains dev's agent connection.
func (m *Main) closeAgentBus() error {
	if m.agentNC == nil {
		return nil
	}
	if err := m.agentNC.Drain(); err != nil {
		return fmt.Errorf("nats drain (agent): %w", err)
	}
	for i := 0; i < 100 && !m.agentNC.IsClosed(); i++ {
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

const busUsage = `Usage:
  dmgr bus init --dir DIR [--pool NAME]...
                  write one NATS nkey seed per role into DIR (nats-server.nk,
                  nats-projector.nk, nats-admin.nk, and per agent pool
                  nats-agent.nk for "default", nats-agent-<pool>.nk otherwise;
                  mode 0600, DIR 0700; existing seeds are kept) and
                  DIR/nats-auth.conf, the users and their permissions for
                  nats-server (include it from nats-server.conf)

Run "dmgr bus init -h" for the flags.
`

// poolsFlag is a repeatable --pool.
type poolsFlag []string

func (p *poolsFlag) String() string { return strings.Join(*p, ",") }

func (p *poolsFlag) Set(v string) error {
	if err := busauth.ValidPool(v); err != nil {
		return err
	}
	*p = append(*p, v)
	return nil
}

// runBus is `dmgr bus …`.
func runBus(_ context.Context, args []string, stdout, stderr io.Writer) error {
	if err := subcommand(args, "bus", "init", busUsage, stderr); err != nil {
		return err
	}
	fs := flag.NewFlagSet("dmgr bus init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "directory for the seeds and nats-auth.conf (created 0700); keep it where only the operator reads it")
	var pools poolsFlag
	fs.Var(&pools, "pool", `agent pool to make a user for; repeat it for several pools (default: "default")`)
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("dmgr bus init: unexpected argument %q", fs.Arg(0))
	}
	if *dir == "" {
		return errors.New("dmgr bus init: --dir is required")
	}
	if len(pools) == 0 {
		pools = poolsFlag{busauth.DefaultPool}
	}
	ids := []busauth.Identity{{Role: busauth.Server}, {Role: busauth.Projector}, {Role: busauth.Admin}}
	for _, p := range pools {
		ids = append(ids, busauth.Identity{Role: busauth.Agent, Pool: p})
	}
	users, err := busauth.EnsureSeeds(*dir, ids...)
	if err != nil {
		return err
	}
	conf := filepath.Join(*dir, busauth.ConfigFileName)
	if err := busauth.WriteConfig(conf, users); err != nil {
		return err
	}
	for _, u := range users {
		state := "kept"
		if u.Created {
			state = "created"
		}
		fmt.Fprintf(stdout, "%-8s %-22s %s\n", state, u.Identity.String(), u.SeedFile)
	}
	fmt.Fprintf(stdout, "written  %s\n\n", conf)
	fmt.Fprintf(stdout, "Next: put %s beside nats-server.conf, add `include ./%s` to it (nats-server resolves includes\n"+
		"relative to the including file; never set no_auth_user) and reload nats-server;\n", conf, busauth.ConfigFileName)
	fmt.Fprint(stdout, "give each seed only to the processes of its role, with --nats-nkey-file:\n"+
		"  dmgr server --nats-nkey-file nats-server.nk, dmgr agent --nats-nkey-file nats-agent[-<pool>].nk --pool <pool>,\n"+
		"  dmgr projections rebuild --nats-nkey-file nats-projector.nk; nats-admin.nk is for operators' tools.\n"+
		"Rotate a seed: delete its file, run `dmgr bus init` again with the same pools, reload nats-server, restart that role.\n")
	return nil
}
