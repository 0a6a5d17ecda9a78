package remote

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/dmgr/dmgr/domain"
)

// RunOptions adjusts one [Pool.Run].
type RunOptions struct {
	// Sudo runs the command as root through sudo when the login user is not
	// root.
	Sudo bool
	// AsUser runs the command as this user through `sudo -u` (also when the
	// login user is root).
	AsUser string
	// Stdin is copied to the command's standard input, then closed. Run
	// returns when the command exits, even if Stdin was not read to the end
	// (a Read that blocks then holds only its own goroutine). A Read error
	// stops the command, as a cancelled ctx does, and Run reports it.
	Stdin io.Reader
	// TailBytes is how much of the end of stdout and of stderr is kept;
	// default 4 KiB. Earlier output is dropped as it arrives.
	TailBytes int
}

// Result is what a command that ran left behind.
type Result struct {
	ExitCode int    // 128+N when killed by signal N, as shells report it
	Stdout   string // the last TailBytes of standard output
	Stderr   string // the last TailBytes of standard error
	Duration time.Duration
}

const defaultTail = 4 << 10

// Run runs cmd, a command line for the login user's POSIX shell built with
// domain.ShellCommand, on t.
//
// It returns an error only when the command could not be run or could not
// finish: connecting, host key, authentication, opening the session,
// reading Stdin, the connection lost before the exit status arrived, or ctx
// ending. A command that ran and exited non-zero gives Result.ExitCode != 0
// and a nil error.
//
// When ctx ends first, the command's process group is sent SIGKILL (with
// the rights the command runs with, so sudo does not shield it), the session
// is closed, and the error wraps ctx.Err(). Stopping takes a round trip, at
// most a few seconds on a hung connection. Processes the command started in
// a session of their own (daemons) are left alone.
func (p *Pool) Run(ctx context.Context, t Target, cmd string, o RunOptions) (Result, error) {
	if strings.TrimSpace(cmd) == "" {
		return Result{}, t.wrap("run", errors.New("empty command"))
	}
	line, prefix, err := sudoWrap(t, cmd, o.Sudo, o.AsUser)
	if err != nil {
		return Result{}, t.wrap("run", err)
	}
	res, err := p.exec(ctx, t, job{line: line, stdin: withPrefix(prefix, o.Stdin), tail: o.TailBytes,
		cancel: ssh.SIGKILL, sudo: o.Sudo, asUser: o.AsUser})
	return res, t.wrap("run", err)
}

// sudoWrap returns the command line that runs cmd with the requested
// privileges, and what must be written to its stdin before the caller's
// input. Sudo is used when the command must run as another user than the
// login user:
//
//	sudo -n [-u USER] -- sh -c CMD
//
// and, when the target has a password (and the login user is not root),
//
//	sudo -S -p '' [-u USER] -- sh -c SKIP sh MARKER CMD
//
// with "PASSWORD\nMARKER\n" written first on stdin. sudo reads the password
// line only if it needs a password (NOPASSWD rules and cached credentials
// make it skip it), so SKIP reads and discards lines up to the random MARKER
// before running CMD: the caller's input reaches CMD intact either way, and
// the password never does.
func sudoWrap(t Target, cmd string, sudo bool, asUser string) (line, stdinPrefix string, err error) {
	if asUser == "" && !sudo || t.User == "root" && (asUser == "" || asUser == "root") {
		return cmd, "", nil
	}
	var user []string
	if asUser != "" {
		user = []string{"-u", asUser}
	}
	if t.Password == "" || t.User == "root" {
		args := append(append([]string{"-n"}, user...), "--", "sh", "-c", cmd)
		line, err = domain.ShellCommand("sudo", args...)
		if err != nil {
			return "", "", fmt.Errorf("sudo: %w", err)
		}
		return line, "", nil
	}
	if strings.ContainsAny(t.Password, "\n\r") {
		return "", "", fmt.Errorf("the password contains a line break, which sudo -S cannot read; use a key and NOPASSWD sudo")
	}
	marker := "dmgr-stdin-" + randomHex(16)
	args := append(append([]string{"-S", "-p", ""}, user...), "--", "sh", "-c", skipToMarker, "sh", marker, cmd)
	line, err = domain.ShellCommand("sudo", args...)
	if err != nil {
		return "", "", fmt.Errorf("sudo: %w", err)
	}
	return line, t.Password + "\n" + marker + "\n", nil
}

