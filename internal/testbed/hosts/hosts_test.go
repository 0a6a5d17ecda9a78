package hosts

import (
	"bufio"
	"errors"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func TestBed(t *testing.T) {
	bed := Start(t, 2)
	h1, h2 := bed.Hosts[0], bed.Hosts[1]

	t.Run("root logs in by key and each host is its own", func(t *testing.T) {
		for _, h := range bed.Hosts {
			c := dialRoot(t, h)
			if got := run(t, c, "hostname"); got != h.Hostname {
				t.Errorf("host %d: hostname %q, want %q", h.Index, got, h.Hostname)
			}
			if got := run(t, c, "id -u"); got != "0" {
				t.Errorf("host %d: root has uid %s", h.Index, got)
			}
		}
		if h1.Hostname == h2.Hostname || h1.HostKey == h2.HostKey || h1.Addr == h2.Addr {
			t.Errorf("hosts share a hostname, host key or address: %+v %+v", h1, h2)
		}
		real, _ := os.Hostname()
		if real == h1.Hostname || real == h2.Hostname {
			t.Errorf("the real machine's hostname %q changed", real)
		}
	})

	t.Run("useradd changes one host only", func(t *testing.T) {
		name := "tb" + randomSuffix(6)
		run(t, dialRoot(t, h1), "useradd --create-home "+name+" && getent passwd "+name)
		if out, err := session(t, dialRoot(t, h2), "getent passwd "+name); err == nil {
			t.Errorf("user %s made on host 1 exists on host 2: %s", name, out)
		}
		if _, err := user.Lookup(name); err == nil {
			t.Errorf("user %s made on host 1 exists on the real machine", name)
		}
		if _, err := os.Stat("/home/" + name); err == nil {
			t.Errorf("home of %s made on host 1 is on the real machine", name)
		}
	})

	t.Run("private directories", func(t *testing.T) {
		name := "tb-" + randomSuffix(6)
		for _, dir := range []string{"/srv", "/tmp", "/var/tmp", "/root", "/etc"} {
			path := filepath.Join(dir, name)
			run(t, dialRoot(t, h1), "echo hello > "+path+" && cat "+path)
			if out, err := session(t, dialRoot(t, h2), "ls "+path); err == nil {
				t.Errorf("%s written on host 1 is on host 2: %s", path, out)
			}
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s written on host 1 is on the real machine (%v)", path, err)
			}
		}
	})

	t.Run("sudo user has passwordless sudo", func(t *testing.T) {
		c := dial(t, h2, h2.SudoUser, keyAuth(t, h2.SudoKey), h2.HostKey)
		if got := run(t, c, "whoami"); got != "dmgr" {
			t.Errorf("whoami = %q", got)
		}
		run(t, c, "sudo -n true")
		if got := run(t, c, "sudo -n id -u"); got != "0" {
			t.Errorf("sudo -n id -u = %q", got)
		}
	})

	t.Run("password user logs in and sudo asks for the password", func(t *testing.T) {
		c := dial(t, h1, h1.PasswordUser, ssh.Password(h1.Password), h1.HostKey)
		if got := run(t, c, "whoami"); got != "dmpass" {
			t.Errorf("whoami = %q", got)
		}
		if out, err := session(t, c, "sudo -n true"); err == nil {
			t.Errorf("sudo -n worked without a password: %s", out)
		}
		if got := run(t, c, "echo '"+h1.Password+"' | sudo -S -p '' id -u"); got != "0" {
			t.Errorf("sudo -S id -u = %q", got)
		}
		// Password login is for dmpass only.
		for _, u := range []string{"root", h1.SudoUser} {
			if _, err := tryDial(h1, u, ssh.Password(h1.Password), h1.HostKey); err == nil {
				t.Errorf("%s logged in with a password", u)
			}
		}
		if _, err := tryDial(h1, h1.PasswordUser, ssh.Password("wrong"), h1.HostKey); err == nil {
			t.Error("dmpass logged in with a wrong password")
		}
	})

	t.Run("hosts reach each other and forward to host-local ports", func(t *testing.T) {
		c := dialRoot(t, h1)
		for _, addr := range []string{h2.SSHAddr(), "127.0.0.1:22"} {
			conn, err := c.Dial("tcp", addr) // sshd on host 1 connects
			if err != nil {
				t.Fatalf("from host 1 to %s: %v", addr, err)
			}
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			banner, err := bufio.NewReader(conn).ReadString('\n')
			conn.Close()
			if err != nil || !strings.HasPrefix(banner, "SSH-2.0-") {
				t.Errorf("from host 1 to %s: banner %q, %v", addr, banner, err)
			}
		}
	})

	t.Run("exec sees the host's own processes and sockets", func(t *testing.T) {
		run(t, dialRoot(t, h2), "nohup sleep 600 >/dev/null 2>&1 &")
		if out, err := bed.Exec(t, 2, "pgrep -x sleep"); err != nil {
			t.Errorf("sleep started over SSH is not on host 2: %v\n%s", err, out)
		}
		if out, err := bed.Exec(t, 1, "pgrep -x sleep"); err == nil {
			t.Errorf("host 1 sees host 2's processes: %s", out)
		}
		out, err := bed.Exec(t, 1, "hostname; ss -ltnp")
		if err != nil || !strings.HasPrefix(out, h1.Hostname+"\n") || !strings.Contains(out, `"sshd",pid=1,`) {
			t.Errorf("exec on host 1: %v\n%s", err, out)
		}
		if _, err := bed.Exec(t, 1, "exit 3"); err == nil {
			t.Error("Exec of a failing script returned no error")
		}
	})

	t.Run("cut and restore", func(t *testing.T) {
		bed.Cut(t, 2)
		if conn, err := net.DialTimeout("tcp", h2.SSHAddr(), time.Second); err == nil {
			conn.Close()
			t.Fatal("cut host 2 still accepts connections")
		}
		if out, err := bed.Exec(t, 1, "timeout 2 bash -c '</dev/tcp/"+h2.Addr+"/22'"); err == nil {
			t.Errorf("host 1 still reaches cut host 2: %s", out)
		}
		bed.Restore(t, 2)
		run(t, dialRoot(t, h2), "true")
		if out, err := bed.Exec(t, 1, "timeout 2 bash -c '</dev/tcp/"+h2.Addr+"/22'"); err != nil {
			t.Errorf("host 1 does not reach restored host 2: %v\n%s", err, out)
		}
	})

	t.Run("stop and start", func(t *testing.T) {
		run(t, dialRoot(t, h2), "echo kept > /srv/kept && echo gone > /run/gone && pgrep -x sleep")
		bed.Stop(t, 2)
		if conn, err := net.DialTimeout("tcp", h2.SSHAddr(), time.Second); err == nil {
			conn.Close()
			t.Fatal("stopped host 2 still accepts connections")
		}
		if out, err := exec.Command("ip", "netns", "pids", h2.Name).CombinedOutput(); err != nil || len(out) > 0 {
			t.Fatalf("processes left in stopped host 2: %q, %v", out, err)
		}
		if out, err := bed.Exec(t, 2, "cat /srv/kept"); err != nil || out != "kept\n" {
			t.Errorf("files of stopped host 2: %q, %v", out, err)
		}
		bed.Start(t, 2)
		c := dialRoot(t, h2) // the same host key
		if got := run(t, c, "cat /srv/kept"); got != "kept" {
			t.Errorf("/srv/kept after start = %q", got)
		}
		if out, err := session(t, c, "ls /run/gone"); err == nil {
			t.Errorf("/run survived a reboot: %s", out)
		}
		if out, err := session(t, c, "pgrep -x sleep"); err == nil {
			t.Errorf("a process started before the stop runs again: %s", out)
		}
	})

	t.Run("rekey", func(t *testing.T) {
		old := bed.Hosts[0].HostKey
		key := bed.Rekey(t, 1)
		if key == old || bed.Hosts[0].HostKey != key {
			t.Fatalf("rekey: old %q, new %q, Hosts[0].HostKey %q", old, key, bed.Hosts[0].HostKey)
		}
		_, err := tryDial(h1, "root", keyAuth(t, h1.RootKey), old)
		if err == nil || !strings.Contains(err.Error(), "host key mismatch") {
			t.Errorf("dial with the old host key: %v, want a host key mismatch", err)
		}
		run(t, dial(t, h1, "root", keyAuth(t, h1.RootKey), key), "true")
	})
}

