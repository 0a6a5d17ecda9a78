package chserver

import (
	"context"
	"errors"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/dmgr/dmgr/domain"
)

// User is the only ClickHouse user of a server that Start runs.
const User = "dmgr"

// Credentials are a ClickHouse login. String never shows the password.
type Credentials struct {
	User     string
	Password string
}

func (c Credentials) String() string { return "user " + c.User }

// Connect opens a clickhouse-go native-protocol connection pool to addr
// ("host:port") as cred, and pings it. The caller closes the connection.
// A refused login is a domain.Unauthorized error.
func Connect(ctx context.Context, addr string, cred Credentials) (driver.Conn, error) {
	if cred.User == "" {
		return nil, domain.Errorf(domain.Invalid, "clickhouse at %s: no user name given", addr)
	}
	conn, err := open(addr, 5*time.Second, cred)
	if err != nil {
		return nil, domain.Errorf(domain.Unavailable, "clickhouse at %s: %v", addr, err)
	}
	if err := conn.Ping(ctx); err != nil {
		_ = conn.Close()
		if IsAuthError(err) {
			return nil, domain.Errorf(domain.Unauthorized,
				"clickhouse at %s refused the login of user %s: %v; check --clickhouse-user and the password in --clickhouse-password-file", addr, cred.User, err)
		}
		return nil, domain.Errorf(domain.Unavailable,
			"clickhouse at %s does not answer: %v; check that the server runs and that the address is its native (TCP) port, not the HTTP one", addr, err)
	}
	return conn, nil
}

// IsAuthError reports whether err is ClickHouse refusing a login: an
// unknown user (code 192), a wrong password (193), a password required
// (194), a user that may not connect from this address (195), or (current
// servers) an authentication failure (516).
func IsAuthError(err error) bool {
	var ex *clickhouse.Exception
	if !errors.As(err, &ex) {
		return false
	}
	switch ex.Code {
	case 192, 193, 194, 195, 516:
		return true
	}
	return false
}

// open returns an unpinged connection pool; clickhouse.Open dials lazily.
func open(addr string, dialTimeout time.Duration, cred Credentials) (driver.Conn, error) {
	return clickhouse.Open(&clickhouse.Options{
		Addr:     []string{addr},
		Protocol: clickhouse.Native,
		Auth: clickhouse.Auth{
			Database: "default",
			Username: cred.User,
			Password: cred.Password,
		},
		DialTimeout: dialTimeout,
		// No Settings: 18.16 rejects settings it does not know, and the
		// driver sends the ones given here with every query.
	})
}