// skipToMarker discards stdin lines up to the marker $1, then runs $2 with
// the rest of stdin. sh's read takes one byte at a time from a pipe, so
// nothing after the marker is consumed.
const skipToMarker = `while IFS= read -r l; do if [ "$l" = "$1" ]; then unset l; exec sh -c "$2"; fi; done; echo "dmgr: sudo took the whole of stdin (wrong password?)" >&2; exit 125`

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

func withPrefix(prefix string, r io.Reader) io.Reader {
	switch {
	case prefix == "":
		return r
	case r == nil:
		return strings.NewReader(prefix)
	default:
		return io.MultiReader(strings.NewReader(prefix), r)
	}
}

// job is one command for exec.
type job struct {
	line  string    // the command line, already wrapped by sudoWrap
	stdin io.Reader // nil: none
	tail  int       // bytes of stdout and stderr to keep
	// cancel is the signal the command's process group gets when ctx ends
	// or stdin fails; sudo and asUser are the privileges line runs with, so
	// that the signal is sent with them too.
	cancel ssh.Signal
	sudo   bool
	asUser string
}

// pgidLine starts every command line: the login shell, which sshd made a
// session and process group leader, reports its PID on stderr (exec takes
// the line out again). Cancelling a command kills that process group from a
// second session: sshd's "signal" request is not enough, as sshd refuses it
// for root logins and, for other users, sends it with the login user's
// rights, which do not reach commands run through sudo.
const pgidLine = "echo dmgr-pgid=$$ >&2\n"

// exec runs j in a new session on t. When ctx ends, or reading stdin fails
// (the command must not act on truncated input), the command's process
// group gets j.cancel and the session is closed.
func (p *Pool) exec(ctx context.Context, t Target, j job) (Result, error) {
	start := time.Now()
	if j.tail <= 0 {
		j.tail = defaultTail
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	s, c, release, err := p.session(ctx, t)
	if err != nil {
		return Result{}, err
	}
	defer release()
	defer s.Close()

	stdout, stderr := newTail(j.tail), newTail(j.tail)
	pgid := newPGIDFilter(stderr)
	s.Stdout, s.Stderr = stdout, pgid
	result := func() Result {
		return Result{Stdout: stdout.String(), Stderr: stderr.String(), Duration: time.Since(start)}
	}
	var abortOnce sync.Once
	abort := func() {
		abortOnce.Do(func() {
			if t.User != "root" {
				s.Signal(j.cancel) // sshd: killpg with the login user's rights
			}
			// Kill before closing: closing would end the command's stdin,
			// and it could go on with truncated input meanwhile.
			if id := pgid.wait(2 * time.Second); id > 0 {
				if err := p.killGroup(c, t, id, j); err != nil {
					p.o.Log.Warn().Str("host", t.addr()).Err(err).Msg("could not stop a cancelled remote command")
				}
			}
			s.Close()
		})
	}

	var in *stdinPump
	if j.stdin != nil {
		w, err := s.StdinPipe()
		if err != nil {
			return Result{}, fmt.Errorf("stdin: %w", err)
		}
		in = &stdinPump{r: j.stdin, w: w, abort: abort}
	}
	if err := s.Start(pgidLine + j.line); err != nil {
		return Result{}, fmt.Errorf("start command: %w", err)
	}
	if in != nil {
		go in.run()
	}

	waited := make(chan error, 1)
	go func() { waited <- s.Wait() }()
	var werr error
	select {
	case werr = <-waited:
	case <-ctx.Done():
		abort()
		return result(), ctx.Err()
	}
	pgid.flush()
	res := result()
	if err := in.readError(); err != nil {
		return res, fmt.Errorf("read the command's stdin: %w", err)
	}
	var exit *ssh.ExitError
	switch {
	case werr == nil:
	case errors.As(werr, &exit):
		res.ExitCode = exit.ExitStatus()
	default: // *ssh.ExitMissingError, io.EOF: the connection went away
		return res, fmt.Errorf("the command ended without an exit status (connection lost?); it may or may not have finished: %w", werr)
	}
	return res, nil
}

// killGroup sends j.cancel to the process group pgid from a new session on
// c, with the privileges the command ran with. It uses the session slot the
// cancelled command still holds, so it never waits for one.
func (p *Pool) killGroup(c *conn, t Target, pgid int, j job) error {
	kill := domain.ShellJoin("kill", "-s", string(j.cancel), "--", "-"+strconv.Itoa(pgid))
	line, prefix, err := sudoWrap(t, kill, j.sudo, j.asUser)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), killTimeout)
		defer cancel()
		s, err := openSession(ctx, c.client) // may hang on a hung connection
		if err != nil {
			done <- err
			return
		}
		defer s.Close()
		if prefix != "" {
			s.Stdin = strings.NewReader(prefix)
		}
		err = s.Run(line)
		var exit *ssh.ExitError
		if errors.As(err, &exit) {
			err = nil // the group is gone already
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(killTimeout):
		return fmt.Errorf("kill did not finish within %v", killTimeout)
	}
}

