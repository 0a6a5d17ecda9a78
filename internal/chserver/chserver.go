package chserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/domain"
)

// ErrNotInstalled is returned, wrapped, when the clickhouse-server binary
// cannot be found. It is a *domain.Error with code Unavailable, so
// errors.Is(err, ErrNotInstalled) and domain.ErrorCode(err) both work.
var ErrNotInstalled = domain.Errorf(domain.Unavailable,
	"clickhouse-server is not installed: run `sudo apt-get update && sudo apt-get install -y clickhouse-server` (Debian) or pass --clickhouse-addr to use a running server")

const (
	// readyTimeout bounds Start when ctx has no earlier deadline. 18.16
	// answers in well under a second on an empty directory; large data
	// directories take longer to load their metadata.
	readyTimeout = 60 * time.Second
	// stopTimeout is how long Stop waits after SIGTERM before SIGKILL.
	stopTimeout = 30 * time.Second
	// pollInterval is the pause between readiness pings.
	pollInterval = 50 * time.Millisecond
	// tailLines is how much of the error log a start failure quotes.
	tailLines = 15
)

// defaultBinaries are tried in order when Options.Binary is empty. Debian
// installs the server in /usr/sbin, which is not on a normal user's PATH.
var defaultBinaries = []string{"clickhouse-server", "/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"}

// Options configure Start.
type Options struct {
	Dir      string // data dir for this server (created); config files written here
	TCPPort  int    // 0 = pick a free loopback port
	HTTPPort int    // 0 = pick a free loopback port
	Binary   string // default: "clickhouse-server" from PATH, then /usr/sbin and /usr/bin
	// Password is the password of User, the only user that may log in
	// (users.xml keeps its SHA-256 only). Empty: Start makes a random one
	// (see Server.Password).
	Password string
	Log      zerolog.Logger
}

// Server is a running clickhouse-server process. Its methods are safe for
// concurrent use.
type Server struct {
	l        layout
	bin      string
	tcpPort  int
	httpPort int
	password string
	log      zerolog.Logger

	mu   sync.Mutex // serialises Stop, Kill and Restart
	proc *process   // nil before the first start
}

// process is one run of the binary.
type process struct {
	pid  int
	done chan struct{} // closed once the process has been reaped
	err  error         // result of Wait; read only after done is closed
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Start writes a config into o.Dir, starts clickhouse-server on it and
// waits until a native-protocol ping succeeds, bounded by ctx and by a
// minute. Start on a directory a stopped server used keeps its data.
// On failure the process is killed and the error quotes the end of its
// error log.
func Start(ctx context.Context, o Options) (*Server, error) {
	if o.Dir == "" {
		return nil, domain.Errorf(domain.Invalid, "clickhouse server: no data directory given")
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("clickhouse server: data directory %q: %w", o.Dir, err)
	}
	bin, err := findBinary(o.Binary)
	if err != nil {
		return nil, err
	}
	password := o.Password
	if password == "" {
		if password, err = randomPassword(); err != nil {
			return nil, err
		}
	}
	s := &Server{l: newLayout(dir), bin: bin, password: password, log: o.Log.With().Str("component", "clickhouse").Logger()}

	// A free port found here may be taken by someone else before the
	// server binds it; when we picked that port, try again with new ones.
	for attempt := 1; ; attempt++ {
		if s.tcpPort, err = portOrFree(o.TCPPort); err != nil {
			return nil, err
		}
		if s.httpPort, err = portOrFree(o.HTTPPort); err != nil {
			return nil, err
		}
		err = s.start(ctx)
		if err == nil {
			return s, nil
		}
		var busy *portBusyError
		if attempt == 3 || ctx.Err() != nil || !errors.As(err, &busy) ||
			!(busy.port == s.tcpPort && o.TCPPort == 0 || busy.port == s.httpPort && o.HTTPPort == 0) {
			return nil, err
		}
		s.log.Warn().Err(err).Int("port", busy.port).Msg("clickhouse port taken before the server bound it; retrying with new ports")
	}
}

// Addr is the native-protocol address for clickhouse-go, "127.0.0.1:<port>".
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.tcpPort)) }

// HTTPAddr is the address of the server's HTTP interface (for curl; dmgr
// itself uses only the native protocol).
func (s *Server) HTTPAddr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.httpPort))
}

// Credentials are the login of the server's only user.
func (s *Server) Credentials() Credentials { return Credentials{User: User, Password: s.password} }

