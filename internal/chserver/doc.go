// Package chserver runs a local ClickHouse server process for `dmgr dev` and
// for tests, and opens clickhouse-go native connections to a server.
//
// The server is the Debian clickhouse-server binary (18.16 on the build
// machines). Start writes its own config.xml and users.xml into the server's
// directory and starts the binary with --config-file pointing at them, so
// nothing under /etc/clickhouse-server or /var/lib/clickhouse is read or
// written and several servers can run side by side. The server listens on
// 127.0.0.1 only and has one user, "dmgr" (User), that logs in with the
// password given in Options (users.xml, mode 0600, holds its SHA-256 only)
// from loopback only; there is no "default" user, so a login without a user
// name or a password is refused. It keeps all its data under the directory,
// so Start on the same directory again finds the tables it left; the
// password may change between starts.
//
// The child process runs in its own process group and, on Linux, is killed
// by the kernel when the dmgr process dies.
package chserver
