package remote_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/dmgr/dmgr/agents/remote"
	"github.com/dmgr/dmgr/internal/testenv"

	"github.com/dmgr/dmgr/domain"
)

// server starts a real sshd and returns it with a root target for it.
func server(t testing.TB) (*testenv.SSHServer, remote.Target) {
	t.Helper()
	s := testenv.SSHD(t, testenv.SSHDOptions{})
	return s, remote.Target{Host: s.Host, Port: s.Port, User: "root", PrivateKey: s.ClientKey, HostKey: s.HostKey}
}

func pool(t testing.TB, o remote.Options) *remote.Pool {
	t.Helper()
	p := remote.NewPool(o)
	t.Cleanup(func() { p.Close() })
	return p
}

func run(t *testing.T, p *remote.Pool, tg remote.Target, cmd string, o remote.RunOptions) remote.Result {
	t.Helper()
	res, err := p.Run(testenv.Context(t, 30*time.Second), tg, cmd, o)
	if err != nil {
		t.Fatalf("run %q: %v", cmd, err)
	}
	return res
}

func TestRunReportsExitCodeAndOutput(t *testing.T) {
	_, tg := server(t)
	p := pool(t, remote.Options{})

	res := run(t, p, tg, "echo out; echo err >&2; exit 3", remote.RunOptions{})
	if res.ExitCode != 3 || res.Stdout != "out\n" || res.Stderr != "err\n" {
		t.Errorf("got %+v, want exit 3, stdout out, stderr err", res)
	}
	if res.Duration <= 0 {
		t.Errorf("duration %v", res.Duration)
	}
	if _, err := p.Run(testenv.Context(t, 30*time.Second), tg, " ", remote.RunOptions{}); err == nil {
		t.Error("empty command: no error") // sshd would start an interactive shell
	}
	if res := run(t, p, tg, "true", remote.RunOptions{}); res.ExitCode != 0 {
		t.Errorf("true: exit %d", res.ExitCode)
	}
	if res := run(t, p, tg, "kill -9 $$", remote.RunOptions{}); res.ExitCode != 128+9 {
		t.Errorf("killed by SIGKILL: exit %d, want 137", res.ExitCode)
	}
	cmd, _ := domain.ShellCommand("printf", "%s", "it's $HOME; `x`")
	if res := run(t, p, tg, cmd, remote.RunOptions{}); res.Stdout != "it's $HOME; `x`" {
		t.Errorf("quoted argument came back as %q", res.Stdout)
	}
	if res := run(t, p, tg, "cat; cat >&2", remote.RunOptions{Stdin: strings.NewReader("in\n")}); res.Stdout != "in\n" || res.Stderr != "" {
		t.Errorf("stdin: %+v", res)
	}
	// A command that does not read its stdin still finishes.
	big := io.LimitReader(zeros{}, 8<<20)
	if res := run(t, p, tg, "exit 4", remote.RunOptions{Stdin: big}); res.ExitCode != 4 {
		t.Errorf("unread stdin: exit %d", res.ExitCode)
	}
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) { clear(b); return len(b), nil }

func TestRunKeepsOnlyTheTail(t *testing.T) {
	_, tg := server(t)
	p := pool(t, remote.Options{})
	res := run(t, p, tg, "head -c 1000000 /dev/zero | tr '\\0' a; printf END; head -c 300000 /dev/zero | tr '\\0' b >&2; printf 'é' >&2",
		remote.RunOptions{TailBytes: 10})
	if res.Stdout != "aaaaaaaEND" {
		t.Errorf("stdout tail %q", res.Stdout)
	}
	if res.Stderr != "bbbbbbbbé" { // 10 bytes: 8 b and the 2 bytes of é
		t.Errorf("stderr tail %q", res.Stderr)
	}
	res = run(t, p, tg, "head -c 10000 /dev/zero | tr '\\0' x", remote.RunOptions{})
	if len(res.Stdout) != 4096 {
		t.Errorf("default tail: %d bytes, want 4096", len(res.Stdout))
	}
}

