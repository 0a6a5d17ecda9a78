package testenv

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// SSHDPath is where Debian's openssh-server installs the daemon.
const SSHDPath = "/usr/sbin/sshd"

// SSHServer is a real OpenSSH sshd listening on 127.0.0.1, started by [SSHD]
// and stopped when the test ends.
type SSHServer struct {
	Addr string // "127.0.0.1:PORT"
	Host string // "127.0.0.1"
	Port int

	// HostKey is the server's ed25519 host key and ECDSAHostKey its
	// ecdsa-sha2-nistp256 one, both in authorized_keys format
	// ("ssh-ed25519 AAAA…"). The server offers both, as a stock Debian sshd
	// does, so a client that pins one must ask for that key's algorithm.
	HostKey      string
	ECDSAHostKey string

	// ClientKey is an unencrypted ed25519 private key (OpenSSH PEM) that may
	// log in as root and as every user in [SSHDOptions.Users].
	ClientKey []byte

	// Dir holds the config, keys, log and the users' home directories.
	Dir string

	t      testing.TB
	config string
	hasNS  bool // sshd runs in a mount namespace with the test users
	cmd    *exec.Cmd
	exited chan struct{}
}

// SSHDOptions configures [SSHD]; the zero value serves root only.
type SSHDOptions struct {
	// Users are created for this server only: sshd runs in a private mount
	// namespace whose /etc/passwd, /etc/shadow, /etc/group and /etc/sudoers
	// are copies that add them, so the machine's own accounts are untouched.
	// Commands run over the connection see the same files.
	Users []SSHUser
}

// SSHUser is a throwaway login account of an [SSHServer].
type SSHUser struct {
	Name     string // a name not used on this machine, e.g. "dmgrtest"
	Password string // may log in with it (and with ClientKey); empty: key only
	Sudo     SudoRule
}

// SudoRule says what sudo lets an [SSHUser] do.
type SudoRule int

// The sudo rules of a test user. Sudo never caches a password for them
// (timestamp_timeout=0), so every sudo call asks again.
const (
	NoSudo         SudoRule = iota // not in sudoers
	SudoPassword                   // ALL=(ALL) ALL: sudo asks for the user's password
	SudoNoPassword                 // ALL=(ALL) NOPASSWD: ALL
)

// SSHD starts OpenSSH's sshd on a free port of 127.0.0.1 with freshly
// generated host keys and one authorized client key, allowing root to log in
// by key. It needs root (sshd drops privileges per connection and must read
// the host keys); without root the test is skipped, unless CI=true, where it
// fails, as it does when sshd is not installed there.
//
// Sessions get SHLVL=1 in their environment, so bash, as root's login shell,
// does not read ~/.bashrc for them: the tests do not depend on this
// machine's startup files.
func SSHD(t testing.TB, o SSHDOptions) *SSHServer {
	t.Helper()
	if _, err := os.Stat(SSHDPath); err != nil {
		SkipOrFail(t, "SKIP: %s is not installed (apt-get install -y openssh-server); the SSH tests run a real sshd. CI installs it.", SSHDPath)
	}
	if os.Geteuid() != 0 {
		SkipOrFail(t, "SKIP: starting sshd for SSH tests needs root (running as uid %d); run the tests as root, as CI does.", os.Geteuid())
	}
	// sshd refuses to start without its privilege-separation directory.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatalf("sshd: %v", err)
	}

	s := &SSHServer{Host: "127.0.0.1", Dir: t.TempDir(), t: t, hasNS: len(o.Users) > 0}
	if err := s.writeKeys(); err != nil {
		t.Fatalf("sshd: %v", err)
	}
	if s.hasNS {
		if err := s.writeUsers(o.Users); err != nil {
			t.Fatalf("sshd: test users: %v", err)
		}
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(s.Dir, "sshd.log")); err == nil {
				t.Logf("sshd log (%s):\n%s", s.Addr, tail(b, 8<<10))
			}
		}
	})

	// A port that was free a moment ago may be taken before sshd binds it:
	// pick again then.
	var err error
	for attempt := 1; attempt <= 5; attempt++ {
		if s.Port, err = freePort(); err != nil {
			t.Fatalf("sshd: %v", err)
		}
		s.Addr = net.JoinHostPort(s.Host, strconv.Itoa(s.Port))
		if err = s.start(); err == nil {
			return s
		}
		if !strings.Contains(err.Error(), "ddress already in use") {
			break
		}
	}
	t.Fatalf("sshd: %v", err)
	return nil
}

