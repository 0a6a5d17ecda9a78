package chserver

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/dmgr/dmgr/domain"
)

// Only user dmgr with its password logs in: no user name, "default" with
// an empty or any password, dmgr with a wrong or empty password, and
// another user name are all refused, by the server itself (not by a
// client-side check), and the refused logins changed nothing.
func TestOnlyDmgrWithItsPasswordLogsIn(t *testing.T) {
	requireServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const password = "s3cret-Pässword with spaces & <xml>"
	s, err := Start(ctx, Options{Dir: t.TempDir(), Password: password, Log: testLogger(t)})
	requireNoError(t, err, "start clickhouse")
	t.Cleanup(func() { _ = s.Stop() })
	if s.Password() != password || s.User() != "dmgr" {
		t.Fatalf("server login = %s / %q, want dmgr / the given password", s.User(), s.Password())
	}

	good := connect(t, ctx, s)
	requireNoError(t, good.Exec(ctx, "CREATE TABLE t (a UInt64, s String) ENGINE = MergeTree ORDER BY a"), "create table as dmgr")

	refused := []struct {
		name string
		auth clickhouse.Auth
	}{
		{"no user name", clickhouse.Auth{}},
		{"default, empty password", clickhouse.Auth{Username: "default"}},
		{"default, dmgr's password", clickhouse.Auth{Username: "default", Password: password}},
		{"dmgr, empty password", clickhouse.Auth{Username: "dmgr"}},
		{"dmgr, wrong password", clickhouse.Auth{Username: "dmgr", Password: password + "x"}},
		{"dmgr, password's prefix", clickhouse.Auth{Username: "dmgr", Password: password[:10]}},
		{"another user", clickhouse.Auth{Username: "readonly", Password: password}},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			tc.auth.Database = "default"
			conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{s.Addr()}, Protocol: clickhouse.Native,
				Auth: tc.auth, DialTimeout: 5 * time.Second})
			requireNoError(t, err, "open")
			defer conn.Close()
			err = conn.Exec(ctx, "INSERT INTO t (a, s) VALUES (1, 'forged')")
			if err == nil {
				t.Fatal("insert accepted without dmgr's password")
			}
			if !IsAuthError(err) {
				t.Fatalf("insert failed, but not as a refused login: %v", err)
			}
			t.Logf("refused: %v", err)
			err = conn.Exec(ctx, "DROP TABLE t")
			if !IsAuthError(err) {
				t.Fatalf("drop: got %v, want a refused login", err)
			}
		})
	}
	// The HTTP interface (which dmgr does not use) knows the same users.
	resp, err := http.Get("http://" + s.HTTPAddr() + "/?query=" + url.QueryEscape("DROP TABLE t"))
	requireNoError(t, err, "http query")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK || !strings.Contains(string(body), "Unknown user default") {
		t.Fatalf("anonymous HTTP query: %d %s, want refused as unknown user default", resp.StatusCode, body)
	}

	// Connect says it was the login, with the flags to check.
	_, err = Connect(ctx, s.Addr(), Credentials{User: User, Password: "wrong"})
	if domain.ErrorCode(err) != domain.Unauthorized || !strings.Contains(err.Error(), "--clickhouse-password-file") {
		t.Fatalf("Connect with a wrong password: got %v, want an unauthorized error naming the flag", err)
	}
	if _, err := Connect(ctx, s.Addr(), Credentials{}); domain.ErrorCode(err) != domain.Invalid {
		t.Fatalf("Connect without a user: got %v, want invalid", err)
	}

	if got := selectRows(t, ctx, good, 0); len(got) != 0 {
		t.Fatalf("refused logins wrote rows: %v", got)
	}

	// The password is nowhere on disk in clear; users.xml holds its hash
	// and only its owner may read it.
	b, err := os.ReadFile(s.l.Users)
	requireNoError(t, err, "read users.xml")
	if strings.Contains(string(b), password) || strings.Contains(string(b), "<default>\n            <password>") {
		t.Fatalf("users.xml holds the password or a default user:\n%s", b)
	}
	if !strings.Contains(string(b), "<password_sha256_hex>") {
		t.Fatalf("users.xml has no password hash:\n%s", b)
	}
	fi, err := os.Stat(s.l.Users)
	requireNoError(t, err, "stat users.xml")
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("users.xml mode %v, want 0600", fi.Mode().Perm())
	}
}

// A server restarted on its directory with another password takes the new
// one and refuses the old one (rotation).
func TestRestartWithAnotherPasswordRotatesIt(t *testing.T) {
	requireServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	s, err := Start(ctx, Options{Dir: dir, Password: "first-password", Log: testLogger(t)})
	requireNoError(t, err, "start clickhouse")
	requireNoError(t, s.Stop(), "stop")
	s2, err := Start(ctx, Options{Dir: dir, Password: "second-password", Log: testLogger(t)})
	requireNoError(t, err, "start clickhouse again")
	t.Cleanup(func() { _ = s2.Stop() })
	if _, err := Connect(ctx, s2.Addr(), Credentials{User: User, Password: "first-password"}); domain.ErrorCode(err) != domain.Unauthorized {
		t.Fatalf("old password: got %v, want unauthorized", err)
	}
	conn, err := Connect(ctx, s2.Addr(), Credentials{User: User, Password: "second-password"})
	requireNoError(t, err, "connect with the new password")
	_ = conn.Close()
}