// User is the server's only user, User.
func (s *Server) User() string { return User }

// Password is the password of User.
func (s *Server) Password() string { return s.password }

// Dir is the server's data directory (absolute).
func (s *Server) Dir() string { return s.l.Dir }

// Stop sends SIGTERM to the server's process group and waits for it to
// exit; after 30 s it sends SIGKILL. Stopping a stopped server is a no-op.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopLocked()
}

func (s *Server) stopLocked() error {
	p := s.proc
	if p == nil || p.exited() {
		return nil
	}
	if err := signalGroup(p.pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("stop clickhouse (pid %d): %w", p.pid, err)
	}
	t := time.NewTimer(stopTimeout)
	defer t.Stop()
	select {
	case <-p.done:
		s.log.Info().Int("pid", p.pid).Msg("clickhouse stopped")
		return nil
	case <-t.C:
	}
	s.log.Warn().Int("pid", p.pid).Dur("after", stopTimeout).Msg("clickhouse did not stop on SIGTERM; killing it")
	if err := signalGroup(p.pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill clickhouse (pid %d): %w", p.pid, err)
	}
	<-p.done
	return nil
}

// Kill sends SIGKILL to the server's process group and waits until the
// process is gone, as a crash would. Killing a stopped server is a no-op.
func (s *Server) Kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.killLocked()
}

func (s *Server) killLocked() error {
	p := s.proc
	if p == nil || p.exited() {
		return nil
	}
	if err := signalGroup(p.pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill clickhouse (pid %d): %w", p.pid, err)
	}
	<-p.done
	s.log.Info().Int("pid", p.pid).Msg("clickhouse killed")
	return nil
}

// Restart stops the server if it is running (after Kill it is not) and
// starts it again on the same directory and ports, so Addr does not change
// and the data is kept.
func (s *Server) Restart(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.stopLocked(); err != nil {
		return err
	}
	return s.startLocked(ctx)
}

// Pid is the process id of the current run, or 0 when it is not running.
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil || s.proc.exited() {
		return 0
	}
	return s.proc.pid
}

func (s *Server) start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.startLocked(ctx)
}

// portBusyError marks a start that failed because a port was taken.
type portBusyError struct {
	port int
	err  error
}

func (e *portBusyError) Error() string { return e.err.Error() }
func (e *portBusyError) Unwrap() error { return e.err }

// addrInUse finds the port in 18.16's "Address already in use:
// 127.0.0.1:PORT" log line.
var addrInUse = regexp.MustCompile(`Address already in use: [^ ]*:(\d+)`)

func (s *Server) startLocked(ctx context.Context) error {
	if err := checkNotRunning(s.l); err != nil {
		return err
	}
	if err := writeConfig(s.l, s.tcpPort, s.httpPort, s.password); err != nil {
		return fmt.Errorf("clickhouse server in %s: %w", s.l.Dir, err)
	}
	// The error log is appended to across runs; quote only this run's part.
	errLogStart := fileSize(s.l.ErrLog)
	consoleStart := fileSize(s.l.ConsoleLog)
	console, err := os.OpenFile(s.l.ConsoleLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("clickhouse server: open %s: %w", s.l.ConsoleLog, err)
	}

	began := time.Now()
	cmd := exec.Command(s.bin, "--config-file="+s.l.Config)
	cmd.Dir = s.l.Dir
	cmd.Stdout = console
	cmd.Stderr = console
	cmd.SysProcAttr = sysProcAttr()
	p, err := run(cmd, console)
	if err != nil {
		return fmt.Errorf("clickhouse server: start %s: %w", s.bin, err)
	}
	s.proc = p
	log := s.log.With().Int("pid", p.pid).Str("addr", s.Addr()).Str("dir", s.l.Dir).Logger()

	if err := waitReady(ctx, s.Addr(), s.Credentials(), p); err != nil {
		if !p.exited() {
			_ = signalGroup(p.pid, syscall.SIGKILL)
			<-p.done
		}
		tail := tailFrom(s.l.ErrLog, errLogStart, tailLines)
		if tail == "" {
			tail = tailFrom(s.l.ConsoleLog, consoleStart, tailLines)
		}
		if tail == "" {
			tail = "(empty)"
		}
		log.Warn().Err(err).Msg("clickhouse did not start")
		msg := fmt.Sprintf("clickhouse-server (%s) in %s did not become ready on %s: %v; end of %s:\n%s",
			s.bin, s.l.Dir, s.Addr(), err, s.l.ErrLog, tail)
		derr := domain.Errorf(domain.Unavailable, "%s", msg)
		if m := addrInUse.FindStringSubmatch(tail); m != nil {
			port, _ := strconv.Atoi(m[1])
			return &portBusyError{port: port, err: derr}
		}
		return derr
	}
	log.Info().Dur("took", time.Since(began)).Msg("clickhouse started")
	return nil
}

