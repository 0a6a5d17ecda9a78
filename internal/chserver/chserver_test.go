package chserver

import (
	"bufio"
	"context"
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

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/domain"
)

// requireServer skips the test when no clickhouse-server binary is found,
// and fails it when CI is true (as testenv.SkipOrFail does; this package
// cannot import testenv, which imports it).
func requireServer(t *testing.T) {
	t.Helper()
	if err := Installed(); err != nil {
		if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
			t.Fatalf("needs a real ClickHouse server and none is installed, and CI is set: %v", err)
		}
		t.Skipf("SKIP: needs a real ClickHouse server and none is installed (%v)", err)
	}
}

func requireNoError(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func testLogger(t *testing.T) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).With().Timestamp().Logger()
}

// startServer starts a server in dir and stops it when the test ends.
func startServer(t *testing.T, ctx context.Context, dir string) *Server {
	t.Helper()
	began := time.Now()
	s, err := Start(ctx, Options{Dir: dir, Log: testLogger(t)})
	requireNoError(t, err, "start clickhouse")
	t.Logf("clickhouse ready on %s after %v", s.Addr(), time.Since(began).Round(time.Millisecond))
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stop clickhouse: %v", err)
		}
	})
	return s
}

func connect(t *testing.T, ctx context.Context, s *Server) driver.Conn {
	t.Helper()
	conn, err := Connect(ctx, s.Addr(), s.Credentials())
	requireNoError(t, err, "connect")
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// processGone reports whether pid no longer exists (reaped, not a zombie).
func processGone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

func selectRows(t *testing.T, ctx context.Context, conn driver.Conn, min uint64) []string {
	t.Helper()
	rows, err := conn.Query(ctx, "SELECT a, s FROM t WHERE a >= ? ORDER BY a", min)
	requireNoError(t, err, "select")
	defer rows.Close()
	var got []string
	for rows.Next() {
		var (
			a uint64
			s string
		)
		requireNoError(t, rows.Scan(&a, &s), "scan")
		got = append(got, fmt.Sprintf("%d=%s", a, s))
	}
	requireNoError(t, rows.Err(), "rows")
	return got
}

func TestStartStopStartKeepsData(t *testing.T) {
	requireServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "ch")

	s := startServer(t, ctx, dir)
	conn := connect(t, ctx, s)
	requireNoError(t, conn.Exec(ctx, "CREATE TABLE t (a UInt64, s String) ENGINE = MergeTree ORDER BY a"), "create table")
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO t (a, s)")
	requireNoError(t, err, "prepare batch")
	for i, v := range []string{"zero", "one", "two", "three"} {
		requireNoError(t, batch.Append(uint64(i), v), "append")
	}
	requireNoError(t, batch.Send(), "send")
	if got, want := strings.Join(selectRows(t, ctx, conn, 2), ","), "2=two,3=three"; got != want {
		t.Fatalf("select a >= 2: got %q, want %q", got, want)
	}

	// A second server on the same directory is refused before it touches
	// the running one's config.
	_, err = Start(ctx, Options{Dir: dir, Log: testLogger(t)})
	if domain.ErrorCode(err) != domain.Conflict {
		t.Fatalf("second Start on a busy dir: got %v, want a conflict", err)
	}

	pid := s.Pid()
	requireNoError(t, s.Stop(), "stop")
	requireNoError(t, s.Stop(), "second stop")
	if !processGone(pid) {
		t.Fatalf("pid %d still exists after Stop", pid)
	}
	if s.Pid() != 0 {
		t.Fatalf("Pid after Stop = %d, want 0", s.Pid())
	}

	s2 := startServer(t, ctx, dir)
	conn2 := connect(t, ctx, s2)
	if got, want := strings.Join(selectRows(t, ctx, conn2, 0), ","), "0=zero,1=one,2=two,3=three"; got != want {
		t.Fatalf("after restart: got %q, want %q", got, want)
	}
}