func TestConcurrentRunsShareOneConnection(t *testing.T) {
	s, tg := server(t)
	p := pool(t, remote.Options{})
	dir := t.TempDir()

	// Each command registers itself in dir, waits, and reports how many
	// commands were registered: the most that ran at once.
	script := `touch "$1/$$"; sleep 1; ls "$1" | wc -l; rm "$1/$$"`
	cmd, _ := domain.ShellCommand("sh", "-c", script, "sh", dir)

	stop := make(chan struct{})
	var maxSessions atomic.Int64
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if n := int64(p.Stats()[s.Addr].Sessions); n > maxSessions.Load() {
				maxSessions.Store(n)
			}
			time.Sleep(time.Millisecond)
		}
	}()
	var wg sync.WaitGroup
	var mu sync.Mutex
	most := 0
	for range 20 {
		wg.Go(func() {
			res, err := p.Run(testenv.Context(t, 30*time.Second), tg, cmd, remote.RunOptions{})
			if err != nil || res.ExitCode != 0 {
				t.Errorf("run: %v %+v", err, res)
				return
			}
			n, _ := strconv.Atoi(strings.TrimSpace(res.Stdout))
			mu.Lock()
			most = max(most, n)
			mu.Unlock()
		})
	}
	wg.Wait()
	close(stop)

	st := p.Stats()[s.Addr]
	if st.Dials != 1 || st.Open != 1 || st.Sessions != 0 {
		t.Errorf("stats %+v, want 1 dial, 1 open, 0 sessions", st)
	}
	if most > 8 || most < 2 {
		t.Errorf("at most %d commands ran at once, want 2..8", most)
	}
	if m := maxSessions.Load(); m > 8 {
		t.Errorf("Stats showed %d sessions at once, limit 8", m)
	}
	t.Logf("most commands at once: %d (remote), %d (Stats)", most, maxSessions.Load())
}

func TestSessionLimitIsPerHost(t *testing.T) {
	_, tg := server(t)
	p := pool(t, remote.Options{MaxSessionsPerHost: 1})
	long := testenv.Context(t, 30*time.Second)
	started := make(chan struct{})
	go func() {
		close(started)
		p.Run(long, tg, "sleep 1", remote.RunOptions{})
	}()
	<-started
	time.Sleep(300 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := p.Run(ctx, tg, "true", remote.RunOptions{})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "free session slot") {
		t.Fatalf("second run while the only slot is taken: %v", err)
	}
}

func TestSudoAndAsUser(t *testing.T) {
	_, tg := server(t)
	p := pool(t, remote.Options{})
	if res := run(t, p, tg, "id -un", remote.RunOptions{AsUser: "nobody"}); res.Stdout != "nobody\n" {
		t.Errorf("AsUser nobody: %+v", res)
	}
	if res := run(t, p, tg, "id -un", remote.RunOptions{Sudo: true}); res.Stdout != "root\n" {
		t.Errorf("root with Sudo: %+v", res)
	}
	res := run(t, p, tg, "cat; id -un", remote.RunOptions{AsUser: "nobody", Stdin: strings.NewReader("piped\n")})
	if res.Stdout != "piped\nnobody\n" {
		t.Errorf("AsUser with stdin: %+v", res)
	}
}