// run starts cmd and reaps it in a goroutine that keeps its OS thread locked
// for the life of the process: Pdeathsig is tied to the thread that forked,
// not to the Go process, so that thread must not end while the server runs.
func run(cmd *exec.Cmd, closeAfter io.Closer) (*process, error) {
	p := &process{done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer closeAfter.Close()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		p.pid = cmd.Process.Pid
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}

// waitReady pings addr as cred until it answers, the process exits, or ctx
// (capped at readyTimeout) ends. A refused login ends the wait at once:
// the server answers, with a users.xml that is not ours.
func waitReady(ctx context.Context, addr string, cred Credentials, p *process) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	exited := func() error {
		if p.err != nil {
			return fmt.Errorf("process exited: %w", p.err)
		}
		return errors.New("process exited with status 0")
	}
	var last error
	for {
		if p.exited() {
			return exited()
		}
		if err := ping(ctx, addr, cred, p.done); err == nil {
			return nil
		} else if IsAuthError(err) {
			return fmt.Errorf("the server refused the login of user %s: %w", cred.User, err)
		} else {
			last = err
		}
		select {
		case <-p.done:
			return exited()
		case <-ctx.Done():
			return fmt.Errorf("%w (last ping: %v)", ctx.Err(), last)
		case <-time.After(pollInterval):
		}
	}
}

// ping tries one native-protocol ping, given up after 2 s or when the
// process exits (someone else may own the port and never answer).
func ping(ctx context.Context, addr string, cred Credentials, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	go func() {
		select {
		case <-exited:
			cancel()
		case <-ctx.Done():
		}
	}()
	conn, err := open(addr, time.Second, cred)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Ping(ctx)
}

// randomPassword is 32 random bytes, hex: 64 characters that need no
// quoting anywhere.
func randomPassword() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("clickhouse server: make a password: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// Installed reports whether a clickhouse-server binary is found where Start
// looks when Options.Binary is empty; the error wraps ErrNotInstalled.
func Installed() error {
	_, err := findBinary("")
	return err
}

// findBinary resolves Options.Binary, or the default locations when empty.
func findBinary(bin string) (string, error) {
	candidates := defaultBinaries
	if bin != "" {
		candidates = []string{bin}
	}
	for _, c := range candidates {
		if p, err := exec.LookPath(c); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("clickhouse server: no executable %s: %w", strings.Join(candidates, " or "), ErrNotInstalled)
}

// checkNotRunning fails with Conflict when a server holds the lock on the
// directory's status file (ClickHouse flocks it while it runs). Without this
// check a second Start would first rewrite the running server's config.
func checkNotRunning(l layout) error {
	f, err := os.Open(l.StatusFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("clickhouse server: open %s: %w", l.StatusFile, err)
	}
	defer f.Close()
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return domain.Errorf(domain.Conflict,
			"another clickhouse-server is already running in %s (it holds %s); stop it or use another directory",
			l.Dir, l.StatusFile)
	}
	if err != nil {
		return fmt.Errorf("clickhouse server: lock %s: %w", l.StatusFile, err)
	}
	return syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
}

// signalGroup signals the process group led by pid. A group that is
// already gone is not an error.
func signalGroup(pid int, sig syscall.Signal) error {
	err := syscall.Kill(-pid, sig)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

func portOrFree(port int) (int, error) {
	if port != 0 {
		if port < 0 || port > 65535 {
			return 0, domain.Errorf(domain.Invalid, "clickhouse server: port %d is out of range 1-65535", port)
		}
		return port, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("clickhouse server: find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// tailFrom returns the last n lines of path after byte offset from, reading
// at most 64 KiB.
func tailFrom(path string, from int64, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const maxRead = 64 << 10
	if size := fileSize(path); size-from > maxRead {
		from = size - maxRead
	}
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		return ""
	}
	b, err := io.ReadAll(io.LimitReader(f, maxRead))
	if err != nil {
		return ""
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.TrimSpace(string(bytes.Join(lines, []byte("\n"))))
}
