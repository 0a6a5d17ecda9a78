package remote

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/crypto/ssh"
)

// Options configures a [Pool]. Zero values take the defaults.
type Options struct {
	// MaxSessionsPerHost bounds the sessions (commands and uploads) running
	// at once on one host:port, over all its connections; default 8, below
	// sshd's default MaxSessions of 10 per connection.
	MaxSessionsPerHost int
	// DialTimeout bounds connecting, the SSH handshake and authentication;
	// default 15s.
	DialTimeout time.Duration
	// KeepAlive is the interval of keepalive@openssh.com requests; a
	// connection whose request is not answered within another interval is
	// closed and dialled again on next use. Default 15s; negative disables.
	KeepAlive time.Duration
	// Log receives connection events (dial, drop) with the field "host".
	// Secrets and command lines are never logged. The zero Logger is silent.
	Log zerolog.Logger
}

// HostStats describes one host:port of a [Pool].
type HostStats struct {
	Dials    int // connections opened so far
	Open     int // connections open now
	Sessions int // sessions running now
}

// Pool runs commands over pooled SSH connections. It is safe for concurrent
// use; the zero Pool is not usable, call [NewPool].
type Pool struct {
	o      Options
	ctx    context.Context // cancelled by Close: stops dials and keepalives
	cancel context.CancelFunc
	wg     sync.WaitGroup // dials, watchers and keepalives

	mu     sync.Mutex
	closed bool
	conns  map[string]*conn      // by Target.connKey
	hosts  map[string]*hostState // by host:port
}

type hostState struct {
	sem chan struct{} // one token per running session
	HostStats
}

// conn is one SSH connection, shared by every caller with the same connKey.
type conn struct {
	key   string
	host  *hostState
	ready chan struct{} // closed when the dial has finished: client or err is set
	// client and err are written before ready is closed.
	client *ssh.Client
	err    error
	done   chan struct{} // closed when the connection has ended
}

// NewPool returns a pool with no connections yet.
func NewPool(o Options) *Pool {
	if o.MaxSessionsPerHost <= 0 {
		o.MaxSessionsPerHost = 8
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 15 * time.Second
	}
	if o.KeepAlive == 0 {
		o.KeepAlive = 15 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Pool{o: o, ctx: ctx, cancel: cancel, conns: map[string]*conn{}, hosts: map[string]*hostState{}}
}

var errClosed = errors.New("connection pool is closed")

// Stats returns, per "host:port", the connections dialled and open and the
// sessions running.
func (p *Pool) Stats() map[string]HostStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]HostStats, len(p.hosts))
	for addr, h := range p.hosts {
		out[addr] = h.HostStats
	}
	return out
}

// Close closes every connection, which ends the sessions running on them,
// and waits for the pool's goroutines. Later calls fail.
func (p *Pool) Close() error {
	p.mu.Lock()
	p.closed = true
	conns := make([]*conn, 0, len(p.conns))
	for _, c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	p.cancel()
	for _, c := range conns {
		<-c.ready
		if c.client != nil {
			c.client.Close()
		}
	}
	p.wg.Wait()
	return nil
}

// host returns the state of addr, creating it. p.mu must be held.
func (p *Pool) host(addr string) *hostState {
	h := p.hosts[addr]
	if h == nil {
		h = &hostState{sem: make(chan struct{}, p.o.MaxSessionsPerHost)}
		p.hosts[addr] = h
	}
	return h
}

// acquire takes a session slot on t's host, waiting as long as ctx allows.
func (p *Pool) acquire(ctx context.Context, t Target) (release func(), err error) {
	p.mu.Lock()
	h := p.host(t.addr())
	p.mu.Unlock()
	select {
	case h.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for a free session slot (%d in use): %w", p.o.MaxSessionsPerHost, ctx.Err())
	}
	p.mu.Lock()
	h.Sessions++
	p.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			h.Sessions--
			p.mu.Unlock()
			<-h.sem
		})
	}, nil
}

// conn returns the live connection for t, dialling it if there is none.
// Callers that arrive while a dial is under way wait for that dial. The dial
// itself does not depend on any caller's ctx, so one caller giving up does
// not fail the others.
func (p *Pool) conn(ctx context.Context, t Target, pin ssh.PublicKey) (*conn, error) {
	key := t.connKey()
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, errClosed
		}
		c := p.conns[key]
		if c == nil {
			c = &conn{key: key, host: p.host(t.addr()), ready: make(chan struct{}), done: make(chan struct{})}
			p.conns[key] = c
			p.wg.Add(1)
			go p.dial(c, t, pin)
		}
		p.mu.Unlock()

		select {
		case <-c.ready:
		case <-ctx.Done():
			return nil, fmt.Errorf("connect: %w", ctx.Err())
		}
		if c.err != nil {
			return nil, c.err
		}
		select {
		case <-c.done: // died since; dial again
			p.forget(c)
		default:
			return c, nil
		}
	}
}

