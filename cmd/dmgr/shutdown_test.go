package main

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/internal/busauth"
	"github.com/dmgr/dmgr/internal/testenv"
)

// A request that is in flight when shutdown starts still finishes and is
// answered; new requests are refused once the server is down.
func TestShutdownLetsInFlightRequestsFinish(t *testing.T) {
	n := testenv.NATS(t)
	e, _ := testenv.Etcd(t)
	t.Setenv("DMGR_ADMIN_TOKEN", "shutdown-test-token-123456")
	t.Setenv("DMGR_MASTER_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
	cfg, err := parseConfig("server", append([]string{"--http-addr", "127.0.0.1:0", "--nats-url", n.URL(),
		"--nats-nkey-file", testenv.SeedFile(t, n, busauth.Server, ""),
		"--etcd-endpoints", e.Endpoint(), "--clickhouse-addr", "127.0.0.1:1",
		"--clickhouse-password-file", testenv.PasswordFile(t, "unused")}, etcdLogin(e, "dmgr-server")...), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	m := NewMain(cfg, zerolog.Nop(), io.Discard)
	if err := m.Run(testenv.Context(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	// Open the connection first so that the upload below runs on a
	// connection the server has already accepted.
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	warm, err := client.Get(m.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, warm.Body)
	warm.Body.Close()
	pkg := testenv.DMPackage(t, "v8.1.0")
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", m.URL+"/api/v1/packages?version=v8.1.0", pr)
	req.Header.Set("Authorization", "Bearer shutdown-test-token-123456")
	req.Header.Set("Content-Type", "application/gzip")
	type answer struct {
		status int
		err    error
	}
	answered := make(chan answer, 1)
	go func() {
		resp, err := client.Do(req)
		if err != nil {
			answered <- answer{err: err}
			return
		}
		resp.Body.Close()
		answered <- answer{status: resp.StatusCode}
	}()
	if _, err := pw.Write(pkg[:len(pkg)/2]); err != nil {
		t.Fatal(err)
	}
	// Give the server a moment to read the headers: the request is then
	// in its handler, waiting for the rest of the body.
	time.Sleep(500 * time.Millisecond)
	closed := make(chan error, 1)
	go func() { closed <- m.Close() }()
	time.Sleep(300 * time.Millisecond)
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a request was in flight", err)
	default:
	}
	if _, err := pw.Write(pkg[len(pkg)/2:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if a := <-answered; a.err != nil || a.status != http.StatusAccepted {
		t.Fatalf("in-flight upload: status %d, err %v; want 202", a.status, a.err)
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := http.Get(m.URL + "/healthz"); err == nil {
		t.Fatal("the server still answers after Close")
	}
}
