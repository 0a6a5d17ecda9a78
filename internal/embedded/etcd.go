package embedded

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// Etcd is an in-process single-member etcd cluster.
type Etcd struct {
	e         *embed.Etcd
	clientURL string
}

// StartEtcd starts a single etcd member with its data in dir. clientAddr and
// peerAddr are "host:port"; port 0 picks a free one.
func StartEtcd(dir, clientAddr, peerAddr string) (*Etcd, error) {
	// A picked port is free when picked but may be taken by another process
	// before etcd binds it; pick again then.
	picked := strings.HasSuffix(clientAddr, ":0") || strings.HasSuffix(peerAddr, ":0")
	for attempt := 1; ; attempt++ {
		e, err := startEtcd(dir, clientAddr, peerAddr)
		if err == nil || !picked || attempt == 5 || !strings.Contains(err.Error(), "address already in use") {
			return e, err
		}
	}
}

func startEtcd(dir, clientAddr, peerAddr string) (*Etcd, error) {
	cu, err := listenURL(clientAddr)
	if err != nil {
		return nil, fmt.Errorf("etcd client address: %w", err)
	}
	pu, err := listenURL(peerAddr)
	if err != nil {
		return nil, fmt.Errorf("etcd peer address: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("etcd dir: %w", err)
	}
	cfg := embed.NewConfig()
	cfg.Name = "dmgr-dev"
	cfg.Dir = dir
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "warn"
	// etcd logs with zap; keep its lines out of dmgr's own log stream.
	cfg.LogOutputs = []string{filepath.Join(dir, "etcd.log")}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s: %w", dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, fmt.Errorf("start embedded etcd in %s: not ready after 60s", dir)
	}
	return &Etcd{e: e, clientURL: cu.String()}, nil
}

// Endpoint is the client URL of the member.
func (e *Etcd) Endpoint() string { return e.clientURL }

// Close stops the member after it has synced its WAL.
func (e *Etcd) Close() { e.e.Close() }

// listenURL turns "host:port" into an http URL, choosing a free port for 0.
func listenURL(addr string) (*url.URL, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", addr, err)
	}
	if port == "0" {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, fmt.Errorf("pick a free port on %s: %w", host, err)
		}
		addr = l.Addr().String()
		l.Close()
	}
	return url.Parse("http://" + addr)
}

// Member is one member of a multi-member etcd cluster.
type Member struct {
	Name           string
	Dir            string
	ClientURL      string // http://host:port
	PeerURL        string // http://host:port
	InitialCluster string // name=peerURL,… of every member
}

// StartEtcdMember starts one member of a new multi-member cluster; it is
// ready once the cluster has a leader, so start the members concurrently.
func StartEtcdMember(m Member) (*Etcd, error) {
	cu, err := url.Parse(m.ClientURL)
	if err != nil {
		return nil, fmt.Errorf("etcd member %s: client URL: %w", m.Name, err)
	}
	pu, err := url.Parse(m.PeerURL)
	if err != nil {
		return nil, fmt.Errorf("etcd member %s: peer URL: %w", m.Name, err)
	}
	if err := os.MkdirAll(m.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("etcd dir: %w", err)
	}
	cfg := embed.NewConfig()
	cfg.Name = m.Name
	cfg.Dir = m.Dir
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = m.InitialCluster
	cfg.InitialClusterToken = "dmgr-test"
	cfg.LogLevel = "warn"
	cfg.LogOutputs = []string{filepath.Join(m.Dir, "etcd.log")}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start etcd member %s: %w", m.Name, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, fmt.Errorf("etcd member %s: not ready after 60s", m.Name)
	}
	return &Etcd{e: e, clientURL: cu.String()}, nil
}

// FreeURL returns http://host:port with a port that was free a moment ago.
func FreeURL(host string) (string, error) {
	u, err := listenURL(net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	return u.String(), nil
}