// forget removes c from the pool if it is still the connection for its key.
func (p *Pool) forget(c *conn) {
	p.mu.Lock()
	if p.conns[c.key] == c {
		delete(p.conns, c.key)
	}
	p.mu.Unlock()
}

// dial connects c and starts its watcher and keepalive. A failed dial is not
// remembered: the next call dials again.
func (p *Pool) dial(c *conn, t Target, pin ssh.PublicKey) {
	defer p.wg.Done()
	ctx, cancel := context.WithTimeout(p.ctx, p.o.DialTimeout)
	defer cancel()
	start := time.Now()
	client, err := dialSSH(ctx, t, pin, p.o.DialTimeout)

	p.mu.Lock()
	if err == nil && p.closed {
		client.Close()
		err = errClosed
	}
	if err != nil {
		c.err = err
		if p.conns[c.key] == c {
			delete(p.conns, c.key)
		}
		p.mu.Unlock()
		close(c.ready)
		close(c.done)
		p.o.Log.Warn().Str("host", t.addr()).Str("user", t.User).Err(err).Msg("ssh connect failed")
		return
	}
	c.client = client
	c.host.Dials++
	c.host.Open++
	p.wg.Add(2)
	p.mu.Unlock()
	close(c.ready)
	p.o.Log.Debug().Str("host", t.addr()).Str("user", t.User).Dur("took", time.Since(start)).Msg("ssh connected")

	go p.watch(c, t)
	go p.keepAlive(c, t)
}

// watch waits for c to end, for whatever reason, and drops it from the pool.
func (p *Pool) watch(c *conn, t Target) {
	defer p.wg.Done()
	err := c.client.Wait()
	close(c.done)
	p.forget(c)
	p.mu.Lock()
	c.host.Open--
	closed := p.closed
	p.mu.Unlock()
	if !closed {
		p.o.Log.Info().Str("host", t.addr()).Str("user", t.User).AnErr("reason", err).Msg("ssh connection ended; the next call dials again")
	}
}

// keepAlive sends keepalive@openssh.com requests and closes c when one is
// not answered within an interval. OpenSSH answers such a request with a
// failure reply, which proves the connection alive as well as a success.
func (p *Pool) keepAlive(c *conn, t Target) {
	defer p.wg.Done()
	if p.o.KeepAlive < 0 {
		return
	}
	tick := time.NewTicker(p.o.KeepAlive)
	defer tick.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-p.ctx.Done():
			return
		case <-tick.C:
		}
		answered := make(chan error, 1)
		go func() {
			_, _, err := c.client.SendRequest("keepalive@openssh.com", true, nil)
			answered <- err
		}()
		timer := time.NewTimer(p.o.KeepAlive)
		select {
		case err := <-answered:
			timer.Stop()
			if err == nil {
				continue
			}
			p.o.Log.Warn().Str("host", t.addr()).Err(err).Msg("ssh keepalive failed; closing the connection")
		case <-timer.C:
			p.o.Log.Warn().Str("host", t.addr()).Dur("waited", p.o.KeepAlive).Msg("ssh keepalive unanswered; closing the connection")
		case <-c.done:
			timer.Stop()
			return
		}
		c.client.Close()
		return
	}
}

// dialSSH opens a TCP connection and runs the SSH handshake with the pinned
// host key and the target's credential.
func dialSSH(ctx context.Context, t Target, pin ssh.PublicKey, timeout time.Duration) (*ssh.Client, error) {
	auth, err := t.authMethods()
	if err != nil {
		return nil, err
	}
	cfg := &ssh.ClientConfig{
		User:              t.User,
		Auth:              auth,
		HostKeyCallback:   pinnedHostKey(pin),
		HostKeyAlgorithms: hostKeyAlgorithms(pin),
	}
	addr := t.addr()
	nc, err := (&net.Dialer{Timeout: timeout}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, unreachableError{fmt.Errorf("connect: %w", err)}
	}
	// The handshake reads and writes nc: a deadline and ctx bound it.
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	if d, ok := ctx.Deadline(); ok {
		nc.SetDeadline(d)
	}
	sc, chans, reqs, err := ssh.NewClientConn(nc, addr, cfg)
	if !stop() || err != nil {
		nc.Close()
		var mismatch *HostKeyMismatchError
		var algo *ssh.AlgorithmNegotiationError
		switch {
		case errors.As(err, &mismatch):
			return nil, mismatch
		case errors.As(err, &algo) && algo.What == "host key":
			return nil, &HostKeyMismatchError{Host: addr, Pinned: ssh.FingerprintSHA256(pin),
				PinnedType: pin.Type(), ServerTypes: algo.RequestedAlgorithms}
		case ctx.Err() != nil:
			return nil, unreachableError{fmt.Errorf("ssh handshake: %w", ctx.Err())}
		case err != nil && isAuthError(err):
			return nil, fmt.Errorf("authentication failed; check the machine's credential for user %s: %w", t.User, loginRefusedError{err})
		case err != nil:
			return nil, unreachableError{fmt.Errorf("ssh handshake: %w", err)}
		default:
			sc.Close()
			return nil, unreachableError{fmt.Errorf("ssh handshake: %w", ctx.Err())}
		}
	}
	nc.SetDeadline(time.Time{})
	return ssh.NewClient(sc, chans, reqs), nil
}

