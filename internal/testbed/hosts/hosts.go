// Package hosts gives tests a set of real SSH hosts on this one machine.
//
// Start runs testbed/testbed.sh, which makes each host a network namespace
// with its own address on a Linux bridge, its own mount, UTS and PID
// namespaces (a private copy of /etc, private /home, /root, /srv, /tmp,
// /var/tmp, /var/log and a tmpfs /run; its own hostname and process list) and
// a real OpenSSH sshd on port 22 with its own ed25519 host key. Processes in
// the test reach every host by its address; hosts reach each other. Every
// host has three users: root (key), dmgr (key, sudo without password) and
// dmpass (password, sudo with that password).
//
// Everything outside the private directories (/usr, /opt, /var/lib, ...) is
// the real machine's and is shared by all hosts, so deploy and data
// directories in tests belong under /srv or /home.
//
// It needs root. Without root, Start skips the test, unless CI=true, where it
// fails. Each Start makes a bed with its own names, subnet and directory, so
// test packages that run at the same time do not collide. A bed left behind
// by a killed test binary is removed with
//
//	TESTBED_DIR=/tmp/dmgr-testbed-<prefix> testbed/testbed.sh down
package hosts

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Bed is a set of test hosts created by testbed.sh.
type Bed struct {
	Hosts  []Host // Hosts[i-1] is host i
	Dir    string // state directory: keys, host trees, hosts.json
	Prefix string // prefix of the bed's namespaces and links
	Script string // path of testbed.sh

	t     testing.TB
	close sync.Once
}

// Host is one test host. Methods of Bed name hosts by Index, which starts
// at 1 as in testbed.sh.
type Host struct {
	Index    int
	Name     string // network namespace, for ip netns exec
	Addr     string // IPv4 address
	SSHPort  int
	Hostname string
	HostKey  string // authorized_keys line of the host's public key

	RootKey     []byte // PEM (OpenSSH) private key for root
	RootKeyFile string
	SudoUser    string // key login, sudo without password
	SudoKey     []byte
	SudoKeyFile string

	PasswordUser string // password login, sudo with the same password
	Password     string
}

// SSHAddr is the host's sshd address, host:port.
func (h Host) SSHAddr() string { return net.JoinHostPort(h.Addr, strconv.Itoa(h.SSHPort)) }

// exTempFail is testbed.sh's exit status when the subnet or names of a new
// bed are taken; Start then tries another prefix.
const exTempFail = 75

// Start creates n hosts and registers their teardown with t.Cleanup.
func Start(t testing.TB, n int) *Bed {
	t.Helper()
	if os.Geteuid() != 0 {
		if inCI() {
			t.Fatal("testbed: needs root for network namespaces, and CI=true: run the tests as root")
		}
		t.Skip("testbed: needs root for network namespaces; run as root or in CI")
	}
	script, err := findScript()
	if err != nil {
		t.Fatal(err)
	}
	for attempt := 0; ; attempt++ {
		prefix := "t" + randomSuffix(5)
		b := &Bed{Dir: filepath.Join(os.TempDir(), "dmgr-testbed-"+prefix), Prefix: prefix, Script: script, t: t}
		out, err := b.run("up", strconv.Itoa(n))
		var exit *exec.ExitError
		if errors.As(err, &exit) && exit.ExitCode() == exTempFail && attempt < 20 {
			// Nothing was made, and the names may be another bed's: no down.
			continue
		}
		if err != nil {
			downOut, _ := b.down()
			t.Fatalf("testbed: up %d: %v\n%s%s", n, err, out, downOut)
		}
		t.Cleanup(b.Close)
		if err := b.load(); err != nil {
			t.Fatalf("testbed: %v", err)
		}
		if len(b.Hosts) != n {
			t.Fatalf("testbed: asked for %d hosts, %s/hosts.json has %d", n, b.Dir, len(b.Hosts))
		}
		return b
	}
}

// Close tears the bed down: every process on every host is killed, the
// namespaces, links and state directory are removed. Start registers it
// with t.Cleanup; calling it again does nothing.
func (b *Bed) Close() {
	b.close.Do(func() {
		if out, err := b.down(); err != nil {
			b.t.Errorf("testbed: down %s: %v\n%s", b.Dir, err, out)
		}
	})
}

// Stop kills every process of host i, sshd and everything it started, like
// pulling the plug.
func (b *Bed) Stop(t testing.TB, i int) {
	t.Helper()
	b.must(t, "stop", i)
}

// Start boots host i again after Stop: the same host key and files, a fresh
// /run, and only sshd running; what was deployed earlier is not restarted.
func (b *Bed) Start(t testing.TB, i int) {
	t.Helper()
	b.must(t, "start", i)
}

// Cut takes host i off the network: connections to and from it time out.
func (b *Bed) Cut(t testing.TB, i int) {
	t.Helper()
	b.must(t, "cut", i)
}

// Restore puts host i back on the network after Cut.
func (b *Bed) Restore(t testing.TB, i int) {
	t.Helper()
	b.must(t, "restore", i)
}

