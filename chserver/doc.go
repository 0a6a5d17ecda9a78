// Package chserver runs a local ClickHouse server process for `dmgr dev` and
// for tests, and opens clickhouse-go native connections to a server.
//
// The server is the Debian clickhouse-server binary (18.16 on the build
// machines). Start writes its own config.xml and users.xml into the server's
// directory and starts the binary with --config-file pointing at them, so
// nothing under /etc/clickhouse-server or /var/lib/clickhouse is read or
// written and several servers can run side by side. The server listens on
// 127.0.0.1 only, has one user "default" without a password that may connect
// from loopback only, and keeps all its data under the directory, so Start on
// the same directory again finds the tables it left.
//
// The child process runs in its own process group and, on Linux, is killed
// by the kernel when the dmgr process dies.
package chserver