const killTimeout = 5 * time.Second

// pgidFilter passes stderr through to w, taking out the line that pgidLine
// prints (shell startup files may print before it, so it looks at the first
// lines, up to 4 KiB).
type pgidFilter struct {
	w    io.Writer
	mu   sync.Mutex
	buf  []byte // an incomplete line while looking
	seen int    // bytes looked at
	done bool   // found it or gave up
	pgid int
	got  chan struct{} // closed when done
}

func newPGIDFilter(w io.Writer) *pgidFilter { return &pgidFilter{w: w, got: make(chan struct{})} }

func (f *pgidFilter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(p)
	for !f.done && len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			f.buf = append(f.buf, p...)
			f.seen += len(p)
			p = nil
			if f.seen > 4<<10 {
				f.giveUp()
			}
			break
		}
		line := append(f.buf, p[:i+1]...)
		f.buf = nil
		f.seen += i + 1
		p = p[i+1:]
		if id, ok := strings.CutPrefix(string(line), "dmgr-pgid="); ok {
			if v, err := strconv.Atoi(strings.TrimSuffix(id, "\n")); err == nil && v > 1 {
				f.pgid = v
				f.done = true
				close(f.got)
				break
			}
		}
		f.w.Write(line)
		if f.seen > 4<<10 {
			f.giveUp()
		}
	}
	if len(p) > 0 {
		f.w.Write(p)
	}
	return n, nil
}

// giveUp stops looking; f.mu is held.
func (f *pgidFilter) giveUp() {
	f.w.Write(f.buf)
	f.buf = nil
	f.done = true
	close(f.got)
}

// flush passes on what is held back once the command has ended.
func (f *pgidFilter) flush() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.done {
		f.giveUp()
	}
}

// wait returns the process group id once it has been seen, or 0 after d.
func (f *pgidFilter) wait(d time.Duration) int {
	select {
	case <-f.got:
	case <-time.After(d):
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pgid
}

// stdinPump copies the caller's stdin to the session. Writes fail once the
// command has exited; that is not an error. Read errors are.
type stdinPump struct {
	r     io.Reader
	w     io.WriteCloser
	abort func()

	mu      sync.Mutex
	readErr error
}

func (p *stdinPump) run() {
	buf := make([]byte, 32<<10)
	for {
		n, err := p.r.Read(buf)
		if n > 0 {
			if _, werr := p.w.Write(buf[:n]); werr != nil {
				return // the command is gone or stopped reading
			}
		}
		if err == io.EOF {
			p.w.Close()
			return
		}
		if err != nil {
			p.mu.Lock()
			p.readErr = err
			p.mu.Unlock()
			p.abort()
			return
		}
	}
}

func (p *stdinPump) readError() error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.readErr
}