// TestPasswordAndSudo uses throwaway users that exist only inside sshd's
// mount namespace: one whose sudo asks for the password, one with NOPASSWD.
func TestPasswordAndSudo(t *testing.T) {
	const pw = `pa ss'w"rd$1`
	s := testenv.SSHD(t, testenv.SSHDOptions{Users: []testenv.SSHUser{
		{Name: "dmgrpw", Password: pw, Sudo: testenv.SudoPassword},
		{Name: "dmgrnopw", Password: pw, Sudo: testenv.SudoNoPassword},
	}})
	p := pool(t, remote.Options{})
	dir := t.TempDir() // root-only: only sudo can write here
	for _, user := range []string{"dmgrpw", "dmgrnopw"} {
		t.Run(user, func(t *testing.T) {
			tg := remote.Target{Host: s.Host, Port: s.Port, User: user, Password: pw, HostKey: s.HostKey}
			noSecret := func(what, s string) {
				t.Helper()
				if strings.Contains(s, pw) {
					t.Errorf("%s shows the password: %q", what, s)
				}
			}
			if res := run(t, p, tg, "id -un", remote.RunOptions{}); res.Stdout != user+"\n" {
				t.Errorf("login by password: %+v", res)
			}
			res := run(t, p, tg, "id -un; cat", remote.RunOptions{Sudo: true, Stdin: strings.NewReader("line 1\nline 2")})
			if res.ExitCode != 0 || res.Stdout != "root\nline 1\nline 2" {
				t.Errorf("sudo with stdin: %+v", res)
			}
			noSecret("stdout", res.Stdout)
			noSecret("stderr", res.Stderr)
			if res := run(t, p, tg, "id -un", remote.RunOptions{AsUser: "nobody"}); res.Stdout != "nobody\n" {
				t.Errorf("AsUser: %+v", res)
			}

			// Cancelling a command run through sudo stops it, although the
			// login user may not signal it.
			arg := fmt.Sprintf("61.%d", time.Now().UnixNano()%1_000_000)
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			if _, err := p.Run(ctx, tg, "sleep "+arg, remote.RunOptions{Sudo: true}); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("cancelled sudo run: %v", err)
			}
			deadline := time.Now().Add(5 * time.Second)
			for sleeping(arg) {
				if time.Now().After(deadline) {
					t.Fatalf("sudo sleep %s still runs after cancel", arg)
				}
				time.Sleep(20 * time.Millisecond)
			}

			content := []byte("config = 1\n")
			path := filepath.Join(dir, user+".toml")
			skipped, err := p.Upload(testenv.Context(t, 30*time.Second), tg, file(path, 0o640, "", content, true))
			if err != nil || skipped {
				t.Fatalf("upload with sudo: skipped %v, %v", skipped, err)
			}
			if got, _ := os.ReadFile(path); !bytes.Equal(got, content) {
				t.Errorf("uploaded %q", got)
			}

			bad := tg
			bad.Password = "wrong " + pw
			_, err = p.Run(testenv.Context(t, 30*time.Second), bad, "true", remote.RunOptions{})
			if err == nil || !strings.Contains(err.Error(), "authentication failed") {
				t.Errorf("wrong password: %v", err)
			} else {
				noSecret("error", err.Error())
			}
		})
	}
	t.Run("wrong sudo password", func(t *testing.T) {
		// Key login, and a password that is not the sudo password.
		tg := remote.Target{Host: s.Host, Port: s.Port, User: "dmgrpw", Password: "not it", PrivateKey: s.ClientKey, HostKey: s.HostKey}
		res, err := p.Run(testenv.Context(t, 30*time.Second), tg, "cat", remote.RunOptions{Sudo: true, Stdin: strings.NewReader("data\n")})
		if err != nil || res.ExitCode == 0 || strings.Contains(res.Stdout, "data") {
			t.Errorf("sudo with a wrong password: %v %+v", err, res)
		}
	})
}

// file is a File with the given content.
func file(path string, mode os.FileMode, owner string, content []byte, sudo bool) remote.File {
	sum := sha256.Sum256(content)
	return remote.File{Path: path, Mode: mode, Owner: owner, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(content)), Sudo: sudo,
		Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(content)), nil }}
}