func TestKillAndRestart(t *testing.T) {
	requireServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	s := startServer(t, ctx, t.TempDir())
	conn := connect(t, ctx, s)
	requireNoError(t, conn.Exec(ctx, "CREATE TABLE t (a UInt64, s String) ENGINE = MergeTree ORDER BY a"), "create table")
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO t (a, s)")
	requireNoError(t, err, "prepare batch")
	requireNoError(t, batch.Append(uint64(7), "seven"), "append")
	requireNoError(t, batch.Send(), "send")

	pid := s.Pid()
	requireNoError(t, s.Kill(), "kill")
	requireNoError(t, s.Kill(), "second kill")
	if !processGone(pid) {
		t.Fatalf("pid %d still exists (or is a zombie) after Kill", pid)
	}
	pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
	defer pcancel()
	if err := conn.Ping(pctx); err == nil {
		t.Fatal("ping succeeded after Kill")
	}

	addr := s.Addr()
	began := time.Now()
	requireNoError(t, s.Restart(ctx), "restart after kill")
	t.Logf("restart after kill took %v", time.Since(began).Round(time.Millisecond))
	if s.Addr() != addr {
		t.Fatalf("Restart moved the server from %s to %s", addr, s.Addr())
	}
	conn2 := connect(t, ctx, s)
	if got, want := strings.Join(selectRows(t, ctx, conn2, 0), ","), "7=seven"; got != want {
		t.Fatalf("after kill and restart: got %q, want %q", got, want)
	}
}

func TestStartBogusBinary(t *testing.T) {
	_, err := Start(context.Background(), Options{
		Dir:    t.TempDir(),
		Binary: filepath.Join(t.TempDir(), "no-such-clickhouse-server"),
		Log:    testLogger(t),
	})
	if !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("got %v, want ErrNotInstalled", err)
	}
	if code := domain.ErrorCode(err); code != domain.Unavailable {
		t.Fatalf("code %q, want %q", code, domain.Unavailable)
	}
	msg := domain.ErrorMessage(err)
	if !strings.Contains(msg, "sudo apt-get update && sudo apt-get install -y clickhouse-server") ||
		!strings.Contains(msg, "--clickhouse-addr") {
		t.Fatalf("message does not say how to install: %q", msg)
	}
}

func TestStartPortTakenQuotesErrorLog(t *testing.T) {
	requireServer(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	requireNoError(t, err, "listen")
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err = Start(ctx, Options{Dir: t.TempDir(), TCPPort: port, Log: testLogger(t)})
	if err == nil {
		t.Fatal("Start succeeded on a taken port")
	}
	if code := domain.ErrorCode(err); code != domain.Unavailable {
		t.Fatalf("code %q, want %q (%v)", code, domain.Unavailable, err)
	}
	if !strings.Contains(err.Error(), "Address already in use") {
		t.Fatalf("error does not quote the server's error log: %v", err)
	}
	t.Logf("error: %v", err)
}

func TestConnectNothingListening(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	requireNoError(t, err, "listen")
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = Connect(ctx, addr, Credentials{User: User, Password: "x"})
	if domain.ErrorCode(err) != domain.Unavailable {
		t.Fatalf("got %v, want an unavailable error", err)
	}
}

// TestServerDiesWithParent starts a server from a child test process,
// SIGKILLs that child, and checks that the kernel kills the server too.
func TestServerDiesWithParent(t *testing.T) {
	if os.Getenv("CHSERVER_HELPER_DIR") != "" {
		return // we are the helper; see TestMain
	}
	requireServer(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestServerDiesWithParent$")
	cmd.Env = append(os.Environ(), "CHSERVER_HELPER_DIR="+t.TempDir())
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	requireNoError(t, err, "stdout pipe")
	requireNoError(t, cmd.Start(), "start helper")
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("helper did not report a pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(line), "pid="))
	requireNoError(t, err, "parse helper output "+line)
	if processGone(pid) {
		t.Fatalf("server pid %d is not running", pid)
	}
	requireNoError(t, cmd.Process.Kill(), "kill helper")
	_ = cmd.Wait()
	// The orphaned server is reparented to init (or a subreaper), which
	// reaps it; a zombie would still answer kill(pid, 0).
	deadline := time.Now().Add(10 * time.Second)
	for !processGone(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			t.Fatalf("server pid %d outlived its parent", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestMain runs the helper for TestServerDiesWithParent: start a server,
// print its pid, and wait to be killed.
func TestMain(m *testing.M) {
	if dir := os.Getenv("CHSERVER_HELPER_DIR"); dir != "" {
		s, err := Start(context.Background(), Options{Dir: dir, Log: zerolog.Nop()})
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		fmt.Printf("pid=%d\n", s.Pid())
		select {}
	}
	os.Exit(m.Run())
}