// Rekey gives host i a new host key, which sshd serves from then on, and
// returns it as an authorized_keys line. It updates Hosts[i-1].HostKey, so
// it must not run while other goroutines read Hosts.
func (b *Bed) Rekey(t testing.TB, i int) string {
	t.Helper()
	out := b.must(t, "rekey", i)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	key := strings.TrimSpace(lines[len(lines)-1])
	if !strings.HasPrefix(key, "ssh-ed25519 ") {
		t.Fatalf("testbed: rekey %d: no key in output:\n%s", i, out)
	}
	b.Hosts[i-1].HostKey = key
	return key
}

// Exec runs `sh -c script` inside host i's namespaces (network, mount, UTS
// and PID, as root) and returns its combined output. A host that is stopped
// is entered with fresh namespaces over the same files. The error is
// non-nil when the script exits non-zero.
func (b *Bed) Exec(t testing.TB, i int, script string) (string, error) {
	t.Helper()
	b.check(t, i)
	out, err := b.run("exec", strconv.Itoa(i), "sh", "-c", script)
	if err != nil {
		return out, fmt.Errorf("testbed: host %d: %q: %w", i, script, err)
	}
	return out, nil
}

func (b *Bed) must(t testing.TB, cmd string, i int) string {
	t.Helper()
	b.check(t, i)
	out, err := b.run(cmd, strconv.Itoa(i))
	if err != nil {
		t.Fatalf("testbed: %s %d: %v\n%s", cmd, i, err, out)
	}
	return out
}

func (b *Bed) check(t testing.TB, i int) {
	t.Helper()
	if i < 1 || i > len(b.Hosts) {
		t.Fatalf("testbed: no host %d: hosts are numbered 1..%d", i, len(b.Hosts))
	}
}

func (b *Bed) down() (string, error) { return b.run("down") }

// run runs testbed.sh for this bed; the caller's TESTBED_* variables must
// not leak into it.
func (b *Bed) run(args ...string) (string, error) {
	cmd := exec.Command("bash", append([]string{b.Script}, args...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TESTBED_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "TESTBED_DIR="+b.Dir, "TESTBED_PREFIX="+b.Prefix)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// hostJSON is one element of hosts.json.
type hostJSON struct {
	Index        int    `json:"index"`
	Name         string `json:"name"`
	Addr         string `json:"addr"`
	SSHPort      int    `json:"ssh_port"`
	Hostname     string `json:"hostname"`
	HostKey      string `json:"host_key"`
	RootKey      string `json:"root_key"`
	SudoUser     string `json:"sudo_user"`
	SudoKey      string `json:"sudo_key"`
	PasswordUser string `json:"password_user"`
	Password     string `json:"password"`
}

func (b *Bed) load() error {
	data, err := os.ReadFile(filepath.Join(b.Dir, "hosts.json"))
	if err != nil {
		return err
	}
	var hs []hostJSON
	if err := json.Unmarshal(data, &hs); err != nil {
		return fmt.Errorf("%s/hosts.json: %w", b.Dir, err)
	}
	keys := map[string][]byte{}
	readKey := func(path string) ([]byte, error) {
		if k, ok := keys[path]; ok {
			return k, nil
		}
		k, err := os.ReadFile(path)
		keys[path] = k
		return k, err
	}
	b.Hosts = nil
	for n, h := range hs {
		if h.Index != n+1 {
			return fmt.Errorf("%s/hosts.json: host %d at position %d", b.Dir, h.Index, n+1)
		}
		rootKey, err := readKey(h.RootKey)
		if err != nil {
			return err
		}
		sudoKey, err := readKey(h.SudoKey)
		if err != nil {
			return err
		}
		b.Hosts = append(b.Hosts, Host{
			Index: h.Index, Name: h.Name, Addr: h.Addr, SSHPort: h.SSHPort, Hostname: h.Hostname,
			HostKey: h.HostKey, RootKey: rootKey, RootKeyFile: h.RootKey,
			SudoUser: h.SudoUser, SudoKey: sudoKey, SudoKeyFile: h.SudoKey,
			PasswordUser: h.PasswordUser, Password: h.Password,
		})
	}
	return nil
}

// findScript finds testbed.sh beside this package's source, or else above
// the working directory (a test binary built with -trimpath).
func findScript() (string, error) {
	if p := os.Getenv("TESTBED_SCRIPT"); p != "" {
		return p, nil
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		p := filepath.Join(filepath.Dir(file), "..", "testbed.sh")
		if _, err := os.Stat(p); err == nil {
			return filepath.Clean(p), nil
		}
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "internal", "testbed", "testbed.sh")
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("testbed: cannot find internal/testbed/testbed.sh beside the package source or above the working directory; set TESTBED_SCRIPT")
		}
		dir = parent
	}
}

func inCI() bool {
	ci, _ := strconv.ParseBool(os.Getenv("CI"))
	return ci
}

func randomSuffix(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	buf := make([]byte, n)
	_, _ = rand.Read(buf)
	for i, c := range buf {
		buf[i] = alphabet[int(c)%len(alphabet)]
	}
	return string(buf)
}
