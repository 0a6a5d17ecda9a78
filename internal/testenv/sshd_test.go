package testenv_test

import (
	"os"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/dmgr/dmgr/internal/testenv"
)

func TestSSHD(t *testing.T) {
	s := testenv.SSHD(t, testenv.SSHDOptions{Users: []testenv.SSHUser{{Name: "dmgrenvtest", Password: "secret pass", Sudo: testenv.SudoPassword}}})

	run := func(t *testing.T, user string, auth ssh.AuthMethod, pinned, cmd, stdin string) string {
		t.Helper()
		pin, _, _, _, err := ssh.ParseAuthorizedKey([]byte(pinned))
		if err != nil {
			t.Fatal(err)
		}
		c, err := ssh.Dial("tcp", s.Addr, &ssh.ClientConfig{User: user, Auth: []ssh.AuthMethod{auth},
			HostKeyCallback: ssh.FixedHostKey(pin), HostKeyAlgorithms: []string{pin.Type()}})
		if err != nil {
			t.Fatalf("dial %s as %s: %v", s.Addr, user, err)
		}
		defer c.Close()
		sess, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		sess.Stdin = strings.NewReader(stdin)
		out, err := sess.CombinedOutput(cmd)
		if err != nil {
			t.Fatalf("%s: %v: %s", cmd, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	signer, err := ssh.ParsePrivateKey(s.ClientKey)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("root by key, either host key", func(t *testing.T) {
		if got := run(t, "root", ssh.PublicKeys(signer), s.HostKey, "id -un", ""); got != "root" {
			t.Errorf("id -un = %q", got)
		}
		if got := run(t, "root", ssh.PublicKeys(signer), s.ECDSAHostKey, "id -un", ""); got != "root" {
			t.Errorf("id -un = %q", got)
		}
	})
	t.Run("test user by password, with sudo", func(t *testing.T) {
		if got := run(t, "dmgrenvtest", ssh.Password("secret pass"), s.HostKey, "id -un; pwd", ""); got != "dmgrenvtest\n"+s.Dir+"/home/dmgrenvtest" {
			t.Errorf("id -un; pwd = %q", got)
		}
		if got := run(t, "dmgrenvtest", ssh.PublicKeys(signer), s.HostKey, "sudo -S -p '' id -un", "secret pass\n"); got != "root" {
			t.Errorf("sudo id -un = %q", got)
		}
	})
	t.Run("the machine's accounts are untouched", func(t *testing.T) {
		if got := run(t, "root", ssh.PublicKeys(signer), s.HostKey, "grep -c dmgrenvtest /etc/passwd", ""); got != "1" {
			t.Errorf("inside sshd's namespace: %q", got)
		}
		if strings.Contains(readFile(t, "/etc/passwd"), "dmgrenvtest") {
			t.Error("the test user leaked into the machine's /etc/passwd")
		}
	})
	t.Run("restart keeps address and keys", func(t *testing.T) {
		s.Restart()
		if got := run(t, "root", ssh.PublicKeys(signer), s.HostKey, "echo ok", ""); got != "ok" {
			t.Errorf("after restart: %q", got)
		}
	})
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