// isAuthError reports whether the server refused every credential we
// offered (x/crypto/ssh has no error type for it).
func isAuthError(err error) bool {
	return strings.Contains(err.Error(), "unable to authenticate")
}

// Dial opens a TCP connection from the target machine to addr (a
// direct-tcpip channel through the pooled SSH connection), to reach ports
// that listen only on the machine itself, such as a health check on
// "127.0.0.1:8261". It does not take a session slot. network is "tcp",
// "tcp4" or "tcp6".
func (p *Pool) Dial(ctx context.Context, t Target, network, addr string) (net.Conn, error) {
	nc, err := p.dialThrough(ctx, t, network, addr)
	return nc, t.wrap("dial "+network+" "+addr+" through ssh", err)
}

func (p *Pool) dialThrough(ctx context.Context, t Target, network, addr string) (net.Conn, error) {
	pin, err := t.check()
	if err != nil {
		return nil, err
	}
	// Check locally what x/crypto would reject locally, so that every error
	// from DialContext below is the server's or the connection's.
	if network != "tcp" && network != "tcp4" && network != "tcp6" {
		return nil, fmt.Errorf("network %q is not tcp, tcp4 or tcp6", network)
	}
	if _, port, err := net.SplitHostPort(addr); err != nil {
		return nil, err
	} else if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return nil, fmt.Errorf("port %q is not a port number", port)
	}
	for attempt := 1; ; attempt++ {
		c, err := p.conn(ctx, t, pin)
		if err != nil {
			return nil, err
		}
		nc, err := c.client.DialContext(ctx, network, addr)
		switch {
		case err == nil:
			return nc, nil
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case retryable(err) && attempt == 1:
			c.client.Close() // dead without our noticing yet: nothing was sent, dial again
			p.forget(c)
		default:
			return nil, err
		}
	}
}

// retryable reports whether opening a channel failed because the connection
// is broken (rather than the server refusing the channel): then nothing
// reached the machine, and a fresh connection may succeed. x/crypto/ssh
// reports a dead connection in several shapes (a write error, EOF, "unexpected
// packet … <nil>"), so anything but a refusal counts.
func retryable(err error) bool {
	var refused *ssh.OpenChannelError
	return !errors.As(err, &refused)
}

// session opens a session on t's connection, holding a session slot until
// release is called. A connection found dead when opening the session is
// replaced once.
func (p *Pool) session(ctx context.Context, t Target) (s *ssh.Session, c *conn, release func(), err error) {
	pin, err := t.check()
	if err != nil {
		return nil, nil, nil, err
	}
	release, err = p.acquire(ctx, t)
	if err != nil {
		return nil, nil, nil, err
	}
	for attempt := 1; ; attempt++ {
		c, err := p.conn(ctx, t, pin)
		if err != nil {
			release()
			return nil, nil, nil, err
		}
		s, err := openSession(ctx, c.client)
		if err == nil {
			return s, c, release, nil
		}
		if retryable(err) && attempt == 1 && ctx.Err() == nil {
			c.client.Close()
			p.forget(c)
			continue
		}
		release()
		var refused *ssh.OpenChannelError
		if errors.As(err, &refused) {
			return nil, nil, nil, fmt.Errorf("open session: the server refused it (is its MaxSessions below MaxSessionsPerHost=%d?): %w", p.o.MaxSessionsPerHost, err)
		}
		return nil, nil, nil, fmt.Errorf("open session: %w", err)
	}
}

// openSession opens a session, retrying for a while when sshd refuses it
// with "open failed": sshd frees a closed session's slot only after it has
// processed the close, so a session opened right after another closed can
// find all MaxSessions slots still taken.
func openSession(ctx context.Context, client *ssh.Client) (*ssh.Session, error) {
	delay := 5 * time.Millisecond
	for deadline := time.Now().Add(2 * time.Second); ; {
		s, err := client.NewSession()
		var refused *ssh.OpenChannelError
		if err == nil || !errors.As(err, &refused) || refused.Reason != ssh.ConnectionFailed || time.Now().After(deadline) {
			return s, err
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		delay = min(2*delay, 200*time.Millisecond)
	}
}
