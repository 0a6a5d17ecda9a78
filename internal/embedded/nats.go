package embedded

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/dmgr/dmgr/internal/busauth"
)

// NATS is an in-process NATS server with JetStream enabled.
type NATS struct {
	srv   *server.Server
	users []busauth.User
}

// NATSOption configures StartNATS.
type NATSOption func(*natsConfig)

type natsConfig struct {
	users     []busauth.User
	anonymous bool
}

// NATSUsers makes the server take exactly these users, each with its
// role's permissions (busauth), and refuse every other connection.
func NATSUsers(users []busauth.User) NATSOption {
	return func(c *natsConfig) { c.users = append(c.users, users...) }
}

// AnonymousNATS makes a server that takes connections without
// credentials, with every permission: only for the tests that check that
// dmgr refuses to run on such a bus.
func AnonymousNATS() NATSOption {
	return func(c *natsConfig) { c.anonymous = true }
}

// StartNATS starts a NATS server with JetStream file storage under storeDir,
// listening on addr ("host:port"; port 0 picks a free one), which must be a
// loopback address. It takes the users given with NATSUsers, or, with
// AnonymousNATS only, anyone; NoAuthUser is never set.
func StartNATS(addr, storeDir string, opts ...NATSOption) (*NATS, error) {
	var cfg natsConfig
	for _, o := range opts {
		o(&cfg)
	}
	if len(cfg.users) == 0 && !cfg.anonymous {
		return nil, errors.New("start embedded nats: no users: give embedded.NATSUsers (or, for a test of the refusal of an open bus, embedded.AnonymousNATS)")
	}
	if len(cfg.users) > 0 && cfg.anonymous {
		return nil, errors.New("start embedded nats: embedded.NATSUsers and embedded.AnonymousNATS exclude each other")
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("nats listen address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("nats listen address %q: the embedded NATS server listens on a loopback address only (127.0.0.1 or ::1); run nats-server for a bus other machines reach", addr)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("nats listen address %q: bad port: %w", addr, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	srvOpts := &server.Options{
		ServerName: "dmgr-dev",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   storeDir,
		NoSigs:     true,
		NoLog:      true,
		// Large enough for a commit with a full topology; package bytes go
		// through the object store in chunks, never as one message.
		MaxPayload: 8 << 20,
	}
	if len(cfg.users) > 0 {
		srvOpts.Nkeys = busauth.NkeyUsers(cfg.users)
	}
	srv, err := server.NewServer(srvOpts)
	if err != nil {
		return nil, fmt.Errorf("start embedded nats: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("start embedded nats on %s: not ready after 30s", addr)
	}
	return &NATS{srv: srv, users: cfg.users}, nil
}

// URL is the client URL of the server.
func (n *NATS) URL() string { return n.srv.ClientURL() }

// User returns the user of id that the server takes, if any.
func (n *NATS) User(id busauth.Identity) (busauth.User, bool) {
	for _, u := range n.users {
		if u.Identity == id {
			return u, true
		}
	}
	return busauth.User{}, false
}

// Shutdown flushes JetStream to disk and stops the server.
func (n *NATS) Shutdown() {
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
}