// Restart stops sshd together with every connection it serves and every
// command those connections run, as a reboot of the machine would, then
// starts it again on the same port with the same keys.
func (s *SSHServer) Restart() {
	s.t.Helper()
	s.Stop()
	var err error
	for attempt := 1; attempt <= 50; attempt++ { // the port may linger briefly
		if err = s.start(); err == nil || !strings.Contains(err.Error(), "ddress already in use") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatalf("sshd restart: %v", err)
	}
}

// Stop kills sshd, its per-connection processes and everything they run.
// Established SSH connections break (the client sees EOF). It is safe to
// call more than once.
func (s *SSHServer) Stop() {
	if s.cmd == nil {
		return
	}
	killTree(s.cmd.Process.Pid)
	<-s.exited
	s.cmd = nil
}

// Pause freezes sshd, its connections and their commands (SIGSTOP), so the
// machine looks hung or cut off: TCP stays up but nothing answers. Resume
// undoes it.
func (s *SSHServer) Pause() {
	if s.cmd != nil {
		freezeTree(s.cmd.Process.Pid)
	}
}

// Resume continues what Pause froze.
func (s *SSHServer) Resume() {
	if s.cmd == nil {
		return
	}
	for _, p := range append([]int{s.cmd.Process.Pid}, descendants(s.cmd.Process.Pid)...) {
		syscall.Kill(p, syscall.SIGCONT)
	}
}

// writeKeys creates the host keys, the client key and authorized_keys.
func (s *SSHServer) writeKeys() error {
	_, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	if s.HostKey, err = writePrivateKey(filepath.Join(s.Dir, "ssh_host_ed25519_key"), edPriv); err != nil {
		return err
	}
	ecPriv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	if s.ECDSAHostKey, err = writePrivateKey(filepath.Join(s.Dir, "ssh_host_ecdsa_key"), ecPriv); err != nil {
		return err
	}
	_, clientPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	block, err := ssh.MarshalPrivateKey(clientPriv, "dmgr test client")
	if err != nil {
		return err
	}
	s.ClientKey = pem.EncodeToMemory(block)
	clientPub, err := ssh.NewPublicKey(clientPriv.Public())
	if err != nil {
		return err
	}
	// Users other than root read authorized_keys and reach their homes
	// through Dir and its parent, which t.TempDir creates 0700.
	for _, d := range []string{filepath.Dir(s.Dir), s.Dir} {
		if err := os.Chmod(d, 0o711); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(s.Dir, "authorized_keys"), ssh.MarshalAuthorizedKey(clientPub), 0o644)
}

// writePrivateKey writes key where sshd reads a host key (0600) and returns
// its public half in authorized_keys format.
func writePrivateKey(path string, key any) (string, error) {
	block, err := ssh.MarshalPrivateKey(key, "")
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return "", err
	}
	signer, err := ssh.NewSignerFromKey(key)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))), nil
}

// writeUsers writes copies of the account files with users added, for sshd's
// mount namespace.
func (s *SSHServer) writeUsers(users []SSHUser) error {
	etc := filepath.Join(s.Dir, "etc")
	if err := os.Mkdir(etc, 0o755); err != nil {
		return err
	}
	files := map[string][]byte{}
	for _, f := range []string{"passwd", "shadow", "group", "sudoers"} {
		b, err := os.ReadFile(filepath.Join("/etc", f))
		if err != nil {
			return err
		}
		if len(b) > 0 && b[len(b)-1] != '\n' {
			b = append(b, '\n')
		}
		files[f] = b
	}
	used := map[int]bool{}
	for _, f := range []string{"passwd", "group"} {
		for _, line := range strings.Split(string(files[f]), "\n") {
			if fields := strings.Split(line, ":"); len(fields) > 2 {
				if id, err := strconv.Atoi(fields[2]); err == nil {
					used[id] = true
				}
				if fields[0] != "" && f == "passwd" {
					for _, u := range users {
						if u.Name == fields[0] {
							return fmt.Errorf("user %q already exists on this machine; pick another name", u.Name)
						}
					}
				}
			}
		}
	}
	id := 61000
	for _, u := range users {
		for used[id] {
			id++
		}
		used[id] = true
		home := filepath.Join(s.Dir, "home", u.Name)
		if err := os.MkdirAll(home, 0o755); err != nil {
			return err
		}
		if err := os.Chown(home, id, id); err != nil {
			return err
		}
		hash := "*"
		if u.Password != "" {
			cmd := exec.Command("openssl", "passwd", "-6", "-stdin")
			cmd.Stdin = strings.NewReader(u.Password + "\n")
			out, err := cmd.Output()
			if err != nil {
				return fmt.Errorf("hash password with openssl: %w", err)
			}
			hash = strings.TrimSpace(string(out))
		}
		files["passwd"] = fmt.Appendf(files["passwd"], "%s:x:%d:%d:dmgr test user:%s:/bin/sh\n", u.Name, id, id, home)
		files["group"] = fmt.Appendf(files["group"], "%s:x:%d:\n", u.Name, id)
		files["shadow"] = fmt.Appendf(files["shadow"], "%s:%s:19000:0:99999:7:::\n", u.Name, hash)
		switch u.Sudo {
		case SudoPassword:
			files["sudoers"] = fmt.Appendf(files["sudoers"], "Defaults:%[1]s lecture=never, timestamp_timeout=0\n%[1]s ALL=(ALL:ALL) ALL\n", u.Name)
		case SudoNoPassword:
			files["sudoers"] = fmt.Appendf(files["sudoers"], "Defaults:%[1]s lecture=never, timestamp_timeout=0\n%[1]s ALL=(ALL:ALL) NOPASSWD: ALL\n", u.Name)
		}
	}
	modes := map[string]os.FileMode{"passwd": 0o644, "group": 0o644, "shadow": 0o640, "sudoers": 0o440}
	for f, b := range files {
		if err := os.WriteFile(filepath.Join(etc, f), b, modes[f]); err != nil {
			return err
		}
	}
	return nil
}