// TestCloseLeavesNothing runs beside TestBed: two beds at once must not
// collide, and Close must leave no namespace, link, mount or directory.
func TestCloseLeavesNothing(t *testing.T) {
	t.Parallel()
	bed := Start(t, 1)
	run(t, dialRoot(t, bed.Hosts[0]), "nohup sleep 600 >/dev/null 2>&1 & echo x > /srv/x")
	bed.Cut(t, 1) // a cut host goes too
	bed.Close()
	bed.Close()

	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil || strings.Contains(string(out), bed.Prefix+"-") {
		t.Errorf("ip netns list after Close: %v\n%s", err, out)
	}
	out, err = exec.Command("ip", "-o", "link", "show").CombinedOutput()
	if err != nil || strings.Contains(string(out), bed.Prefix+"-") {
		t.Errorf("ip link after Close: %v\n%s", err, out)
	}
	mounts, err := os.ReadFile("/proc/self/mounts")
	if err != nil || strings.Contains(string(mounts), bed.Dir) {
		t.Errorf("mounts after Close: %v\n%s", err, mounts)
	}
	if _, err := os.Stat(bed.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s after Close: %v", bed.Dir, err)
	}
}

func keyAuth(t testing.TB, pem []byte) ssh.AuthMethod {
	t.Helper()
	signer, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		t.Fatalf("parse private key: %v", err)
	}
	return ssh.PublicKeys(signer)
}

func tryDial(h Host, user string, auth ssh.AuthMethod, hostKey string) (*ssh.Client, error) {
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(hostKey))
	if err != nil {
		return nil, err
	}
	return ssh.Dial("tcp", h.SSHAddr(), &ssh.ClientConfig{
		User:            user,
		Auth:            []ssh.AuthMethod{auth},
		HostKeyCallback: ssh.FixedHostKey(pub),
		Timeout:         5 * time.Second,
	})
}

func dial(t testing.TB, h Host, user string, auth ssh.AuthMethod, hostKey string) *ssh.Client {
	t.Helper()
	c, err := tryDial(h, user, auth, hostKey)
	if err != nil {
		t.Fatalf("ssh %s@%s: %v", user, h.SSHAddr(), err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func dialRoot(t testing.TB, h Host) *ssh.Client {
	t.Helper()
	return dial(t, h, "root", keyAuth(t, h.RootKey), h.HostKey)
}

func session(t testing.TB, c *ssh.Client, cmd string) (string, error) {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatalf("new session: %v", err)
	}
	defer s.Close()
	out, err := s.CombinedOutput(cmd)
	return string(out), err
}

// run runs cmd and returns its output without the trailing newline.
func run(t testing.TB, c *ssh.Client, cmd string) string {
	t.Helper()
	out, err := session(t, c, cmd)
	if err != nil {
		t.Fatalf("%q: %v\n%s", cmd, err, out)
	}
	return strings.TrimSuffix(out, "\n")
}
