package chserver

import (
	"context"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/dmgr/dmgr/domain"
)

// Connect opens a clickhouse-go native-protocol connection pool to addr
// ("host:port") as user "default" without a password, and pings it. The
// caller closes the connection.
func Connect(ctx context.Context, addr string) (driver.Conn, error) {
	conn, err := open(addr, 5*time.Second)
	if err != nil {
		return nil, domain.Errorf(domain.Unavailable, "clickhouse at %s: %v", addr, err)
	}
	if err := conn.Ping(ctx); err != nil {
		_ = conn.Close()
		return nil, domain.Errorf(domain.Unavailable,
			"clickhouse at %s does not answer: %v; check that the server runs and that the address is its native (TCP) port, not the HTTP one", addr, err)
	}
	return conn, nil
}

// open returns an unpinged connection pool; clickhouse.Open dials lazily.
func open(addr string, dialTimeout time.Duration) (driver.Conn, error) {
	return clickhouse.Open(&clickhouse.Options{
		Addr:     []string{addr},
		Protocol: clickhouse.Native,
		Auth: clickhouse.Auth{
			Database: "default",
			Username: "default",
		},
		DialTimeout: dialTimeout,
		// No Settings: 18.16 rejects settings it does not know, and the
		// driver sends the ones given here with every query.
	})
}