func (s *SSHServer) writeConfig() error {
	s.config = filepath.Join(s.Dir, "sshd_config")
	conf := fmt.Sprintf(`# written by testenv.SSHD
Port %d
ListenAddress %s
HostKey %s/ssh_host_ed25519_key
HostKey %s/ssh_host_ecdsa_key
PidFile none
AuthorizedKeysFile %s/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
PermitEmptyPasswords no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
PrintLastLog no
MaxStartups 100
LogLevel VERBOSE
# bash reads ~/.bashrc for commands run by sshd when SHLVL says it is a
# top-level shell; the machine's own root startup files (pyenv's rehash
# takes a global lock there) would make the tests slow and flaky.
SetEnv SHLVL=1
`, s.Port, s.Host, s.Dir, s.Dir, s.Dir)
	return os.WriteFile(s.config, []byte(conf), 0o600)
}

// start runs sshd in the foreground and waits until it answers with an SSH
// banner, or returns its log when it exits first.
func (s *SSHServer) start() error {
	if err := s.writeConfig(); err != nil {
		return err
	}
	logPath := filepath.Join(s.Dir, "sshd.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	offset, _ := logFile.Seek(0, 2)

	args := []string{SSHDPath, "-D", "-e", "-f", s.config}
	if s.hasNS {
		script := `for f in passwd shadow group sudoers; do mount --bind "$ETC/$f" "/etc/$f" || exit 1; done; exec "$@"`
		args = append([]string{"unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, "sh"}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "ETC="+filepath.Join(s.Dir, "etc"))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// If the test binary dies without cleaning up (a panic, a timeout),
	// the listener goes with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", args[0], err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()

	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-exited:
			b, _ := os.ReadFile(logPath)
			if int64(len(b)) >= offset {
				b = b[offset:]
			}
			return fmt.Errorf("sshd exited at start (%v): %s", cmd.ProcessState, bytes.TrimSpace(b))
		default:
		}
		if banner(s.Addr) {
			s.cmd, s.exited = cmd, exited
			return nil
		}
		if time.Now().After(deadline) {
			killTree(cmd.Process.Pid)
			<-exited
			return fmt.Errorf("sshd on %s did not answer within 15s", s.Addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// banner reports whether an SSH server answers on addr.
func banner(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "SSH-2.0-OpenSSH")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// killTree kills pid and all its descendants.
func killTree(pid int) {
	for _, p := range freezeTree(pid) {
		syscall.Kill(p, syscall.SIGKILL)
	}
}

// freezeTree stops pid and all its descendants with SIGSTOP and returns
// them. sshd's per-connection processes start their own sessions, so a
// process group does not reach them; stopping the tree top-down until no
// new descendant appears keeps anything from forking or being reparented
// meanwhile.
func freezeTree(pid int) []int {
	stopped := map[int]bool{}
	var out []int
	for round := 0; round < 50; round++ {
		found := false
		for _, p := range append([]int{pid}, descendants(pid)...) {
			if !stopped[p] {
				stopped[p] = true
				found = true
				out = append(out, p)
				syscall.Kill(p, syscall.SIGSTOP)
			}
		}
		if !found {
			break
		}
	}
	return out
}

// descendants lists the processes below pid, read from /proc.
func descendants(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, err := parentPID(p); err == nil {
			children[pp] = append(children[pp], p)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		out = append(out, children[p]...)
		queue = append(queue, children[p]...)
	}
	return out
}

func parentPID(pid int) (int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// pid (comm) state ppid …; comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0, errors.New("malformed stat")
	}
	return strconv.Atoi(f[1])
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