func TestUpload(t *testing.T) {
	_, tg := server(t)
	p := pool(t, remote.Options{})
	ctx := testenv.Context(t, 60*time.Second)
	dir := t.TempDir()
	path := filepath.Join(dir, "dm-worker")
	content := bytes.Repeat([]byte("binary\x00data\n"), 300_000) // 3.6 MB, several windows

	f := file(path, 0o755, "nobody", content, false)
	opened := 0
	open := f.Open
	f.Open = func() (io.ReadCloser, error) { opened++; return open() }

	skipped, err := p.Upload(ctx, tg, f)
	if err != nil || skipped {
		t.Fatalf("first upload: skipped %v, %v", skipped, err)
	}
	got, _ := os.ReadFile(path)
	if !bytes.Equal(got, content) {
		t.Fatalf("content differs (%d bytes, want %d)", len(got), len(content))
	}
	fi, _ := os.Stat(path)
	if fi.Mode() != 0o755 || fi.Sys().(*syscall.Stat_t).Uid != 65534 {
		t.Errorf("mode %v owner %d, want 0755 nobody", fi.Mode(), fi.Sys().(*syscall.Stat_t).Uid)
	}

	skipped, err = p.Upload(ctx, tg, f)
	if err != nil || !skipped || opened != 1 {
		t.Errorf("second upload: skipped %v, %v, content opened %d times, want skipped and 1", skipped, err, opened)
	}

	f.Mode = 0o700
	skipped, err = p.Upload(ctx, tg, f)
	if fi, _ := os.Stat(path); err != nil || skipped || fi.Mode() != 0o700 {
		t.Errorf("mode change: skipped %v, %v, mode %v", skipped, err, fi.Mode())
	}

	// A wrong checksum fails and leaves nothing behind: no file, no temp.
	wrong := file(filepath.Join(dir, "new"), 0o644, "", []byte("hello"), false)
	wrong.SHA256 = strings.Repeat("ab", 32)
	_, err = p.Upload(ctx, tg, wrong)
	if err == nil || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Errorf("wrong checksum: %v", err)
	}
	// A wrong checksum over an existing file leaves it unchanged.
	wrong = file(path, 0o755, "", []byte("replacement"), false)
	wrong.SHA256 = strings.Repeat("cd", 32)
	if _, err = p.Upload(ctx, tg, wrong); err == nil {
		t.Error("wrong checksum over an existing file: no error")
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, content) {
		t.Error("a failed upload changed the existing file")
	}
	wrongSize := file(filepath.Join(dir, "short"), 0o644, "", []byte("hello"), false)
	wrongSize.Size = 4
	if _, err = p.Upload(ctx, tg, wrongSize); err == nil || !strings.Contains(err.Error(), "received 5 bytes, want 4") {
		t.Errorf("wrong size: %v", err)
	}
	if entries := names(t, dir); entries != "dm-worker" {
		t.Errorf("dir holds %s, want only dm-worker", entries)
	}

	// Invalid requests are refused before anything runs.
	for _, bad := range []remote.File{
		file("relative/path", 0o644, "", nil, false),
		file(dir+"/../x", 0o644, "", nil, false),
		{Path: path, SHA256: "xyz", Open: f.Open},
		file(path, os.ModeSymlink|0o644, "", nil, false),
	} {
		if _, err := p.Upload(ctx, tg, bad); err == nil {
			t.Errorf("upload %+v: no error", bad)
		}
	}
	// A directory at the path is not replaced.
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Upload(ctx, tg, file(filepath.Join(dir, "d"), 0o644, "", []byte("x"), false)); err == nil {
		t.Error("upload over a directory: no error")
	}
	if entries := names(t, dir); entries != "d dm-worker" {
		t.Errorf("dir holds %s", entries)
	}
}

func names(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return strings.Join(out, " ")
}

// blockingReader gives some bytes, then blocks until released.
type blockingReader struct {
	sent    bool
	release chan struct{}
}

func (r *blockingReader) Read(b []byte) (int, error) {
	if !r.sent {
		r.sent = true
		return copy(b, "partial content"), nil
	}
	<-r.release
	return 0, errors.New("released")
}

func TestUploadCancelledLeavesNothing(t *testing.T) {
	_, tg := server(t)
	p := pool(t, remote.Options{})
	dir := t.TempDir()
	r := &blockingReader{release: make(chan struct{})}
	defer close(r.release)
	f := file(filepath.Join(dir, "f"), 0o644, "", bytes.Repeat([]byte("x"), 1000), false)
	f.Open = func() (io.ReadCloser, error) { return io.NopCloser(r), nil }

	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for names(t, dir) == "" { // wait for the temporary file
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
	}()
	_, err := p.Upload(ctx, tg, f)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled upload: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for names(t, dir) != "" {
		if time.Now().After(deadline) {
			t.Fatalf("left behind: %s", names(t, dir))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestUploadReadErrorFails(t *testing.T) {
	_, tg := server(t)
	p := pool(t, remote.Options{})
	dir := t.TempDir()
	f := file(filepath.Join(dir, "f"), 0o644, "", []byte("partial content and more"), false)
	f.Open = func() (io.ReadCloser, error) {
		return io.NopCloser(io.MultiReader(strings.NewReader("partial content"), errReader{})), nil
	}
	_, err := p.Upload(testenv.Context(t, 30*time.Second), tg, f)
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("upload with a failing reader: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for names(t, dir) != "" {
		if time.Now().After(deadline) {
			t.Fatalf("left behind: %s", names(t, dir))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestCancelKillsTheCommand(t *testing.T) {
	_, tg := server(t)
	p := pool(t, remote.Options{})
	// A fractional duration no other process uses identifies our sleep.
	arg := fmt.Sprintf("60.%d", time.Now().UnixNano()%1_000_000)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := p.Run(ctx, tg, "sleep "+arg+"; echo not killed", remote.RunOptions{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("run: %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Run returned after %v", d)
	}
	deadline := time.Now().Add(5 * time.Second)
	for sleeping(arg) {
		if time.Now().After(deadline) {
			t.Fatalf("sleep %s still runs after cancel", arg)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The connection stays usable.
	if res := run(t, p, tg, "echo ok", remote.RunOptions{}); res.Stdout != "ok\n" {
		t.Errorf("after cancel: %+v", res)
	}

	// Same with sudo in between.
	arg2 := arg + "1"
	ctx, cancel = context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, err := p.Run(ctx, tg, "sleep "+arg2, remote.RunOptions{AsUser: "nobody"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("run as nobody: %v", err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for sleeping(arg2) {
		if time.Now().After(deadline) {
			t.Fatalf("sleep %s (as nobody) still runs after cancel", arg2)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sleeping reports whether a "sleep arg" process runs on this machine.
func sleeping(arg string) bool {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if string(b) == "sleep\x00"+arg+"\x00" {
			return true
		}
	}
	return false
}

func TestHostKeyIsPinned(t *testing.T) {
	s, tg := server(t)
	p := pool(t, remote.Options{})
	marker := filepath.Join(t.TempDir(), "ran")
	touch, _ := domain.ShellCommand("touch", marker)

	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	otherPub, _ := ssh.NewPublicKey(otherPriv.Public())
	other := tg
	other.HostKey = string(ssh.MarshalAuthorizedKey(otherPub))

	_, err := p.Run(testenv.Context(t, 30*time.Second), other, touch, remote.RunOptions{})
	var mismatch *remote.HostKeyMismatchError
	if !errors.As(err, &mismatch) {
		t.Fatalf("run with another pinned key: %v, want *HostKeyMismatchError", err)
	}
	wantPinned, _ := remote.Fingerprint(other.HostKey)
	wantOffered, _ := remote.Fingerprint(s.HostKey)
	if mismatch.Host != s.Addr || mismatch.Pinned != wantPinned || mismatch.Offered != wantOffered {
		t.Errorf("mismatch %+v, want host %s pinned %s offered %s", mismatch, s.Addr, wantPinned, wantOffered)
	}
	if msg := err.Error(); !strings.Contains(msg, "host key of "+s.Addr+" changed") || !strings.Contains(msg, "no command was run") || !strings.Contains(msg, "re-register") {
		t.Errorf("message: %s", msg)
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatalf("the command ran despite the mismatch (%v)", err)
	}
	if _, err := p.Upload(testenv.Context(t, 30*time.Second), other, file(marker, 0o644, "", []byte("x"), false)); !errors.As(err, &mismatch) {
		t.Errorf("upload: %v", err)
	}
	if _, err := p.Dial(testenv.Context(t, 30*time.Second), other, "tcp", s.Addr); !errors.As(err, &mismatch) {
		t.Errorf("dial: %v", err)
	}

	// A pinned key of a type the server does not have is a mismatch too.
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsaPub, _ := ssh.NewPublicKey(&rsaKey.PublicKey)
	other.HostKey = string(ssh.MarshalAuthorizedKey(rsaPub))
	_, err = p.Run(testenv.Context(t, 30*time.Second), other, touch, remote.RunOptions{})
	if !errors.As(err, &mismatch) || mismatch.Offered != "" || !strings.Contains(err.Error(), "has no ssh-rsa key") {
		t.Errorf("pinned RSA, server without one: %v", err)
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatal("the command ran despite the mismatch")
	}

	// Either of the server's real keys works, although it offers both.
	for _, key := range []string{s.HostKey, s.ECDSAHostKey} {
		ok := tg
		ok.HostKey = key
		if res := run(t, p, ok, "echo ok", remote.RunOptions{}); res.Stdout != "ok\n" {
			t.Errorf("pinned %s: %+v", key[:20], res)
		}
	}

	// No pin, no connection.
	none := tg
	none.HostKey = ""
	if _, err := p.Run(testenv.Context(t, 30*time.Second), none, touch, remote.RunOptions{}); err == nil || !strings.Contains(err.Error(), "no pinned host key") {
		t.Errorf("empty host key: %v", err)
	}
}

func TestScanHostKeyAndFingerprint(t *testing.T) {
	s, _ := server(t)
	key, err := remote.ScanHostKey(testenv.Context(t, 30*time.Second), s.Host, s.Port)
	if err != nil {
		t.Fatal(err)
	}
	if key != s.HostKey {
		t.Errorf("scanned %q, want the ed25519 key %q", key, s.HostKey)
	}
	fp, err := remote.Fingerprint(key)
	if err != nil {
		t.Fatal(err)
	}
	// ssh-keygen agrees.
	pub := filepath.Join(t.TempDir(), "k.pub")
	os.WriteFile(pub, []byte(key+"\n"), 0o644)
	if out, err := exec.Command("ssh-keygen", "-lf", pub).Output(); err == nil {
		if f := strings.Fields(string(out)); len(f) < 2 || f[1] != fp {
			t.Errorf("Fingerprint %s, ssh-keygen says %s", fp, out)
		}
	}
	if _, err := remote.Fingerprint("not a key"); err == nil {
		t.Error("Fingerprint of garbage: no error")
	}
	if _, err := remote.ScanHostKey(testenv.Context(t, 30*time.Second), "127.0.0.1", freePort(t)); err == nil {
		t.Error("scan of a closed port: no error")
	}
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestRedialAfterServerRestart(t *testing.T) {
	s, tg := server(t)
	p := pool(t, remote.Options{})
	run(t, p, tg, "true", remote.RunOptions{})

	// A command running while the machine goes down fails.
	errc := make(chan error, 1)
	go func() {
		_, err := p.Run(testenv.Context(t, 30*time.Second), tg, "sleep 30", remote.RunOptions{})
		errc <- err
	}()
	time.Sleep(300 * time.Millisecond)
	s.Restart()
	if err := <-errc; err == nil || !strings.Contains(err.Error(), "without an exit status") {
		t.Errorf("command during restart: %v", err)
	}

	// The next call dials again.
	if res := run(t, p, tg, "echo back", remote.RunOptions{}); res.Stdout != "back\n" {
		t.Errorf("after restart: %+v", res)
	}
	if st := p.Stats()[s.Addr]; st.Dials != 2 || st.Open != 1 {
		t.Errorf("stats %+v, want 2 dials, 1 open", st)
	}

	// A restart nobody noticed (no command running): the next call still works.
	s.Restart()
	if res := run(t, p, tg, "echo again", remote.RunOptions{}); res.Stdout != "again\n" {
		t.Errorf("after second restart: %+v", res)
	}
	if st := p.Stats()[s.Addr]; st.Dials != 3 {
		t.Errorf("stats %+v, want 3 dials", st)
	}
}

func TestKeepAliveDropsAHungConnection(t *testing.T) {
	s, tg := server(t)
	p := pool(t, remote.Options{KeepAlive: 200 * time.Millisecond, DialTimeout: 2 * time.Second})
	run(t, p, tg, "true", remote.RunOptions{})
	s.Pause() // TCP stays up, nothing answers
	deadline := time.Now().Add(5 * time.Second)
	for p.Stats()[s.Addr].Open != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("connection still open after the host hung: %+v", p.Stats()[s.Addr])
		}
		time.Sleep(20 * time.Millisecond)
	}
	// While the host hangs, a call fails within DialTimeout.
	start := time.Now()
	if _, err := p.Run(testenv.Context(t, 30*time.Second), tg, "true", remote.RunOptions{}); err == nil {
		t.Error("run on a hung host: no error")
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("run on a hung host took %v", d)
	}
	s.Resume()
	if res := run(t, p, tg, "echo ok", remote.RunOptions{}); res.Stdout != "ok\n" {
		t.Errorf("after resume: %+v", res)
	}
}

func TestDialThroughSSH(t *testing.T) {
	_, tg := server(t)
	p := pool(t, remote.Options{})
	// A port only "the machine" listens on (here the machine is this one).
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	c, err := p.Dial(testenv.Context(t, 30*time.Second), tg, "tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprint(c, "ping\n")
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping\n" {
		t.Errorf("echo through ssh: %q %v", buf, err)
	}
	if _, err := p.Dial(testenv.Context(t, 30*time.Second), tg, "tcp", "127.0.0.1:"+strconv.Itoa(freePort(t))); err == nil {
		t.Error("dial to a closed port: no error")
	}
	if st := p.Stats()[tg.Host+":"+strconv.Itoa(tg.Port)]; st.Dials != 1 {
		t.Errorf("stats %+v: a refused tunnel must not drop the connection", st)
	}
}

func TestStdinReadErrorStopsTheCommand(t *testing.T) {
	_, tg := server(t)
	p := pool(t, remote.Options{})
	out := filepath.Join(t.TempDir(), "out")
	cmd, _ := domain.ShellCommand("sh", "-c", `cat > "$1" && echo complete >> "$1"`, "sh", out)
	_, err := p.Run(testenv.Context(t, 30*time.Second), tg, cmd,
		remote.RunOptions{Stdin: io.MultiReader(strings.NewReader("some"), errReader{})})
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("run with a failing stdin: %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	if b, _ := os.ReadFile(out); strings.Contains(string(b), "complete") {
		t.Error("the command went on with truncated input")
	}
}

func TestTargetFormattingHidesSecrets(t *testing.T) {
	tg := remote.Target{Host: "10.0.0.1", Port: 22, User: "tidb", Password: "hunter2", PrivateKey: []byte("-----BEGIN KEY-----"), HostKey: "ssh-ed25519 AAAA"}
	js, _ := json.Marshal(tg)
	for _, s := range []string{fmt.Sprint(tg), fmt.Sprintf("%+v", tg), fmt.Sprintf("%#v", tg), fmt.Sprintf("%v", &tg), string(js)} {
		if strings.Contains(s, "hunter2") || strings.Contains(s, "BEGIN") {
			t.Errorf("formatted target shows a secret: %s", s)
		}
	}
	if fmt.Sprint(tg) != "tidb@10.0.0.1:22" {
		t.Errorf("String() = %s", tg)
	}
}

func TestErrorsNameTheTarget(t *testing.T) {
	port := freePort(t)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	pub, _ := ssh.NewPublicKey(priv.Public())
	tg := remote.Target{Host: "127.0.0.1", Port: port, User: "root", Password: "hunter2", HostKey: string(ssh.MarshalAuthorizedKey(pub))}
	p := pool(t, remote.Options{})
	_, err := p.Run(testenv.Context(t, 30*time.Second), tg, "true", remote.RunOptions{})
	want := fmt.Sprintf("ssh root@127.0.0.1:%d: run: connect: ", port)
	if err == nil || !strings.HasPrefix(err.Error(), want) || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error %q, want prefix %q and no password", err, want)
	}
	p.Close()
	if _, err := p.Run(testenv.Context(t, 30*time.Second), tg, "true", remote.RunOptions{}); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("run after Close: %v", err)
	}
}

// BenchmarkRunNoop runs `true` over one pooled connection from parallel
// goroutines (at most MaxSessionsPerHost sessions at once).
func BenchmarkRunNoop(b *testing.B) {
	s, tg := server(b)
	p := pool(b, remote.Options{})
	ctx := context.Background()
	if _, err := p.Run(ctx, tg, "true", remote.RunOptions{}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			res, err := p.Run(ctx, tg, "true", remote.RunOptions{})
			if err != nil || res.ExitCode != 0 {
				b.Errorf("run: %v %+v", err, res)
				return
			}
		}
	})
	b.StopTimer()
	if st := p.Stats()[s.Addr]; st.Dials != 1 {
		b.Errorf("stats %+v, want 1 dial", st)
	}
}
